-- Providers, models, department preferences, request settings and circuit
-- breakers: registration and its validation, keys sealed at rest, the
-- circuit state machine through its SQL functions.

-- providers
SELECT donatello.register_provider('openai', 'openai', 'HTTPS://API.OpenAI.com/', 'sk-proj-test-key-1') AS openai \gset
SELECT donatello.register_provider('local-sdxl', 'openai', 'http://127.0.0.1:18801/base/') AS local \gset
SELECT name, kind, base_url, api_key_sealed IS NOT NULL AS has_key FROM donatello.providers ORDER BY name;

-- the key is sealed: not in the row, opened only for its own row
SELECT position('sk-proj-test-key-1'::bytea IN api_key_sealed) = 0 AS key_not_in_row,
       donatello.secret_key_id(api_key_sealed) = donatello.root_key_id() AS sealed_by_root_key
  FROM donatello.providers WHERE name = 'openai';
SELECT donatello.provider_api_key(:'openai') AS opened, donatello.provider_api_key(:'local') AS no_key;
SELECT donatello.secret_open('provider_api_key', '00000000-0000-0000-0000-0000000000aa', api_key_sealed) FROM donatello.providers WHERE name = 'openai';

-- re-registering replaces the URL and the key (NULL: no key)
SELECT donatello.register_provider('openai', 'openai', 'https://api.openai.com/v1-proxy', 'sk-proj-test-key-2') = :'openai' AS same_id;
SELECT donatello.provider_api_key(:'openai') AS rotated;
SELECT donatello.register_provider('openai', 'openai', 'https://api.openai.com', NULL) = :'openai' AS same_id;
SELECT api_key_sealed IS NULL AS key_removed, base_url FROM donatello.providers WHERE name = 'openai';
SELECT donatello.register_provider('openai', 'openai', 'https://api.openai.com', 'sk-proj-test-key-3') IS NOT NULL AS rekeyed;

-- invalid providers; a key or a password never appears in a message
SELECT donatello.register_provider('Open AI', 'openai', 'https://api.openai.com');
SELECT donatello.register_provider('sd', 'stability', 'https://api.stability.ai');
SELECT donatello.register_provider('sd', 'openai', 'ftp://files.example.com');
SELECT donatello.register_provider('sd', 'openai', 'api.example.com');
SELECT donatello.register_provider('sd', 'openai', 'https://admin:hunter2@api.example.com');
SELECT donatello.register_provider('sd', 'openai', 'https://api.example.com/?key=abc');
SELECT donatello.register_provider('sd', 'openai', 'https://api.example.com/#top');
SELECT donatello.register_provider('sd', 'openai', 'https://api.example.com', '   ');
SELECT donatello.register_provider('sd', 'openai', 'https://api.example.com', 'sk-secret with-space');
SELECT count(*) AS providers FROM donatello.providers;

-- models
SELECT donatello.register_model('openai', 'dall-e-3', 0.04, 9, 5, 8, true, '{1792x1024,1024x1024,1024x1792,1024x1024}') AS dalle3 \gset
SELECT donatello.register_model('openai', 'dall-e-2', 0.02, 6, 8, 8, true, '{256x256,512x512,1024x1024}') AS dalle2 \gset
SELECT donatello.register_model('local-sdxl', 'stabilityai/sdxl-turbo', 0.000125, 7, 9, 6, false, '{1024x1024}') AS sdxl \gset
SELECT provider, model, cost_per_image, quality, speed, reliability, commercial_use, sizes, circuit
  FROM donatello_api.models ORDER BY provider, model;
SELECT cost_per_image_micros FROM donatello.models WHERE id = :'sdxl';

-- updating a model keeps its id
SELECT donatello.register_model('openai', 'dall-e-2', 0.018, 6, 8, 9, true, '{1024x1024}') = :'dalle2' AS same_id;
SELECT cost_per_image, reliability, sizes FROM donatello_api.models WHERE id = :'dalle2';

-- invalid models
SELECT donatello.register_model('nobody', 'm', 0.01, 5, 5, 5, true, '{1024x1024}');
SELECT donatello.register_model('openai', 'bad name', 0.01, 5, 5, 5, true, '{1024x1024}');
SELECT donatello.register_model('openai', 'm', -0.01, 5, 5, 5, true, '{1024x1024}');
SELECT donatello.register_model('openai', 'm', 0.0000001, 5, 5, 5, true, '{1024x1024}');
SELECT donatello.register_model('openai', 'm', 0.01, 0, 5, 5, true, '{1024x1024}');
SELECT donatello.register_model('openai', 'm', 0.01, 5, 5, 11, true, '{1024x1024}');
SELECT donatello.register_model('openai', 'm', 0.01, 5, 5, 5, NULL, '{1024x1024}');
SELECT donatello.register_model('openai', 'm', 0.01, 5, 5, 5, true, '{}');
SELECT donatello.register_model('openai', 'm', 0.01, 5, 5, 5, true, '{1024x1024,big}');
SELECT donatello.register_model('openai', 'm', 0.01, 5, 5, 5, true, '{32x32}');
SELECT donatello.register_model('openai', 'm', 0.01, 5, 5, 5, true, '{1024X1024}');

-- image sizes
SELECT s, donatello.is_valid_image_size(s) AS valid
  FROM unnest(ARRAY['1024x1024', '64x4096', '63x64', '4097x64', '01024x1024', '1024x', 'x1024', '1024 x 1024', '1024x1024x3']) s;

-- request settings: defaults, and each kind of mistake
SELECT donatello.check_generation_request('a fox') AS defaults;
SELECT donatello.check_generation_request('a fox', '{"size": "1792x1024", "n": 2, "quality": "hd", "commercial": true}') AS all_set;
SELECT donatello.check_generation_request('a fox', NULL) AS null_settings;
SELECT donatello.check_generation_request(NULL, '{}');
SELECT donatello.check_generation_request(E'  \n\t ', '{}');
SELECT donatello.check_generation_request('a fox', '[1]');
SELECT donatello.check_generation_request('a fox', '{"style": "vivid"}');
SELECT donatello.check_generation_request('a fox', '{"size": "huge"}');
SELECT donatello.check_generation_request('a fox', '{"size": 1024}');
SELECT donatello.check_generation_request('a fox', '{"n": 0}');
SELECT donatello.check_generation_request('a fox', '{"n": 1.5}');
SELECT donatello.check_generation_request('a fox', '{"n": 5}');
SELECT donatello.check_generation_request('a fox', '{"n": "2"}');
SELECT donatello.check_generation_request('a fox', '{"quality": "ultra"}');
SELECT donatello.check_generation_request('a fox', '{"commercial": "yes"}');
SET donatello.max_prompt_length = 10;
SELECT donatello.check_generation_request('a fox in a forest', '{}');
SELECT donatello.check_generation_request('ünïcödé ok', '{}') IS NOT NULL AS ten_characters_fit;
RESET donatello.max_prompt_length;

-- department preferences
SELECT donatello.create_organization('Router Org', 'router-org') AS org \gset
SELECT donatello.create_department(:'org', 'Design') AS design \gset
SELECT donatello.create_department(:'org', 'Finance') AS finance \gset
SELECT donatello.department_preference(:'design') AS unset, donatello.department_preference(NULL) AS no_department;
SELECT donatello.set_department_preference(:'design', 'quality');
SELECT donatello.set_department_preference(:'finance', 'cost');
SELECT donatello.set_department_preference(:'finance', 'balanced');
SELECT d.name, donatello.department_preference(d.id) FROM donatello.departments d WHERE d.org_id = :'org' ORDER BY 1;
SELECT donatello.set_department_preference(:'design', 'fast');
SELECT donatello.set_department_preference('00000000-0000-0000-0000-000000000000', 'cost');
-- another organization's principal sees none of these rows
SELECT donatello.create_organization('Router Elsewhere', 'router-elsewhere') AS elsewhere \gset
SET ROLE donatello_user;
SELECT set_config('request.jwt.claims', json_build_object('org', :'elsewhere')::text, false) IS NOT NULL AS as_elsewhere;
SELECT count(*) AS visible FROM donatello.department_generation_settings;
SELECT donatello.department_preference(:'design') AS design_seen_from_elsewhere,
       donatello.rank_models('a fox', '{}', :'design')->>'preference' AS ranked_from_elsewhere;
SELECT set_config('request.jwt.claims', json_build_object('org', :'org')::text, false) IS NOT NULL AS as_org;
SELECT count(*) AS visible FROM donatello.department_generation_settings;
SELECT donatello.department_preference(:'design') AS design_seen_from_org,
       donatello.rank_models('a fox', '{}', :'design')->>'preference' AS ranked_from_org;
-- a user reads the registry but never the sealed keys
SELECT count(*) > 0 AS reads_models FROM donatello.models;
SELECT api_key_sealed FROM donatello.providers;
RESET ROLE;
RESET request.jwt.claims;

-- circuit breakers (threshold 3 failures in 60 s, cool-down 30 s: the defaults)
SHOW donatello.circuit_failure_threshold;
SHOW donatello.circuit_failure_window;
SHOW donatello.circuit_cooldown;
SELECT donatello.model_circuit_state(:'dalle3') AS state, donatello.model_circuit_acquire(:'dalle3') AS may_go;
SELECT donatello.model_circuit_report(:'dalle3', false) AS after_1, donatello.model_circuit_report(:'dalle3', false) AS after_2;
SELECT failures, state FROM donatello.model_circuits WHERE model_id = :'dalle3';
-- a success while closed forgets the failures
SELECT donatello.model_circuit_report(:'dalle3', true) AS after_success;
SELECT failures, last_success_at IS NOT NULL AS success_recorded FROM donatello.model_circuits WHERE model_id = :'dalle3';
-- failures outside the window start a new count
SELECT donatello.model_circuit_report(:'dalle3', false) AS f1, donatello.model_circuit_report(:'dalle3', false) AS f2;
UPDATE donatello.model_circuits SET window_started_at = now() - interval '61 seconds' WHERE model_id = :'dalle3';
SELECT donatello.model_circuit_report(:'dalle3', false) AS f3_in_new_window;
SELECT failures FROM donatello.model_circuits WHERE model_id = :'dalle3';
-- three failures within the window open it for the cool-down
SELECT donatello.model_circuit_report(:'dalle3', false) AS f2, donatello.model_circuit_report(:'dalle3', false) AS f3;
SELECT state, retry_at - opened_at = interval '30 seconds' AS cooldown_30s, times_opened, last_failure_at IS NOT NULL AS failure_recorded
  FROM donatello.model_circuits WHERE model_id = :'dalle3';
SELECT donatello.model_circuit_acquire(:'dalle3') AS may_go_while_open;
SELECT donatello.model_circuit_report(:'dalle3', true) AS late_success_while_open;
SELECT donatello.model_circuit_report(:'dalle3', false) AS late_failure_while_open;
SELECT times_opened FROM donatello.model_circuits WHERE model_id = :'dalle3';
-- the cool-down ends (simulated): half-open, one trial may go
UPDATE donatello.model_circuits SET retry_at = now() - interval '1 second' WHERE model_id = :'dalle3';
SELECT donatello.model_circuit_state(:'dalle3') AS state;
SELECT donatello.model_circuit_acquire(:'dalle3') AS trial, donatello.model_circuit_acquire(:'dalle3') AS second_trial;
SELECT donatello.model_circuit_state(:'dalle3') AS state;
-- the trial fails: open again
SELECT donatello.model_circuit_report(:'dalle3', false) AS after_failed_trial;
SELECT times_opened FROM donatello.model_circuits WHERE model_id = :'dalle3';
-- cool-down over again; a trial that never reports is presumed lost after a cool-down
UPDATE donatello.model_circuits SET retry_at = now() - interval '1 second' WHERE model_id = :'dalle3';
SELECT donatello.model_circuit_acquire(:'dalle3') AS trial;
UPDATE donatello.model_circuits SET trial_started_at = now() - interval '31 seconds' WHERE model_id = :'dalle3';
SELECT donatello.model_circuit_state(:'dalle3') AS state, donatello.model_circuit_acquire(:'dalle3') AS new_trial;
-- the trial succeeds: closed
SELECT donatello.model_circuit_report(:'dalle3', true) AS after_trial_success;
SELECT state, failures, retry_at, trial_started_at FROM donatello.model_circuits WHERE model_id = :'dalle3';
-- a model without a circuit row is closed, and gets one on first use
DELETE FROM donatello.model_circuits WHERE model_id = :'dalle2';
SELECT donatello.model_circuit_state(:'dalle2') AS state, donatello.model_circuit_acquire(:'dalle2') AS may_go,
       donatello.model_circuit_report(:'dalle2', false) AS after_failure;
SELECT count(*) AS circuit_rows FROM donatello.model_circuits WHERE model_id = :'dalle2';
-- unknown models
SELECT donatello.model_circuit_acquire('00000000-0000-0000-0000-000000000000');
SELECT donatello.model_circuit_state('00000000-0000-0000-0000-000000000000');
SELECT donatello.circuit_effective_state('broken', NULL, NULL);

-- deleting a provider deletes its models and their circuits
SELECT donatello.register_provider('temp', 'openai', 'https://temp.example.com') AS temp \gset
SELECT donatello.register_model('temp', 'tmp-1', 0, 5, 5, 5, true, '{512x512}') AS tmp_model \gset
DELETE FROM donatello.providers WHERE id = :'temp';
SELECT (SELECT count(*) FROM donatello.models WHERE id = :'tmp_model') AS models,
       (SELECT count(*) FROM donatello.model_circuits WHERE model_id = :'tmp_model') AS circuits;

-- who may call what
SELECT f AS function,
       has_function_privilege('donatello_user', f, 'EXECUTE') AS user_may,
       has_function_privilege('donatello_service', f, 'EXECUTE') AS service_may
  FROM unnest(ARRAY['donatello.register_provider(text,text,text,text)',
                    'donatello.register_model(text,text,numeric,integer,integer,integer,boolean,text[])',
                    'donatello.provider_api_key(uuid)',
                    'donatello.set_department_preference(uuid,text)',
                    'donatello.model_circuit_acquire(uuid)',
                    'donatello.model_circuit_report(uuid,boolean)',
                    'donatello.rank_models(text,jsonb,uuid)',
                    'donatello.check_generation_request(text,jsonb)']) f;
SELECT has_table_privilege('donatello_user', 'donatello.providers', 'SELECT') AS user_reads_providers,
       has_table_privilege('donatello_user', 'donatello_api.models', 'SELECT') AS user_reads_models_view;
