-- Tamper evidence: as a superuser with the append-only guard switched off,
-- modify a field, delete a record, insert a fake, swap two records, break
-- the chain; audit_verify reports each, and reports intact before. Each case
-- runs in a transaction that is rolled back.
\set SHOW_CONTEXT never

SELECT donatello.create_organization('Tamper Test', 'tamper-test') AS org \gset
SELECT donatello.create_department(:'org', 'Ink') AS ink \gset
SELECT donatello.create_user(:'org', 'one@tamper.test', 'One', :'ink') AS one \gset
SELECT donatello.create_user(:'org', 'two@tamper.test', 'Two', :'ink') AS two \gset
SELECT donatello.grant_role(:'one', 'auditor');
SELECT donatello.audit_event('tamper.test', 'thing', '1') > 0 AS written;
SELECT donatello.audit_seal() > 0 AS sealed;

SELECT intact, records_checked > 10 AS checked, blocks_checked > 0 AS blocks, first_bad_record, reason
  FROM donatello.audit_verify(:'org');

-- two records of the same block, and a transaction the sealer has passed
SELECT min(id) AS first_id, max(id) AS last_id, min(txid) AS old_txid
  FROM donatello.audit_log WHERE org_id = :'org' \gset
SELECT r.id AS user_record FROM donatello.audit_log r
 WHERE r.org_id = :'org' AND r.table_name = 'donatello.users' AND r.resource_id = :'one' \gset

-- how verify reports: intact, whether it blames the expected record, the reason without numbers
CREATE FUNCTION pg_temp.report(org uuid, expected bigint)
    RETURNS TABLE (intact boolean, blames_expected boolean, reason text) LANGUAGE sql AS $$
    SELECT v.intact, v.first_bad_record = expected, regexp_replace(v.reason, '[0-9]+', 'N', 'g')
      FROM donatello.audit_verify(org) v
$$;

-- 1. modify one field
BEGIN;
ALTER TABLE donatello.audit_log DISABLE TRIGGER audit_log_append_only;
UPDATE donatello.audit_log SET new_data = jsonb_set(new_data, '{name}', '"Mallory"') WHERE id = :user_record;
SELECT * FROM pg_temp.report(:'org', :user_record);
ROLLBACK;

-- 2. delete a record
BEGIN;
ALTER TABLE donatello.audit_log DISABLE TRIGGER audit_log_append_only;
DELETE FROM donatello.audit_log WHERE id = :user_record;
SELECT * FROM pg_temp.report(:'org', :user_record);
ROLLBACK;

-- 3. insert a fake record that claims an old, sealed transaction (its hash computed the same way is not needed: it is in no block)
BEGIN;
ALTER TABLE donatello.audit_log DISABLE TRIGGER audit_log_append_only;
INSERT INTO donatello.audit_log (logged_at, org_id, db_role, action, resource_type, resource_id, txid, record_hash)
SELECT logged_at, org_id, db_role, 'role.revoke', 'user', :'one', txid, record_hash
  FROM donatello.audit_log WHERE id = :first_id
RETURNING id AS fake_id \gset
SELECT * FROM pg_temp.report(:'org', :fake_id);
ROLLBACK;

-- 4. swap two records (every column but the id): each still matches its own hash, their order does not
BEGIN;
ALTER TABLE donatello.audit_log DISABLE TRIGGER audit_log_append_only;
UPDATE donatello.audit_log a
   SET logged_at = b.logged_at, org_id = b.org_id, department_id = b.department_id, user_id = b.user_id,
       api_key_id = b.api_key_id, db_role = b.db_role, request_id = b.request_id, client_ip = b.client_ip,
       user_agent = b.user_agent, action = b.action, table_name = b.table_name,
       resource_type = b.resource_type, resource_id = b.resource_id, txid = b.txid,
       old_data = b.old_data, new_data = b.new_data, details = b.details, record_hash = b.record_hash
  FROM (SELECT * FROM donatello.audit_log WHERE id IN (:first_id, :last_id)) b
 WHERE a.id IN (:first_id, :last_id) AND b.id <> a.id;
SELECT intact, regexp_replace(reason, '[0-9]+', 'N', 'g') AS reason FROM donatello.audit_verify(:'org');
ROLLBACK;

-- 5. a record's stored hash changed along with its content
BEGIN;
ALTER TABLE donatello.audit_log DISABLE TRIGGER audit_log_append_only;
UPDATE donatello.audit_log SET action = 'insert-ish', record_hash = sha256('forged') WHERE id = :user_record;
SELECT * FROM pg_temp.report(:'org', :user_record);
ROLLBACK;

-- 6. a block deleted, or its hash rewritten
SELECT donatello.create_user(:'org', 'three@tamper.test', 'Three') IS NOT NULL AS created;
SELECT donatello.audit_seal() > 0 AS sealed;
SELECT max(block_no) >= 2 AS two_blocks FROM donatello.audit_blocks WHERE org_id = :'org';
BEGIN;
ALTER TABLE donatello.audit_blocks DISABLE TRIGGER audit_blocks_append_only;
DELETE FROM donatello.audit_blocks WHERE org_id = :'org' AND block_no = 1;
SELECT intact, regexp_replace(reason, '[0-9]+', 'N', 'g') AS reason FROM donatello.audit_verify(:'org');
ROLLBACK;
BEGIN;
ALTER TABLE donatello.audit_blocks DISABLE TRIGGER audit_blocks_append_only;
UPDATE donatello.audit_blocks SET block_hash = sha256('forged') WHERE org_id = :'org' AND block_no = 1;
SELECT intact, regexp_replace(reason, '[0-9]+', 'N', 'g') AS reason FROM donatello.audit_verify(:'org');
ROLLBACK;

-- 7. a record not sealed yet, modified
SELECT donatello.audit_event('tamper.pending', 'thing', '2') AS pending_id \gset
BEGIN;
ALTER TABLE donatello.audit_log DISABLE TRIGGER audit_log_append_only;
UPDATE donatello.audit_log SET resource_id = '3' WHERE id = :pending_id;
SELECT * FROM pg_temp.report(NULL, :pending_id);
ROLLBACK;

-- untouched, it all still verifies (since: only the recent part)
SELECT intact, first_bad_record, reason FROM donatello.audit_verify(:'org');
SELECT intact FROM donatello.audit_verify(:'org', now() - interval '1 hour');
SELECT donatello.audit_seal() > 0 AS sealed;
SELECT intact FROM donatello.audit_verify();
