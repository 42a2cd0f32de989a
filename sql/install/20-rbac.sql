-- RBAC: roles with single-parent inheritance, permissions, grants (org-wide or
-- department-scoped) and time-bound exceptions. The rules are in docs/rbac.md;
-- the engine (has_permission and friends) is C, in src/rbac/.
--
-- System roles are a template (donatello.system_roles, shared by all
-- organizations, never locked or written per request); create_organization
-- copies them into donatello.roles so that every role, grant and permission
-- row belongs to exactly one organization.

-- true when p is a permission string: "resource:action", "resource:*" or "*"
CREATE FUNCTION donatello.is_valid_permission(p text) RETURNS boolean
    LANGUAGE c IMMUTABLE PARALLEL SAFE STRICT
    AS 'MODULE_PATHNAME', 'donatello_is_valid_permission';
COMMENT ON FUNCTION donatello.is_valid_permission(text) IS
    'true for "resource:action", "resource:*" and "*" (lower-case, at most 64 characters)';
GRANT EXECUTE ON FUNCTION donatello.is_valid_permission(text)
    TO donatello_anon, donatello_user, donatello_service;

CREATE TABLE donatello.system_roles (
    name         text PRIMARY KEY,
    parent       text REFERENCES donatello.system_roles (name),
    description  text NOT NULL,
    permissions  text[] NOT NULL
);
COMMENT ON TABLE donatello.system_roles IS
    'template of the roles every organization starts with (copied by create_organization)';

INSERT INTO donatello.system_roles (name, parent, description, permissions) VALUES
    ('viewer', NULL, 'sees generations, models and budgets',
        '{generation:read,model:read,budget:read}'),
    ('member', 'viewer', 'generates images and manages own API keys',
        '{generation:create,apikey:manage}'),
    ('auditor', 'viewer', 'reads the audit trail',
        '{audit:read}'),
    ('dept_manager', 'member', 'manages a department: its budget, people and audit trail',
        '{budget:manage,user:read,audit:read,generation:manage}'),
    ('org_admin', 'dept_manager', 'administers the organization',
        '{user:manage,role:manage,apikey:manage,webhook:manage,org:manage,budget:*,model:manage}'),
    ('super_admin', 'org_admin', 'everything, including platform administration',
        '{*,platform:admin}');

CREATE TABLE donatello.roles (
    id           uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    org_id       uuid NOT NULL REFERENCES donatello.organizations (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    parent_id    uuid,
    system       boolean NOT NULL DEFAULT false,
    description  text,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (org_id, id),
    UNIQUE (org_id, name),
    FOREIGN KEY (org_id, parent_id) REFERENCES donatello.roles (org_id, id),
    CHECK (parent_id IS DISTINCT FROM id)
);
COMMENT ON TABLE donatello.roles IS 'roles of an organization; a role inherits every permission of its parent';

CREATE TABLE donatello.role_permissions (
    org_id      uuid NOT NULL,
    role_id     uuid NOT NULL,
    permission  text NOT NULL CHECK (donatello.is_valid_permission(permission)),
    PRIMARY KEY (role_id, permission),
    FOREIGN KEY (org_id, role_id) REFERENCES donatello.roles (org_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE donatello.role_permissions IS 'permissions a role grants directly (not counting its parent)';

CREATE TABLE donatello.user_roles (
    id             uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    org_id         uuid NOT NULL,
    user_id        uuid NOT NULL,
    role_id        uuid NOT NULL,
    department_id  uuid,
    granted_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    granted_by     uuid,
    CONSTRAINT user_roles_grant_key UNIQUE NULLS NOT DISTINCT (org_id, user_id, role_id, department_id),
    FOREIGN KEY (org_id, user_id) REFERENCES donatello.users (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, role_id) REFERENCES donatello.roles (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, department_id) REFERENCES donatello.departments (org_id, id) ON DELETE CASCADE
);
CREATE INDEX user_roles_user_idx ON donatello.user_roles (user_id);
CREATE INDEX user_roles_role_idx ON donatello.user_roles (role_id);
COMMENT ON TABLE donatello.user_roles IS
    'role grants: org-wide when department_id is NULL, else valid only for that department';

CREATE TABLE donatello.permission_exceptions (
    id          uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    org_id      uuid NOT NULL,
    user_id     uuid NOT NULL,
    permission  text NOT NULL CHECK (donatello.is_valid_permission(permission)),
    expires_at  timestamptz NOT NULL,
    reason      text NOT NULL CHECK (pg_catalog.length(pg_catalog.btrim(reason)) > 0),
    granted_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    FOREIGN KEY (org_id, user_id) REFERENCES donatello.users (org_id, id) ON DELETE CASCADE
);
CREATE INDEX permission_exceptions_user_idx ON donatello.permission_exceptions (user_id, expires_at);
COMMENT ON TABLE donatello.permission_exceptions IS
    'a permission granted to one user, organization-wide, until expires_at';

SELECT pg_catalog.pg_extension_config_dump('donatello.roles', 'WHERE NOT system');
SELECT pg_catalog.pg_extension_config_dump('donatello.role_permissions',
    'WHERE role_id IN (SELECT id FROM donatello.roles WHERE NOT system)');
SELECT pg_catalog.pg_extension_config_dump('donatello.user_roles', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.permission_exceptions', '');

ALTER TABLE donatello.roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.roles USING (org_id = donatello.current_org_id());
CREATE POLICY service_all ON donatello.roles TO donatello_service USING (true);
ALTER TABLE donatello.role_permissions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.role_permissions USING (org_id = donatello.current_org_id());
CREATE POLICY service_all ON donatello.role_permissions TO donatello_service USING (true);
ALTER TABLE donatello.user_roles ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.user_roles USING (org_id = donatello.current_org_id());
CREATE POLICY service_all ON donatello.user_roles TO donatello_service USING (true);
ALTER TABLE donatello.permission_exceptions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.permission_exceptions USING (org_id = donatello.current_org_id());
CREATE POLICY service_all ON donatello.permission_exceptions TO donatello_service USING (true);

GRANT SELECT ON donatello.system_roles TO donatello_anon, donatello_user, donatello_service;
GRANT SELECT ON donatello.roles, donatello.role_permissions, donatello.user_roles,
                donatello.permission_exceptions
    TO donatello_user, donatello_service;

-- ---------------------------------------------------------------------------
-- Permission cache invalidation: any change to what the engine reads marks
-- the transaction (its own later checks bypass the cache) and, at commit,
-- invalidates the shared cache. Inserting a user or a department only
-- invalidates the remembered unknown ids (argument 'insert').
-- ---------------------------------------------------------------------------
CREATE FUNCTION donatello.rbac_invalidate() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'donatello_rbac_invalidate';
COMMENT ON FUNCTION donatello.rbac_invalidate() IS
    'statement trigger: invalidates the shared permission cache when RBAC data changes';

CREATE TRIGGER rbac_invalidate AFTER UPDATE OF id, org_id, active OR DELETE OR TRUNCATE
    ON donatello.users FOR EACH STATEMENT EXECUTE FUNCTION donatello.rbac_invalidate();
CREATE TRIGGER rbac_invalidate AFTER UPDATE OF id, org_id OR DELETE OR TRUNCATE
    ON donatello.departments FOR EACH STATEMENT EXECUTE FUNCTION donatello.rbac_invalidate();
CREATE TRIGGER rbac_invalidate_insert AFTER INSERT
    ON donatello.users FOR EACH STATEMENT EXECUTE FUNCTION donatello.rbac_invalidate('insert');
CREATE TRIGGER rbac_invalidate_insert AFTER INSERT
    ON donatello.departments FOR EACH STATEMENT EXECUTE FUNCTION donatello.rbac_invalidate('insert');
CREATE TRIGGER rbac_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON donatello.roles FOR EACH STATEMENT EXECUTE FUNCTION donatello.rbac_invalidate();
CREATE TRIGGER rbac_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON donatello.role_permissions FOR EACH STATEMENT EXECUTE FUNCTION donatello.rbac_invalidate();
CREATE TRIGGER rbac_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON donatello.user_roles FOR EACH STATEMENT EXECUTE FUNCTION donatello.rbac_invalidate();
CREATE TRIGGER rbac_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON donatello.permission_exceptions FOR EACH STATEMENT EXECUTE FUNCTION donatello.rbac_invalidate();

-- ---------------------------------------------------------------------------
-- Validation helpers
-- ---------------------------------------------------------------------------

-- Raise DNV01 unless p is a permission string; returns it unchanged.
CREATE FUNCTION donatello.check_permission(p text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF p IS NULL OR NOT donatello.is_valid_permission(p) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('invalid permission "%s"', p),
            HINT = 'A permission is "resource:action", "resource:*" or "*", lower-case, at most 64 characters, such as "generation:create".';
    END IF;
    RETURN p;
END
$$;
COMMENT ON FUNCTION donatello.check_permission(text) IS 'the permission, or DNV01 if it is not a valid permission string';

-- The id of the role called role_name in the organization; DNV02 if none.
CREATE FUNCTION donatello.role_id(org_id uuid, role_name text) RETURNS uuid
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    result uuid;
BEGIN
    SELECT r.id INTO result FROM donatello.roles r
     WHERE r.org_id = role_id.org_id AND r.name = role_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV02',
            MESSAGE = format('role "%s" does not exist in this organization', role_name),
            HINT = 'System roles are super_admin, org_admin, dept_manager, auditor, member and viewer; others are created with donatello.create_role().';
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION donatello.role_id(uuid, text) IS 'the id of a role of the organization by name, or DNV02';

-- Copy the system role template into a new organization.
CREATE FUNCTION donatello.seed_organization_roles(org_id uuid) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t record;
BEGIN
    FOR t IN
        WITH RECURSIVE tree AS (
            SELECT s.name, s.parent, s.description, s.permissions, 0 AS depth
              FROM donatello.system_roles s WHERE s.parent IS NULL
            UNION ALL
            SELECT s.name, s.parent, s.description, s.permissions, tree.depth + 1
              FROM donatello.system_roles s JOIN tree ON s.parent = tree.name)
        SELECT * FROM tree ORDER BY depth, name
    LOOP
        INSERT INTO donatello.roles (org_id, name, parent_id, system, description)
        VALUES (seed_organization_roles.org_id, t.name,
                (SELECT r.id FROM donatello.roles r
                  WHERE r.org_id = seed_organization_roles.org_id AND r.name = t.parent),
                true, t.description);
    END LOOP;
    INSERT INTO donatello.role_permissions (org_id, role_id, permission)
    SELECT r.org_id, r.id, p
      FROM donatello.roles r
      JOIN donatello.system_roles s ON s.name = r.name
     CROSS JOIN LATERAL unnest(s.permissions) AS p
     WHERE r.org_id = seed_organization_roles.org_id AND r.system;
END
$$;
COMMENT ON FUNCTION donatello.seed_organization_roles(uuid) IS 'copy the system role template into an organization (used by create_organization)';

-- ---------------------------------------------------------------------------
-- SQL API
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.create_role(org_id uuid, name text, parent text DEFAULT NULL,
                                      permissions text[] DEFAULT '{}')
    RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    new_id uuid;
    parent_role uuid;
BEGIN
    PERFORM donatello.check_organization(org_id);
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('invalid role name "%s"', name),
            HINT = 'Use a lower-case letter followed by up to 62 lower-case letters, digits or underscores.';
    END IF;
    IF parent IS NOT NULL THEN
        parent_role := donatello.role_id(org_id, parent);
    END IF;
    PERFORM donatello.check_permission(p) FROM unnest(coalesce(permissions, '{}')) AS p;

    BEGIN
        INSERT INTO donatello.roles (org_id, name, parent_id)
        VALUES (create_role.org_id, create_role.name, parent_role)
        RETURNING id INTO new_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION USING
            ERRCODE = 'unique_violation',
            MESSAGE = format('role "%s" already exists in this organization', name);
    END;
    INSERT INTO donatello.role_permissions (org_id, role_id, permission)
    SELECT DISTINCT create_role.org_id, new_id, p FROM unnest(coalesce(permissions, '{}')) AS p;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION donatello.create_role(uuid, text, text, text[]) IS
    'create a role in an organization, optionally inheriting from a parent role; returns its id';

CREATE FUNCTION donatello.grant_role(user_id uuid, role text, department_id uuid DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_org uuid := donatello.user_org(user_id);
BEGIN
    PERFORM donatello.check_department(v_org, department_id);
    INSERT INTO donatello.user_roles (org_id, user_id, role_id, department_id, granted_by)
    VALUES (v_org, grant_role.user_id, donatello.role_id(v_org, role), grant_role.department_id,
            donatello.current_user_id())
    ON CONFLICT ON CONSTRAINT user_roles_grant_key DO NOTHING;
END
$$;
COMMENT ON FUNCTION donatello.grant_role(uuid, text, uuid) IS
    'grant a role to a user, org-wide or for one department; idempotent';

CREATE FUNCTION donatello.revoke_role(user_id uuid, role text, department_id uuid DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_org uuid := donatello.user_org(user_id);
    v_role uuid := donatello.role_id(v_org, role);
BEGIN
    DELETE FROM donatello.user_roles ur
     WHERE ur.org_id = v_org AND ur.user_id = revoke_role.user_id AND ur.role_id = v_role
       AND ur.department_id IS NOT DISTINCT FROM revoke_role.department_id;
END
$$;
COMMENT ON FUNCTION donatello.revoke_role(uuid, text, uuid) IS
    'revoke a role grant (the org-wide one, or the one for the given department); idempotent';

CREATE FUNCTION donatello.grant_exception(user_id uuid, permission text, expires_at timestamptz, reason text)
    RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_org uuid := donatello.user_org(user_id);
    new_id uuid;
BEGIN
    PERFORM donatello.check_permission(permission);
    IF expires_at IS NULL OR expires_at <= now() THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = 'an exception must expire in the future',
            DETAIL = format('expires_at is %s.', coalesce(expires_at::text, 'NULL')),
            HINT = 'Pass a time after now(), such as now() + interval ''7 days''.';
    END IF;
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = 'an exception needs a reason',
            HINT = 'Say why the user needs this permission, for the audit trail.';
    END IF;
    INSERT INTO donatello.permission_exceptions (org_id, user_id, permission, expires_at, reason, granted_by)
    VALUES (v_org, grant_exception.user_id, permission, expires_at, btrim(reason), donatello.current_user_id())
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION donatello.grant_exception(uuid, text, timestamptz, text) IS
    'grant one permission to one user, organization-wide, until expires_at; returns the exception id';

CREATE FUNCTION donatello.revoke_exception(exception_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    DELETE FROM donatello.permission_exceptions e WHERE e.id = exception_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV02',
            MESSAGE = format('permission exception %s does not exist', exception_id);
    END IF;
END
$$;
COMMENT ON FUNCTION donatello.revoke_exception(uuid) IS 'end a permission exception before it expires';

-- The engine, in C (src/rbac/).
CREATE FUNCTION donatello.has_permission(user_id uuid, permission text, department_id uuid DEFAULT NULL)
    RETURNS boolean
    LANGUAGE c STABLE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_has_permission';
COMMENT ON FUNCTION donatello.has_permission(uuid, text, uuid) IS
    'true when the user holds the permission (in the department, if given); rules in docs/rbac.md';

CREATE FUNCTION donatello.effective_permissions(user_id uuid, department_id uuid DEFAULT NULL)
    RETURNS text[]
    LANGUAGE c STABLE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_effective_permissions';
COMMENT ON FUNCTION donatello.effective_permissions(uuid, uuid) IS
    'sorted permission patterns the user holds (in the department, if given)';

CREATE FUNCTION donatello.require_permission(permission text, department_id uuid DEFAULT NULL)
    RETURNS void
    LANGUAGE c STABLE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_require_permission';
COMMENT ON FUNCTION donatello.require_permission(text, uuid) IS
    'raise DNP01 unless the current principal holds the permission';

CREATE FUNCTION donatello.permission_cache_stats(
        OUT entries bigint, OUT capacity bigint, OUT bytes_used bigint, OUT bytes_total bigint,
        OUT generation bigint, OUT evictions bigint,
        OUT backend_hits bigint, OUT backend_misses bigint, OUT backend_bypasses bigint)
    RETURNS record
    LANGUAGE c VOLATILE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_permission_cache_stats';
COMMENT ON FUNCTION donatello.permission_cache_stats() IS
    'size of the shared permission cache, and this backend''s hits, misses and bypasses';

CREATE FUNCTION donatello.permission_cache_reset() RETURNS void
    LANGUAGE c VOLATILE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_permission_cache_reset';
COMMENT ON FUNCTION donatello.permission_cache_reset() IS
    'drop every entry of the shared permission cache (they are rebuilt on demand)';

GRANT EXECUTE ON FUNCTION
    donatello.create_role(uuid, text, text, text[]),
    donatello.grant_role(uuid, text, uuid),
    donatello.revoke_role(uuid, text, uuid),
    donatello.grant_exception(uuid, text, timestamptz, text),
    donatello.revoke_exception(uuid),
    donatello.has_permission(uuid, text, uuid),
    donatello.effective_permissions(uuid, uuid),
    donatello.permission_cache_stats()
    TO donatello_service;
GRANT EXECUTE ON FUNCTION donatello.require_permission(text, uuid)
    TO donatello_anon, donatello_user, donatello_service;
