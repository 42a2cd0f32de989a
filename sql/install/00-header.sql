-- donatello install script, assembled by `make` from sql/install/*.sql in
-- file-name order. Edit the parts, not the assembled donatello--<version>.sql.

\echo Use "CREATE EXTENSION donatello" to load this file. \quit

-- PostgreSQL roles the HTTP layer and applications act as (cluster-wide, so
-- they may already exist from another database; never dropped with the
-- extension). All NOLOGIN: applications grant them to their own login roles.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'donatello_anon') THEN
        CREATE ROLE donatello_anon NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'donatello_user') THEN
        CREATE ROLE donatello_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'donatello_service') THEN
        CREATE ROLE donatello_service NOLOGIN;
    END IF;
END
$roles$;

-- donatello (tables, internal functions) is created by CREATE EXTENSION from
-- the control file; donatello_api holds what the HTTP layer exposes.
CREATE SCHEMA donatello_api;
COMMENT ON SCHEMA donatello_api IS 'donatello: functions and views exposed over HTTP; authorization happens inside';

GRANT USAGE ON SCHEMA donatello TO donatello_anon, donatello_user, donatello_service;
GRANT USAGE ON SCHEMA donatello_api TO donatello_anon, donatello_user, donatello_service;

CREATE FUNCTION donatello.version() RETURNS text
    LANGUAGE c IMMUTABLE PARALLEL SAFE STRICT
    AS 'MODULE_PATHNAME', 'donatello_version';
COMMENT ON FUNCTION donatello.version() IS 'version of the loaded donatello library';
GRANT EXECUTE ON FUNCTION donatello.version() TO donatello_anon, donatello_user, donatello_service;

-- The current principal, read from request.jwt.claims (as PostgREST sets it).
CREATE FUNCTION donatello.current_user_id() RETURNS uuid
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_current_user_id';
COMMENT ON FUNCTION donatello.current_user_id() IS 'the "sub" claim of request.jwt.claims as a uuid, or NULL';

CREATE FUNCTION donatello.current_org_id() RETURNS uuid
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_current_org_id';
COMMENT ON FUNCTION donatello.current_org_id() IS 'the "org" claim of request.jwt.claims as a uuid, or NULL';

GRANT EXECUTE ON FUNCTION donatello.current_user_id(), donatello.current_org_id()
    TO donatello_anon, donatello_user, donatello_service;

-- RFC 4180 CSV split into records, used by import functions.
CREATE FUNCTION donatello.csv_rows(csv text, OUT line_number integer, OUT fields text[])
    RETURNS SETOF record
    LANGUAGE c IMMUTABLE PARALLEL SAFE STRICT
    AS 'MODULE_PATHNAME', 'donatello_csv_rows';
COMMENT ON FUNCTION donatello.csv_rows(text) IS 'RFC 4180 CSV records with the line each starts on';
