-- Audit trail: who did what, when, from where; append-only and tamper-evident.
-- The rules are in docs/audit.md; the logic is C, in src/audit/.
--
-- Writing: donatello.audit_trigger() (a C row trigger attached by
-- enable_audit) and donatello.audit_event() write one row of
-- donatello.audit_log each, with a SHA-256 content hash computed at insert;
-- writers never share a lock. Sealing: the maintenance worker puts committed
-- records, in the order their transactions finished, into hash-chained
-- blocks per organization (donatello.audit_blocks). audit_verify recomputes
-- both.

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

-- org_id is the all-zero uuid for records that belong to no organization
-- (changes to platform tables, purge records without an organization).
-- Record ids only identify records (the block chain fixes their order): each
-- backend takes them 32 at a time, so ids of concurrent writers interleave.
CREATE SEQUENCE donatello.audit_log_id_seq CACHE 32;
CREATE TABLE donatello.audit_log (
    id             bigint NOT NULL DEFAULT pg_catalog.nextval('donatello.audit_log_id_seq'),
    logged_at      timestamptz NOT NULL,
    org_id         uuid NOT NULL,
    department_id  uuid,
    user_id        uuid,
    api_key_id     uuid,
    db_role        text NOT NULL,
    request_id     text,
    client_ip      text,
    user_agent     text,
    action         text NOT NULL,
    table_name     text,
    resource_type  text,
    resource_id    text,
    txid           bigint NOT NULL,
    old_data       jsonb,
    new_data       jsonb,
    details        jsonb,
    record_hash    bytea NOT NULL
) PARTITION BY RANGE (logged_at);
ALTER SEQUENCE donatello.audit_log_id_seq OWNED BY donatello.audit_log.id;
COMMENT ON TABLE donatello.audit_log IS
    'the audit trail: one row per audited change or event; append-only; partitioned by month';

-- Sealing finds new records by transaction id, readers by time. Both grow
-- with the table's physical order, so BRIN indexes serve them at almost no
-- cost to writers (a B-tree would add a page write to every record); a
-- reader's organization is a filter within the time range.
CREATE INDEX audit_log_txid_idx ON donatello.audit_log USING brin (txid) WITH (pages_per_range = 16);
CREATE INDEX audit_log_time_idx ON donatello.audit_log USING brin (logged_at) WITH (pages_per_range = 16);

-- Records whose time falls in no monthly partition (the worker creates the
-- partitions ahead; this one only catches what it could not foresee).
CREATE TABLE donatello.audit_log_default PARTITION OF donatello.audit_log DEFAULT;

-- Hash-chained blocks, one chain per organization:
-- block_hash = SHA-256(org_id, block_no, prev_hash, record hashes in order).
CREATE TABLE donatello.audit_blocks (
    org_id          uuid NOT NULL,
    block_no        bigint NOT NULL,
    prev_hash       bytea NOT NULL,
    block_hash      bytea NOT NULL,
    record_ids      bigint[] NOT NULL,
    first_logged_at timestamptz NOT NULL,
    last_logged_at  timestamptz NOT NULL,
    sealed_at       timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    PRIMARY KEY (org_id, block_no)
);
COMMENT ON TABLE donatello.audit_blocks IS
    'sealed blocks of the audit trail, a hash chain per organization; append-only';

-- Where sealing stands: every record of a transaction older than low_txid is
-- sealed (or never committed); transactions at or above it that are already
-- sealed are listed in audit_sealed_xacts.
CREATE TABLE donatello.audit_seal_state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    low_txid   bigint NOT NULL
);
INSERT INTO donatello.audit_seal_state (low_txid) VALUES (0);
COMMENT ON TABLE donatello.audit_seal_state IS
    'sealing watermark: every audit record of a transaction older than low_txid is sealed';

CREATE TABLE donatello.audit_sealed_xacts (
    txid  bigint PRIMARY KEY
);
COMMENT ON TABLE donatello.audit_sealed_xacts IS
    'transactions at or above the sealing watermark whose records are already sealed';

-- One row per partition dropped by audit_purge.
CREATE TABLE donatello.audit_purges (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partition_name  text NOT NULL,
    purged_before   timestamptz NOT NULL,
    records         bigint NOT NULL,
    purged_at       timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
COMMENT ON TABLE donatello.audit_purges IS
    'partitions of the audit trail dropped by audit_purge (retention), with the records they held';

SELECT pg_catalog.pg_extension_config_dump('donatello.audit_blocks', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.audit_seal_state', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.audit_sealed_xacts', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.audit_purges', '');

-- Nobody reads the tables directly but the owner: principals go through
-- donatello_api.audit_events, which applies the rules of audit:read.
ALTER TABLE donatello.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE donatello.audit_blocks ENABLE ROW LEVEL SECURITY;

-- ---------------------------------------------------------------------------
-- Append-only guard: a C trigger refuses UPDATE, DELETE and TRUNCATE (and an
-- INSERT that does not come from the audit writer), for every role,
-- including the owner; only audit_purge may drop partitions. ENABLE ALWAYS:
-- session_replication_role = replica does not switch the guard off.
-- ---------------------------------------------------------------------------
CREATE FUNCTION donatello.audit_guard() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'donatello_audit_guard';
COMMENT ON FUNCTION donatello.audit_guard() IS
    'refuses any change of the audit trail that does not come from donatello''s writer, sealer or retention';

CREATE TRIGGER audit_log_append_only BEFORE INSERT OR UPDATE OR DELETE ON donatello.audit_log
    FOR EACH ROW EXECUTE FUNCTION donatello.audit_guard();
ALTER TABLE donatello.audit_log ENABLE ALWAYS TRIGGER audit_log_append_only;
CREATE TRIGGER audit_blocks_append_only BEFORE INSERT OR UPDATE OR DELETE ON donatello.audit_blocks
    FOR EACH ROW EXECUTE FUNCTION donatello.audit_guard();
ALTER TABLE donatello.audit_blocks ENABLE ALWAYS TRIGGER audit_blocks_append_only;
CREATE TRIGGER audit_blocks_no_truncate BEFORE TRUNCATE ON donatello.audit_blocks
    FOR EACH STATEMENT EXECUTE FUNCTION donatello.audit_guard();
ALTER TABLE donatello.audit_blocks ENABLE ALWAYS TRIGGER audit_blocks_no_truncate;
CREATE TRIGGER audit_purges_append_only BEFORE INSERT OR UPDATE OR DELETE ON donatello.audit_purges
    FOR EACH ROW EXECUTE FUNCTION donatello.audit_guard();
ALTER TABLE donatello.audit_purges ENABLE ALWAYS TRIGGER audit_purges_append_only;
CREATE TRIGGER audit_purges_no_truncate BEFORE TRUNCATE ON donatello.audit_purges
    FOR EACH STATEMENT EXECUTE FUNCTION donatello.audit_guard();
ALTER TABLE donatello.audit_purges ENABLE ALWAYS TRIGGER audit_purges_no_truncate;

-- TRUNCATE triggers are per table: every partition gets its own.
CREATE FUNCTION donatello.audit_protect_partition(part regclass) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION donatello.audit_guard()', part);
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER audit_log_no_truncate', part);
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER audit_log_append_only', part);
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', part);
END
$$;
COMMENT ON FUNCTION donatello.audit_protect_partition(regclass) IS
    'give a partition of audit_log its TRUNCATE guard, make its row guard fire always, enable row-level security';
SELECT donatello.audit_protect_partition('donatello.audit_log_default');
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON donatello.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION donatello.audit_guard();
ALTER TABLE donatello.audit_log ENABLE ALWAYS TRIGGER audit_log_no_truncate;

-- Create the monthly partitions from the month of `from` on, `months` of
-- them, where missing (called at install and by the sealing task).
CREATE FUNCTION donatello.audit_create_partitions(from_time timestamptz DEFAULT pg_catalog.now(),
                                                  months integer DEFAULT 3)
    RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    m timestamptz := date_trunc('month', from_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    part text;
    created integer := 0;
BEGIN
    FOR i IN 0 .. months - 1 LOOP
        part := 'audit_log_' || to_char(m AT TIME ZONE 'UTC', 'YYYYMM');
        -- a month whose records already went to the default partition keeps them there
        IF to_regclass('donatello.' || part) IS NULL AND NOT EXISTS (
               SELECT FROM donatello.audit_log_default d
                WHERE d.logged_at >= m AND d.logged_at < (m AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC') THEN
            EXECUTE format('CREATE TABLE donatello.%I PARTITION OF donatello.audit_log '
                           'FOR VALUES FROM (%L) TO (%L)',
                           part, m, (m AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC');
            PERFORM donatello.audit_protect_partition(('donatello.' || quote_ident(part))::regclass);
            created := created + 1;
        END IF;
        m := (m AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC';
    END LOOP;
    RETURN created;
END
$$;
COMMENT ON FUNCTION donatello.audit_create_partitions(timestamptz, integer) IS
    'create the missing monthly partitions of audit_log (UTC months) starting with the month of from_time';
SELECT donatello.audit_create_partitions(pg_catalog.now() - interval '1 month', 4);

-- ---------------------------------------------------------------------------
-- Capture
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.audit_trigger() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'donatello_audit_trigger';
COMMENT ON FUNCTION donatello.audit_trigger() IS
    'row and TRUNCATE trigger writing the audit trail; arguments come from enable_audit';

CREATE FUNCTION donatello.enable_audit(tbl regclass, exclude_columns text[] DEFAULT '{}',
                                       mask_columns text[] DEFAULT '{}')
    RETURNS void
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'donatello_enable_audit';
COMMENT ON FUNCTION donatello.enable_audit(regclass, text[], text[]) IS
    'audit INSERT, UPDATE, DELETE and TRUNCATE of a table; excluded columns are left out, masked ones replaced';

CREATE FUNCTION donatello.disable_audit(tbl regclass) RETURNS void
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'donatello_disable_audit';
COMMENT ON FUNCTION donatello.disable_audit(regclass) IS 'stop auditing a table (removes its audit triggers)';

-- Tables audited now, with their settings (read from the triggers' arguments).
CREATE VIEW donatello.audited_tables AS
    SELECT t.tgrelid::regclass AS table_name,
           ARRAY(SELECT substr(a, 9) FROM unnest(x.args) AS a WHERE a LIKE 'exclude=%') AS exclude_columns,
           ARRAY(SELECT substr(a, 6) FROM unnest(x.args) AS a WHERE a LIKE 'mask=%') AS mask_columns
      FROM pg_catalog.pg_trigger t,
           LATERAL (SELECT pg_catalog.array_remove(pg_catalog.string_to_array(
                        pg_catalog.encode(t.tgargs, 'escape'), '\000'), '') AS args) x
     WHERE t.tgname = 'donatello_audit' AND NOT t.tgisinternal;
COMMENT ON VIEW donatello.audited_tables IS 'tables with donatello''s audit triggers, their excluded and masked columns';

CREATE FUNCTION donatello.audit_event(action text, resource_type text, resource_id text,
                                      details jsonb DEFAULT '{}')
    RETURNS bigint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'donatello_audit_event';
COMMENT ON FUNCTION donatello.audit_event(text, text, text, jsonb) IS
    'write an application event into the audit trail of the current principal''s organization';

CREATE FUNCTION donatello.audit_system_event(org_id uuid, action text, resource_type text,
                                             resource_id text, details jsonb DEFAULT '{}')
    RETURNS bigint
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'donatello_audit_system_event';
COMMENT ON FUNCTION donatello.audit_system_event(uuid, text, text, text, jsonb) IS
    'write an event into the audit trail of the given organization (for donatello''s own SECURITY DEFINER code)';

-- Security events of the credentials part are routed into the trail.
CREATE FUNCTION donatello.audit_security_event() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'donatello_audit_security_event';
COMMENT ON FUNCTION donatello.audit_security_event() IS
    'copies each new row of security_events into the audit trail';
CREATE TRIGGER security_events_audit AFTER INSERT ON donatello.security_events
    FOR EACH ROW EXECUTE FUNCTION donatello.audit_security_event();

-- ---------------------------------------------------------------------------
-- Integrity
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.audit_seal() RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'donatello_audit_seal';
COMMENT ON FUNCTION donatello.audit_seal() IS
    'seal the committed records now (the maintenance worker does it every donatello.audit_seal_interval); returns records sealed';

CREATE FUNCTION donatello.audit_verify(org_id uuid DEFAULT NULL, since timestamptz DEFAULT NULL,
        OUT intact boolean, OUT records_checked bigint, OUT blocks_checked bigint,
        OUT first_bad_record bigint, OUT reason text)
    RETURNS record
    LANGUAGE c STABLE
    AS 'MODULE_PATHNAME', 'donatello_audit_verify';
COMMENT ON FUNCTION donatello.audit_verify(uuid, timestamptz) IS
    'recompute record hashes and block chains (one organization, or all); the first problem found, if any';

CREATE FUNCTION donatello.audit_head(org_id uuid,
        OUT block_no bigint, OUT block_hash text, OUT last_logged_at timestamptz, OUT sealed_at timestamptz)
    RETURNS record
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT b.block_no, encode(b.block_hash, 'hex'), b.last_logged_at, b.sealed_at
      FROM donatello.audit_blocks b
     WHERE b.org_id = audit_head.org_id
     ORDER BY b.block_no DESC
     LIMIT 1
$$;
COMMENT ON FUNCTION donatello.audit_head(uuid) IS
    'latest block of an organization''s chain (hex SHA-256), to anchor outside the database';

CREATE FUNCTION donatello.audit_backlog() RETURNS bigint
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT count(*) FROM donatello.audit_log r, donatello.audit_seal_state s
     WHERE r.txid >= s.low_txid
       AND NOT EXISTS (SELECT FROM donatello.audit_sealed_xacts x WHERE x.txid = r.txid)
$$;
COMMENT ON FUNCTION donatello.audit_backlog() IS 'committed audit records not sealed yet';

CREATE FUNCTION donatello.audit_purge() RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'donatello_audit_purge';
COMMENT ON FUNCTION donatello.audit_purge() IS
    'drop the monthly partitions older than donatello.audit_retention; records each purge; returns partitions dropped';

-- ---------------------------------------------------------------------------
-- Reading
-- ---------------------------------------------------------------------------

-- The records the current principal may read: its own organization only;
-- audit:read org-wide sees all of it, audit:read for a department (a
-- department manager) the records of that department.
CREATE FUNCTION donatello_api.audit_events(
        from_time timestamptz DEFAULT NULL, to_time timestamptz DEFAULT NULL,
        actor uuid DEFAULT NULL, action text DEFAULT NULL,
        resource_type text DEFAULT NULL, resource_id text DEFAULT NULL,
        max_rows integer DEFAULT 1000)
    RETURNS SETOF donatello.audit_log
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    me uuid := donatello.current_user_id();
    my_org uuid := donatello.current_org_id();
    whole_org boolean;
BEGIN
    IF me IS NULL OR my_org IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNA03',
            MESSAGE = 'reading the audit trail needs an authenticated principal',
            HINT = 'Set request.jwt.claims with "sub" and "org", or call through the HTTP layer with a token.';
    END IF;
    whole_org := donatello.has_permission(me, 'audit:read');
    IF NOT whole_org AND NOT EXISTS (
        SELECT FROM donatello.user_roles ur
         WHERE ur.user_id = me AND ur.department_id IS NOT NULL
           AND donatello.has_permission(me, 'audit:read', ur.department_id)) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNP01',
            MESSAGE = 'permission denied: audit:read',
            DETAIL = 'Reading the audit trail needs audit:read, for the organization or a department.',
            HINT = 'Ask an organization admin for the auditor role.';
    END IF;
    RETURN QUERY
    SELECT r.*
      FROM donatello.audit_log r
     WHERE r.org_id = my_org
       AND (whole_org OR (r.department_id IS NOT NULL
                          AND donatello.has_permission(me, 'audit:read', r.department_id)))
       AND (audit_events.from_time IS NULL OR r.logged_at >= audit_events.from_time)
       AND (audit_events.to_time IS NULL OR r.logged_at < audit_events.to_time)
       AND (audit_events.actor IS NULL OR r.user_id = audit_events.actor)
       AND (audit_events.action IS NULL OR r.action = audit_events.action)
       AND (audit_events.resource_type IS NULL OR r.resource_type = audit_events.resource_type)
       AND (audit_events.resource_id IS NULL OR r.resource_id = audit_events.resource_id)
     ORDER BY r.logged_at, r.id
     LIMIT greatest(coalesce(max_rows, 1000), 0);
END
$$;
COMMENT ON FUNCTION donatello_api.audit_events(timestamptz, timestamptz, uuid, text, text, text, integer) IS
    'audit records of the caller''s organization (audit:read), or of its departments (audit:read for a department), filtered';

-- One CSV field (RFC 4180): quoted when it holds a comma, a quote, CR or LF.
CREATE FUNCTION donatello.csv_field(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN value IS NULL THEN ''
                WHEN value ~ '[",\r\n]' OR value <> btrim(value) THEN '"' || replace(value, '"', '""') || '"'
                ELSE value END
$$;
COMMENT ON FUNCTION donatello.csv_field(text) IS 'a value as one RFC 4180 CSV field';

-- The filtered records as CSV with a header line, CRLF line ends (RFC 4180).
CREATE FUNCTION donatello.audit_export_csv(
        from_time timestamptz DEFAULT NULL, to_time timestamptz DEFAULT NULL,
        actor uuid DEFAULT NULL, action text DEFAULT NULL,
        resource_type text DEFAULT NULL, resource_id text DEFAULT NULL,
        max_rows integer DEFAULT 100000)
    RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT 'id,logged_at,org_id,department_id,user_id,api_key_id,db_role,request_id,client_ip,'
           'user_agent,action,table_name,resource_type,resource_id,txid,old_data,new_data,details'
           || E'\r\n'
           || coalesce(string_agg(concat_ws(',',
                  e.id::text,
                  donatello.csv_field(to_char(e.logged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
                  donatello.csv_field(e.org_id::text), donatello.csv_field(e.department_id::text),
                  donatello.csv_field(e.user_id::text), donatello.csv_field(e.api_key_id::text),
                  donatello.csv_field(e.db_role), donatello.csv_field(e.request_id),
                  donatello.csv_field(e.client_ip), donatello.csv_field(e.user_agent),
                  donatello.csv_field(e.action), donatello.csv_field(e.table_name),
                  donatello.csv_field(e.resource_type), donatello.csv_field(e.resource_id),
                  e.txid::text, donatello.csv_field(e.old_data::text),
                  donatello.csv_field(e.new_data::text), donatello.csv_field(e.details::text))
                  || E'\r\n', '' ORDER BY e.logged_at, e.id), '')
      FROM donatello_api.audit_events(from_time, to_time, actor, action, resource_type, resource_id,
                                      max_rows) e
$$;
COMMENT ON FUNCTION donatello.audit_export_csv(timestamptz, timestamptz, uuid, text, text, text, integer) IS
    'the records audit_events returns for the same filters, as RFC 4180 CSV with a header line';

GRANT EXECUTE ON FUNCTION donatello_api.audit_events(timestamptz, timestamptz, uuid, text, text, text, integer)
    TO donatello_user, donatello_service;
GRANT EXECUTE ON FUNCTION donatello.audit_export_csv(timestamptz, timestamptz, uuid, text, text, text, integer),
                          donatello.csv_field(text)
    TO donatello_user, donatello_service;
GRANT EXECUTE ON FUNCTION donatello.audit_event(text, text, text, jsonb)
    TO donatello_user, donatello_service;
