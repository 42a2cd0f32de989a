-- A second, independent implementation of donatello.has_permission in plain
-- SQL (recursive CTE), written from the rules in docs/rbac.md. The comparison
-- test (test/pgtap/rbac_reference.sql) and the benchmark (bench/permission)
-- check the C engine against it.
CREATE SCHEMA IF NOT EXISTS rbac_reference;

CREATE OR REPLACE FUNCTION rbac_reference.has_permission(p_user uuid, p_permission text,
                                                         p_department uuid DEFAULT NULL)
    RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
WITH RECURSIVE
    principal AS (
        SELECT u.id, u.org_id FROM donatello.users u WHERE u.id = p_user AND u.active),
    department_in_org AS (
        SELECT p_department IS NULL
            OR EXISTS (SELECT FROM donatello.departments d JOIN principal p ON d.org_id = p.org_id
                        WHERE d.id = p_department) AS ok),
    granted AS (
        SELECT ur.role_id FROM donatello.user_roles ur JOIN principal p
            ON ur.user_id = p.id AND ur.org_id = p.org_id
         WHERE ur.department_id IS NULL OR ur.department_id = p_department),
    ancestry (role_id) AS (
        SELECT role_id FROM granted
        UNION
        SELECT r.parent_id FROM donatello.roles r JOIN ancestry a ON r.id = a.role_id
         WHERE r.parent_id IS NOT NULL),
    held AS (
        SELECT rp.permission FROM donatello.role_permissions rp JOIN ancestry a ON rp.role_id = a.role_id
        UNION ALL
        SELECT e.permission FROM donatello.permission_exceptions e JOIN principal p
            ON e.user_id = p.id AND e.org_id = p.org_id
         WHERE e.expires_at > now())
SELECT EXISTS (SELECT FROM principal)
   AND (SELECT ok FROM department_in_org)
   AND EXISTS (
        SELECT FROM held h
         WHERE h.permission = '*'
            OR h.permission = p_permission
            OR (h.permission LIKE '%:*'
                AND split_part(h.permission, ':', 1) = split_part(p_permission, ':', 1)
                AND p_permission LIKE '%:%'))
$$;

-- Generate a random organization for the comparison test and the benchmark:
-- departments, custom roles in inheritance chains of p_depth roles hanging
-- under system roles, permissions drawn from a pool of p_permissions strings
-- (with some resource wildcards and a rare "*"), users (10% inactive) with
-- 1-3 grants each (half of them department-scoped), and exceptions, half of
-- them already expired. Deterministic for a given seed.
CREATE OR REPLACE FUNCTION rbac_reference.generate_org(p_slug text, p_users int, p_roles int,
                                                       p_permissions int, p_departments int,
                                                       p_depth int, p_seed float8)
    RETURNS uuid
    LANGUAGE plpgsql
    AS $$
DECLARE
    org uuid;
    depts uuid[] := '{}';
    pool text[];
    parent_name text;
    perms text[];
    i int;
BEGIN
    PERFORM setseed(p_seed);
    org := donatello.create_organization('Generated ' || p_slug, p_slug);
    SELECT array_agg(format('res%s:act%s', n % 25, n) ORDER BY n) INTO pool
      FROM generate_series(1, p_permissions) n;
    FOR i IN 1 .. p_departments LOOP
        depts := depts || donatello.create_department(org, 'department ' || i);
    END LOOP;

    FOR i IN 1 .. p_roles LOOP
        IF (i - 1) % p_depth = 0 THEN
            parent_name := (ARRAY['viewer', 'member', 'auditor', 'dept_manager', NULL])[1 + floor(random() * 5)::int];
        ELSE
            parent_name := 'gen_role_' || (i - 1);
        END IF;
        perms := ARRAY(SELECT pool[1 + floor(random() * p_permissions)::int]
                         FROM generate_series(1, 1 + floor(random() * 10)::int));
        IF random() < 0.08 THEN
            perms := perms || format('res%s:*', floor(random() * 25)::int);
        END IF;
        IF random() < 0.01 THEN
            perms := perms || '*'::text;
        END IF;
        PERFORM donatello.create_role(org, 'gen_role_' || i, parent_name, perms);
    END LOOP;

    INSERT INTO donatello.users (org_id, email, name, department_id, active)
    SELECT org, format('user%s@%s.test', n, p_slug), 'User ' || n,
           depts[1 + floor(random() * p_departments)::int], random() >= 0.1
      FROM generate_series(1, p_users) n;

    INSERT INTO donatello.user_roles (org_id, user_id, role_id, department_id)
    SELECT org, u.id, r.id, CASE WHEN random() < 0.5 THEN NULL
                                 ELSE depts[1 + floor(random() * p_departments)::int] END
      FROM donatello.users u
     CROSS JOIN LATERAL generate_series(1, 1 + floor(random() * 3)::int) g
     CROSS JOIN LATERAL (SELECT r.id FROM donatello.roles r
                          WHERE r.org_id = org AND r.name <> 'super_admin'
                          ORDER BY random() + g * 0 + (u.id IS NULL)::int LIMIT 1) r
     WHERE u.org_id = org
    ON CONFLICT ON CONSTRAINT user_roles_grant_key DO NOTHING;

    -- a few super admins
    INSERT INTO donatello.user_roles (org_id, user_id, role_id)
    SELECT org, u.id, (SELECT id FROM donatello.roles WHERE org_id = org AND name = 'super_admin')
      FROM donatello.users u WHERE u.org_id = org AND random() < 0.01
    ON CONFLICT ON CONSTRAINT user_roles_grant_key DO NOTHING;

    INSERT INTO donatello.permission_exceptions (org_id, user_id, permission, expires_at, reason)
    SELECT org, x.id,
           CASE WHEN x.wild < 0.1 THEN format('res%s:*', floor(x.wild * 250)::int)
                ELSE pool[1 + floor(x.pick * p_permissions)::int] END,
           now() + (x.expiry - 0.5) * interval '20 days', 'generated'
      FROM (SELECT u.id, random() AS keep, random() AS wild, random() AS pick, random() AS expiry
              FROM donatello.users u CROSS JOIN generate_series(1, 2) g
             WHERE u.org_id = org) x
     WHERE x.keep < 0.2;
    RETURN org;
END
$$;

-- Random (user, permission, department) triples over the given organizations:
-- mostly their users, permissions from the pool, departments of the user's
-- organization; some unknown users, wildcard and foreign requests, and
-- departments of another organization.
CREATE OR REPLACE FUNCTION rbac_reference.random_triples(p_orgs uuid[], p_count int, p_permissions int)
    RETURNS TABLE (user_id uuid, permission text, department_id uuid)
    LANGUAGE sql VOLATILE
    AS $$
    WITH u AS (SELECT array_agg(id) AS ids FROM donatello.users WHERE org_id = ANY (p_orgs)),
         d AS (SELECT array_agg(id) AS ids FROM donatello.departments WHERE org_id = ANY (p_orgs))
    SELECT CASE WHEN random() < 0.03 THEN gen_random_uuid()
                ELSE u.ids[1 + floor(random() * cardinality(u.ids))::int] END,
           CASE WHEN r < 0.90 THEN format('res%s:act%s', n % 25, n)
                WHEN r < 0.95 THEN format('res%s:*', floor(random() * 25)::int)
                WHEN r < 0.97 THEN '*'
                ELSE (ARRAY['generation:create', 'budget:manage', 'audit:read', 'platform:admin'])[1 + floor(random() * 4)::int] END,
           CASE WHEN random() < 0.3 THEN NULL
                ELSE d.ids[1 + floor(random() * cardinality(d.ids))::int] END
      FROM u, d, generate_series(1, p_count) g,
           LATERAL (SELECT random() AS r, 1 + floor(random() * p_permissions)::int AS n, g) x
$$;
