# Step group: tenancy and permissions (issue: foundation).
# Sets ORG, DESIGN, MARKETING, ALICE, BOB, CAROL, DAVE, OTHER_ORG for later steps.

step "A fresh donatello in database \"$PGDATABASE\""
run_sql "DROP EXTENSION IF EXISTS donatello CASCADE;
CREATE EXTENSION donatello;
SELECT donatello.version() AS version, current_setting('shared_preload_libraries') AS preloaded;"

step "An organization with two departments"
ORG=$(sql_value "SELECT donatello.create_organization('Acme Studio', 'acme')")
DESIGN=$(sql_value "SELECT donatello.create_department('$ORG', 'Design')")
MARKETING=$(sql_value "SELECT donatello.create_department('$ORG', 'Marketing')")
run_sql "SELECT name, slug FROM donatello.organizations;
SELECT d.name AS department, o.slug AS organization FROM donatello.departments d JOIN donatello.organizations o ON o.id = d.org_id ORDER BY 1;"

step "Bad input is refused with a precise error"
expect_error DNV01 "SELECT donatello.create_organization('Acme Again', 'Acme Studio');"
expect_error 23505 "SELECT donatello.create_organization('Acme Again', 'acme');"

step "Importing users from CSV: all or nothing, every bad row reported"
run_sql "SELECT jsonb_pretty(donatello.import_users('$ORG', E'email,name,department\nalice@acme.test,Alice,Design\nbob@acme,Bob,Design\ncarol@acme.test,Carol,Sales\nalice@ACME.test,Alice Again,\n'));"
run_sql "SELECT donatello.import_users('$ORG', E'email,name,department\nalice@acme.test,Alice,\nbob@acme.test,Bob,Design\ncarol@acme.test,Carol,Marketing\ndave@acme.test,Dave,Design\n') AS result;
SELECT u.email, u.name, d.name AS department FROM donatello.users u LEFT JOIN donatello.departments d ON d.id = u.department_id ORDER BY 1;"
ALICE=$(sql_value "SELECT id FROM donatello.users WHERE email = 'alice@acme.test'")
BOB=$(sql_value "SELECT id FROM donatello.users WHERE email = 'bob@acme.test'")
CAROL=$(sql_value "SELECT id FROM donatello.users WHERE email = 'carol@acme.test'")
DAVE=$(sql_value "SELECT id FROM donatello.users WHERE email = 'dave@acme.test'")

step "Roles: org-wide, department-scoped, a custom role and a time-bound exception"
run_sql "SELECT donatello.grant_role('$ALICE', 'org_admin');
SELECT donatello.grant_role('$BOB', 'dept_manager', '$DESIGN');
SELECT donatello.grant_role('$CAROL', 'member');
SELECT donatello.create_role('$ORG', 'brand_reviewer', 'viewer', '{generation:approve}');
SELECT donatello.grant_role('$DAVE', 'brand_reviewer');
SELECT donatello.grant_exception('$DAVE', 'generation:create', now() + interval '2 days', 'campaign launch week');
SELECT name, parent, permissions FROM donatello_api.roles WHERE org_id = '$ORG' ORDER BY system DESC, name;"
run_sql "SELECT r.name AS role, p.name AS inherits_from FROM donatello.roles r LEFT JOIN donatello.roles p ON p.id = r.parent_id WHERE r.org_id = '$ORG' ORDER BY r.system DESC, r.name;"

step "Permission checks, computed in C"
run_sql "SELECT u.name, c.permission, d.name AS department,
       donatello.has_permission(u.id, c.permission, d.id) AS allowed
  FROM (VALUES ('alice@acme.test', 'user:manage', NULL),
               ('bob@acme.test',   'budget:manage', 'Design'),
               ('bob@acme.test',   'budget:manage', 'Marketing'),
               ('bob@acme.test',   'budget:manage', NULL),
               ('carol@acme.test', 'generation:create', 'Marketing'),
               ('carol@acme.test', 'budget:manage', NULL),
               ('dave@acme.test',  'generation:approve', NULL),
               ('dave@acme.test',  'generation:create', NULL)) AS c(email, permission, dept)
  JOIN donatello.users u ON u.email = c.email
  LEFT JOIN donatello.departments d ON d.name = c.dept;"
run_sql "SELECT donatello.effective_permissions('$BOB', '$DESIGN') AS bob_in_design,
       donatello.effective_permissions('$BOB', '$MARKETING') AS bob_in_marketing;"

step "require_permission() for the current principal (from request.jwt.claims)"
expect_error DNP01 "SET request.jwt.claims = '{\"sub\": \"$CAROL\", \"org\": \"$ORG\"}';
SELECT donatello.require_permission('budget:manage');"

step "Deactivating a user removes every permission at once"
run_sql "SELECT donatello.has_permission('$CAROL', 'generation:create') AS before;
SELECT donatello.deactivate_user('$CAROL');
SELECT donatello.has_permission('$CAROL', 'generation:create') AS after;"

step "Tenant isolation: a principal of Acme sees nothing of Globex"
OTHER_ORG=$(sql_value "SELECT donatello.create_organization('Globex', 'globex')")
sql_value "SELECT donatello.create_user('$OTHER_ORG', 'hank@globex.test', 'Hank')" >/dev/null
run_sql "SELECT o.slug, count(u.*) AS users FROM donatello.organizations o LEFT JOIN donatello.users u ON u.org_id = o.id GROUP BY 1 ORDER BY 1;"
as_principal "$ALICE" "$ORG" "SELECT email FROM donatello_api.users ORDER BY 1;
SELECT slug FROM donatello_api.organizations;
SELECT count(*) AS globex_rows_visible FROM donatello_api.users WHERE org_id = '$OTHER_ORG';"

step "The shared permission cache"
run_sql "SELECT entries, generation, backend_hits, backend_misses FROM donatello.permission_cache_stats();"
