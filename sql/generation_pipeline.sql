-- donatello.generate(): validation and refusal paths, in the order the
-- request checks them (validation, permission, safety, routing); the C
-- helpers of the pipeline; image_fetch; the provider credential guard of
-- http_enqueue. The worker side runs in test/client/generation_pipeline.test.mjs.
-- The budget refusals (DNB01, DNB02, a department without a budget: DNV02)
-- come from donatello.reserve.

SELECT donatello.create_organization('Pipeline', 'pipeline-regress') AS org \gset
SELECT donatello.create_organization('Other', 'pipeline-regress-other') AS other_org \gset
SELECT donatello.create_department(:'org', 'Design') AS design \gset
SELECT donatello.create_user(:'org', 'maker@pipeline.test', 'Maker', :'design') AS maker \gset
SELECT donatello.create_user(:'org', 'viewer@pipeline.test', 'Viewer', :'design') AS viewer \gset
SELECT donatello.create_user(:'org', 'loner@pipeline.test', 'Loner') AS loner \gset
SELECT donatello.create_user(:'other_org', 'stranger@pipeline.test', 'Stranger') AS stranger \gset
SELECT donatello.grant_role(:'maker', 'member'), donatello.grant_role(:'viewer', 'viewer'),
       donatello.grant_role(:'loner', 'member');
SELECT donatello.add_blocked_terms(:'org', ARRAY['gore', 'very bad'], 'violence');
SELECT donatello.register_provider('pipeline-mock', 'openai', 'http://provider.pipeline.test/api') AS provider \gset
SELECT donatello.register_model('pipeline-mock', 'pipeline-model', 0.02, 7, 7, 7, true, '{1024x1024}') IS NOT NULL AS registered;

-- run a statement that must fail: its SQLSTATE, message and detail (ids and times masked)
CREATE FUNCTION pg_temp.try(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    state text; message text; detail text;
BEGIN
    EXECUTE statement;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
    RETURN regexp_replace(regexp_replace(state || ': ' || message || coalesce(nullif(' | ' || detail, ' | '), ''),
                          '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'g'),
                          '[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}[+-][0-9]{2}(:[0-9]{2})?', '<time>', 'g');
END
$$;

\set claims_maker '{"sub": "' :maker '", "org": "' :org '"}'
\set claims_viewer '{"sub": "' :viewer '", "org": "' :org '"}'
\set claims_loner '{"sub": "' :loner '", "org": "' :org '"}'
\set claims_cross '{"sub": "' :stranger '", "org": "' :org '"}'

-- 1. validation comes first (DNV01, 22004), even without a principal
SELECT pg_temp.try($$SELECT donatello.generate(NULL)$$);
SELECT pg_temp.try($$SELECT donatello.generate('   ')$$);
SELECT pg_temp.try($$SELECT donatello.generate('a fox', '{"size": "huge"}')$$);
SELECT pg_temp.try($$SELECT donatello.generate('a fox', '{"n": 9}')$$);
SELECT pg_temp.try($$SELECT donatello.generate('a fox', '{"quality": "ultra"}')$$);
SELECT pg_temp.try($$SELECT donatello.generate('a fox', '{"style": "vivid"}')$$);
SELECT pg_temp.try($$SELECT donatello.generate(repeat('fox ', 1001))$$);

-- 2. permission (DNP01): no principal, a principal of another organization,
-- a viewer, a deactivated user
SELECT pg_temp.try($$SELECT donatello.generate('a fox')$$);
SELECT set_config('request.jwt.claims', :'claims_cross', false) IS NOT NULL AS cross_org;
SELECT pg_temp.try($$SELECT donatello.generate('a fox')$$);
SELECT set_config('request.jwt.claims', :'claims_viewer', false) IS NOT NULL AS as_viewer;
SELECT pg_temp.try($$SELECT donatello.generate('a fox')$$);
SELECT pg_temp.try($$SELECT donatello_api.generate('a fox')$$);
SELECT set_config('request.jwt.claims', :'claims_loner', false) IS NOT NULL AS as_loner;
SELECT pg_temp.try($$SELECT donatello.generate('a fox')$$);

-- 3. safety: personal data (DNS01: the kinds, never the values), then the
-- organization's blocklist (DNS02)
SELECT set_config('request.jwt.claims', :'claims_maker', false) IS NOT NULL AS as_maker;
SELECT pg_temp.try($$SELECT donatello.generate('card 4111 1111 1111 1111, call +44 20 7946 0958, ssn 123-45-6789')$$);
SELECT pg_temp.try($$SELECT donatello.generate('a portrait of jane.doe@example.com')$$);
SELECT pg_temp.try($$SELECT donatello.generate('a GORE scene, very... BAD')$$);

-- 4. routing: no eligible model (DNM01), with the reasons (only this test's
-- model registered, for the length of a transaction)
BEGIN;
DELETE FROM donatello.providers WHERE name <> 'pipeline-mock';
SELECT pg_temp.try($$SELECT donatello.generate('a gorey sky', '{"size": "4000x4000"}')$$);  -- not a whole word: passes safety
SELECT pg_temp.try($$SELECT donatello.generate('a fox', '{"size": "512x512", "commercial": true}')$$);
ROLLBACK;

-- 5. the budget (DNB01, DNB02): the reservation is the dearest model the
-- job may use, here pipeline-model at 0.02
SELECT donatello.create_department(:'org', 'Thrift') AS thrift \gset
SELECT donatello.create_user(:'org', 'thrifty@pipeline.test', 'Thrifty', :'thrift') AS thrifty \gset
SELECT donatello.grant_role(:'thrifty', 'member');
SELECT set_config('request.jwt.claims', '{"sub": "' || :'thrifty' || '", "org": "' || :'org' || '"}', false) IS NOT NULL AS as_thrifty;
BEGIN;
DELETE FROM donatello.providers WHERE name <> 'pipeline-mock';
SELECT pg_temp.try($$SELECT donatello.generate('a fox')$$);   -- no budget at all
SELECT donatello.set_budget(:'thrift', 0.01, 'hard');
SELECT pg_temp.try($$SELECT donatello.generate('a fox')$$);   -- 0.02 does not fit in 0.01
SELECT donatello.settle(donatello.reserve(:'thrift', 0.01), 0.01);   -- spend it all: locked
SELECT pg_temp.try($$SELECT donatello.generate('a fox')$$);
SELECT spent, reserved, locked FROM donatello.budget_status(:'thrift');
ROLLBACK;
SELECT set_config('request.jwt.claims', :'claims_maker', false) IS NOT NULL AS as_maker;

-- nothing was queued or reserved by any refusal
SELECT count(*) AS jobs FROM donatello.generation_jobs;
SELECT count(*) AS provider_requests FROM donatello.outbox WHERE provider_id IS NOT NULL;
SELECT set_config('request.jwt.claims', '', false) IS NOT NULL AS signed_out;

-- status of an unknown job
SELECT pg_temp.try($$SELECT donatello.generation_status('00000000-0000-4000-8000-000000000000')$$);
SELECT pg_temp.try($$SELECT donatello_api.generation_status('00000000-0000-4000-8000-000000000000')$$);

-- the retry policy of provider requests, from the settings
SELECT donatello.generation_request_policy();
SET donatello.generation_retry_backoff = '500ms, 1s, 3s';
SET donatello.generation_attempts_per_model = 4;
SET donatello.generation_request_timeout = '90s';
SELECT donatello.generation_request_policy();
SET donatello.generation_retry_backoff = 'soon';
SET donatello.generation_retry_backoff = '';
RESET donatello.generation_retry_backoff;
RESET donatello.generation_attempts_per_model;
RESET donatello.generation_request_timeout;

-- decoding a provider's answer: a real PNG (1x1, RGB), hashed with SHA-256
SELECT image_index, mime_type, width, height, encode(content_hash, 'hex') = encode(sha256(data), 'hex') AS hash_ok,
       octet_length(data) AS bytes
  FROM donatello.generation_decode_images(convert_to(
    '{"created": 1, "data": [{"b64_json": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"}]}', 'UTF8'));
SELECT * FROM donatello.generation_decode_images(convert_to('{"data": []}', 'UTF8'));
SELECT * FROM donatello.generation_decode_images(convert_to('{"error": {"message": "no"}}', 'UTF8'));
SELECT * FROM donatello.generation_decode_images(convert_to('{"data": [{"url": "https://x.example/a.png"}]}', 'UTF8'));
SELECT * FROM donatello.generation_decode_images(convert_to('{"data": [{"b64_json": "not base64!"}]}', 'UTF8'));
SELECT * FROM donatello.generation_decode_images(convert_to('{"data": [{"b64_json": "/9j/4AAQSkZJRgABAQ=="}]}', 'UTF8'));
SELECT * FROM donatello.generation_decode_images(convert_to('{"data": [', 'UTF8'));

-- image_fetch: the signature first (DNP01), then the image (DNV02)
SELECT donatello.image_url('00000000-0000-4000-8000-0000000000aa', '10 minutes') AS url \gset
SELECT substring(:'url' FROM 'exp=([0-9]+)') AS exp, substring(:'url' FROM 'sig=(.*)$') AS sig \gset
SELECT * FROM donatello.image_fetch('00000000-0000-4000-8000-0000000000aa', :exp, :'sig');
SELECT * FROM donatello.image_fetch('00000000-0000-4000-8000-0000000000bb', :exp, :'sig');
SELECT * FROM donatello.image_fetch('00000000-0000-4000-8000-0000000000aa', :exp + 1, :'sig');
SELECT * FROM donatello.image_fetch('00000000-0000-4000-8000-0000000000aa', 1000, 'x');

-- the dispatcher adds a provider's key only to URLs under its base URL
SELECT donatello.register_provider('pipeline-keyed', 'openai', 'http://provider.pipeline.test/keyed', 'sk-regress-key') AS keyed \gset
SELECT donatello.provider_auth_header(:'keyed', 'http://provider.pipeline.test/keyed/v1/images/generations') AS inside,
       donatello.provider_auth_header(:'keyed', 'http://provider.pipeline.test/keyedX/v1') AS lookalike,
       donatello.provider_auth_header(:'keyed', 'http://evil.example/keyed/v1') AS elsewhere,
       donatello.provider_auth_header(:'provider', 'http://provider.pipeline.test/api/v1') AS keyless;
SELECT donatello.http_enqueue('POST', 'http://provider.pipeline.test/keyed/v1/images/generations', NULL, NULL,
                              jsonb_build_object('org_id', :'org', 'provider_id', :'keyed')) IS NOT NULL AS queued;
SELECT count(*) AS with_provider, bool_and(headers_sealed IS NULL) AS key_not_copied
  FROM donatello.outbox WHERE provider_id = :'keyed';
SELECT pg_temp.try(format($$SELECT donatello.http_enqueue('POST', 'http://provider.pipeline.test/other/v1', NULL, NULL,
                              jsonb_build_object('org_id', %L::uuid, 'provider_id', %L::uuid))$$, :'org', :'keyed'));
SELECT pg_temp.try(format($$SELECT donatello.http_enqueue('POST', 'http://provider.pipeline.test/keyed/v1', '{"Authorization": "Bearer mine"}', NULL,
                              jsonb_build_object('org_id', %L::uuid, 'provider_id', %L::uuid))$$, :'org', :'keyed'));
SELECT pg_temp.try(format($$SELECT donatello.http_enqueue('POST', 'http://provider.pipeline.test/keyed/v1', NULL, NULL,
                              jsonb_build_object('org_id', %L::uuid, 'provider_id', '00000000-0000-4000-8000-000000000000'))$$, :'org'));
DELETE FROM donatello.outbox WHERE provider_id = :'keyed';

-- what PUBLIC and the roles may call
SELECT p.proname, has_function_privilege('donatello_anon', p.oid, 'EXECUTE') AS anon,
       has_function_privilege('donatello_user', p.oid, 'EXECUTE') AS "user",
       has_function_privilege('donatello_service', p.oid, 'EXECUTE') AS service
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('donatello', 'donatello_api')
   AND p.proname IN ('generate', 'generation_status', 'image_fetch', 'provider_auth_header',
                     'generation_provider_response', 'generation_send', 'generation_decode_images')
 ORDER BY n.nspname, p.proname;
