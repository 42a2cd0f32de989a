-- Tenancy: organizations, departments, users.
--
-- Every tenant table carries org_id NOT NULL, references its parents through
-- (org_id, id) so a row can never point into another organization, and has
-- row-level security: a principal sees the rows of its own organization
-- (donatello.current_org_id()); donatello_service sees every row.

CREATE TABLE donatello.organizations (
    id          uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    name        text NOT NULL CHECK (pg_catalog.length(pg_catalog.btrim(name)) BETWEEN 1 AND 200),
    slug        text NOT NULL UNIQUE
                CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' AND pg_catalog.length(slug) BETWEEN 2 AND 63),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE donatello.organizations IS 'tenants; every other tenant table references one through org_id';

CREATE TABLE donatello.departments (
    id          uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES donatello.organizations (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (pg_catalog.length(pg_catalog.btrim(name)) BETWEEN 1 AND 200),
    manager_id  uuid,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (org_id, id)
);
CREATE UNIQUE INDEX departments_org_name_key ON donatello.departments (org_id, pg_catalog.lower(name));
COMMENT ON TABLE donatello.departments IS 'departments of an organization; budgets and scoped role grants attach here';

CREATE TABLE donatello.users (
    id              uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    org_id          uuid NOT NULL REFERENCES donatello.organizations (id) ON DELETE CASCADE,
    email           text NOT NULL,
    name            text NOT NULL CHECK (pg_catalog.length(pg_catalog.btrim(name)) BETWEEN 1 AND 200),
    department_id   uuid,
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    deactivated_at  timestamptz,
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, department_id) REFERENCES donatello.departments (org_id, id)
);
CREATE UNIQUE INDEX users_org_email_key ON donatello.users (org_id, pg_catalog.lower(email));
CREATE INDEX users_department_idx ON donatello.users (department_id) WHERE department_id IS NOT NULL;
COMMENT ON TABLE donatello.users IS 'people of an organization; email unique per organization, case-insensitively';

ALTER TABLE donatello.departments
    ADD FOREIGN KEY (org_id, manager_id) REFERENCES donatello.users (org_id, id);

SELECT pg_catalog.pg_extension_config_dump('donatello.organizations', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.departments', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.users', '');

-- Keep users.updated_at current.
CREATE FUNCTION donatello.touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    NEW.updated_at := pg_catalog.now();
    RETURN NEW;
END
$$;
CREATE TRIGGER users_touch_updated_at BEFORE UPDATE ON donatello.users
    FOR EACH ROW EXECUTE FUNCTION donatello.touch_updated_at();

-- Row-level security: a principal sees its own organization only.
ALTER TABLE donatello.organizations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.organizations
    USING (id = donatello.current_org_id());
CREATE POLICY service_all ON donatello.organizations TO donatello_service USING (true);

ALTER TABLE donatello.departments ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.departments
    USING (org_id = donatello.current_org_id());
CREATE POLICY service_all ON donatello.departments TO donatello_service USING (true);

ALTER TABLE donatello.users ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.users
    USING (org_id = donatello.current_org_id());
CREATE POLICY service_all ON donatello.users TO donatello_service USING (true);

GRANT SELECT ON donatello.organizations, donatello.departments, donatello.users
    TO donatello_user, donatello_service;

-- ---------------------------------------------------------------------------
-- Validation helpers: each raises DNV01 naming the offending value.
-- ---------------------------------------------------------------------------

-- Raise DNV01 unless email looks like a deliverable address (HTML5 rules,
-- at most 254 characters, local part at most 64, dotted domain).
CREATE FUNCTION donatello.check_email(email text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    e text := btrim(email);
BEGIN
    IF e IS NULL OR length(e) > 254
       OR e !~ '^[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$'
       OR length(split_part(e, '@', 1)) > 64 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('invalid email address "%s"', email),
            HINT = 'Use an address of the form name@example.com.';
    END IF;
    RETURN e;
END
$$;
COMMENT ON FUNCTION donatello.check_email(text) IS 'the trimmed address, or DNV01 if it is not a valid email address';

-- Raise DNV01 unless slug is 2-63 lower-case letters, digits and single hyphens.
CREATE FUNCTION donatello.check_slug(slug text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF slug IS NULL OR slug !~ '^[a-z0-9]+(-[a-z0-9]+)*$' OR length(slug) NOT BETWEEN 2 AND 63 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('invalid slug "%s"', slug),
            HINT = 'Use 2 to 63 lower-case letters, digits and single hyphens, such as "acme-studio".';
    END IF;
    RETURN slug;
END
$$;
COMMENT ON FUNCTION donatello.check_slug(text) IS 'the slug, or DNV01 if it is not 2-63 lower-case letters, digits and single hyphens';

-- Raise DNV01 when a display name is empty or longer than 200 characters.
CREATE FUNCTION donatello.check_name(what text, name text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF name IS NULL OR length(btrim(name)) = 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('%s name must not be empty', what);
    END IF;
    IF length(btrim(name)) > 200 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('%s name "%s" is longer than 200 characters', what, left(name, 40) || '...');
    END IF;
    RETURN btrim(name);
END
$$;
COMMENT ON FUNCTION donatello.check_name(text, text) IS 'the trimmed display name, or DNV01 if empty or longer than 200 characters';

-- Raise DNV02 unless the organization exists.
CREATE FUNCTION donatello.check_organization(org_id uuid) RETURNS uuid
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF org_id IS NULL OR NOT EXISTS (SELECT FROM donatello.organizations o WHERE o.id = check_organization.org_id) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV02',
            MESSAGE = format('organization %s does not exist', coalesce(org_id::text, 'NULL'));
    END IF;
    RETURN org_id;
END
$$;
COMMENT ON FUNCTION donatello.check_organization(uuid) IS 'the id, or DNV02 if the organization does not exist';

-- Raise DNV02 unless the department exists in the given organization.
CREATE FUNCTION donatello.check_department(org_id uuid, department_id uuid) RETURNS uuid
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF department_id IS NOT NULL AND NOT EXISTS (
        SELECT FROM donatello.departments d
        WHERE d.id = check_department.department_id AND d.org_id = check_department.org_id) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV02',
            MESSAGE = format('department %s does not exist in organization %s', department_id, org_id);
    END IF;
    RETURN department_id;
END
$$;
COMMENT ON FUNCTION donatello.check_department(uuid, uuid) IS 'the id, or DNV02 unless the department exists in the organization';

-- The organization of a user; raises DNV02 for an unknown user.
CREATE FUNCTION donatello.user_org(user_id uuid) RETURNS uuid
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    result uuid;
BEGIN
    SELECT u.org_id INTO result FROM donatello.users u WHERE u.id = user_org.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV02',
            MESSAGE = format('user %s does not exist', coalesce(user_id::text, 'NULL'));
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION donatello.user_org(uuid) IS 'the organization of a user, or DNV02 for an unknown user';

-- ---------------------------------------------------------------------------
-- SQL API
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.create_organization(name text, slug text) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    new_id uuid;
BEGIN
    INSERT INTO donatello.organizations (name, slug)
    VALUES (donatello.check_name('organization', create_organization.name),
            donatello.check_slug(create_organization.slug))
    RETURNING id INTO new_id;
    PERFORM donatello.seed_organization_roles(new_id);
    RETURN new_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION USING
        ERRCODE = 'unique_violation',
        MESSAGE = format('organization slug "%s" is already taken', slug),
        HINT = 'Choose another slug.';
END
$$;
COMMENT ON FUNCTION donatello.create_organization(text, text) IS
    'create an organization with its system roles; returns its id';

CREATE FUNCTION donatello.create_department(org_id uuid, name text) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    new_id uuid;
    clean_name text := donatello.check_name('department', name);
BEGIN
    PERFORM donatello.check_organization(org_id);
    INSERT INTO donatello.departments (org_id, name)
    VALUES (create_department.org_id, clean_name)
    RETURNING id INTO new_id;
    RETURN new_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION USING
        ERRCODE = 'unique_violation',
        MESSAGE = format('department "%s" already exists in this organization', clean_name);
END
$$;
COMMENT ON FUNCTION donatello.create_department(uuid, text) IS
    'create a department; names are unique per organization, case-insensitively';

CREATE FUNCTION donatello.create_user(org_id uuid, email text, name text, department_id uuid DEFAULT NULL)
    RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    new_id uuid;
    clean_email text := donatello.check_email(email);
BEGIN
    PERFORM donatello.check_organization(org_id);
    PERFORM donatello.check_department(org_id, department_id);
    INSERT INTO donatello.users (org_id, email, name, department_id)
    VALUES (create_user.org_id, clean_email, donatello.check_name('user', name), create_user.department_id)
    RETURNING id INTO new_id;
    RETURN new_id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION USING
        ERRCODE = 'unique_violation',
        MESSAGE = format('a user with email "%s" already exists in this organization', clean_email);
END
$$;
COMMENT ON FUNCTION donatello.create_user(uuid, text, text, uuid) IS
    'create an active user; email unique per organization, case-insensitively';

CREATE FUNCTION donatello.deactivate_user(user_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM donatello.user_org(user_id);
    UPDATE donatello.users u
       SET active = false, deactivated_at = now()
     WHERE u.id = deactivate_user.user_id AND u.active;
END
$$;
COMMENT ON FUNCTION donatello.deactivate_user(uuid) IS
    'deactivate a user: no permissions, no logins; idempotent';

-- Import users from CSV with a header line naming the columns email, name and
-- optionally department (a department name). Validates every row first; if
-- any row is bad nothing is imported and every bad row is reported.
CREATE FUNCTION donatello.import_users(org_id uuid, csv text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_org       uuid := donatello.check_organization(org_id);
    errors      jsonb := '[]';
    header      text[];
    col_email   int;
    col_name    int;
    col_dept    int;
    rec         record;
    col         text;
    i           int;
    v_email     text;
    v_name      text;
    v_dept_name text;
    v_dept      uuid;
    first_line  int;
    seen        jsonb := '{}';
    emails      text[] := '{}';
    names       text[] := '{}';
    depts       uuid[] := '{}';
    reasons     text[];
BEGIN
    IF csv IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'csv must not be null';
    END IF;

    BEGIN
        FOR rec IN SELECT r.line_number, r.fields FROM donatello.csv_rows(csv) r ORDER BY r.line_number LOOP
            -- skip blank lines
            CONTINUE WHEN cardinality(rec.fields) = 1 AND btrim(rec.fields[1]) = '';

            IF header IS NULL THEN
                header := rec.fields;
                FOR i IN 1 .. cardinality(header) LOOP
                    col := lower(btrim(header[i]));
                    IF col = 'email' AND col_email IS NULL THEN col_email := i;
                    ELSIF col = 'name' AND col_name IS NULL THEN col_name := i;
                    ELSIF col = 'department' AND col_dept IS NULL THEN col_dept := i;
                    ELSE
                        errors := errors || jsonb_build_object('line', rec.line_number,
                            'reason', format('unknown or repeated column "%s" (expected email, name, department)', header[i]));
                    END IF;
                END LOOP;
                IF col_email IS NULL THEN
                    errors := errors || jsonb_build_object('line', rec.line_number, 'reason', 'missing column "email"');
                END IF;
                IF col_name IS NULL THEN
                    errors := errors || jsonb_build_object('line', rec.line_number, 'reason', 'missing column "name"');
                END IF;
                CONTINUE;
            END IF;

            reasons := '{}';
            IF cardinality(rec.fields) <> cardinality(header) THEN
                reasons := reasons || format('expected %s fields, found %s', cardinality(header), cardinality(rec.fields));
            ELSIF col_email IS NOT NULL AND col_name IS NOT NULL THEN
                v_email := btrim(rec.fields[col_email]);
                v_name := btrim(rec.fields[col_name]);
                v_dept_name := CASE WHEN col_dept IS NOT NULL THEN nullif(btrim(rec.fields[col_dept]), '') END;
                v_dept := NULL;

                BEGIN
                    PERFORM donatello.check_email(v_email);
                EXCEPTION WHEN SQLSTATE 'DNV01' THEN
                    reasons := reasons || format('invalid email address "%s"', v_email);
                END;
                IF v_name = '' THEN
                    reasons := reasons || 'name is empty'::text;
                ELSIF length(v_name) > 200 THEN
                    reasons := reasons || 'name is longer than 200 characters'::text;
                END IF;

                first_line := (seen ->> lower(v_email))::int;
                IF first_line IS NOT NULL THEN
                    reasons := reasons || format('duplicate email "%s" (first seen on line %s)', v_email, first_line);
                ELSE
                    seen := seen || jsonb_build_object(lower(v_email), rec.line_number);
                    IF EXISTS (SELECT FROM donatello.users u
                               WHERE u.org_id = v_org AND lower(u.email) = lower(v_email)) THEN
                        reasons := reasons || format('a user with email "%s" already exists in this organization', v_email);
                    END IF;
                END IF;

                IF v_dept_name IS NOT NULL THEN
                    SELECT d.id INTO v_dept FROM donatello.departments d
                     WHERE d.org_id = v_org AND lower(d.name) = lower(v_dept_name);
                    IF NOT FOUND THEN
                        reasons := reasons || format('unknown department "%s"', v_dept_name);
                    END IF;
                END IF;
            END IF;

            IF cardinality(reasons) > 0 THEN
                errors := errors || jsonb_build_object('line', rec.line_number,
                                                       'reason', array_to_string(reasons, '; '));
            ELSE
                emails := emails || v_email;
                names := names || v_name;
                depts := depts || v_dept;
            END IF;
        END LOOP;
    EXCEPTION WHEN bad_copy_file_format THEN
        errors := errors || jsonb_build_object('line', (regexp_match(SQLERRM, 'line (\d+)'))[1]::int,
                                               'reason', SQLERRM);
    END;

    IF header IS NULL AND jsonb_array_length(errors) = 0 THEN
        errors := errors || jsonb_build_object('line', 1, 'reason', 'the file is empty; expected a header line "email,name,department"');
    END IF;

    IF jsonb_array_length(errors) > 0 THEN
        RETURN jsonb_build_object('ok', false, 'imported', 0, 'errors', errors);
    END IF;

    INSERT INTO donatello.users (org_id, email, name, department_id)
    SELECT v_org, e, n, d FROM unnest(emails, names, depts) AS t(e, n, d);

    RETURN jsonb_build_object('ok', true, 'imported', cardinality(emails), 'errors', '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION donatello.import_users(uuid, text) IS
    'import users from CSV (header: email,name[,department]); all or nothing, every bad row reported';

GRANT EXECUTE ON FUNCTION
    donatello.create_organization(text, text),
    donatello.create_department(uuid, text),
    donatello.create_user(uuid, text, text, uuid),
    donatello.deactivate_user(uuid),
    donatello.import_users(uuid, text)
    TO donatello_service;
