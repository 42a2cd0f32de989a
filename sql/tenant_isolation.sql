-- Tenant isolation: a principal of one organization sees nothing of another
-- through donatello_api, whatever it filters on; donatello_service sees all.
\set SHOW_CONTEXT never
SELECT donatello.create_organization('Isolation A', 'iso-a') AS org_a \gset
SELECT donatello.create_organization('Isolation B', 'iso-b') AS org_b \gset
SELECT donatello.create_department(:'org_a', 'A Design') AS dept_a \gset
SELECT donatello.create_department(:'org_b', 'B Design') AS dept_b \gset
SELECT donatello.create_user(:'org_a', 'ann@a.test', 'Ann', :'dept_a') AS ann \gset
SELECT donatello.create_user(:'org_b', 'ben@b.test', 'Ben', :'dept_b') AS ben \gset
SELECT donatello.grant_role(:'ann', 'org_admin');
SELECT donatello.grant_role(:'ben', 'org_admin');
SELECT donatello.create_role(:'org_b', 'b_only_role') IS NOT NULL AS created;

-- act as Ann, through the HTTP layer's role
SET ROLE donatello_user;
SELECT set_config('request.jwt.claims', json_build_object('sub', :'ann', 'org', :'org_a', 'role', 'donatello_user')::text, false) IS NOT NULL AS as_ann;
SELECT name, slug FROM donatello_api.organizations;
SELECT name FROM donatello_api.departments ORDER BY 1;
SELECT email FROM donatello_api.users ORDER BY 1;
SELECT count(*) AS roles_visible, count(*) FILTER (WHERE org_id <> :'org_a') AS foreign_roles FROM donatello_api.roles;
SELECT count(*) AS grants_visible, count(*) FILTER (WHERE org_id <> :'org_a') AS foreign_grants FROM donatello_api.role_grants;

-- asking for B's rows by id, by any column, returns nothing
SELECT count(*) AS b_org FROM donatello_api.organizations WHERE id = :'org_b';
SELECT count(*) AS b_departments FROM donatello_api.departments WHERE org_id = :'org_b' OR id = :'dept_b';
SELECT count(*) AS b_users FROM donatello_api.users WHERE org_id = :'org_b' OR id = :'ben' OR email = 'ben@b.test';
SELECT count(*) AS b_roles FROM donatello_api.roles WHERE name = 'b_only_role';
-- and the same through the tables underneath (row-level security)
SELECT count(*) AS b_users_in_table FROM donatello.users WHERE org_id = :'org_b';
SELECT count(*) AS b_grants_in_table FROM donatello.user_roles WHERE org_id = :'org_b';

-- Ann's own permissions are readable, Ben's are not reachable
SELECT 'user:manage' = ANY (donatello_api.my_permissions()) AS ann_is_admin;
SELECT donatello.has_permission(:'ben', 'user:manage');
SELECT donatello.create_user(:'org_b', 'mallory@b.test', 'Mallory');
INSERT INTO donatello.users (org_id, email, name) VALUES (:'org_b', 'mallory@b.test', 'Mallory');

-- an unauthenticated principal sees nothing at all
RESET request.jwt.claims;
SELECT count(*) AS anonymous_users FROM donatello_api.users;
SELECT donatello_api.my_permissions() AS anonymous_permissions;
RESET ROLE;

SET ROLE donatello_anon;
SELECT count(*) FROM donatello_api.users;
RESET ROLE;

-- a trusted back-end service sees every organization
SET ROLE donatello_service;
SELECT count(DISTINCT org_id) >= 2 AS service_sees_all FROM donatello_api.users WHERE org_id IN (:'org_a', :'org_b');
RESET ROLE;
