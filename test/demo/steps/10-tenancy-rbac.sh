# Step group: tenancy and permissions (issue: foundation).
# Remembers ORG, DESIGN, MARKETING, ALICE, BOB, CAROL, DAVE, OTHER_ORG for later
# steps: shell variables ($ALICE) and psql variables (:'alice').

step "A fresh donatello in database \"$PGDATABASE\""
run_sql "DROP EXTENSION IF EXISTS donatello CASCADE;
CREATE EXTENSION donatello;
SELECT donatello.version() AS version, current_setting('shared_preload_libraries') AS preloaded;"

step "An organization with two departments"
remember ORG "$(sql_value "SELECT donatello.create_organization('Acme Studio', 'acme')")"
remember DESIGN "$(sql_value "SELECT donatello.create_department(:'org', 'Design')")"
remember MARKETING "$(sql_value "SELECT donatello.create_department(:'org', 'Marketing')")"
run_sql "SELECT name, slug FROM donatello.organizations;
SELECT d.name AS department, o.slug AS organization FROM donatello.departments d JOIN donatello.organizations o ON o.id = d.org_id ORDER BY 1;"

step "Bad input is refused with a precise error"
expect_error DNV01 "SELECT donatello.create_organization('Acme Again', 'Acme Studio');"
expect_error 23505 "SELECT donatello.create_organization('Acme Again', 'acme');"

step "Importing users from CSV: all or nothing, every bad row reported"
run_sql "SELECT jsonb_pretty(donatello.import_users(:'org', E'email,name,department\nalice@acme.test,Alice,Design\nbob@acme,Bob,Design\ncarol@acme.test,Carol,Sales\nalice@ACME.test,Alice Again,\n'));"
run_sql "SELECT donatello.import_users(:'org', E'email,name,department\nalice@acme.test,Alice,\nbob@acme.test,Bob,Design\ncarol@acme.test,Carol,Marketing\ndave@acme.test,Dave,Design\n') AS result;
SELECT u.email, u.name, d.name AS department FROM donatello.users u LEFT JOIN donatello.departments d ON d.id = u.department_id ORDER BY 1;"
remember ALICE "$(sql_value "SELECT id FROM donatello.users WHERE email = 'alice@acme.test'")"
remember BOB "$(sql_value "SELECT id FROM donatello.users WHERE email = 'bob@acme.test'")"
remember CAROL "$(sql_value "SELECT id FROM donatello.users WHERE email = 'carol@acme.test'")"
remember DAVE "$(sql_value "SELECT id FROM donatello.users WHERE email = 'dave@acme.test'")"

step "Roles: org-wide, department-scoped, a custom role and a time-bound exception"
do_sql "SELECT donatello.grant_role(:'alice', 'org_admin');
SELECT donatello.grant_role(:'bob', 'dept_manager', :'design');
SELECT donatello.grant_role(:'carol', 'member');
SELECT donatello.create_role(:'org', 'brand_reviewer', 'viewer', '{generation:approve}');
SELECT donatello.grant_role(:'dave', 'brand_reviewer');
SELECT donatello.grant_exception(:'dave', 'generation:create', now() + interval '2 days', 'campaign launch week');"
run_sql "SELECT name AS role, parent AS inherits_from, permissions FROM donatello_api.roles WHERE org_id = :'org' ORDER BY system DESC, name;
SELECT u.name AS user, g.role, d.name AS department FROM donatello_api.role_grants g JOIN donatello.users u ON u.id = g.user_id LEFT JOIN donatello.departments d ON d.id = g.department_id WHERE g.org_id = :'org' ORDER BY 1;"

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
run_sql "SELECT donatello.effective_permissions(:'bob', :'design') AS bob_in_design,
       donatello.effective_permissions(:'bob', :'marketing') AS bob_in_marketing;"

step "require_permission() for the current principal (from request.jwt.claims)"
expect_error DNP01 "SELECT set_config('request.jwt.claims', json_build_object('sub', :'carol', 'org', :'org')::text, false) IS NOT NULL AS authenticated;
SELECT donatello.require_permission('budget:manage');"

step "Deactivating a user removes every permission at once"
run_sql "SELECT donatello.has_permission(:'carol', 'generation:create') AS before;"
do_sql "SELECT donatello.deactivate_user(:'carol');"
run_sql "SELECT donatello.has_permission(:'carol', 'generation:create') AS after;"

step "Tenant isolation: a principal of Acme sees nothing of Globex"
remember OTHER_ORG "$(sql_value "SELECT donatello.create_organization('Globex', 'globex')")"
sql_value "SELECT donatello.create_user(:'other_org', 'hank@globex.test', 'Hank')" >/dev/null
run_sql "SELECT o.slug, count(u.*) AS users FROM donatello.organizations o LEFT JOIN donatello.users u ON u.org_id = o.id GROUP BY 1 ORDER BY 1;"
as_principal alice org "SELECT email FROM donatello_api.users ORDER BY 1;
SELECT slug FROM donatello_api.organizations;
SELECT count(*) AS globex_rows_visible FROM donatello_api.users WHERE org_id = :'other_org';"

step "The shared permission cache"
run_sql "SELECT entries, generation, backend_hits, backend_misses FROM donatello.permission_cache_stats();"
