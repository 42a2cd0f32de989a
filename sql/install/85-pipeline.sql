-- The generation pipeline: donatello.generate() (safety, routing, budget
-- reservation, the job), provider calls through the dispatcher (retries,
-- fallback, circuits), the images, the events. C: src/generation/.
-- docs/generation.md, "The request" and after.
--
-- A job's life:
--   generate()          queued     job row, budget reserved, first provider
--                                  request queued (http_enqueue)
--   dispatcher claims   started    (trigger generation_request_claimed)
--   completion hook     completed  image stored, reservation settled at the
--                                  actual cost, generation.completed
--                       started    the model failed after its retries: the
--                                  next-ranked model is queued (fallback)
--                       failed     no model left: reservation released,
--                                  generation.failed, error DNM01
-- Each change is NOTIFYed on the channel donatello_generation.

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

CREATE TABLE donatello.generation_jobs (
    id                      uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    org_id                  uuid NOT NULL REFERENCES donatello.organizations (id) ON DELETE CASCADE,
    user_id                 uuid NOT NULL,
    department_id           uuid NOT NULL,
    prompt                  text NOT NULL,
    prompt_hash             bytea NOT NULL,
    settings                jsonb NOT NULL,
    ranking                 jsonb NOT NULL,
    policy                  jsonb NOT NULL,
    max_candidates          integer NOT NULL CHECK (max_candidates >= 1),
    estimated_cost_micros   bigint NOT NULL CHECK (estimated_cost_micros >= 0),
    reservation_id          uuid,
    actual_cost_micros      bigint CHECK (actual_cost_micros >= 0),
    budget_error            text,
    status                  text NOT NULL DEFAULT 'queued'
                            CHECK (status IN ('queued', 'started', 'completed', 'failed')),
    candidate               integer NOT NULL DEFAULT 0,
    current_request_id      uuid,
    model_id                uuid,
    error_code              text,
    error_message           text,
    created_at              timestamptz NOT NULL DEFAULT pg_catalog.now(),
    started_at              timestamptz,
    completed_at            timestamptz,
    updated_at              timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, user_id) REFERENCES donatello.users (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, department_id) REFERENCES donatello.departments (org_id, id) ON DELETE CASCADE,
    CHECK ((status = 'failed') = (error_code IS NOT NULL))
);
CREATE INDEX generation_jobs_org_created_idx ON donatello.generation_jobs (org_id, created_at);
CREATE INDEX generation_jobs_unfinished_idx ON donatello.generation_jobs (org_id, created_at)
    WHERE status IN ('queued', 'started');
COMMENT ON TABLE donatello.generation_jobs IS
    'one row per generate() call: the checked settings, the ranking with its scores, the budget reservation, the outcome';

-- One row per provider request of a job: the first model, then each fallback.
CREATE TABLE donatello.generation_calls (
    org_id                  uuid NOT NULL,
    job_id                  uuid NOT NULL,
    call_no                 integer NOT NULL CHECK (call_no >= 1),
    request_id              uuid NOT NULL,
    model_id                uuid,
    provider                text NOT NULL,
    model                   text NOT NULL,
    rank                    integer NOT NULL,
    cost_per_image_micros   bigint NOT NULL,
    state                   text NOT NULL DEFAULT 'sent' CHECK (state IN ('sent', 'succeeded', 'failed')),
    status_code             integer,
    error                   text,
    created_at              timestamptz NOT NULL DEFAULT pg_catalog.now(),
    completed_at            timestamptz,
    PRIMARY KEY (org_id, job_id, call_no),
    UNIQUE (org_id, request_id),
    FOREIGN KEY (org_id, job_id) REFERENCES donatello.generation_jobs (org_id, id) ON DELETE CASCADE
);
CREATE INDEX generation_calls_request_idx ON donatello.generation_calls (request_id);
COMMENT ON TABLE donatello.generation_calls IS
    'the provider requests of a job (http_enqueue ids), one per model tried, with their outcome';

-- Every HTTP attempt of every provider request, copied from the dispatcher's
-- log when the request finishes (the outbox may be purged; the job keeps this).
CREATE TABLE donatello.generation_attempts (
    org_id          uuid NOT NULL,
    job_id          uuid NOT NULL,
    call_no         integer NOT NULL,
    attempt_no      integer NOT NULL,
    started_at      timestamptz NOT NULL,
    latency_ms      double precision NOT NULL,
    status_code     integer,
    error           text,
    PRIMARY KEY (org_id, job_id, call_no, attempt_no),
    FOREIGN KEY (org_id, job_id, call_no) REFERENCES donatello.generation_calls (org_id, job_id, call_no)
        ON DELETE CASCADE
);
COMMENT ON TABLE donatello.generation_attempts IS
    'every HTTP attempt of every provider request of a job: status, latency, error';

CREATE TABLE donatello.images (
    id              uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    org_id          uuid NOT NULL,
    job_id          uuid NOT NULL,
    image_index     integer NOT NULL CHECK (image_index >= 0),
    model_id        uuid,
    provider        text NOT NULL,
    model           text NOT NULL,
    mime_type       text NOT NULL,
    width           integer NOT NULL CHECK (width > 0),
    height          integer NOT NULL CHECK (height > 0),
    byte_size       integer NOT NULL CHECK (byte_size > 0),
    content_hash    bytea NOT NULL CHECK (pg_catalog.octet_length(content_hash) = 32),
    prompt_hash     bytea NOT NULL CHECK (pg_catalog.octet_length(prompt_hash) = 32),
    data            bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (org_id, id),
    UNIQUE (org_id, job_id, image_index),
    FOREIGN KEY (org_id, job_id) REFERENCES donatello.generation_jobs (org_id, id) ON DELETE CASCADE
);
-- PNG is compressed already: store it out of line without compressing it again
ALTER TABLE donatello.images ALTER COLUMN data SET STORAGE EXTERNAL;
COMMENT ON TABLE donatello.images IS
    'generated images: bytes, SHA-256 content hash, MIME type, size from the PNG header, model, prompt hash';

SELECT pg_catalog.pg_extension_config_dump('donatello.generation_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.generation_calls', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.generation_attempts', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.images', '');

ALTER TABLE donatello.generation_jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.generation_jobs USING (org_id = donatello.current_org_id());
CREATE POLICY service_all ON donatello.generation_jobs TO donatello_service USING (true);
ALTER TABLE donatello.generation_calls ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.generation_calls USING (org_id = donatello.current_org_id());
CREATE POLICY service_all ON donatello.generation_calls TO donatello_service USING (true);
ALTER TABLE donatello.generation_attempts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.generation_attempts USING (org_id = donatello.current_org_id());
CREATE POLICY service_all ON donatello.generation_attempts TO donatello_service USING (true);
ALTER TABLE donatello.images ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.images USING (org_id = donatello.current_org_id());
CREATE POLICY service_all ON donatello.images TO donatello_service USING (true);

GRANT SELECT ON donatello.generation_jobs, donatello.generation_calls, donatello.generation_attempts,
                donatello.images
    TO donatello_service;

-- ---------------------------------------------------------------------------
-- C helpers (src/generation/)
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.generation_request_policy() RETURNS jsonb
    LANGUAGE c STABLE PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_generation_request_policy';
COMMENT ON FUNCTION donatello.generation_request_policy() IS
    'the http_enqueue retry policy of a provider request, from the donatello.generation_* settings';

CREATE FUNCTION donatello.generation_decode_images(response bytea,
        OUT image_index integer, OUT mime_type text, OUT width integer, OUT height integer,
        OUT content_hash bytea, OUT data bytea)
    RETURNS SETOF record
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_generation_decode_images';
COMMENT ON FUNCTION donatello.generation_decode_images(bytea) IS
    'the images of an OpenAI images API response (b64_json): bytes, MIME type, size from the PNG header, SHA-256; DNV01 if malformed';

CREATE FUNCTION donatello.image_fetch(image_id uuid, exp bigint, sig text)
    RETURNS TABLE (content_type text, etag text, body bytea)
    LANGUAGE c STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_image_fetch';
COMMENT ON FUNCTION donatello.image_fetch(uuid, bigint, text) IS
    'an image by its signed URL (GET /images/{id}?exp=&sig=): DNP01 for a bad or expired signature, DNV02 for an unknown image';

-- ---------------------------------------------------------------------------
-- Provider authentication: the only place a provider's API key is opened,
-- called by the dispatcher's claim (bgworker/dispatcher/dispatcher_queue.c)
-- for an outbox row with a provider_id.
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.provider_auth_header(provider_id uuid, url text) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT 'Authorization: Bearer '
           || convert_from(donatello.secret_open('provider_api_key', p.id, p.api_key_sealed), 'UTF8')
      FROM donatello.providers p
     WHERE p.id = provider_auth_header.provider_id AND p.api_key_sealed IS NOT NULL AND p.kind = 'openai'
       AND left(url, length(p.base_url) + 1) = p.base_url || '/'
$$;
COMMENT ON FUNCTION donatello.provider_auth_header(uuid, text) IS
    'internal (dispatcher only, never granted): the authentication header of a provider request, if url is under the provider''s base URL';

-- ---------------------------------------------------------------------------
-- Progress
-- ---------------------------------------------------------------------------

-- NOTIFY donatello_generation with a job's progress (delivered at commit).
-- The payload names the job, never the prompt.
CREATE FUNCTION donatello.generation_notify(org_id uuid, job_id uuid, status text, extra jsonb DEFAULT '{}')
    RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT pg_notify('donatello_generation',
                     (jsonb_build_object('job_id', job_id, 'org_id', org_id, 'status', status) || extra)::text)
$$;
COMMENT ON FUNCTION donatello.generation_notify(uuid, uuid, text, jsonb) IS
    'internal: NOTIFY donatello_generation with {"job_id", "org_id", "status", ...}';

-- ---------------------------------------------------------------------------
-- Sending a job to a model
-- ---------------------------------------------------------------------------

-- Queue the job's provider request to the first usable candidate from
-- ranking position first_candidate on: a model still registered whose
-- circuit lets a request go now (a half-open circuit gives its one trial
-- request). Returns false when no candidate is left. Locks the job row.
-- C: src/generation/generate.c.
CREATE FUNCTION donatello.generation_send(job_id uuid, first_candidate integer) RETURNS boolean
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_generation_send';
COMMENT ON FUNCTION donatello.generation_send(uuid, integer) IS
    'internal: queue the job''s provider request to the first usable candidate from a ranking position on; false if none';

-- ---------------------------------------------------------------------------
-- The request
-- ---------------------------------------------------------------------------

-- The request, in C (src/generation/generate.c), in this order: the prompt
-- and settings (DNV01), an active user holding generation:create (DNP01) in
-- a department (DNV01), scan_pii (DNS01) and check_content (DNS02), the
-- ranking (DNM01), the budget reservation (DNB01/DNB02), the job, its first
-- provider request, NOTIFY. docs/generation.md, "The request".
CREATE FUNCTION donatello.generate(prompt text, settings jsonb DEFAULT '{}') RETURNS uuid
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_generate';
COMMENT ON FUNCTION donatello.generate(text, jsonb) IS
    'request an image for the current principal: checks, safety, routing, budget reservation; returns the queued job''s id';

-- ---------------------------------------------------------------------------
-- The worker side
-- ---------------------------------------------------------------------------

-- Trigger on donatello.outbox: the dispatcher claimed a provider request
-- (pending -> sending): its job is started. Never lets an error escape into
-- the dispatcher's claim (which would hold up every outbound request).
CREATE FUNCTION donatello.generation_request_claimed() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c record;
BEGIN
    BEGIN
        SELECT gc.org_id, gc.job_id, gc.call_no, gc.provider, gc.model INTO c
          FROM donatello.generation_calls gc WHERE gc.org_id = NEW.org_id AND gc.request_id = NEW.id;
        IF FOUND THEN
            UPDATE donatello.generation_jobs g
               SET status = 'started', started_at = coalesce(g.started_at, now()), updated_at = now()
             WHERE g.org_id = c.org_id AND g.id = c.job_id AND g.status IN ('queued', 'started')
               AND g.current_request_id = NEW.id;
            IF FOUND THEN
                PERFORM donatello.generation_notify(c.org_id, c.job_id, 'started',
                    jsonb_build_object('provider', c.provider, 'model', c.model, 'call', c.call_no,
                                       'attempt', NEW.round_attempts));
            END IF;
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'donatello: could not mark generation request % started: %', NEW.id, SQLERRM;
    END;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION donatello.generation_request_claimed() IS
    'trigger: a provider request was claimed by the dispatcher; its job is started (NOTIFY)';
CREATE TRIGGER generation_request_claimed AFTER UPDATE OF state ON donatello.outbox
    FOR EACH ROW WHEN (NEW.provider_id IS NOT NULL AND NEW.state = 'sending' AND OLD.state = 'pending')
    EXECUTE FUNCTION donatello.generation_request_claimed();

-- The image URL an event carries, with its expiry.
CREATE FUNCTION donatello.generation_image_entry(i donatello.images) RETURNS jsonb
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT jsonb_build_object('id', i.id, 'url', u.url,
                              'expires_at', to_timestamp(substring(u.url FROM 'exp=([0-9]+)')::bigint),
                              'mime_type', i.mime_type, 'width', i.width, 'height', i.height,
                              'bytes', i.byte_size, 'content_hash', encode(i.content_hash, 'hex'))
      FROM (SELECT donatello.image_url(i.id) AS url) u
$$;
COMMENT ON FUNCTION donatello.generation_image_entry(donatello.images) IS
    'internal: an image as events and generation_status show it, with a fresh signed URL';

-- Settle a job's reservation at actual_micros, or release it (NULL). A
-- deadlock or serialization failure is tried again (3 times in all); any
-- other error is returned as text (and logged as a WARNING), not raised, so
-- the job still finishes. NULL when it worked.
CREATE FUNCTION donatello.generation_close_reservation(job_id uuid, reservation_id uuid, actual_micros bigint)
    RETURNS text
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    what text := CASE WHEN actual_micros IS NULL THEN 'release' ELSE 'settle' END;
BEGIN
    FOR attempt IN 1 .. 3 LOOP
        BEGIN
            IF actual_micros IS NULL THEN
                PERFORM donatello.release(reservation_id);
            ELSE
                PERFORM donatello.settle(reservation_id, actual_micros::numeric / 1000000);
            END IF;
            RETURN NULL;
        EXCEPTION
            WHEN deadlock_detected OR serialization_failure THEN
                IF attempt = 3 THEN
                    RAISE WARNING 'donatello: could not % the reservation of generation %: %', what, job_id, SQLERRM;
                    RETURN format('%s failed: %s (%s)', what, SQLERRM, SQLSTATE);
                END IF;
            WHEN OTHERS THEN
                RAISE WARNING 'donatello: could not % the reservation of generation %: %', what, job_id, SQLERRM;
                RETURN format('%s failed: %s (%s)', what, SQLERRM, SQLSTATE);
        END;
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION donatello.generation_close_reservation(uuid, uuid, bigint) IS
    'internal: settle (actual_micros) or release (NULL) a job''s reservation; deadlocks retried; the error as text, or NULL';

-- Fail a job (its row locked by the caller): DNM01, the reservation
-- released, generation.failed emitted, 'failed' notified.
CREATE FUNCTION donatello.generation_fail(org_id uuid, job_id uuid, message text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    j donatello.generation_jobs;
    v_calls jsonb;
BEGIN
    SELECT * INTO STRICT j FROM donatello.generation_jobs g
     WHERE g.org_id = generation_fail.org_id AND g.id = generation_fail.job_id;
    SELECT jsonb_agg(jsonb_build_object('provider', gc.provider, 'model', gc.model, 'status', gc.status_code,
                                        'error', gc.error) ORDER BY gc.call_no) INTO v_calls
      FROM donatello.generation_calls gc WHERE gc.org_id = j.org_id AND gc.job_id = j.id;
    UPDATE donatello.generation_jobs g
       SET status = 'failed', error_code = 'DNM01', error_message = message, completed_at = now(), updated_at = now()
     WHERE g.org_id = j.org_id AND g.id = j.id;
    UPDATE donatello.generation_jobs g SET budget_error = donatello.generation_close_reservation(j.id, j.reservation_id, NULL)
     WHERE g.org_id = j.org_id AND g.id = j.id;
    PERFORM donatello.emit_event(j.org_id, 'generation.failed', jsonb_build_object(
        'job_id', j.id, 'status', 'failed', 'user_id', j.user_id, 'department_id', j.department_id,
        'error', jsonb_build_object('code', 'DNM01', 'message', message),
        'calls', coalesce(v_calls, '[]')));
    PERFORM donatello.generation_notify(j.org_id, j.id, 'failed', jsonb_build_object('error', 'DNM01'));
END
$$;
COMMENT ON FUNCTION donatello.generation_fail(uuid, uuid, text) IS
    'internal: fail a job with DNM01, release its reservation, emit generation.failed';

-- Completion hook of every provider request (http_enqueue): runs in the
-- dispatcher, in its own transaction, once the request succeeded or gave up
-- after its retries.
CREATE FUNCTION donatello.generation_provider_response(request_id uuid, status integer, headers jsonb,
                                                        body bytea, error text)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    c donatello.generation_calls;
    j donatello.generation_jobs;
    v_failure text;
    v_count integer := 0;
    v_actual bigint;
    v_images jsonb;
BEGIN
    SELECT * INTO c FROM donatello.generation_calls gc WHERE gc.request_id = generation_provider_response.request_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO j FROM donatello.generation_jobs g WHERE g.org_id = c.org_id AND g.id = c.job_id FOR UPDATE;
    IF j.status IN ('completed', 'failed') OR j.current_request_id IS DISTINCT FROM c.request_id THEN
        RETURN;     -- a replayed request of a finished job
    END IF;

    -- every attempt of this request, from the dispatcher's log
    INSERT INTO donatello.generation_attempts (org_id, job_id, call_no, attempt_no, started_at, latency_ms,
                                               status_code, error)
    SELECT c.org_id, c.job_id, c.call_no, a.attempt_no, a.started_at, a.latency_ms, a.status_code, a.error
      FROM donatello.delivery_attempts a
     WHERE a.org_id = c.org_id AND a.delivery_id = c.request_id
    ON CONFLICT DO NOTHING;

    IF status BETWEEN 200 AND 299 AND error IS NULL THEN
        BEGIN
            INSERT INTO donatello.images (org_id, job_id, image_index, model_id, provider, model, mime_type, width,
                                          height, byte_size, content_hash, prompt_hash, data)
            SELECT c.org_id, c.job_id, d.image_index, c.model_id, c.provider, c.model, d.mime_type, d.width,
                   d.height, octet_length(d.data), d.content_hash, j.prompt_hash, d.data
              FROM donatello.generation_decode_images(body) d;
            GET DIAGNOSTICS v_count = ROW_COUNT;
            IF v_count = 0 THEN
                v_failure := 'the response holds no image';
            END IF;
        EXCEPTION WHEN OTHERS THEN
            v_failure := 'invalid response: ' || SQLERRM;
        END;
    ELSE
        v_failure := coalesce(error, format('HTTP %s', status));
    END IF;

    IF c.model_id IS NOT NULL AND EXISTS (SELECT FROM donatello.models m WHERE m.id = c.model_id) THEN
        PERFORM donatello.model_circuit_report(c.model_id, v_failure IS NULL);
    END IF;
    UPDATE donatello.generation_calls gc
       SET state = CASE WHEN v_failure IS NULL THEN 'succeeded' ELSE 'failed' END,
           status_code = generation_provider_response.status, error = v_failure, completed_at = now()
     WHERE gc.org_id = c.org_id AND gc.job_id = c.job_id AND gc.call_no = c.call_no;

    IF v_failure IS NULL THEN
        -- success: the actual cost is what the images received cost
        v_actual := c.cost_per_image_micros * v_count;
        UPDATE donatello.generation_jobs g
           SET status = 'completed', model_id = c.model_id, actual_cost_micros = v_actual,
               completed_at = now(), updated_at = now()
         WHERE g.org_id = j.org_id AND g.id = j.id;
        UPDATE donatello.generation_jobs g
           SET budget_error = donatello.generation_close_reservation(j.id, j.reservation_id, v_actual)
         WHERE g.org_id = j.org_id AND g.id = j.id;
        SELECT jsonb_agg(donatello.generation_image_entry(i) ORDER BY i.image_index) INTO v_images
          FROM donatello.images i WHERE i.org_id = j.org_id AND i.job_id = j.id;
        PERFORM donatello.emit_event(j.org_id, 'generation.completed', jsonb_build_object(
            'job_id', j.id, 'status', 'completed', 'user_id', j.user_id, 'department_id', j.department_id,
            'provider', c.provider, 'model', c.model,
            'cost', trim_scale(v_actual::numeric / 1000000), 'images', v_images));
        PERFORM donatello.generation_notify(j.org_id, j.id, 'completed',
                                            jsonb_build_object('provider', c.provider, 'model', c.model));
        RETURN;
    END IF;

    -- failure of this model after its retries: fall back to the next-ranked one
    -- (its claim by the dispatcher notifies 'started' with the new model)
    IF donatello.generation_send(j.id, j.candidate + 1) THEN
        RETURN;
    END IF;

    -- no model left
    PERFORM donatello.generation_fail(j.org_id, j.id, 'no model could generate the image');
END
$$;
COMMENT ON FUNCTION donatello.generation_provider_response(uuid, integer, jsonb, bytea, text) IS
    'internal: completion hook of a provider request: store the images and settle, or fall back, or fail and release';

-- Maintenance (src/generation/generation_recover.c): fail the unfinished
-- jobs whose current provider request can no longer finish them (its
-- completion hook failed, or its outbox row was deleted). Returns how many.
CREATE FUNCTION donatello.generation_finish_stuck() RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    s record;
    n integer := 0;
BEGIN
    FOR s IN
        SELECT g.org_id, g.id, o.id IS NULL AS gone, o.hook_error
          FROM donatello.generation_jobs g
          LEFT JOIN donatello.outbox o ON o.org_id = g.org_id AND o.id = g.current_request_id
         WHERE g.status IN ('queued', 'started') AND (o.id IS NULL OR o.hook_state = 'failed')
           FOR UPDATE OF g SKIP LOCKED
    LOOP
        PERFORM donatello.generation_fail(s.org_id, s.id,
            CASE WHEN s.gone THEN 'its provider request was deleted'
                 ELSE 'the provider''s answer could not be processed: ' || coalesce(s.hook_error, 'unknown error') END);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION donatello.generation_finish_stuck() IS
    'maintenance: fail unfinished jobs whose provider request failed its completion hook or is gone; returns how many';

-- ---------------------------------------------------------------------------
-- Status
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.generation_status(job_id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    j donatello.generation_jobs;
BEGIN
    SELECT * INTO j FROM donatello.generation_jobs g WHERE g.id = generation_status.job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV02',
            MESSAGE = format('generation job %s does not exist', coalesce(job_id::text, 'NULL'));
    END IF;
    RETURN jsonb_build_object(
        'job_id', j.id, 'org_id', j.org_id, 'user_id', j.user_id, 'department_id', j.department_id,
        'status', j.status, 'prompt', j.prompt, 'prompt_hash', encode(j.prompt_hash, 'hex'),
        'settings', j.settings,
        'created_at', j.created_at, 'started_at', j.started_at, 'completed_at', j.completed_at,
        'estimated_cost', trim_scale(j.estimated_cost_micros::numeric / 1000000),
        'actual_cost', trim_scale(j.actual_cost_micros::numeric / 1000000),
        'reservation_id', j.reservation_id, 'budget_error', j.budget_error,
        'model', (SELECT jsonb_build_object('provider', gc.provider, 'model', gc.model)
                    FROM donatello.generation_calls gc
                   WHERE gc.org_id = j.org_id AND gc.job_id = j.id AND gc.state = 'succeeded'),
        'ranking', j.ranking,
        'calls', coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'call', gc.call_no, 'provider', gc.provider, 'model', gc.model, 'rank', gc.rank,
                    'request_id', gc.request_id, 'state', gc.state, 'status', gc.status_code, 'error', gc.error,
                    'attempts', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                    'attempt', a.attempt_no, 'started_at', a.started_at,
                                    'latency_ms', round(a.latency_ms::numeric, 1), 'status', a.status_code,
                                    'error', a.error) ORDER BY a.attempt_no)
                                  FROM donatello.generation_attempts a
                                 WHERE a.org_id = gc.org_id AND a.job_id = gc.job_id AND a.call_no = gc.call_no),
                                 '[]'))
                    ORDER BY gc.call_no)
                  FROM donatello.generation_calls gc WHERE gc.org_id = j.org_id AND gc.job_id = j.id), '[]'),
        'images', coalesce((SELECT jsonb_agg(donatello.generation_image_entry(i) ORDER BY i.image_index)
                              FROM donatello.images i WHERE i.org_id = j.org_id AND i.job_id = j.id), '[]'),
        'error', CASE WHEN j.error_code IS NOT NULL
                      THEN jsonb_build_object('code', j.error_code, 'message', j.error_message) END);
END
$$;
COMMENT ON FUNCTION donatello.generation_status(uuid) IS
    'a generation job: status, ranking, every call and attempt, images with fresh signed URLs, costs, error';

-- ---------------------------------------------------------------------------
-- donatello_api: for HTTP clients (RBAC inside)
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello_api.generate(prompt text, settings jsonb DEFAULT '{}') RETURNS uuid
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT donatello.generate(prompt, settings)
$$;
COMMENT ON FUNCTION donatello_api.generate(text, jsonb) IS
    'request an image (generation:create); returns the job id (POST /rpc/generate)';

CREATE FUNCTION donatello_api.generation_status(job_id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_owner uuid;
    v_department uuid;
BEGIN
    SELECT g.user_id, g.department_id INTO v_owner, v_department
      FROM donatello.generation_jobs g
     WHERE g.id = generation_status.job_id AND g.org_id = donatello.current_org_id();
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV02',
            MESSAGE = format('generation job %s does not exist', coalesce(job_id::text, 'NULL'));
    END IF;
    IF v_owner IS DISTINCT FROM donatello.current_user_id() THEN
        PERFORM donatello.require_permission('generation:read', v_department);
    END IF;
    RETURN donatello.generation_status(job_id);
END
$$;
COMMENT ON FUNCTION donatello_api.generation_status(uuid) IS
    'a generation job of the current organization: one''s own, or another''s with generation:read';

GRANT EXECUTE ON FUNCTION
    donatello.generate(text, jsonb),
    donatello_api.generate(text, jsonb),
    donatello_api.generation_status(uuid)
    TO donatello_user, donatello_service;
GRANT EXECUTE ON FUNCTION
    donatello.generation_status(uuid),
    donatello.generation_request_policy(),
    donatello.generation_decode_images(bytea)
    TO donatello_service;
GRANT EXECUTE ON FUNCTION donatello.image_fetch(uuid, bigint, text)
    TO donatello_anon, donatello_user, donatello_service;
