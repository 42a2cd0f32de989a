-- Generation: safety checks (src/safety/), providers, models and routing
-- (src/router/), images (src/images/). docs/generation.md documents it all.

-- ---------------------------------------------------------------------------
-- Safety: PII scan
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.scan_pii(prompt text) RETURNS jsonb
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_scan_pii';
COMMENT ON FUNCTION donatello.scan_pii(text) IS
    'personal data and secrets in a text: each finding''s kind and character range [start, end), never its value';

GRANT EXECUTE ON FUNCTION donatello.scan_pii(text) TO donatello_user, donatello_service;

-- ---------------------------------------------------------------------------
-- Safety: content blocklists
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.fold_blocked_term(term text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_fold_blocked_term';
COMMENT ON FUNCTION donatello.fold_blocked_term(text) IS
    'a term as the content check matches it: lower case, no accents, words separated by one space';

CREATE TABLE donatello.blocked_terms (
    id          uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES donatello.organizations (id) ON DELETE CASCADE,
    term        text NOT NULL CHECK (pg_catalog.length(term) BETWEEN 1 AND 200),
    folded      text GENERATED ALWAYS AS (donatello.fold_blocked_term(term)) STORED
                CHECK (folded <> ''),
    category    text NOT NULL CHECK (category ~ '^[a-z][a-z0-9_]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (org_id, id),
    CONSTRAINT blocked_terms_org_folded_key UNIQUE (org_id, folded)
);
COMMENT ON TABLE donatello.blocked_terms IS
    'an organization''s content blocklist; matched case- and accent-insensitively on word boundaries';
SELECT pg_catalog.pg_extension_config_dump('donatello.blocked_terms', '');

ALTER TABLE donatello.blocked_terms ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.blocked_terms
    USING (org_id = donatello.current_org_id());
CREATE POLICY service_all ON donatello.blocked_terms TO donatello_service USING (true);
GRANT SELECT ON donatello.blocked_terms TO donatello_service;

CREATE FUNCTION donatello.blocklist_invalidate() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'donatello_blocklist_invalidate';
COMMENT ON FUNCTION donatello.blocklist_invalidate() IS
    'trigger: invalidates the compiled blocklists of the organizations whose terms change';
CREATE TRIGGER blocklist_invalidate AFTER INSERT OR UPDATE OR DELETE
    ON donatello.blocked_terms FOR EACH ROW EXECUTE FUNCTION donatello.blocklist_invalidate();
CREATE TRIGGER blocklist_invalidate_truncate AFTER TRUNCATE
    ON donatello.blocked_terms FOR EACH STATEMENT EXECUTE FUNCTION donatello.blocklist_invalidate();

-- Raise DNV01 unless category is a lower-case identifier.
CREATE FUNCTION donatello.check_category(category text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF category IS NULL OR category !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('invalid blocklist category "%s"', category),
            HINT = 'Use a lower-case letter followed by up to 62 lower-case letters, digits or underscores, such as "violence".';
    END IF;
    RETURN category;
END
$$;
COMMENT ON FUNCTION donatello.check_category(text) IS 'the category, or DNV01 if it is not a lower-case identifier';

-- The trimmed terms of an array, or DNV01 naming the first unusable one.
CREATE FUNCTION donatello.check_blocked_terms(terms text[]) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    t text;
    result text[] := '{}';
BEGIN
    IF terms IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', MESSAGE = 'terms must not be null';
    END IF;
    FOREACH t IN ARRAY terms LOOP
        IF t IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'DNV01', MESSAGE = 'a blocked term must not be null';
        END IF;
        t := btrim(t);
        IF length(t) > 200 THEN
            RAISE EXCEPTION USING
                ERRCODE = 'DNV01',
                MESSAGE = format('blocked term "%s" is longer than 200 characters', left(t, 40) || '...');
        END IF;
        IF donatello.fold_blocked_term(t) = '' THEN
            RAISE EXCEPTION USING
                ERRCODE = 'DNV01',
                MESSAGE = format('blocked term "%s" has no letters or digits', t),
                HINT = 'Terms match whole words; punctuation and spaces only separate them.';
        END IF;
        result := result || t;
    END LOOP;
    RETURN result;
END
$$;
COMMENT ON FUNCTION donatello.check_blocked_terms(text[]) IS
    'the trimmed terms, or DNV01 naming the first one that is null, too long or has no letters or digits';

CREATE FUNCTION donatello.add_blocked_terms(org_id uuid, terms text[], category text) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    clean_terms text[] := donatello.check_blocked_terms(terms);
    added integer;
BEGIN
    PERFORM donatello.check_organization(org_id);
    PERFORM donatello.check_category(category);
    INSERT INTO donatello.blocked_terms (org_id, term, category)
    SELECT DISTINCT ON (donatello.fold_blocked_term(t)) add_blocked_terms.org_id, t, add_blocked_terms.category
      FROM unnest(clean_terms) WITH ORDINALITY AS u(t, n)
     ORDER BY donatello.fold_blocked_term(t), n
    ON CONFLICT ON CONSTRAINT blocked_terms_org_folded_key DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN added;
END
$$;
COMMENT ON FUNCTION donatello.add_blocked_terms(uuid, text[], text) IS
    'add terms or phrases to an organization''s blocklist under a category; returns how many were new';

CREATE FUNCTION donatello.remove_blocked_terms(org_id uuid, terms text[]) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    removed integer;
BEGIN
    PERFORM donatello.check_organization(org_id);
    DELETE FROM donatello.blocked_terms b
     WHERE b.org_id = remove_blocked_terms.org_id
       AND b.folded IN (SELECT donatello.fold_blocked_term(t)
                          FROM unnest(donatello.check_blocked_terms(terms)) AS t);
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;
COMMENT ON FUNCTION donatello.remove_blocked_terms(uuid, text[]) IS
    'remove terms from an organization''s blocklist (matched as check_content matches); returns how many';

CREATE FUNCTION donatello.check_content(prompt text) RETURNS jsonb
    LANGUAGE c STABLE STRICT PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_check_content';
COMMENT ON FUNCTION donatello.check_content(text) IS
    'blocked terms of the current principal''s organization found in a text, with category and character range';

CREATE FUNCTION donatello.check_content(prompt text, org_id uuid) RETURNS jsonb
    LANGUAGE c STABLE STRICT PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_check_content_for_org';
COMMENT ON FUNCTION donatello.check_content(text, uuid) IS
    'blocked terms of the given organization found in a text (for trusted services)';

CREATE FUNCTION donatello.content_cache_stats(
        OUT entries bigint, OUT bytes bigint, OUT hits bigint, OUT misses bigint, OUT bypasses bigint)
    RETURNS record
    LANGUAGE c VOLATILE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_content_cache_stats';
COMMENT ON FUNCTION donatello.content_cache_stats() IS
    'this backend''s cache of compiled blocklists: entries, bytes, hits, misses, bypasses';

GRANT EXECUTE ON FUNCTION donatello.check_content(text) TO donatello_user, donatello_service;
GRANT EXECUTE ON FUNCTION
    donatello.check_content(text, uuid),
    donatello.add_blocked_terms(uuid, text[], text),
    donatello.remove_blocked_terms(uuid, text[]),
    donatello.content_cache_stats()
    TO donatello_service;
