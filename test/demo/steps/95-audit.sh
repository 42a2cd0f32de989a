# Step group: the audit trail (issue 5), the demo's last step: a few records
# of what the demo did, an application event, the append-only guard, the
# sealing worker's hash chain, audit_verify, and the reading API.
# Uses ORG, ALICE, BOB, CAROL from 10-tenancy-rbac.sh.

step "The audit trail: what the demo did, recorded by C triggers on donatello's own tables"
run_sql "SELECT r.action, count(*) AS records
  FROM donatello.audit_log r WHERE r.org_id = :'org'
 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 12;"
say "Role grants, security events and deactivation are named events; changes show only what changed,"
say "and secrets (password hashes, sealed keys, token digests) are masked:"
run_sql "SELECT to_char(r.logged_at, 'HH24:MI:SS') AS at, r.action, r.table_name,
       left(coalesce(r.details::text, r.new_data::text), 70) AS what
  FROM donatello.audit_log r
 WHERE r.org_id = :'org'
   AND (r.action IN ('role.grant', 'user.deactivate', 'security.login.success', 'security.login.lockout',
                     'security.apikey.created', 'security.apikey.revoked')
        OR (r.table_name = 'donatello.user_credentials' AND r.action = 'update'))
 ORDER BY r.id LIMIT 10;"

step "An application writes its own event, with who and from where (PostgREST-style settings)"
do_sql "SET request.headers = '{\"user-agent\": \"demo-app/1.0\", \"x-forwarded-for\": \"203.0.113.9\", \"x-request-id\": \"req-demo-1\"}';
SELECT set_config('request.jwt.claims', json_build_object('sub', :'alice', 'org', :'org')::text, false);
SELECT donatello.audit_event('campaign.approve', 'campaign', 'spring-launch', '{\"budget\": 1200}');"
run_sql "SELECT action, resource_type, resource_id, user_id = :'alice' AS by_alice, client_ip, user_agent, request_id, details
  FROM donatello.audit_log WHERE action = 'campaign.approve';"

step "Append-only, for the owner (a superuser here) too"
expect_error 42501 "UPDATE donatello.audit_log SET action = 'nothing.happened' WHERE action = 'campaign.approve';"
expect_error 42501 "DELETE FROM donatello.audit_log WHERE org_id = :'org';"

step "The maintenance worker seals committed records into a hash chain per organization"
say "  (donatello.audit_seal_interval, 1 s by default; waiting for the worker, not sealing by hand)"
for _ in $(seq 1 50); do
	[ "$(sql_value "SELECT donatello.audit_backlog()")" = 0 ] && break
	sleep 0.2
done
run_sql "SELECT donatello.audit_backlog() AS unsealed;
SELECT block_no, left(encode(prev_hash, 'hex'), 16) || '…' AS prev_hash,
       left(encode(block_hash, 'hex'), 16) || '…' AS block_hash, cardinality(record_ids) AS records
  FROM donatello.audit_blocks WHERE org_id = :'org' ORDER BY block_no DESC LIMIT 3;
SELECT block_no, block_hash AS head_to_anchor_outside_the_database FROM donatello.audit_head(:'org');"

step "audit_verify recomputes every record hash and every block of the chain"
run_sql "SELECT * FROM donatello.audit_verify(:'org');"

step "Reading: auditors see their organization, department managers their department"
as_principal bob org "SELECT count(*) AS bob_sees, count(DISTINCT department_id) AS departments
  FROM donatello_api.audit_events();"
say "Bob manages Design only; Alice (org_admin, inheriting audit:read) reads the whole organization:"
as_principal alice org "SELECT action, resource_type, resource_id FROM donatello_api.audit_events(action => 'campaign.approve');"
say "The same as CSV (RFC 4180) for Alice, read back here with donatello's CSV parser:"
run_sql "SELECT set_config('request.jwt.claims', json_build_object('sub', :'alice', 'org', :'org')::text, false) IS NOT NULL AS as_alice;
SELECT line_number, fields[11:14] AS action_table_resource, fields[18] AS details
  FROM donatello.csv_rows(donatello.audit_export_csv(action => 'campaign.approve')) ORDER BY 1;"

step "The trail of the whole demo is intact"
run_sql "SELECT intact, records_checked, blocks_checked, first_bad_record, reason FROM donatello.audit_verify();"
