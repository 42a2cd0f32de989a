-- Organizations, departments, users: the SQL API and its errors.
\set SHOW_CONTEXT never
SELECT donatello.create_organization('Tenancy Test', 'tenancy-test') AS org \gset
SELECT name, slug FROM donatello.organizations WHERE id = :'org';

-- every organization starts with the six system roles
SELECT name, system FROM donatello.roles WHERE org_id = :'org' ORDER BY name;

-- slugs: format and uniqueness
SELECT donatello.create_organization('Bad', 'Tenancy Test');
SELECT donatello.create_organization('Bad', 'a');
SELECT donatello.create_organization('Bad', 'double--hyphen');
SELECT donatello.create_organization('Bad', '-leading');
SELECT donatello.create_organization('Copy', 'tenancy-test');
SELECT donatello.create_organization('', 'empty-name');
SELECT donatello.create_organization(NULL, 'null-name');

-- departments
SELECT donatello.create_department(:'org', 'Design') AS design \gset
SELECT donatello.create_department(:'org', 'design');
SELECT donatello.create_department(:'org', '   ');
SELECT donatello.create_department('00000000-0000-0000-0000-00000000dead', 'Nowhere');

-- users
SELECT donatello.create_user(:'org', 'Alice@Tenancy.test', 'Alice', :'design') AS alice \gset
SELECT email, name, active, department_id = :'design' AS in_design, created_at = updated_at AS untouched
  FROM donatello.users WHERE id = :'alice';
SELECT donatello.create_user(:'org', 'alice@tenancy.TEST', 'Alice Again');
SELECT donatello.create_user(:'org', 'not-an-email', 'X');
SELECT donatello.create_user(:'org', 'a@b', 'X');
SELECT donatello.create_user(:'org', 'a b@example.test', 'X');
SELECT donatello.create_user(:'org', repeat('a', 65) || '@example.test', 'X');
SELECT donatello.create_user(:'org', 'x@example.test', '');
SELECT donatello.create_user('00000000-0000-0000-0000-00000000dead', 'x@example.test', 'X');
-- (errors that name generated ids are shown by SQLSTATE only)
\set VERBOSITY sqlstate
SELECT donatello.create_user(:'org', 'x@example.test', 'X', '00000000-0000-0000-0000-00000000beef');
\set VERBOSITY default

-- a department of another organization cannot be used
SELECT donatello.create_organization('Other', 'tenancy-other') AS other \gset
SELECT donatello.create_department(:'other', 'Design') AS other_design \gset
SELECT count(*) AS other_has_its_own_design FROM donatello.departments WHERE lower(name) = 'design';
\set VERBOSITY sqlstate
SELECT donatello.create_user(:'org', 'bob@tenancy.test', 'Bob', :'other_design') IS NOT NULL AS created;
\set VERBOSITY default
-- the same email in another organization is fine
SELECT donatello.create_user(:'other', 'alice@tenancy.test', 'Alice Elsewhere') IS NOT NULL AS created;

-- deactivation: idempotent, timestamps move, unknown ids refused
SELECT donatello.deactivate_user(:'alice');
SELECT active, deactivated_at IS NOT NULL AS deactivated, updated_at > created_at AS touched
  FROM donatello.users WHERE id = :'alice';
SELECT donatello.deactivate_user(:'alice');
SELECT donatello.deactivate_user('00000000-0000-0000-0000-00000000dead');

-- direct table writes still obey the constraints
\set VERBOSITY sqlstate
INSERT INTO donatello.users (org_id, email, name, department_id)
VALUES (:'org', 'carol@tenancy.test', 'Carol', :'other_design');
\set VERBOSITY default

-- the current principal
SELECT donatello.current_user_id() IS NULL AS no_user, donatello.current_org_id() IS NULL AS no_org;
SET request.jwt.claims = '{"sub": "11111111-2222-3333-4444-555555555555", "org": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "role": "donatello_user"}';
SELECT donatello.current_user_id(), donatello.current_org_id();
SET request.jwt.claims = '{"sub": null}';
SELECT donatello.current_user_id() IS NULL AS null_sub;
SET request.jwt.claims = '{"sub": "alice"}';
SELECT donatello.current_user_id();
SET request.jwt.claims = '[1, 2]';
SELECT donatello.current_org_id();
SET request.jwt.claims = 'not json';
SELECT donatello.current_org_id();
RESET request.jwt.claims;
SELECT donatello.current_user_id() IS NULL AS reset_clears;
