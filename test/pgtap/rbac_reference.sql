-- The C permission engine against the independent plain-SQL reference
-- (test/reference/rbac.sql) on 10,000 random (user, permission, department)
-- triples over a randomly generated organization: inheritance chains of 5
-- custom roles under system roles (depth >= 6 with the system chain),
-- department-scoped grants, live and expired exceptions, inactive users,
-- unknown users and departments of another organization. Every path of the
-- engine is compared: cold cache, warm cache, and the bypass inside a
-- transaction that changed RBAC data. The data is committed (the cache
-- only serves committed state) and removed at the end.
\set QUIET on
\set ON_ERROR_STOP on
\ir ../reference/rbac.sql

SELECT rbac_reference.generate_org('tap-gen-a', 300, 50, 200, 20, 5, 0.42) AS org_a \gset
SELECT rbac_reference.generate_org('tap-gen-b', 40, 10, 200, 4, 4, 0.17) AS org_b \gset
CREATE TABLE rbac_triples AS
    SELECT * FROM rbac_reference.random_triples(ARRAY[:'org_a', :'org_b']::uuid[], 10000, 200);

SELECT plan(8);

SELECT is((SELECT count(*) FROM rbac_triples), 10000::bigint, '10,000 random triples');

SELECT cmp_ok(
    (WITH RECURSIVE chain(id, depth) AS (
        SELECT r.id, 1 FROM donatello.roles r
         WHERE r.org_id = :'org_a' AND NOT EXISTS (SELECT FROM donatello.roles c WHERE c.parent_id = r.id)
        UNION ALL
        SELECT r.parent_id, c.depth + 1 FROM donatello.roles r JOIN chain c ON r.id = c.id
         WHERE r.parent_id IS NOT NULL)
     SELECT max(depth) FROM chain), '>=', 4, 'the generated organization has inheritance depth >= 4');

SELECT ok((SELECT count(*) FILTER (WHERE rbac_reference.has_permission(user_id, permission, department_id)) BETWEEN 500 AND 9500
             FROM rbac_triples), 'the sample holds both answers in quantity (the comparison is not vacuous)');

SELECT donatello.permission_cache_reset();
SELECT is((SELECT count(*) FROM rbac_triples
            WHERE donatello.has_permission(user_id, permission, department_id)
                  IS DISTINCT FROM rbac_reference.has_permission(user_id, permission, department_id)),
          0::bigint, 'cold cache: zero disagreements with the SQL reference');

SELECT is((SELECT count(*) FROM rbac_triples
            WHERE donatello.has_permission(user_id, permission, department_id)
                  IS DISTINCT FROM rbac_reference.has_permission(user_id, permission, department_id)),
          0::bigint, 'warm cache: zero disagreements with the SQL reference');

SELECT cmp_ok((SELECT backend_hits FROM donatello.permission_cache_stats()), '>=', 9000::bigint,
              'the warm pass was served from the shared cache');

-- a transaction that changes RBAC data: checks bypass the cache and see the change
BEGIN;
DELETE FROM donatello.user_roles WHERE org_id = :'org_a' AND department_id IS NULL
   AND user_id IN (SELECT id FROM donatello.users WHERE org_id = :'org_a' ORDER BY id LIMIT 100);
UPDATE donatello.users SET active = NOT active WHERE org_id = :'org_a' AND email LIKE 'user1%';
SELECT is((SELECT count(*) FROM rbac_triples
            WHERE donatello.has_permission(user_id, permission, department_id)
                  IS DISTINCT FROM rbac_reference.has_permission(user_id, permission, department_id)),
          0::bigint, 'inside a transaction that changed RBAC data: zero disagreements');
COMMIT;

SELECT is((SELECT count(*) FROM rbac_triples
            WHERE donatello.has_permission(user_id, permission, department_id)
                  IS DISTINCT FROM rbac_reference.has_permission(user_id, permission, department_id)),
          0::bigint, 'after that commit (cache invalidated): zero disagreements');

SELECT * FROM finish();

DROP TABLE rbac_triples;
DELETE FROM donatello.organizations WHERE slug IN ('tap-gen-a', 'tap-gen-b');
