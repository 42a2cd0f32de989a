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

-- ---------------------------------------------------------------------------
-- Providers and models (platform-wide: not owned by an organization)
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.check_base_url(url text) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_check_base_url';
COMMENT ON FUNCTION donatello.check_base_url(text) IS
    'a provider base URL in normal form (http or https, no credentials, query or fragment), or DNV01';

CREATE FUNCTION donatello.is_valid_image_size(size text) RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_is_valid_image_size';
COMMENT ON FUNCTION donatello.is_valid_image_size(text) IS
    'true for WIDTHxHEIGHT with sides from 64 to 4096 pixels, such as 1024x1024';

CREATE TABLE donatello.providers (
    id              uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    name            text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    kind            text NOT NULL CHECK (kind IN ('openai')),
    base_url        text NOT NULL,
    api_key_sealed  bytea,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE donatello.providers IS
    'image generation services; api_key_sealed is sealed with secret_seal(''provider_api_key'', id, key)';

CREATE TABLE donatello.models (
    id                      uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    provider_id             uuid NOT NULL REFERENCES donatello.providers (id) ON DELETE CASCADE,
    name                    text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$'),
    cost_per_image_micros   bigint NOT NULL CHECK (cost_per_image_micros BETWEEN 0 AND 1000000000000),
    quality                 integer NOT NULL CHECK (quality BETWEEN 1 AND 10),
    speed                   integer NOT NULL CHECK (speed BETWEEN 1 AND 10),
    reliability             integer NOT NULL CHECK (reliability BETWEEN 1 AND 10),
    commercial_use          boolean NOT NULL,
    sizes                   text[] NOT NULL CHECK (pg_catalog.cardinality(sizes) > 0),
    created_at              timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at              timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (provider_id, name)
);
COMMENT ON TABLE donatello.models IS
    'models of a provider, with cost (micro-units per image), quality, speed, reliability (1-10), licence and sizes';

-- Runtime state, not configuration: not dumped; a missing row is a closed circuit.
CREATE TABLE donatello.model_circuits (
    model_id            uuid PRIMARY KEY REFERENCES donatello.models (id) ON DELETE CASCADE,
    state               text NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    failures            integer NOT NULL DEFAULT 0,
    window_started_at   timestamptz,
    opened_at           timestamptz,
    retry_at            timestamptz,
    trial_started_at    timestamptz,
    times_opened        integer NOT NULL DEFAULT 0,
    last_failure_at     timestamptz,
    last_success_at     timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE donatello.model_circuits IS
    'circuit breaker of each model (src/router/circuit.c); closed, open until retry_at, then half-open for one trial';

SELECT pg_catalog.pg_extension_config_dump('donatello.providers', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.models', '');

-- The checks and the upsert; called only by donatello.register_provider (C,
-- below), which hides the statement of a failed call from the server log.
CREATE FUNCTION donatello.register_provider_checked(name text, kind text, base_url text, api_key text)
    RETURNS uuid
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    clean_url text := donatello.check_base_url(base_url);
    provider_id uuid;
BEGIN
    IF name IS NULL OR name !~ '^[a-z0-9][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('invalid provider name "%s"', name),
            HINT = 'Use up to 63 lower-case letters, digits, "_" and "-", such as "openai" or "local-sdxl".';
    END IF;
    IF kind IS NULL OR kind <> 'openai' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('unsupported provider kind "%s"', kind),
            HINT = 'Supported kinds: openai (the OpenAI images API, also spoken by Azure OpenAI and many self-hosted servers).';
    END IF;
    -- never repeat the key in a message
    IF api_key IS NOT NULL AND (btrim(api_key) = '' OR length(api_key) > 1024 OR api_key ~ '[[:space:][:cntrl:]]') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('invalid api key for provider "%s": empty, longer than 1024 characters, or containing spaces', name),
            HINT = 'Pass the key exactly as the provider issued it, or NULL for a provider without authentication.';
    END IF;

    INSERT INTO donatello.providers AS p (name, kind, base_url)
    VALUES (register_provider_checked.name, register_provider_checked.kind, clean_url)
    ON CONFLICT ON CONSTRAINT providers_name_key
    DO UPDATE SET kind = excluded.kind, base_url = excluded.base_url, updated_at = now()
    RETURNING p.id INTO provider_id;

    UPDATE donatello.providers p
       SET api_key_sealed = CASE WHEN api_key IS NULL THEN NULL
                                 ELSE donatello.secret_seal('provider_api_key', provider_id, convert_to(api_key, 'UTF8')) END
     WHERE p.id = provider_id;
    RETURN provider_id;
END
$$;
COMMENT ON FUNCTION donatello.register_provider_checked(text, text, text, text) IS
    'register_provider''s checks and upsert (owner only; call register_provider, which keeps the key out of the server log)';

CREATE FUNCTION donatello.register_provider(name text, kind text, base_url text, api_key text DEFAULT NULL)
    RETURNS uuid
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_register_provider';
COMMENT ON FUNCTION donatello.register_provider(text, text, text, text) IS
    'register (or replace) a provider: kind openai, base URL, optional API key stored sealed; returns its id';

-- The API key of a provider, opened (owner only: for the dispatcher and for tests).
CREATE FUNCTION donatello.provider_api_key(provider_id uuid) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT convert_from(donatello.secret_open('provider_api_key', p.id, p.api_key_sealed), 'UTF8')
      FROM donatello.providers p
     WHERE p.id = provider_api_key.provider_id AND p.api_key_sealed IS NOT NULL
$$;
COMMENT ON FUNCTION donatello.provider_api_key(uuid) IS
    'the opened API key of a provider, or NULL (owner only; never granted)';

CREATE FUNCTION donatello.register_model(provider text, name text, cost_per_image numeric,
                                         quality integer, speed integer, reliability integer,
                                         commercial_use boolean, sizes text[])
    RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_provider uuid;
    v_model uuid;
    micros numeric := cost_per_image * 1000000;
    bad text;
BEGIN
    SELECT p.id INTO v_provider FROM donatello.providers p WHERE p.name = register_model.provider;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV02',
            MESSAGE = format('provider "%s" does not exist', provider),
            HINT = 'Register it first with donatello.register_provider().';
    END IF;
    IF name IS NULL OR name !~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('invalid model name "%s"', name),
            HINT = 'Use the name the provider''s API expects, such as "dall-e-3" (letters, digits, ".", "_", ":", "/", "-").';
    END IF;
    IF micros IS NULL OR micros < 0 OR micros <> trunc(micros) OR micros > 1000000000000 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('invalid cost per image %s', coalesce(cost_per_image::text, 'NULL')),
            HINT = 'Give a cost from 0 to 1000000 with at most 6 decimals, such as 0.04.';
    END IF;
    SELECT x.what INTO bad
      FROM (VALUES ('quality', quality), ('speed', speed), ('reliability', reliability)) AS x(what, v)
     WHERE x.v IS NULL OR x.v NOT BETWEEN 1 AND 10
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('invalid %s for model "%s": must be from 1 to 10', bad, name),
            HINT = 'Quality, speed and reliability are rated from 1 (worst) to 10 (best).';
    END IF;
    IF commercial_use IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'DNV01', MESSAGE = 'commercial_use must be true or false';
    END IF;
    SELECT s INTO bad FROM unnest(sizes) s WHERE s IS NULL OR NOT donatello.is_valid_image_size(s) LIMIT 1;
    IF sizes IS NULL OR cardinality(sizes) = 0 OR FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('invalid sizes for model "%s": %s', name, coalesce(sizes::text, 'NULL')),
            HINT = 'Give at least one size WIDTHxHEIGHT with sides from 64 to 4096, such as {1024x1024,1792x1024}.';
    END IF;

    INSERT INTO donatello.models AS m (provider_id, name, cost_per_image_micros, quality, speed,
                                       reliability, commercial_use, sizes)
    VALUES (v_provider, register_model.name, micros::bigint, quality, speed, reliability, commercial_use,
            ARRAY(SELECT DISTINCT s FROM unnest(sizes) s ORDER BY 1))
    ON CONFLICT ON CONSTRAINT models_provider_id_name_key
    DO UPDATE SET cost_per_image_micros = excluded.cost_per_image_micros, quality = excluded.quality,
                  speed = excluded.speed, reliability = excluded.reliability,
                  commercial_use = excluded.commercial_use, sizes = excluded.sizes, updated_at = now()
    RETURNING m.id INTO v_model;
    INSERT INTO donatello.model_circuits (model_id) VALUES (v_model) ON CONFLICT DO NOTHING;
    RETURN v_model;
END
$$;
COMMENT ON FUNCTION donatello.register_model(text, text, numeric, integer, integer, integer, boolean, text[]) IS
    'register (or update) a model of a provider with its cost per image, ratings, licence and sizes; returns its id';

-- ---------------------------------------------------------------------------
-- Circuit breakers
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.circuit_effective_state(state text, retry_at timestamptz, trial_started_at timestamptz)
    RETURNS text
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_circuit_effective_state';
COMMENT ON FUNCTION donatello.circuit_effective_state(text, timestamptz, timestamptz) IS
    'the state of a stored circuit now: closed, open, half_open (a trial may go) or trial (a trial is in flight)';

CREATE FUNCTION donatello.model_circuit_state(model_id uuid) RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    result text;
BEGIN
    IF NOT EXISTS (SELECT FROM donatello.models m WHERE m.id = model_circuit_state.model_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'DNV02', MESSAGE = format('model %s does not exist', model_id);
    END IF;
    SELECT donatello.circuit_effective_state(c.state, c.retry_at, c.trial_started_at) INTO result
      FROM donatello.model_circuits c WHERE c.model_id = model_circuit_state.model_id;
    RETURN coalesce(result, 'closed');
END
$$;
COMMENT ON FUNCTION donatello.model_circuit_state(uuid) IS
    'a model''s circuit now: closed, open, half_open or trial';

CREATE FUNCTION donatello.model_circuit_acquire(model_id uuid) RETURNS boolean
    LANGUAGE c VOLATILE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_model_circuit_acquire';
COMMENT ON FUNCTION donatello.model_circuit_acquire(uuid) IS
    'may a request go to the model now? true when closed; true once when half-open (takes the trial); false otherwise';

CREATE FUNCTION donatello.model_circuit_report(model_id uuid, success boolean) RETURNS text
    LANGUAGE c VOLATILE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_model_circuit_report';
COMMENT ON FUNCTION donatello.model_circuit_report(uuid, boolean) IS
    'record the outcome of a request to the model; returns the circuit state after it';

-- ---------------------------------------------------------------------------
-- Department preference (departments belong to tenancy; this table is ours)
-- ---------------------------------------------------------------------------

CREATE TABLE donatello.department_generation_settings (
    org_id          uuid NOT NULL,
    department_id   uuid NOT NULL,
    preference      text NOT NULL DEFAULT 'balanced' CHECK (preference IN ('quality', 'cost', 'balanced')),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (org_id, department_id),
    FOREIGN KEY (org_id, department_id) REFERENCES donatello.departments (org_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE donatello.department_generation_settings IS
    'per department: how the model router weighs quality against cost (quality, cost or balanced)';
SELECT pg_catalog.pg_extension_config_dump('donatello.department_generation_settings', '');

ALTER TABLE donatello.department_generation_settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.department_generation_settings
    USING (org_id = donatello.current_org_id());
CREATE POLICY service_all ON donatello.department_generation_settings TO donatello_service USING (true);
GRANT SELECT ON donatello.department_generation_settings TO donatello_user, donatello_service;

CREATE FUNCTION donatello.set_department_preference(department_id uuid, preference text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_org uuid;
BEGIN
    SELECT d.org_id INTO v_org FROM donatello.departments d WHERE d.id = set_department_preference.department_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV02',
            MESSAGE = format('department %s does not exist', coalesce(department_id::text, 'NULL'));
    END IF;
    IF preference IS NULL OR preference NOT IN ('quality', 'cost', 'balanced') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('invalid preference "%s"', preference),
            HINT = 'Use quality (60% weight on quality), cost (50% on cost) or balanced (equal weights).';
    END IF;
    INSERT INTO donatello.department_generation_settings AS s (org_id, department_id, preference)
    VALUES (v_org, set_department_preference.department_id, preference)
    ON CONFLICT ON CONSTRAINT department_generation_settings_pkey
    DO UPDATE SET preference = excluded.preference, updated_at = now();
END
$$;
COMMENT ON FUNCTION donatello.set_department_preference(uuid, text) IS
    'set how the router weighs models for a department: quality, cost or balanced';

-- Runs with the caller's rights: row-level security keeps a principal to the
-- departments of its own organization (another's reads as balanced).
CREATE FUNCTION donatello.department_preference(department_id uuid) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT coalesce((SELECT s.preference FROM donatello.department_generation_settings s
                      WHERE s.department_id = department_preference.department_id), 'balanced')
$$;
COMMENT ON FUNCTION donatello.department_preference(uuid) IS
    'a department''s routing preference; balanced when none is set (or for no department)';

-- ---------------------------------------------------------------------------
-- Routing
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.check_generation_request(prompt text, settings jsonb DEFAULT '{}') RETURNS jsonb
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_check_generation_request';
COMMENT ON FUNCTION donatello.check_generation_request(text, jsonb) IS
    'the settings of a generation request, checked (DNV01) and completed: size, n, quality, commercial';

CREATE FUNCTION donatello.prompt_complexity(prompt text) RETURNS numeric
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_prompt_complexity';
COMMENT ON FUNCTION donatello.prompt_complexity(text) IS
    'how demanding a prompt is, from 0 to 1 (length and number of listed details); raises the quality weight';

CREATE FUNCTION donatello.score_models(candidates jsonb, request jsonb) RETURNS jsonb
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_score_models';
COMMENT ON FUNCTION donatello.score_models(jsonb, jsonb) IS
    'the model router as a pure function: eligible candidates ranked with their scores, the others with the reason';

-- Runs with the caller's rights (the department's preference is read under
-- row-level security); the registry columns it reads are granted below.
CREATE FUNCTION donatello.rank_models(prompt text, settings jsonb DEFAULT '{}', department_id uuid DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT donatello.score_models(
        coalesce((SELECT jsonb_agg(jsonb_build_object(
                          'model_id', m.id, 'provider', p.name, 'model', m.name,
                          'cost_per_image', pg_catalog.trim_scale(m.cost_per_image_micros::numeric / 1000000),
                          'quality', m.quality, 'speed', m.speed, 'reliability', m.reliability,
                          'commercial_use', m.commercial_use, 'sizes', to_jsonb(m.sizes),
                          'circuit', donatello.circuit_effective_state(c.state, c.retry_at, c.trial_started_at))
                        ORDER BY p.name, m.name)
                    FROM donatello.models m
                    JOIN donatello.providers p ON p.id = m.provider_id
                    LEFT JOIN donatello.model_circuits c ON c.model_id = m.id), '[]'),
        s || jsonb_build_object('prompt', prompt,
                                'preference', donatello.department_preference(department_id)))
      FROM donatello.check_generation_request(prompt, settings) AS s
$$;
COMMENT ON FUNCTION donatello.rank_models(text, jsonb, uuid) IS
    'every registered model for a request: the eligible ones ranked with their scores, the others with the reason';

-- What applications may see of the registry: no keys.
CREATE VIEW donatello_api.models AS
    SELECT m.id, p.name AS provider, m.name AS model,
           pg_catalog.trim_scale(m.cost_per_image_micros::numeric / 1000000) AS cost_per_image,
           m.quality, m.speed, m.reliability, m.commercial_use, m.sizes,
           donatello.circuit_effective_state(c.state, c.retry_at, c.trial_started_at) AS circuit
      FROM donatello.models m
      JOIN donatello.providers p ON p.id = m.provider_id
      LEFT JOIN donatello.model_circuits c ON c.model_id = m.id;
COMMENT ON VIEW donatello_api.models IS 'registered image models with cost, ratings, licence, sizes and circuit state';

GRANT SELECT ON donatello_api.models TO donatello_user, donatello_service;
-- what rank_models reads with the caller's rights: never the sealed keys
GRANT SELECT ON donatello.models, donatello.model_circuits TO donatello_user, donatello_service;
GRANT SELECT (id, name) ON donatello.providers TO donatello_user, donatello_service;
GRANT EXECUTE ON FUNCTION
    donatello.check_generation_request(text, jsonb),
    donatello.prompt_complexity(text),
    donatello.department_preference(uuid),
    donatello.score_models(jsonb, jsonb),
    donatello.circuit_effective_state(text, timestamptz, timestamptz),
    donatello.rank_models(text, jsonb, uuid)
    TO donatello_user, donatello_service;
GRANT EXECUTE ON FUNCTION
    donatello.register_provider(text, text, text, text),
    donatello.register_model(text, text, numeric, integer, integer, integer, boolean, text[]),
    donatello.set_department_preference(uuid, text),
    donatello.model_circuit_state(uuid),
    donatello.model_circuit_acquire(uuid),
    donatello.model_circuit_report(uuid, boolean)
    TO donatello_service;

-- ---------------------------------------------------------------------------
-- Images: PNG headers, signed image URLs
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.png_info(image bytea) RETURNS jsonb
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_png_info';
COMMENT ON FUNCTION donatello.png_info(bytea) IS
    'width, height and pixel format from a PNG''s header (reads only its first 33 bytes); DNV01 if it is not a valid PNG';

CREATE FUNCTION donatello.sign_image_url(image_id uuid, expires_at timestamptz) RETURNS text
    LANGUAGE c VOLATILE STRICT PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_sign_image_url';
COMMENT ON FUNCTION donatello.sign_image_url(uuid, timestamptz) IS
    'the signed URL path of an image, valid until expires_at: /images/{id}?exp=...&sig=...';

CREATE FUNCTION donatello.image_url(image_id uuid, expires_in interval DEFAULT NULL) RETURNS text
    LANGUAGE c VOLATILE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_image_url';
COMMENT ON FUNCTION donatello.image_url(uuid, interval) IS
    'the signed URL path of an image, valid for expires_in (default donatello.image_url_ttl)';

CREATE FUNCTION donatello.verify_image_url(image_id uuid, exp bigint, sig text) RETURNS boolean
    LANGUAGE c VOLATILE STRICT PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_verify_image_url';
COMMENT ON FUNCTION donatello.verify_image_url(uuid, bigint, text) IS
    'true when sig signs (image_id, exp) and exp (Unix seconds) is still in the future; constant-time comparison';

GRANT EXECUTE ON FUNCTION donatello.png_info(bytea) TO donatello_user, donatello_service;
GRANT EXECUTE ON FUNCTION
    donatello.sign_image_url(uuid, timestamptz),
    donatello.image_url(uuid, interval),
    donatello.verify_image_url(uuid, bigint, text)
    TO donatello_service;
