-- Reference audit triggers for bench/audit, in the schema bench_audit.
--
-- supa_audit style (https://github.com/supabase/supa_audit): the row as
-- jsonb, the primary key columns looked up in the catalogs for every row, a
-- record id derived from the table and the key, one insert into an indexed
-- record_version table.
CREATE TABLE bench_audit.record_version (
    id              bigserial PRIMARY KEY,
    record_id       uuid,
    old_record_id   uuid,
    op              text NOT NULL,
    ts              timestamptz NOT NULL DEFAULT now(),
    table_oid       oid NOT NULL,
    table_schema    name NOT NULL,
    table_name      name NOT NULL,
    record          jsonb,
    old_record      jsonb
);
CREATE INDEX record_version_record_id ON bench_audit.record_version (record_id) WHERE record_id IS NOT NULL;
CREATE INDEX record_version_old_record_id ON bench_audit.record_version (old_record_id) WHERE old_record_id IS NOT NULL;
CREATE INDEX record_version_ts ON bench_audit.record_version USING brin (ts);
CREATE INDEX record_version_table_oid ON bench_audit.record_version (table_oid);

CREATE FUNCTION bench_audit.primary_key_columns(entity_oid oid) RETURNS text[]
    LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(pa.attname::text ORDER BY pa.attnum), '{}')
      FROM pg_index pi
      JOIN pg_attribute pa ON pi.indrelid = pa.attrelid AND pa.attnum = ANY (pi.indkey)
     WHERE pi.indrelid = entity_oid AND pi.indisprimary
$$;

CREATE FUNCTION bench_audit.to_record_id(entity_oid oid, pkey_cols text[], rec jsonb) RETURNS uuid
    LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN rec IS NULL OR pkey_cols = '{}' THEN NULL
                ELSE md5(jsonb_build_array(entity_oid::text,
                         (SELECT jsonb_agg(rec -> c) FROM unnest(pkey_cols) c))::text)::uuid END
$$;

CREATE FUNCTION bench_audit.supa_insert_update_delete_trigger() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    pkey_cols text[] = bench_audit.primary_key_columns(TG_RELID);
    record_jsonb jsonb = CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END;
    old_record_jsonb jsonb = CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END;
BEGIN
    INSERT INTO bench_audit.record_version (record_id, old_record_id, op, table_oid, table_schema,
                                            table_name, record, old_record)
    SELECT bench_audit.to_record_id(TG_RELID, pkey_cols, record_jsonb),
           bench_audit.to_record_id(TG_RELID, pkey_cols, old_record_jsonb),
           TG_OP, TG_RELID, TG_TABLE_SCHEMA, TG_TABLE_NAME, record_jsonb, old_record_jsonb;
    RETURN coalesce(NEW, OLD);
END
$$;

-- The least a trigger can do: the row as jsonb into an append-only table.
CREATE TABLE bench_audit.minimal_log (
    id      bigserial PRIMARY KEY,
    ts      timestamptz NOT NULL DEFAULT now(),
    tbl     text NOT NULL,
    op      text NOT NULL,
    data    jsonb
);
CREATE FUNCTION bench_audit.minimal_trigger() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_audit.minimal_log (tbl, op, data) VALUES (TG_TABLE_NAME, TG_OP, to_jsonb(NEW));
    RETURN NEW;
END
$$;

-- The four 5-column tables of the benchmark.
CREATE TABLE bench_audit.t_none      (id bigserial PRIMARY KEY, org_id uuid NOT NULL, a integer, b text, c timestamptz);
CREATE TABLE bench_audit.t_donatello (LIKE bench_audit.t_none INCLUDING ALL);
CREATE TABLE bench_audit.t_supa      (LIKE bench_audit.t_none INCLUDING ALL);
CREATE TABLE bench_audit.t_minimal   (LIKE bench_audit.t_none INCLUDING ALL);
SELECT donatello.enable_audit('bench_audit.t_donatello');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON bench_audit.t_supa
    FOR EACH ROW EXECUTE FUNCTION bench_audit.supa_insert_update_delete_trigger();
CREATE TRIGGER audit AFTER INSERT ON bench_audit.t_minimal
    FOR EACH ROW EXECUTE FUNCTION bench_audit.minimal_trigger();
