-- The audit trail: what each kind of change records, masking and exclusion,
-- the no-op UPDATE, TRUNCATE, application and security events, the
-- append-only guard, reading through donatello_api.audit_events and CSV.
\set SHOW_CONTEXT never

CREATE FUNCTION pg_temp.try(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

SELECT donatello.create_organization('Audit Test', 'audit-test') AS org \gset
SELECT donatello.create_organization('Audit Other', 'audit-other') AS other \gset
SELECT donatello.create_department(:'org', 'Paint') AS paint \gset
SELECT donatello.create_department(:'org', 'Sculpt') AS sculpt \gset

-- an application table of the organization
CREATE TABLE public.invoices (
    id          integer PRIMARY KEY,
    org_id      uuid NOT NULL,
    department_id uuid,
    amount      numeric NOT NULL,
    paid        boolean NOT NULL DEFAULT false,
    note        text,
    api_token   text,
    card_last4  text,
    internal    jsonb,
    touched     integer NOT NULL DEFAULT 0
);
SELECT donatello.enable_audit('public.invoices', exclude_columns => '{touched}',
                              mask_columns => '{card_last4}');
SELECT table_name, exclude_columns, mask_columns FROM donatello.audited_tables WHERE table_name = 'public.invoices'::regclass;

-- the actor: a user with an API key, through PostgREST-style settings
SELECT donatello.create_user(:'org', 'auditor@audit.test', 'Audrey', :'paint') AS audrey \gset
SELECT set_config('request.jwt.claims',
                  json_build_object('sub', :'audrey', 'org', :'org', 'role', 'donatello_user',
                                    'key_id', '6f1c1f6e-3a53-4c53-9d8e-0d4a8ae3f001')::text, false) AS claims_set \gset
SET request.headers = '{"user-agent": "audit-test/1.0", "x-forwarded-for": "203.0.113.7, 10.0.0.1", "x-request-id": "req-42"}';

INSERT INTO public.invoices (id, org_id, department_id, amount, note, api_token, card_last4, internal)
VALUES (1, :'org', :'paint', 12.50, 'first', 'tok_live_123', '4242', '{"b": 2, "a": [1, true]}');
UPDATE public.invoices SET paid = true, note = 'paid "in full", thanks' WHERE id = 1;
-- no-op UPDATE, and an UPDATE of the excluded column only: nothing recorded
UPDATE public.invoices SET paid = true WHERE id = 1;
UPDATE public.invoices SET touched = touched + 1 WHERE id = 1;
-- a masked column that changed shows the marker on both sides
UPDATE public.invoices SET api_token = 'tok_live_456' WHERE id = 1;
DELETE FROM public.invoices WHERE id = 1;
-- a rolled-back change leaves nothing
BEGIN;
INSERT INTO public.invoices (id, org_id, amount) VALUES (2, :'org', 1);
ROLLBACK;

SELECT r.action, r.table_name, r.resource_id, r.old_data - 'org_id' - 'department_id' AS old_data,
       r.new_data - 'org_id' - 'department_id' AS new_data,
       r.org_id = :'org' AS in_org, r.department_id = :'paint' AS in_paint,
       r.user_id = :'audrey' AS by_audrey, r.api_key_id, r.db_role, r.request_id, r.client_ip, r.user_agent,
       r.txid IS NOT NULL AS has_txid, length(r.record_hash) AS hash_bytes
  FROM donatello.audit_log r
 WHERE r.table_name = 'public.invoices'
 ORDER BY r.id;

-- a row without org_id is recorded in the principal's organization
CREATE TABLE public.notes (k text PRIMARY KEY, v integer[], at timestamptz, f float8);
SELECT donatello.enable_audit('public.notes');
INSERT INTO public.notes VALUES ('x', '{1,2}', '2026-01-02 03:04:05+00', 'NaN');
SELECT action, resource_id, new_data, org_id = :'org' AS in_org
  FROM donatello.audit_log WHERE table_name = 'public.notes' ORDER BY id;

-- TRUNCATE is one record
TRUNCATE public.notes;
SELECT action, resource_id, old_data, new_data FROM donatello.audit_log
 WHERE table_name = 'public.notes' ORDER BY id DESC LIMIT 1;

-- disable_audit: nothing more is recorded
SELECT donatello.disable_audit('public.notes');
INSERT INTO public.notes VALUES ('y', NULL, NULL, 1.5);
SELECT count(*) AS notes_records FROM donatello.audit_log WHERE table_name = 'public.notes';

-- enable_audit errors
SELECT pg_temp.try($$SELECT donatello.enable_audit('public.invoices', '{nope}')$$);
SELECT pg_temp.try($$SELECT donatello.enable_audit('donatello.audit_log')$$);
SELECT pg_temp.try($$SELECT donatello.enable_audit('donatello.audited_tables')$$);

-- application events, in the principal's organization
SELECT donatello.audit_event('invoice.approve', 'invoice', '1', '{"amount": 12.5}') > 0 AS written;
SELECT pg_temp.try($$SELECT donatello.audit_event('', 'invoice', '1')$$);
SELECT pg_temp.try($$SELECT donatello.audit_event('invoice approve', 'invoice', '1')$$);
SELECT pg_temp.try($$SELECT donatello.audit_event('invoice.approve', 'invoice', '1', '[1]')$$);
-- system events name their organization
SELECT donatello.audit_system_event(:'other', 'budget.threshold', 'department', NULL, '{"percent": 80}') > 0 AS written;
SELECT action, resource_type, resource_id, details, org_id = :'org' AS in_org, user_id = :'audrey' AS by_audrey
  FROM donatello.audit_log WHERE action IN ('invoice.approve', 'budget.threshold') ORDER BY id;

-- security events of the credentials part, role grants and deactivation are in the trail
SELECT donatello.create_user(:'org', 'mgr@audit.test', 'Manny', :'sculpt') AS manny \gset
SELECT donatello.grant_role(:'manny', 'dept_manager', :'sculpt');
SELECT donatello.grant_role(:'audrey', 'auditor');
SELECT donatello.revoke_role(:'audrey', 'auditor');
SELECT donatello.grant_role(:'audrey', 'auditor');
SELECT donatello.set_password(:'manny', 'Sculpt-Ing-Is-4-Me');
SELECT donatello.deactivate_user(:'manny');
SELECT action, resource_type, resource_id = :'manny' AS about_manny,
       details - 'grant_id' - 'department_id' AS details, details->>'department_id' = :'sculpt' AS in_sculpt
  FROM donatello.audit_log
 WHERE org_id = :'org' AND (action LIKE 'security.%' OR action LIKE 'role.%' OR action LIKE 'user.%')
 ORDER BY id;
-- the password hash never reaches the trail
SELECT count(*) AS leaked FROM donatello.audit_log
 WHERE new_data::text LIKE '%argon2%' OR old_data::text LIKE '%argon2%';

-- append-only, for the owner too
SELECT pg_temp.try($$UPDATE donatello.audit_log SET action = 'x' WHERE action = 'insert'$$);
SELECT pg_temp.try($$DELETE FROM donatello.audit_log$$);
SELECT pg_temp.try($$TRUNCATE donatello.audit_log$$);
SELECT pg_temp.try(format('TRUNCATE donatello.audit_log_%s', to_char(now() AT TIME ZONE 'UTC', 'YYYYMM')));
SELECT pg_temp.try($$INSERT INTO donatello.audit_log (logged_at, org_id, db_role, action, txid, record_hash)
                     VALUES (now(), gen_random_uuid(), 'x', 'fake', 1, '\x00')$$);
SET session_replication_role = replica;
SELECT pg_temp.try($$DELETE FROM donatello.audit_log$$);
RESET session_replication_role;

-- sealing and verification
SELECT donatello.audit_seal() > 0 AS sealed;
SELECT donatello.audit_seal() AS sealed_again;
SELECT intact, records_checked > 0 AS checked, first_bad_record, reason FROM donatello.audit_verify(:'org');
SELECT intact FROM donatello.audit_verify();
SELECT block_no >= 1 AS has_block, length(block_hash) AS hex_digits FROM donatello.audit_head(:'org');
SELECT donatello.audit_backlog() AS backlog;
SELECT pg_temp.try($$DELETE FROM donatello.audit_blocks$$);

-- reading: an auditor sees the whole organization
SET ROLE donatello_user;
SELECT action, resource_type FROM donatello_api.audit_events(action => 'invoice.approve');
SELECT count(*) > 10 AS many FROM donatello_api.audit_events();
SELECT count(*) AS other_org FROM donatello_api.audit_events() WHERE org_id <> :'org';
SELECT action, resource_id FROM donatello_api.audit_events(resource_type => 'public.invoices', resource_id => '1');
SELECT count(*) AS by_audrey FROM donatello_api.audit_events(actor => :'audrey', resource_type => 'public.invoices');
SELECT count(*) AS future FROM donatello_api.audit_events(from_time => now() + interval '1 day');
-- nobody reads the tables directly
SELECT pg_temp.try($$SELECT count(*) FROM donatello.audit_log$$);
RESET ROLE;

-- a department manager sees only the records of the departments it manages
SELECT donatello.create_user(:'org', 'boss@audit.test', 'Bo', :'paint') AS bo \gset
SELECT donatello.grant_role(:'bo', 'dept_manager', :'sculpt');
SELECT set_config('request.jwt.claims', json_build_object('sub', :'bo', 'org', :'org')::text, false) AS claims_set \gset
SET ROLE donatello_user;
SELECT count(*) > 0 AS sees_sculpt, bool_and(department_id = :'sculpt') AS only_sculpt
  FROM donatello_api.audit_events();
RESET ROLE;
-- a member sees nothing
SELECT donatello.create_user(:'org', 'member@audit.test', 'Mo') AS mo \gset
SELECT donatello.grant_role(:'mo', 'member');
SELECT set_config('request.jwt.claims', json_build_object('sub', :'mo', 'org', :'org')::text, false) AS claims_set \gset
SET ROLE donatello_user;
SELECT pg_temp.try($$SELECT count(*) FROM donatello_api.audit_events()$$);
RESET ROLE;
RESET request.jwt.claims;
SELECT pg_temp.try($$SELECT count(*) FROM donatello_api.audit_events()$$);

-- CSV export (RFC 4180): header, quoted fields, CRLF
SELECT set_config('request.jwt.claims', json_build_object('sub', :'audrey', 'org', :'org')::text, false) AS claims_set \gset
SELECT donatello.audit_export_csv(resource_type => 'public.invoices', action => 'update') AS csv \gset
SELECT length(:'csv') - length(replace(:'csv', E'\r\n', '')) AS crlf_bytes,
       length(:'csv') - length(replace(:'csv', E'\n', '')) AS lf_count;
-- read back with an RFC 4180 parser: the fields survive quoting
SELECT line_number, fields[7:14] AS who_what, fields[16:18] AS data
  FROM donatello.csv_rows(:'csv') ORDER BY line_number;
SELECT donatello.csv_field('plain'), donatello.csv_field('a,b'), donatello.csv_field('say "hi"'),
       donatello.csv_field(E'two\nlines'), donatello.csv_field(NULL);
RESET request.jwt.claims;
RESET request.headers;

-- retention: with retention 0, last month's (empty) partition goes;
-- the current month stays, the purge is recorded, the trail still verifies
SELECT to_regclass(format('donatello.audit_log_%s', to_char(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month', 'YYYYMM'))) IS NOT NULL AS last_month_exists;
SET donatello.audit_retention = 0;
SELECT donatello.audit_purge() >= 0 AS purged;
SELECT to_regclass(format('donatello.audit_log_%s', to_char(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month', 'YYYYMM'))) IS NULL AS last_month_gone,
       to_regclass(format('donatello.audit_log_%s', to_char(now() AT TIME ZONE 'UTC', 'YYYYMM'))) IS NOT NULL AS this_month_kept;
SELECT count(*) > 0 AS purge_recorded FROM donatello.audit_purges WHERE records = 0;
RESET donatello.audit_retention;
SELECT donatello.audit_seal() >= 0 AS sealed;
SELECT intact, reason FROM donatello.audit_verify();
SELECT pg_temp.try($$DELETE FROM donatello.audit_purges$$);

DROP TABLE public.invoices, public.notes;
