-- donatello_api: what the HTTP layer exposes. Views run with the caller's
-- rights (security_invoker), so row-level security on the tables below keeps
-- every principal inside its own organization.

CREATE VIEW donatello_api.organizations WITH (security_invoker = true) AS
    SELECT o.id, o.name, o.slug, o.created_at
      FROM donatello.organizations o;

CREATE VIEW donatello_api.departments WITH (security_invoker = true) AS
    SELECT d.id, d.org_id, d.name, d.manager_id, d.created_at
      FROM donatello.departments d;

CREATE VIEW donatello_api.users WITH (security_invoker = true) AS
    SELECT u.id, u.org_id, u.email, u.name, u.department_id, u.active, u.created_at, u.updated_at
      FROM donatello.users u;

CREATE VIEW donatello_api.roles WITH (security_invoker = true) AS
    SELECT r.id, r.org_id, r.name, p.name AS parent, r.system, r.description,
           ARRAY(SELECT rp.permission FROM donatello.role_permissions rp
                  WHERE rp.role_id = r.id ORDER BY rp.permission) AS permissions
      FROM donatello.roles r
      LEFT JOIN donatello.roles p ON p.id = r.parent_id;

CREATE VIEW donatello_api.role_grants WITH (security_invoker = true) AS
    SELECT ur.id, ur.org_id, ur.user_id, r.name AS role, ur.department_id, ur.granted_at, ur.granted_by
      FROM donatello.user_roles ur
      JOIN donatello.roles r ON r.id = ur.role_id;

COMMENT ON VIEW donatello_api.organizations IS 'the current principal''s organization';
COMMENT ON VIEW donatello_api.departments IS 'departments of the current principal''s organization';
COMMENT ON VIEW donatello_api.users IS 'users of the current principal''s organization';
COMMENT ON VIEW donatello_api.roles IS 'roles of the current principal''s organization, with direct permissions';
COMMENT ON VIEW donatello_api.role_grants IS 'role grants in the current principal''s organization';

GRANT SELECT ON donatello_api.organizations, donatello_api.departments, donatello_api.users,
                donatello_api.roles, donatello_api.role_grants
    TO donatello_user, donatello_service;

-- The current principal's effective permissions (in a department, if given).
CREATE FUNCTION donatello_api.my_permissions(department_id uuid DEFAULT NULL) RETURNS text[]
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN donatello.current_user_id() IS NULL THEN '{}'::text[]
                ELSE donatello.effective_permissions(donatello.current_user_id(), department_id) END
$$;
COMMENT ON FUNCTION donatello_api.my_permissions(uuid) IS
    'the current principal''s effective permissions, sorted';
GRANT EXECUTE ON FUNCTION donatello_api.my_permissions(uuid) TO donatello_user, donatello_service;
