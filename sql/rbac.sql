-- RBAC: roles, inheritance, grants (org-wide and department-scoped),
-- exceptions, wildcards, and the rules of has_permission / effective_permissions.
\set SHOW_CONTEXT never
SELECT donatello.create_organization('RBAC Test', 'rbac-test') AS org \gset
SELECT donatello.create_department(:'org', 'Design') AS design \gset
SELECT donatello.create_department(:'org', 'Sales') AS sales \gset
SELECT donatello.create_user(:'org', 'alice@rbac.test', 'Alice') AS alice \gset
SELECT donatello.create_user(:'org', 'bob@rbac.test', 'Bob') AS bob \gset
SELECT donatello.create_user(:'org', 'carol@rbac.test', 'Carol') AS carol \gset
SELECT donatello.create_user(:'org', 'dave@rbac.test', 'Dave') AS dave \gset

-- the system role tree and its permissions
SELECT r.name, p.name AS parent,
       array(SELECT permission FROM donatello.role_permissions rp WHERE rp.role_id = r.id ORDER BY 1) AS permissions
  FROM donatello.roles r LEFT JOIN donatello.roles p ON p.id = r.parent_id
 WHERE r.org_id = :'org' ORDER BY r.name;

-- nobody holds anything before a grant
SELECT donatello.effective_permissions(:'alice') AS alice_before;
SELECT donatello.has_permission(:'alice', 'generation:read') AS alice_reads;

-- inheritance: member gets viewer's permissions
SELECT donatello.grant_role(:'alice', 'member');
SELECT donatello.grant_role(:'alice', 'member');  -- idempotent
SELECT donatello.effective_permissions(:'alice') AS alice_member;
SELECT donatello.has_permission(:'alice', 'generation:read') AS inherited,
       donatello.has_permission(:'alice', 'generation:create') AS direct,
       donatello.has_permission(:'alice', 'budget:manage') AS not_granted;

-- department scope: counts only in that department
SELECT donatello.grant_role(:'bob', 'dept_manager', :'design');
SELECT donatello.has_permission(:'bob', 'budget:manage', :'design') AS in_design,
       donatello.has_permission(:'bob', 'budget:manage', :'sales') AS in_sales,
       donatello.has_permission(:'bob', 'budget:manage') AS without_department;
-- an org-wide grant counts in every department
SELECT donatello.has_permission(:'alice', 'generation:create', :'sales') AS orgwide_in_sales;
SELECT donatello.effective_permissions(:'bob', :'design') AS bob_design,
       donatello.effective_permissions(:'bob', :'sales') AS bob_sales;

-- custom roles with inheritance and wildcards
SELECT donatello.create_role(:'org', 'reviewer', 'viewer', '{generation:approve, generation:reject}') IS NOT NULL AS created;
SELECT donatello.create_role(:'org', 'lead_reviewer', 'reviewer', '{budget:*}') IS NOT NULL AS created;
SELECT donatello.grant_role(:'carol', 'lead_reviewer');
SELECT p, donatello.has_permission(:'carol', p) AS allowed
  FROM unnest(ARRAY['generation:approve', 'generation:read', 'budget:manage', 'budget:read',
                    'budget:*', 'audit:read', '*']) AS p;

-- "*" allows everything; super_admin holds it
SELECT donatello.grant_role(:'dave', 'super_admin');
SELECT donatello.has_permission(:'dave', 'anything:at-all') AS super_admin_any,
       donatello.has_permission(:'dave', '*') AS super_admin_star,
       donatello.has_permission(:'dave', 'platform:admin', :'sales') AS super_admin_in_dept;

-- role creation errors
SELECT donatello.create_role(:'org', 'reviewer');
SELECT donatello.create_role(:'org', 'member');
SELECT donatello.create_role(:'org', 'Bad Name');
SELECT donatello.create_role(:'org', 'orphan', 'no_such_parent');
SELECT donatello.create_role(:'org', 'badperm', NULL, '{generation}');
SELECT donatello.create_role(:'org', 'badperm', NULL, '{Generation:Create}');
SELECT donatello.create_role(:'org', 'badperm', NULL, '{generation:create,*:read}');
SELECT donatello.create_role('00000000-0000-0000-0000-00000000dead', 'x');

-- grant/revoke errors
\set VERBOSITY sqlstate
SELECT donatello.grant_role(:'alice', 'no_such_role');
SELECT donatello.grant_role(:'alice', 'member', '00000000-0000-0000-0000-00000000beef');
\set VERBOSITY default
SELECT donatello.grant_role('00000000-0000-0000-0000-00000000dead', 'member');

-- revoke: only the matching grant goes
SELECT donatello.revoke_role(:'bob', 'dept_manager');  -- no org-wide grant: nothing happens
SELECT donatello.has_permission(:'bob', 'budget:manage', :'design') AS still_in_design;
SELECT donatello.revoke_role(:'bob', 'dept_manager', :'design');
SELECT donatello.has_permission(:'bob', 'budget:manage', :'design') AS after_revoke;

-- exceptions: org-wide, until they expire
SELECT donatello.grant_exception(:'bob', 'model:manage', now() + interval '1 hour', 'migrating models') IS NOT NULL AS granted;
SELECT donatello.has_permission(:'bob', 'model:manage') AS exception_holds,
       donatello.has_permission(:'bob', 'model:manage', :'sales') AS exception_in_dept;
INSERT INTO donatello.permission_exceptions (org_id, user_id, permission, expires_at, reason)
VALUES (:'org', :'bob', 'audit:read', now() - interval '1 second', 'expired already');
SELECT donatello.has_permission(:'bob', 'audit:read') AS expired_exception;
SELECT donatello.effective_permissions(:'bob') AS bob_exceptions_only;
\set VERBOSITY terse
SELECT donatello.grant_exception(:'bob', 'model:manage', now() - interval '1 minute', 'too late');
\set VERBOSITY default
SELECT donatello.grant_exception(:'bob', 'model:manage', now() + interval '1 day', '  ');
SELECT donatello.grant_exception(:'bob', 'not a permission', now() + interval '1 day', 'why');
SELECT donatello.revoke_exception(id) FROM donatello.permission_exceptions WHERE user_id = :'bob' AND permission = 'model:manage';
SELECT donatello.has_permission(:'bob', 'model:manage') AS after_revoke_exception;
SELECT donatello.revoke_exception('00000000-0000-0000-0000-00000000dead');

-- inactive users hold nothing
SELECT donatello.deactivate_user(:'dave');
SELECT donatello.has_permission(:'dave', 'anything:at-all') AS inactive_any,
       donatello.effective_permissions(:'dave') AS inactive_perms;

-- a user never gets permissions in another organization's department
SELECT donatello.create_organization('Elsewhere', 'rbac-elsewhere') AS other \gset
SELECT donatello.create_department(:'other', 'Design') AS other_design \gset
SELECT donatello.has_permission(:'alice', 'generation:create', :'other_design') AS foreign_department,
       donatello.effective_permissions(:'alice', :'other_design') AS foreign_perms;

-- unknown users and departments: no permission; NULL user: no permission
SELECT donatello.has_permission('00000000-0000-0000-0000-00000000dead', 'generation:read') AS unknown_user,
       donatello.has_permission(:'alice', 'generation:read', '00000000-0000-0000-0000-00000000beef') AS unknown_department,
       donatello.has_permission(NULL, 'generation:read') AS null_user;

-- malformed requests are errors, not "no"
SELECT donatello.has_permission(:'alice', 'generation');
SELECT donatello.has_permission(:'alice', NULL);
SELECT donatello.has_permission(:'alice', repeat('a', 70) || ':read');

-- permission strings
SELECT p, donatello.is_valid_permission(p)
  FROM unnest(ARRAY['*', 'a:b', 'generation:create', 'budget:*', 'res-1:act.v2', 'x_y:z',
                    '', ':', 'a:', ':b', 'A:b', 'a:B', '*:read', 'a:*b', 'a:b:c', 'a b:c', '1a:b']) AS p;

-- require_permission for the current principal
SELECT set_config('request.jwt.claims', json_build_object('sub', :'alice', 'org', :'org')::text, false) IS NOT NULL AS as_alice;
SELECT donatello.require_permission('generation:create');
\set VERBOSITY terse
SELECT donatello.require_permission('budget:manage');
\set VERBOSITY default
RESET request.jwt.claims;
SELECT donatello.require_permission('generation:create');
