-- bench/permission: 1,000,000 permission checks in one query, donatello's C
-- engine against the plain-SQL reference (test/reference/rbac.sql), on a
-- generated organization of 10,000 users, 50 roles in inheritance chains of
-- depth 4 (under the system roles), 200 permissions and 20 departments.
-- Run by bench/permission/run; :reference_checks sets how many checks the
-- (slow) reference runs (default: the same 1,000,000).
\set QUIET on
\set ON_ERROR_STOP on
\ir ../../test/reference/rbac.sql

CREATE OR REPLACE FUNCTION pg_temp.seconds(query text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    EXECUTE query;
    RETURN extract(epoch FROM clock_timestamp() - t0);
END $$;

SELECT rbac_reference.generate_org('bench-org', 10000, 50, 200, 20, 4, 0.5) AS org \gset
SELECT rbac_reference.generate_org('bench-other', 100, 5, 200, 2, 4, 0.6) AS other \gset
CREATE TABLE triples AS
    SELECT * FROM rbac_reference.random_triples(ARRAY[:'org', :'other']::uuid[], 1000000, 200);
CREATE TABLE triples_ref AS SELECT * FROM triples LIMIT :reference_checks;
ANALYZE triples; ANALYZE triples_ref;

\echo organization: 10,000 users, 50 custom roles (chains of 4 under system roles), 200 permissions, 20 departments
SELECT count(*) AS users, count(*) FILTER (WHERE active) AS active FROM donatello.users WHERE org_id = :'org';
SELECT (SELECT count(*) FROM donatello.user_roles WHERE org_id = :'org') AS grants,
       (SELECT count(*) FROM donatello.permission_exceptions WHERE org_id = :'org') AS exceptions;

SELECT donatello.permission_cache_reset();
SELECT pg_temp.seconds('SELECT count(*) FILTER (WHERE user_id IS NOT NULL AND permission IS NOT NULL) FROM triples') AS scan_s \gset
SELECT pg_temp.seconds('SELECT count(*) FILTER (WHERE donatello.has_permission(user_id, permission, department_id)) FROM triples') AS c_cold_s \gset
SELECT pg_temp.seconds('SELECT count(*) FILTER (WHERE donatello.has_permission(user_id, permission, department_id)) FROM triples') AS c_warm_s \gset
SELECT pg_temp.seconds('SELECT count(*) FILTER (WHERE rbac_reference.has_permission(user_id, permission, department_id)) FROM triples_ref') AS ref_s \gset
SELECT count(*) AS ref_n FROM triples_ref \gset

SELECT count(*) FILTER (WHERE donatello.has_permission(user_id, permission, department_id)
                         IS DISTINCT FROM rbac_reference.has_permission(user_id, permission, department_id))
       AS disagreements_on_reference_sample,
       count(*) FILTER (WHERE donatello.has_permission(user_id, permission, department_id)) AS allowed_in_sample
  FROM triples_ref;

SELECT format('%-34s %12s %14s', 'path', 'seconds', 'checks/s') AS " "
UNION ALL SELECT format('%-34s %12s %14s', 'scan of 1,000,000 rows (no check)', round(:scan_s::numeric, 3), '-')
UNION ALL SELECT format('%-34s %12s %14s', 'donatello C engine, cold cache', round(:c_cold_s::numeric, 3), to_char(1000000 / :c_cold_s, 'FM999,999,999'))
UNION ALL SELECT format('%-34s %12s %14s', 'donatello C engine, warm cache', round(:c_warm_s::numeric, 3), to_char(1000000 / :c_warm_s, 'FM999,999,999'))
UNION ALL SELECT format('%-34s %12s %14s', 'plain SQL reference (' || to_char(:ref_n, 'FM9,999,999') || ' checks)', round(:ref_s::numeric, 3), to_char(:ref_n / :ref_s, 'FM999,999,999'))
UNION ALL SELECT format('ratio, C warm / reference: %sx    C cold / reference: %sx',
                        round((1000000 / :c_warm_s) / (:ref_n / :ref_s)), round((1000000 / :c_cold_s) / (:ref_n / :ref_s)));
