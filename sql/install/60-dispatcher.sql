-- Outbound dispatcher: webhook endpoints, events, the outbox every outbound
-- request waits in, and the log of every attempt. The background worker that
-- sends them is C (bgworker/dispatcher/); the SQL entry points that enqueue
-- are C too (src/dispatch/). Rules and examples: docs/webhooks.md.
--
-- Every table is a tenant table keyed by org_id: the outbox's primary key is
-- (org_id, id), so it can be distributed by org_id and drained by one
-- dispatcher per node (docs/webhooks.md, "Scaling out").

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

CREATE TABLE donatello.webhook_endpoints (
    id                          uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    org_id                      uuid NOT NULL REFERENCES donatello.organizations (id) ON DELETE CASCADE,
    url                         text NOT NULL,
    events                      text[] NOT NULL CHECK (pg_catalog.cardinality(events) > 0),
    description                 text,
    secret_sealed               bytea NOT NULL,
    previous_secret_sealed      bytea,
    previous_secret_expires_at  timestamptz,
    active                      boolean NOT NULL DEFAULT true,
    disabled_at                 timestamptz,
    disabled_reason             text,
    failing_since               timestamptz,
    last_success_at             timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    rotated_at                  timestamptz,
    UNIQUE (org_id, id)
);
CREATE INDEX webhook_endpoints_org_active_idx ON donatello.webhook_endpoints (org_id) WHERE active;
COMMENT ON TABLE donatello.webhook_endpoints IS
    'where an organization receives its events; the signing secret is sealed (secrets at rest)';

CREATE TABLE donatello.events (
    id          uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    org_id      uuid NOT NULL REFERENCES donatello.organizations (id) ON DELETE CASCADE,
    type        text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    UNIQUE (org_id, id)
);
CREATE INDEX events_org_created_idx ON donatello.events (org_id, created_at);
COMMENT ON TABLE donatello.events IS
    'every event emitted by donatello.emit_event, whether or not an endpoint subscribes to it';

-- The queue. One row per outbound request: a webhook delivery (kind webhook,
-- one per event and subscribed endpoint) or a queued HTTP request (kind http,
-- from http_enqueue). State machine:
--   pending --claim--> sending --response--> succeeded | pending (retry) | failed
--   pending --endpoint disabled--> cancelled;  failed/cancelled --retry_delivery--> pending
-- A row stays 'sending' only while a dispatcher has it in flight; the
-- dispatcher puts every 'sending' row back to 'pending' when it starts, which
-- is what makes delivery at-least-once across crashes.
CREATE TABLE donatello.outbox (
    id               uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    org_id           uuid NOT NULL REFERENCES donatello.organizations (id) ON DELETE CASCADE,
    kind             text NOT NULL CHECK (kind IN ('webhook', 'http')),
    endpoint_id      uuid,
    event_id         uuid,
    event_type       text,
    method           text NOT NULL,
    url              text NOT NULL,
    headers_sealed   bytea,
    body             bytea,
    max_attempts     integer CHECK (max_attempts BETWEEN 1 AND 100),
    schedule_ms      integer[],
    retry_on         text[],
    timeout_ms       integer,
    hook             text,          -- "schema.name(uuid,integer,jsonb,bytea,text)", resolved when run
    hook_role        text,          -- the role that queued the request (names survive dump and restore)
    hook_state       text CHECK (hook_state IN ('pending', 'done', 'failed')),
    hook_error       text,
    provider_id      uuid,          -- an image provider whose API key the dispatcher adds when sending (docs/generation.md)
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'sending', 'succeeded', 'failed', 'cancelled')),
    attempt_count    integer NOT NULL DEFAULT 0,
    round_attempts   integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    claimed_at       timestamptz,
    completed_at     timestamptz,
    last_status      integer,
    last_error       text,
    response_status  integer,
    response_headers jsonb,
    response_body    bytea,
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, endpoint_id) REFERENCES donatello.webhook_endpoints (org_id, id) ON DELETE CASCADE,
    FOREIGN KEY (org_id, event_id) REFERENCES donatello.events (org_id, id) ON DELETE CASCADE,
    CHECK ((kind = 'webhook') = (endpoint_id IS NOT NULL AND event_id IS NOT NULL)),
    CHECK ((hook IS NULL) = (hook_role IS NULL)),
    CHECK (provider_id IS NULL OR kind = 'http')
);
-- Every delivery updates its row twice (claim, outcome), and a change of state
-- rules out HOT updates: each index here is written on every update, so there
-- are as few as the queue needs. Partial indexes only cost when a row enters
-- their predicate.
CREATE INDEX outbox_id_idx ON donatello.outbox (id);
CREATE INDEX outbox_due_idx ON donatello.outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_hook_idx ON donatello.outbox (completed_at) WHERE hook_state = 'pending';
CREATE INDEX outbox_endpoint_pending_idx ON donatello.outbox (org_id, endpoint_id) WHERE state = 'pending';
COMMENT ON TABLE donatello.outbox IS
    'durable queue of outbound HTTP requests (webhook deliveries and http_enqueue), drained by the dispatcher';

CREATE TABLE donatello.delivery_attempts (
    org_id            uuid NOT NULL,
    delivery_id       uuid NOT NULL,
    attempt_no        integer NOT NULL,
    started_at        timestamptz NOT NULL,
    latency_ms        double precision NOT NULL,
    status_code       integer,
    error             text,
    response_excerpt  text,
    next_attempt_at   timestamptz,
    PRIMARY KEY (org_id, delivery_id, attempt_no),
    FOREIGN KEY (org_id, delivery_id) REFERENCES donatello.outbox (org_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE donatello.delivery_attempts IS
    'one row per attempt of an outbox row: status code, latency, error, a bounded excerpt of the response';

SELECT pg_catalog.pg_extension_config_dump('donatello.webhook_endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.events', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.delivery_attempts', '');

-- ---------------------------------------------------------------------------
-- Row-level security: webhook data of an organization is visible to the
-- principals of that organization who hold webhook:manage; queued HTTP
-- requests (kind http, which may carry provider credentials) to nobody but
-- the service role.
-- ---------------------------------------------------------------------------

-- The organization whose webhooks the current principal may manage, or NULL.
CREATE FUNCTION donatello.webhook_manager_org() RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT u.org_id
      FROM donatello.users u
     WHERE u.id = donatello.current_user_id()
       AND u.org_id = donatello.current_org_id()
       AND donatello.has_permission(u.id, 'webhook:manage')
$$;
COMMENT ON FUNCTION donatello.webhook_manager_org() IS
    'the current principal''s organization if the principal holds webhook:manage there, else NULL';
GRANT EXECUTE ON FUNCTION donatello.webhook_manager_org() TO donatello_user, donatello_service;

ALTER TABLE donatello.webhook_endpoints ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.webhook_endpoints
    USING (org_id = (SELECT donatello.webhook_manager_org()));
CREATE POLICY service_all ON donatello.webhook_endpoints TO donatello_service USING (true);

ALTER TABLE donatello.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.events
    USING (org_id = (SELECT donatello.webhook_manager_org()));
CREATE POLICY service_all ON donatello.events TO donatello_service USING (true);

ALTER TABLE donatello.outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.outbox
    USING (kind = 'webhook' AND org_id = (SELECT donatello.webhook_manager_org()));
CREATE POLICY service_all ON donatello.outbox TO donatello_service USING (true);

ALTER TABLE donatello.delivery_attempts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON donatello.delivery_attempts
    USING (org_id = (SELECT donatello.webhook_manager_org())
           AND EXISTS (SELECT FROM donatello.outbox o
                        WHERE o.org_id = delivery_attempts.org_id AND o.id = delivery_attempts.delivery_id
                          AND o.kind = 'webhook'));
CREATE POLICY service_all ON donatello.delivery_attempts TO donatello_service USING (true);

-- Readers go through the donatello_api views; the secret columns are not
-- granted to anyone.
GRANT SELECT (id, org_id, url, events, description, previous_secret_expires_at, active, disabled_at,
              disabled_reason, failing_since, last_success_at, created_at, rotated_at)
    ON donatello.webhook_endpoints TO donatello_user, donatello_service;
GRANT SELECT ON donatello.events, donatello.delivery_attempts TO donatello_user, donatello_service;
GRANT SELECT (id, org_id, kind, endpoint_id, event_id, event_type, method, url, body, state,
              attempt_count, round_attempts, next_attempt_at, created_at, claimed_at, completed_at,
              last_status, last_error)
    ON donatello.outbox TO donatello_user;
GRANT SELECT (id, org_id, kind, endpoint_id, event_id, event_type, method, url, body, max_attempts,
              schedule_ms, retry_on, timeout_ms, hook, hook_state, provider_id, hook_error, state, attempt_count,
              round_attempts, next_attempt_at, created_at, claimed_at, completed_at, last_status,
              last_error, response_status, response_headers, response_body)
    ON donatello.outbox TO donatello_service;

-- ---------------------------------------------------------------------------
-- SQL API (C: src/dispatch/)
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.create_webhook_endpoint(org_id uuid, url text, events text[],
                                                  description text DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_create_webhook_endpoint';
COMMENT ON FUNCTION donatello.create_webhook_endpoint(uuid, text, text[], text) IS
    'register a webhook endpoint; returns {"id", "secret"} (the secret is shown only here)';

CREATE FUNCTION donatello.rotate_webhook_secret(endpoint_id uuid) RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_rotate_webhook_secret';
COMMENT ON FUNCTION donatello.rotate_webhook_secret(uuid) IS
    'new signing secret; the old one keeps signing too until donatello.webhook_secret_overlap has passed';

CREATE FUNCTION donatello.emit_event(org_id uuid, event_type text, payload jsonb) RETURNS uuid
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_emit_event';
COMMENT ON FUNCTION donatello.emit_event(uuid, text, jsonb) IS
    'record an event and queue one delivery per subscribed endpoint, in the caller''s transaction';

CREATE FUNCTION donatello.http_enqueue(method text, url text, headers jsonb, body bytea,
                                       policy jsonb DEFAULT '{}')
    RETURNS uuid
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'donatello_http_enqueue';
-- Not SECURITY DEFINER: the hook is resolved with the caller's search_path and
-- checked against, then run as, the calling role; the C code writes the row as
-- the extension owner.
COMMENT ON FUNCTION donatello.http_enqueue(text, text, jsonb, bytea, jsonb) IS
    'queue an outbound HTTP request with its retry policy and completion hook; returns its id';

CREATE FUNCTION donatello.check_outbound_url(url text) RETURNS text
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'donatello_check_outbound_url';
COMMENT ON FUNCTION donatello.check_outbound_url(text) IS
    'NULL if the dispatcher may send to this URL now, else why not (resolves the host; SSRF guard)';

-- Wake the dispatcher when the current transaction commits (internal).
CREATE FUNCTION donatello.dispatcher_wake_at_commit() RETURNS void
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'donatello_dispatcher_wake_at_commit';
COMMENT ON FUNCTION donatello.dispatcher_wake_at_commit() IS
    'internal: set the dispatcher''s latch after the current transaction commits';

-- ---------------------------------------------------------------------------
-- SQL API (SQL)
-- ---------------------------------------------------------------------------

-- The endpoint's organization; DNV02 if there is no such endpoint.
CREATE FUNCTION donatello.webhook_endpoint_org(endpoint_id uuid) RETURNS uuid
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    result uuid;
BEGIN
    SELECT e.org_id INTO result FROM donatello.webhook_endpoints e WHERE e.id = webhook_endpoint_org.endpoint_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV02',
            MESSAGE = format('webhook endpoint %s does not exist', coalesce(endpoint_id::text, 'NULL'));
    END IF;
    RETURN result;
END
$$;

COMMENT ON FUNCTION donatello.webhook_endpoint_org(uuid) IS
    'internal: the organization of a webhook endpoint (DNV02 if none)';

-- Disable an endpoint and cancel what is queued for it (internal: also used
-- by the dispatcher on 410 Gone and after days of failures).
CREATE FUNCTION donatello.webhook_endpoint_disable(org_id uuid, endpoint_id uuid, reason text) RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    UPDATE donatello.webhook_endpoints e
       SET active = false, disabled_at = now(), disabled_reason = reason
     WHERE e.org_id = webhook_endpoint_disable.org_id AND e.id = webhook_endpoint_disable.endpoint_id
       AND e.active;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE donatello.outbox o
       SET state = 'cancelled', completed_at = now(), last_error = 'endpoint disabled: ' || reason
     WHERE o.org_id = webhook_endpoint_disable.org_id AND o.endpoint_id = webhook_endpoint_disable.endpoint_id
       AND o.state = 'pending';
    RETURN true;
END
$$;

COMMENT ON FUNCTION donatello.webhook_endpoint_disable(uuid, uuid, text) IS
    'internal: disable an endpoint with a reason and cancel its pending deliveries; false if already disabled';

CREATE FUNCTION donatello.disable_webhook_endpoint(endpoint_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM donatello.webhook_endpoint_disable(donatello.webhook_endpoint_org(endpoint_id), endpoint_id,
                                               'disabled by ' || coalesce(donatello.current_user_id()::text, session_user::text));
END
$$;
COMMENT ON FUNCTION donatello.disable_webhook_endpoint(uuid) IS
    'stop delivering to an endpoint and cancel its queued deliveries; idempotent';

-- Queue a failed, cancelled or succeeded outbox row again, with a fresh retry
-- schedule. Refused while it is pending or in flight, or when its endpoint is
-- disabled.
CREATE FUNCTION donatello.retry_delivery(delivery_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    v_org uuid;
    v_endpoint uuid;
    v_active boolean;
    v_state text;
BEGIN
    SELECT o.org_id, o.endpoint_id INTO v_org, v_endpoint
      FROM donatello.outbox o WHERE o.id = retry_delivery.delivery_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV02',
            MESSAGE = format('delivery %s does not exist', coalesce(delivery_id::text, 'NULL'));
    END IF;
    -- lock order: endpoint, then delivery (as disable_webhook_endpoint does),
    -- so a concurrent disable either waits for this replay and cancels it, or
    -- goes first and this replay is refused
    IF v_endpoint IS NOT NULL THEN
        SELECT e.active INTO v_active FROM donatello.webhook_endpoints e
         WHERE e.org_id = v_org AND e.id = v_endpoint FOR SHARE;
    END IF;
    SELECT o.state INTO v_state FROM donatello.outbox o
     WHERE o.org_id = v_org AND o.id = retry_delivery.delivery_id FOR UPDATE;
    IF v_state IN ('pending', 'sending') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('delivery %s is already queued (state %s)', delivery_id, v_state),
            HINT = 'Only a succeeded, failed or cancelled delivery can be sent again.';
    END IF;
    IF v_endpoint IS NOT NULL AND NOT v_active THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV01',
            MESSAGE = format('webhook endpoint %s of delivery %s is disabled', v_endpoint, delivery_id),
            HINT = 'Create a new endpoint; a disabled endpoint receives nothing.';
    END IF;
    UPDATE donatello.outbox o
       SET state = 'pending', round_attempts = 0, next_attempt_at = now(), completed_at = NULL,
           hook_state = NULL, hook_error = NULL
     WHERE o.org_id = v_org AND o.id = retry_delivery.delivery_id;
    PERFORM donatello.dispatcher_wake_at_commit();
END
$$;
COMMENT ON FUNCTION donatello.retry_delivery(uuid) IS
    'send a finished delivery (or queued HTTP request) again, with a fresh retry schedule';

-- ---------------------------------------------------------------------------
-- The dispatcher's own statements (internal, called by the worker only)
-- ---------------------------------------------------------------------------

-- Record a batch of attempt outcomes decided by the worker, with their
-- consequences: the attempt log, the outbox row, endpoint health, 410 and
-- long-failing endpoints disabled, webhook.delivery_failed events for
-- exhausted deliveries. One call per batch, in the worker's transaction. The
-- "o.id = ANY (ids)" is redundant with the join but lets even the cached
-- generic plan (which cannot see how many rows the arrays hold) probe the
-- outbox through its index instead of hashing all of it.
CREATE FUNCTION donatello.dispatcher_record(
        org_ids uuid[], ids uuid[], states text[], next_attempts timestamptz[], attempt_nos integer[],
        started timestamptz[], latencies double precision[], statuses integer[], errors text[],
        excerpts text[], resp_headers jsonb[], resp_bodies bytea[], gone boolean[], disable_after interval)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    f record;
    d jsonb;
    streak_start timestamptz;
BEGIN
    FOR f IN
        WITH r AS (
            SELECT * FROM unnest(org_ids, ids, states, next_attempts, attempt_nos, started, latencies, statuses,
                                 errors, excerpts, resp_headers, resp_bodies, gone)
                   AS r(org_id, id, state, next_at, attempt_no, started_at, latency_ms, status, error, excerpt,
                        resp_headers, resp_body, gone)),
        upd AS (
            UPDATE donatello.outbox o
               SET state = r.state,
                   next_attempt_at = coalesce(r.next_at, o.next_attempt_at),
                   completed_at = CASE WHEN r.state = 'pending' THEN NULL ELSE now() END,
                   last_status = r.status,
                   last_error = r.error,
                   response_status = CASE WHEN o.kind = 'http' THEN r.status END,
                   response_headers = CASE WHEN o.kind = 'http' THEN r.resp_headers END,
                   response_body = CASE WHEN o.kind = 'http' THEN r.resp_body END,
                   hook_state = CASE WHEN o.hook IS NOT NULL AND r.state <> 'pending' THEN 'pending' END
              FROM r
             WHERE o.id = ANY (ids) AND o.org_id = r.org_id AND o.id = r.id AND o.state = 'sending'
            RETURNING o.org_id, o.id, o.kind, o.endpoint_id, o.event_id, o.event_type, r.state, r.next_at,
                      r.attempt_no, r.started_at, r.latency_ms, r.status, r.error, r.excerpt, r.gone),
        ins AS (
            INSERT INTO donatello.delivery_attempts (org_id, delivery_id, attempt_no, started_at, latency_ms,
                                                     status_code, error, response_excerpt, next_attempt_at)
            SELECT u.org_id, u.id, u.attempt_no, u.started_at, u.latency_ms, u.status, u.error, u.excerpt,
                   CASE WHEN u.state = 'pending' THEN u.next_at END
              FROM upd u
            ON CONFLICT DO NOTHING)
        SELECT u.org_id, u.endpoint_id,
               bool_or(u.state = 'succeeded') AS any_success,
               bool_or(u.gone) AS gone,
               max(u.status) FILTER (WHERE u.gone) AS gone_status,
               jsonb_agg(jsonb_build_object('delivery_id', u.id, 'endpoint_id', u.endpoint_id,
                                            'event_id', u.event_id, 'event_type', u.event_type,
                                            'attempts', u.attempt_no, 'last_status', u.status,
                                            'last_error', u.error))
                   FILTER (WHERE u.state = 'failed' AND NOT u.gone
                             AND u.event_type <> 'webhook.delivery_failed') AS exhausted
          FROM upd u
         WHERE u.kind = 'webhook'
         GROUP BY u.org_id, u.endpoint_id
    LOOP
        -- endpoint health: any success ends a failure streak
        IF f.any_success THEN
            UPDATE donatello.webhook_endpoints e
               SET failing_since = NULL, last_success_at = now()
             WHERE e.org_id = f.org_id AND e.id = f.endpoint_id;
        ELSE
            UPDATE donatello.webhook_endpoints e
               SET failing_since = coalesce(e.failing_since, now())
             WHERE e.org_id = f.org_id AND e.id = f.endpoint_id
            RETURNING e.failing_since INTO streak_start;
            IF NOT f.gone AND streak_start < now() - disable_after THEN
                PERFORM donatello.webhook_endpoint_disable(f.org_id, f.endpoint_id,
                                                           format('every delivery failed since %s', streak_start));
            END IF;
        END IF;
        IF f.gone THEN
            PERFORM donatello.webhook_endpoint_disable(f.org_id, f.endpoint_id,
                                                       format('the receiver answered %s Gone', f.gone_status));
        END IF;
        -- exhausted deliveries are reported to the organization (never about a
        -- delivery_failed event itself, so a broken endpoint cannot loop)
        FOR d IN SELECT * FROM jsonb_array_elements(coalesce(f.exhausted, '[]'))
        LOOP
            PERFORM donatello.emit_event(f.org_id, 'webhook.delivery_failed', d);
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION donatello.dispatcher_record(uuid[], uuid[], text[], timestamptz[], integer[],
    timestamptz[], double precision[], integer[], text[], text[], jsonb[], bytea[], boolean[], interval) IS
    'internal: record a batch of attempt outcomes decided by the dispatcher';

-- ---------------------------------------------------------------------------
-- donatello_api: the same, for principals holding webhook:manage
-- ---------------------------------------------------------------------------

CREATE VIEW donatello_api.webhook_endpoints WITH (security_invoker = true) AS
    SELECT e.id, e.org_id, e.url, e.events, e.description, e.active, e.disabled_at, e.disabled_reason,
           e.failing_since, e.last_success_at, e.created_at, e.rotated_at, e.previous_secret_expires_at
      FROM donatello.webhook_endpoints e;

CREATE VIEW donatello_api.webhook_events WITH (security_invoker = true) AS
    SELECT ev.id, ev.org_id, ev.type, ev.payload, ev.created_at
      FROM donatello.events ev;

CREATE VIEW donatello_api.webhook_deliveries WITH (security_invoker = true) AS
    SELECT o.id, o.org_id, o.endpoint_id, o.event_id, o.event_type, o.url, o.state, o.attempt_count,
           o.next_attempt_at, o.last_status, o.last_error, o.created_at, o.completed_at
      FROM donatello.outbox o
     WHERE o.kind = 'webhook';

CREATE VIEW donatello_api.webhook_delivery_attempts WITH (security_invoker = true) AS
    SELECT a.delivery_id, a.org_id, a.attempt_no, a.started_at, a.latency_ms, a.status_code, a.error,
           a.response_excerpt, a.next_attempt_at
      FROM donatello.delivery_attempts a;

COMMENT ON VIEW donatello_api.webhook_endpoints IS 'webhook endpoints of the organization (webhook:manage)';
COMMENT ON VIEW donatello_api.webhook_events IS 'events emitted in the organization (webhook:manage)';
COMMENT ON VIEW donatello_api.webhook_deliveries IS 'webhook deliveries of the organization (webhook:manage)';
COMMENT ON VIEW donatello_api.webhook_delivery_attempts IS
    'every attempt of every webhook delivery of the organization (webhook:manage)';

GRANT SELECT ON donatello_api.webhook_endpoints, donatello_api.webhook_events,
                donatello_api.webhook_deliveries, donatello_api.webhook_delivery_attempts
    TO donatello_user, donatello_service;

-- Management functions for the current principal's organization.
CREATE FUNCTION donatello_api.create_webhook_endpoint(url text, events text[], description text DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM donatello.require_permission('webhook:manage');
    RETURN donatello.create_webhook_endpoint(donatello.current_org_id(), url, events, description);
END
$$;
COMMENT ON FUNCTION donatello_api.create_webhook_endpoint(text, text[], text) IS
    'register a webhook endpoint in the current organization (webhook:manage); returns {"id", "secret"}';

-- DNV02 unless the endpoint belongs to the current principal's organization.
CREATE FUNCTION donatello.check_own_webhook_endpoint(endpoint_id uuid) RETURNS uuid
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF donatello.webhook_endpoint_org(endpoint_id) IS DISTINCT FROM donatello.current_org_id() THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV02',
            MESSAGE = format('webhook endpoint %s does not exist', endpoint_id);
    END IF;
    RETURN endpoint_id;
END
$$;

COMMENT ON FUNCTION donatello.check_own_webhook_endpoint(uuid) IS
    'internal: DNV02 unless the endpoint belongs to the current principal''s organization';

CREATE FUNCTION donatello_api.rotate_webhook_secret(endpoint_id uuid) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM donatello.require_permission('webhook:manage');
    RETURN donatello.rotate_webhook_secret(donatello.check_own_webhook_endpoint(endpoint_id));
END
$$;
COMMENT ON FUNCTION donatello_api.rotate_webhook_secret(uuid) IS
    'rotate the signing secret of an endpoint of the current organization (webhook:manage)';

CREATE FUNCTION donatello_api.disable_webhook_endpoint(endpoint_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM donatello.require_permission('webhook:manage');
    PERFORM donatello.disable_webhook_endpoint(donatello.check_own_webhook_endpoint(endpoint_id));
END
$$;
COMMENT ON FUNCTION donatello_api.disable_webhook_endpoint(uuid) IS
    'disable an endpoint of the current organization (webhook:manage)';

CREATE FUNCTION donatello_api.retry_webhook_delivery(delivery_id uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM donatello.require_permission('webhook:manage');
    IF NOT EXISTS (SELECT FROM donatello.outbox o
                    WHERE o.id = retry_webhook_delivery.delivery_id AND o.kind = 'webhook'
                      AND o.org_id = donatello.current_org_id()) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNV02',
            MESSAGE = format('delivery %s does not exist', delivery_id);
    END IF;
    PERFORM donatello.retry_delivery(delivery_id);
END
$$;
COMMENT ON FUNCTION donatello_api.retry_webhook_delivery(uuid) IS
    'send a finished webhook delivery of the current organization again (webhook:manage)';

GRANT EXECUTE ON FUNCTION
    donatello_api.create_webhook_endpoint(text, text[], text),
    donatello_api.rotate_webhook_secret(uuid),
    donatello_api.disable_webhook_endpoint(uuid),
    donatello_api.retry_webhook_delivery(uuid)
    TO donatello_user, donatello_service;

GRANT EXECUTE ON FUNCTION
    donatello.create_webhook_endpoint(uuid, text, text[], text),
    donatello.rotate_webhook_secret(uuid),
    donatello.disable_webhook_endpoint(uuid),
    donatello.emit_event(uuid, text, jsonb),
    donatello.retry_delivery(uuid),
    donatello.http_enqueue(text, text, jsonb, bytea, jsonb),
    donatello.check_outbound_url(text)
    TO donatello_service;
