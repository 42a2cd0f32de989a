-- Outbound dispatcher, SQL surface: webhook endpoints, emit_event fan-out,
-- rotation, disabling, retry_delivery, http_enqueue validation, the SSRF
-- checks that need no network, and who may read deliveries. (No dispatcher
-- runs in this database; delivery itself is tested in test/client and test/t.)
\set SHOW_CONTEXT never
\set VERBOSITY default
SELECT donatello.create_organization('Hooks A', 'hooks-a') AS org_a \gset
SELECT donatello.create_organization('Hooks B', 'hooks-b') AS org_b \gset
SELECT donatello.create_user(:'org_a', 'admin@a.test', 'Admin A') AS admin_a \gset
SELECT donatello.create_user(:'org_a', 'member@a.test', 'Member A') AS member_a \gset
SELECT donatello.create_user(:'org_b', 'admin@b.test', 'Admin B') AS admin_b \gset
SELECT donatello.grant_role(:'admin_a', 'org_admin');
SELECT donatello.grant_role(:'member_a', 'member');
SELECT donatello.grant_role(:'admin_b', 'org_admin');

-- endpoints: id and a Standard Webhooks secret, shown once
SELECT donatello.create_webhook_endpoint(:'org_a', 'https://hooks.example.com/generation', '{generation.*}', 'generations') AS ep_gen \gset
SELECT (:'ep_gen'::jsonb) ->> 'id' AS ep_gen_id, (:'ep_gen'::jsonb) ->> 'secret' AS ep_gen_secret \gset
SELECT :'ep_gen_secret' ~ '^whsec_[A-Za-z0-9+/]{43}=$' AS secret_format,
       length(decode(substr(:'ep_gen_secret', 7), 'base64')) AS secret_bytes,
       jsonb_object_keys(:'ep_gen'::jsonb) AS answer_keys;
-- stored sealed: neither the text nor the key bytes appear in the row
SELECT position(decode(substr(:'ep_gen_secret', 7), 'base64') IN secret_sealed) = 0 AS key_not_in_row,
       position(convert_to(:'ep_gen_secret', 'UTF8') IN secret_sealed) = 0 AS text_not_in_row,
       donatello.secret_open('webhook_secret', id, secret_sealed) = decode(substr(:'ep_gen_secret', 7), 'base64') AS opens_to_key
  FROM donatello.webhook_endpoints WHERE id = :'ep_gen_id';
SELECT (donatello.create_webhook_endpoint(:'org_a', 'https://hooks.example.com/all', '{*}') ->> 'id') AS ep_all \gset
SELECT (donatello.create_webhook_endpoint(:'org_a', 'https://hooks.example.com/budget', '{budget.threshold_reached}') ->> 'id') AS ep_budget \gset
SELECT (donatello.create_webhook_endpoint(:'org_a', 'https://hooks.example.com/off', '{*}') ->> 'id') AS ep_off \gset
SELECT (donatello.create_webhook_endpoint(:'org_b', 'https://hooks.example.com/b', '{*}') ->> 'id') AS ep_b \gset
SELECT donatello.disable_webhook_endpoint(:'ep_off');
SELECT donatello.disable_webhook_endpoint(:'ep_off');

-- bad input
SELECT donatello.create_webhook_endpoint(NULL, 'https://hooks.example.com/', '{*}');
SELECT donatello.create_webhook_endpoint(:'org_a', 'ftp://hooks.example.com/', '{*}');
SELECT donatello.create_webhook_endpoint(:'org_a', 'hooks.example.com/x', '{*}');
SELECT donatello.create_webhook_endpoint(:'org_a', 'https://user:pw@hooks.example.com/', '{*}');
SELECT donatello.create_webhook_endpoint(:'org_a', 'https://hooks.example.com/', '{}');
SELECT donatello.create_webhook_endpoint(:'org_a', 'https://hooks.example.com/', '{Generation.Done}');
SELECT donatello.create_webhook_endpoint(:'org_a', 'https://hooks.example.com/', '{generation..done}');
SELECT donatello.create_webhook_endpoint(:'org_a', 'https://hooks.example.com/', '{NULL}');
SELECT donatello.create_webhook_endpoint('00000000-0000-4000-8000-000000000000', 'https://hooks.example.com/', '{*}');
SELECT donatello.create_webhook_endpoint(:'org_a', 'https://hooks.example.com/', '{*}', repeat('x', 501));
-- SSRF: literal forbidden addresses are refused when stored
SELECT donatello.create_webhook_endpoint(:'org_a', 'http://169.254.169.254/latest/meta-data/', '{*}');
SELECT donatello.create_webhook_endpoint(:'org_a', 'http://10.0.0.1/hook', '{*}');
SELECT donatello.create_webhook_endpoint(:'org_a', 'http://127.0.0.1:8080/hook', '{*}');
SELECT donatello.create_webhook_endpoint(:'org_a', 'http://[::ffff:192.168.0.1]/hook', '{*}');
SELECT u AS url, donatello.check_outbound_url(u) AS refusal
  FROM unnest(ARRAY['http://169.254.169.254/', 'http://100.100.100.200/', 'http://[fd00:ec2::254]/',
                    'http://10.1.2.3/', 'http://172.16.0.1/', 'http://192.168.1.1/', 'http://100.64.0.1/',
                    'http://127.0.0.1/', 'http://[::1]/', 'http://[fe80::1]/', 'http://[fd12::1]/',
                    'http://[::ffff:127.0.0.1]/', 'http://[64:ff9b::a00:1]/', 'http://0.0.0.0/',
                    'http://224.0.0.1/', 'http://255.255.255.255/', 'http://93.184.216.34/',
                    'http://[2606:2800:220:1::1]/', 'http://localhost:5432/', 'gopher://example.com/']) AS u;

-- emit_event: one delivery per active subscribed endpoint, in the caller's transaction
SELECT donatello.emit_event(:'org_a', 'generation.completed', '{"generation_id": 7}') AS ev1 \gset
SELECT e.description, e.url, o.state, o.method, o.attempt_count
  FROM donatello.outbox o JOIN donatello.webhook_endpoints e ON e.id = o.endpoint_id
 WHERE o.event_id = :'ev1' ORDER BY e.url;
SELECT b ->> 'type' AS type, b -> 'data' AS data, (b ->> 'timestamp') ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$' AS iso_timestamp,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(b) k) AS keys
  FROM (SELECT convert_from(body, 'UTF8')::jsonb AS b FROM donatello.outbox WHERE event_id = :'ev1' LIMIT 1) s;
SELECT donatello.emit_event(:'org_a', 'budget.threshold_reached', '{"percent": 80}') AS ev2 \gset
SELECT count(*) AS budget_deliveries FROM donatello.outbox WHERE event_id = :'ev2';
SELECT donatello.emit_event(:'org_a', 'audit.sealed', '{}') AS ev3 \gset
SELECT count(*) AS audit_deliveries FROM donatello.outbox WHERE event_id = :'ev3';
BEGIN;
SELECT donatello.emit_event(:'org_a', 'generation.failed', '{}') AS ev_rolled_back \gset
ROLLBACK;
SELECT count(*) AS events_after_rollback FROM donatello.events WHERE id = :'ev_rolled_back';
SELECT count(*) AS deliveries_after_rollback FROM donatello.outbox WHERE event_id = :'ev_rolled_back';
SELECT donatello.emit_event(:'org_a', 'Generation.Completed', '{}');
SELECT donatello.emit_event(:'org_a', 'generation.*', '{}');
SELECT donatello.emit_event(:'org_a', 'generation.completed', NULL);
SELECT donatello.emit_event('00000000-0000-4000-8000-000000000000', 'generation.completed', '{}');

-- rotation: a new secret; the old one keeps signing until the overlap ends
SELECT donatello.rotate_webhook_secret(:'ep_gen_id') AS rotated \gset
SELECT (:'rotated'::jsonb) ->> 'secret' <> :'ep_gen_secret' AS new_secret,
       ((:'rotated'::jsonb) ->> 'previous_secret_expires_at')::timestamptz - now() BETWEEN interval '23 hours 59 minutes' AND interval '24 hours' AS overlap_24h;
SELECT donatello.secret_open('webhook_secret', id, previous_secret_sealed) = decode(substr(:'ep_gen_secret', 7), 'base64') AS previous_is_old,
       donatello.secret_open('webhook_secret', id, secret_sealed) = decode(substr((:'rotated'::jsonb) ->> 'secret', 7), 'base64') AS current_is_new
  FROM donatello.webhook_endpoints WHERE id = :'ep_gen_id';
SELECT donatello.rotate_webhook_secret('00000000-0000-4000-8000-000000000000');

-- disabling cancels what is queued; retry_delivery replays finished deliveries only
SELECT id AS d_all FROM donatello.outbox WHERE event_id = :'ev1' AND endpoint_id = :'ep_all' \gset
\set VERBOSITY sqlstate
SELECT donatello.retry_delivery(:'d_all');
\set VERBOSITY default
SELECT donatello.disable_webhook_endpoint(:'ep_all');
SELECT state, last_error FROM donatello.outbox WHERE id = :'d_all';
SELECT active, disabled_reason LIKE 'disabled by %' AS reason_given FROM donatello.webhook_endpoints WHERE id = :'ep_all';
\set VERBOSITY sqlstate
SELECT donatello.retry_delivery(:'d_all');
\set VERBOSITY default
SELECT donatello.retry_delivery('00000000-0000-4000-8000-000000000000');
SELECT donatello.disable_webhook_endpoint('00000000-0000-4000-8000-000000000000');
UPDATE donatello.outbox SET state = 'failed', completed_at = now()
 WHERE event_id = :'ev1' AND endpoint_id = :'ep_gen_id' RETURNING id AS d_gen \gset
SELECT donatello.retry_delivery(:'d_gen');
SELECT state, round_attempts, completed_at IS NULL AS reopened FROM donatello.outbox WHERE id = :'d_gen';

-- http_enqueue: validated, headers sealed, policy stored
CREATE FUNCTION public.on_provider_done(request_id uuid, status integer, headers jsonb, body bytea, error text)
    RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION public.wrong_hook(request_id uuid) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SELECT donatello.http_enqueue('post', 'https://api.provider.example/v1/images',
    '{"Authorization": "Bearer sk-provider-secret", "Content-Type": "application/json"}',
    convert_to('{"prompt": "a red fox"}', 'UTF8'),
    jsonb_build_object('org_id', :'org_a', 'max_attempts', 3, 'backoff', '["2s", 4000]'::jsonb,
                       'retry_on', '["5xx", "429", "timeout"]'::jsonb, 'hook', 'on_provider_done')) AS req \gset
SELECT kind, method, url, max_attempts, schedule_ms, retry_on, hook, hook_role, state,
       convert_from(body, 'UTF8') AS body,
       position(convert_to('sk-provider-secret', 'UTF8') IN headers_sealed) = 0 AS credential_not_in_row,
       convert_from(donatello.secret_open('outbox_headers', id, headers_sealed), 'UTF8')::jsonb ->> 'Authorization' AS opened
  FROM donatello.outbox WHERE id = :'req';
SELECT max_attempts, schedule_ms, retry_on, hook, timeout_ms
  FROM donatello.outbox WHERE id = donatello.http_enqueue('GET', 'https://api.provider.example/v1/status', NULL, NULL,
                                                          jsonb_build_object('org_id', :'org_a'));
SELECT donatello.http_enqueue('TRACE', 'https://api.provider.example/', NULL, NULL, jsonb_build_object('org_id', :'org_a'));
SELECT donatello.http_enqueue('GET', 'http://10.0.0.1/', NULL, NULL, jsonb_build_object('org_id', :'org_a'));
SELECT donatello.http_enqueue('GET', 'https://api.provider.example/', '{"bad header": "x"}', NULL, jsonb_build_object('org_id', :'org_a'));
SELECT donatello.http_enqueue('GET', 'https://api.provider.example/', '{"x-a": "1\r\nx-b: 2"}', NULL, jsonb_build_object('org_id', :'org_a'));
SELECT donatello.http_enqueue('GET', 'https://api.provider.example/', '{"x-a": 1}', NULL, jsonb_build_object('org_id', :'org_a'));
SELECT donatello.http_enqueue('GET', 'https://api.provider.example/', NULL, NULL, jsonb_build_object('org_id', :'org_a', 'retries', 3));
SELECT donatello.http_enqueue('GET', 'https://api.provider.example/', NULL, NULL, jsonb_build_object('org_id', :'org_a', 'max_attempts', 0));
SELECT donatello.http_enqueue('GET', 'https://api.provider.example/', NULL, NULL, jsonb_build_object('org_id', :'org_a', 'backoff', '["soon"]'::jsonb));
SELECT donatello.http_enqueue('GET', 'https://api.provider.example/', NULL, NULL, jsonb_build_object('org_id', :'org_a', 'backoff', '[]'::jsonb));
SELECT donatello.http_enqueue('GET', 'https://api.provider.example/', NULL, NULL, jsonb_build_object('org_id', :'org_a', 'retry_on', '["sometimes"]'::jsonb));
SELECT donatello.http_enqueue('GET', 'https://api.provider.example/', NULL, NULL, jsonb_build_object('org_id', :'org_a', 'hook', 'no_such_hook'));
SELECT donatello.http_enqueue('GET', 'https://api.provider.example/', NULL, NULL, jsonb_build_object('org_id', :'org_a', 'hook', 'wrong_hook'));
SELECT donatello.http_enqueue('GET', 'https://api.provider.example/', NULL, NULL, '[]');
SELECT donatello.http_enqueue('GET', 'https://api.provider.example/', NULL, NULL);
-- the hook runs as the role that queued the request, which must be able to run it
CREATE ROLE dispatcher_regress_service IN ROLE donatello_service;
REVOKE EXECUTE ON FUNCTION public.on_provider_done(uuid, integer, jsonb, bytea, text) FROM PUBLIC;
CREATE FUNCTION public.on_provider_done_too(request_id uuid, status integer, headers jsonb, body bytea, error text)
    RETURNS void LANGUAGE sql AS $$ SELECT $$;
SET ROLE dispatcher_regress_service;
SELECT donatello.http_enqueue('GET', 'https://api.provider.example/', NULL, NULL,
                              jsonb_build_object('org_id', :'org_a', 'hook', 'public.on_provider_done'));
SELECT donatello.http_enqueue('GET', 'https://api.provider.example/', NULL, NULL,
                              jsonb_build_object('org_id', :'org_a', 'hook', 'public.on_provider_done_too')) AS req2 \gset
RESET ROLE;
SELECT hook, hook_role FROM donatello.outbox WHERE id = :'req2';

-- settings are checked
ALTER SYSTEM SET donatello.webhook_retry_schedule = '1min, soon';
ALTER SYSTEM SET donatello.allowed_hosts = 'localhost, 10.0.0.0/8';
SHOW donatello.webhook_retry_schedule;
SHOW donatello.dispatcher_max_in_flight;

-- reading deliveries: webhook:manage in the same organization only
INSERT INTO donatello.delivery_attempts (org_id, delivery_id, attempt_no, started_at, latency_ms, status_code, response_excerpt)
SELECT org_id, id, 1, now(), 12.5, 503, 'try later' FROM donatello.outbox WHERE id = :'d_gen';
SELECT donatello.emit_event(:'org_b', 'generation.completed', '{}') IS NOT NULL AS b_emitted;
SET ROLE donatello_user;
SELECT set_config('request.jwt.claims', json_build_object('sub', :'admin_a', 'org', :'org_a')::text, false) IS NOT NULL AS as_admin_a;
SELECT url, active FROM donatello_api.webhook_endpoints ORDER BY url;
SELECT event_type, url, state FROM donatello_api.webhook_deliveries ORDER BY event_type, url;
SELECT attempt_no, status_code, response_excerpt FROM donatello_api.webhook_delivery_attempts;
SELECT type FROM donatello_api.webhook_events ORDER BY type;
SELECT count(*) AS b_rows FROM donatello_api.webhook_deliveries WHERE org_id = :'org_b';
SELECT count(*) AS http_rows FROM donatello.outbox WHERE kind = 'http';
SELECT secret_sealed FROM donatello.webhook_endpoints;
SELECT donatello_api.create_webhook_endpoint('https://hooks.example.com/api', '{generation.*}') ? 'secret' AS created_through_api;
\set VERBOSITY sqlstate
SELECT donatello_api.disable_webhook_endpoint(:'ep_b');
\set VERBOSITY default
SELECT set_config('request.jwt.claims', json_build_object('sub', :'member_a', 'org', :'org_a')::text, false) IS NOT NULL AS as_member_a;
SELECT count(*) AS member_endpoints FROM donatello_api.webhook_endpoints;
SELECT count(*) AS member_deliveries FROM donatello_api.webhook_deliveries;
SELECT count(*) AS member_attempts FROM donatello_api.webhook_delivery_attempts;
\set VERBOSITY sqlstate
SELECT donatello_api.create_webhook_endpoint('https://hooks.example.com/member', '{*}');
\set VERBOSITY default
SELECT set_config('request.jwt.claims', json_build_object('sub', :'admin_b', 'org', :'org_b')::text, false) IS NOT NULL AS as_admin_b;
SELECT url FROM donatello_api.webhook_endpoints;
SELECT count(*) AS a_deliveries FROM donatello_api.webhook_deliveries WHERE org_id = :'org_a';
\set VERBOSITY sqlstate
SELECT donatello_api.retry_webhook_delivery(:'d_gen');
\set VERBOSITY default
SELECT set_config('request.jwt.claims', json_build_object('sub', :'admin_a', 'org', :'org_b')::text, false) IS NOT NULL AS forged_org;
SELECT count(*) AS forged_rows FROM donatello_api.webhook_endpoints;
RESET request.jwt.claims;
RESET ROLE;
DROP ROLE dispatcher_regress_service;
