# Step group: generation's building blocks (issue 8): safety checks,
# providers and models, routing, circuit breakers, PNG headers, signed image
# URLs, and the mock provider. Uses the psql variables :'org', :'design',
# :'marketing', :'bob' and :'other_org' remembered by the earlier steps.
# Starts the mock provider on 127.0.0.1:18801 and stops it at the end.

MOCK_PORT=18801
MOCK_URL="http://127.0.0.1:$MOCK_PORT"

step "Personal data in a prompt is found in C, by kind and position, never echoed"
run_sql "SELECT jsonb_pretty(donatello.scan_pii(
  'Poster for jane.doe@example.com, charge card 4111 1111 1111 1111, call +44 20 7946 0958')) AS scan;"
run_sql "SELECT donatello.scan_pii('A watercolor fox in a misty forest at dawn') AS clean_prompt;"

step "Each organization has its own content blocklist (case-, accent- and spacing-insensitive)"
run_sql "SELECT donatello.add_blocked_terms(:'org', ARRAY['gore', 'very bad', 'crème brûlée'], 'policy') AS added;"
say "Bob (Acme) and a principal of Globex check the same prompt:"
CHECK_SQL="SELECT r->'clean' AS clean, m->>'term' AS term, m->>'category' AS category, m->>'start' AS start, m->>'end' AS \"end\"
  FROM donatello.check_content('A GÖRE scene, VERY...bad taste, creme BRULEE') r
  LEFT JOIN LATERAL jsonb_array_elements(r->'matches') m ON true;"
as_principal bob org "$CHECK_SQL"
as_principal bob other_org "$CHECK_SQL"

step "A mock image provider (OpenAI images API shape) on $MOCK_URL"
node test/fixtures/mock-provider/server.mjs --port "$MOCK_PORT" --api-key sk-demo-mock-key >"$DEMO_DIR/mock-provider.log" 2>&1 &
MOCK_PID=$!
# stop it even if a later command of this step fails (and keep any EXIT trap set before)
PREV_EXIT_TRAP=$(trap -p EXIT)
trap 'kill "$MOCK_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
	curl -fsS "$MOCK_URL/health" >/dev/null 2>&1 && break
	sleep 0.1
done
say "$(head -1 "$DEMO_DIR/mock-provider.log")"
curl -fsS -X POST "$MOCK_URL/v1/images/generations" -H 'authorization: Bearer sk-demo-mock-key' \
	-H 'content-type: application/json' \
	-d '{"model": "mock-premium", "prompt": "a lighthouse at night", "n": 1, "size": "256x256", "response_format": "b64_json"}' |
	node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).data[0].b64_json))' |
	base64 -d >"$DEMO_DIR/mock-lighthouse.png"
say "The mock drew $DEMO_DIR/mock-lighthouse.png; donatello reads its header:"
printf '%s  sql> SELECT donatello.png_info(<the bytes of mock-lighthouse.png>);%s\n' "$DIM" "$RESET"
sql_value "SELECT donatello.png_info(decode('$(base64 -w0 "$DEMO_DIR/mock-lighthouse.png")', 'base64'))" | sed 's/^/  /'

step "Two providers and three models; API keys are sealed at rest"
run_sql "SELECT donatello.register_provider('mock-primary', 'openai', '$MOCK_URL/', 'sk-demo-mock-key') IS NOT NULL AS primary_registered;
SELECT donatello.register_provider('mock-backup', 'openai', '$MOCK_URL', 'sk-demo-mock-key') IS NOT NULL AS backup_registered;
SELECT donatello.register_model('mock-primary', 'mock-premium', 0.08, 10, 4, 9, true, '{1024x1024,1792x1024,256x256}') IS NOT NULL AS premium;
SELECT donatello.register_model('mock-primary', 'mock-fast', 0.02, 6, 9, 8, true, '{1024x1024,256x256}') IS NOT NULL AS fast;
SELECT donatello.register_model('mock-backup', 'mock-budget', 0.005, 5, 7, 6, false, '{1024x1024}') IS NOT NULL AS budget;"
run_sql "SELECT name, base_url, octet_length(api_key_sealed) AS sealed_bytes,
       position('sk-demo-mock-key'::bytea IN api_key_sealed) = 0 AS key_not_stored_in_clear
  FROM donatello.providers ORDER BY name;
SELECT provider, model, cost_per_image, quality, speed, reliability, commercial_use, sizes, circuit
  FROM donatello_api.models ORDER BY provider, model;"

step "Routing: Design prefers quality, Marketing prefers cost"
do_sql "SELECT donatello.set_department_preference(:'design', 'quality');
SELECT donatello.set_department_preference(:'marketing', 'cost');"
run_sql "SELECT d.name AS department, r->>'preference' AS preference, r->>'complexity' AS complexity,
       (SELECT string_agg(format('%s (%s)', x->>'model', x->>'score'), ', ' ORDER BY (x->>'rank')::int)
          FROM jsonb_array_elements(r->'candidates') x) AS ranking
  FROM donatello.departments d, donatello.rank_models('a lighthouse at night', '{}', d.id) r
 WHERE d.org_id = :'org' ORDER BY 1;"
say "In Marketing, a long, detailed prompt raises the weight of quality:"
run_sql "SELECT left(p, 40) AS prompt, r->>'complexity' AS complexity, r->'weights'->>'quality' AS quality_weight,
       (SELECT string_agg(x->>'model', ', ' ORDER BY (x->>'rank')::int) FROM jsonb_array_elements(r->'candidates') x) AS ranking
  FROM unnest(ARRAY['a lighthouse at night',
                    'A lighthouse at night on a rocky coast, storm clouds, crashing waves, a lone keeper with a lantern, warm window light, cinematic, volumetric fog, oil painting, dramatic composition, seagulls']) p,
       donatello.rank_models(p, '{}', :'marketing') r;"
say "Commercial use and a wide size leave fewer candidates:"
run_sql "SELECT (SELECT string_agg(x->>'model', ', ') FROM jsonb_array_elements(r->'candidates') x) AS eligible,
       (SELECT string_agg(format('%s: %s', x->>'model', x->>'reason'), '; ') FROM jsonb_array_elements(r->'excluded') x) AS excluded
  FROM donatello.rank_models('a lighthouse', '{\"commercial\": true, \"size\": \"1792x1024\", \"n\": 2}', :'marketing') r;"
expect_error DNV01 "SELECT donatello.rank_models('a lighthouse', '{\"size\": \"huge\"}');"

step "A failing model: three failures open its circuit, it leaves the ranking"
say "The mock is told to fail for mock-premium:"
curl -fsS -X POST "$MOCK_URL/_mock/failures" -d '{"model": "mock-premium", "mode": "500"}' >/dev/null
printf '  HTTP %s from the mock for mock-premium\n' "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$MOCK_URL/v1/images/generations" \
	-H 'authorization: Bearer sk-demo-mock-key' -d '{"model": "mock-premium", "prompt": "x", "size": "256x256"}')"
remember PREMIUM "$(sql_value "SELECT m.id FROM donatello.models m WHERE m.name = 'mock-premium'")"
run_sql "SELECT donatello.model_circuit_report(:'premium', false) AS first,
       donatello.model_circuit_report(:'premium', false) AS second,
       donatello.model_circuit_report(:'premium', false) AS third;
SELECT donatello.model_circuit_acquire(:'premium') AS may_call_now;
SELECT (SELECT string_agg(x->>'model', ', ' ORDER BY (x->>'rank')::int) FROM jsonb_array_elements(r->'candidates') x) AS ranking,
       (SELECT string_agg(format('%s: %s', x->>'model', x->>'reason'), '; ') FROM jsonb_array_elements(r->'excluded') x) AS excluded
  FROM donatello.rank_models('a lighthouse at night', '{}', :'design') r;"
say "After the cool-down (simulated here) one trial request may go; its success closes the circuit:"
run_sql "UPDATE donatello.model_circuits SET retry_at = now() - interval '1 second' WHERE model_id = :'premium';
SELECT donatello.model_circuit_state(:'premium') AS state, donatello.model_circuit_acquire(:'premium') AS trial,
       donatello.model_circuit_acquire(:'premium') AS second_caller;
SELECT donatello.model_circuit_report(:'premium', true) AS after_success;"

step "Signed, expiring image URLs"
IMAGE_URL=$(sql_value "SELECT donatello.image_url('6f1c2c1e-0000-4000-8000-000000000001', '15 minutes')")
say "  $IMAGE_URL"
EXP=$(sed -n 's/.*exp=\([0-9]*\).*/\1/p' <<<"$IMAGE_URL")
SIG=$(sed -n 's/.*sig=\(.*\)$/\1/p' <<<"$IMAGE_URL")
run_sql "SELECT donatello.verify_image_url('6f1c2c1e-0000-4000-8000-000000000001', $EXP, '$SIG') AS valid,
       donatello.verify_image_url('6f1c2c1e-0000-4000-8000-000000000002', $EXP, '$SIG') AS other_image,
       donatello.verify_image_url('6f1c2c1e-0000-4000-8000-000000000001', $EXP + 3600, '$SIG') AS extended;"

kill "$MOCK_PID" 2>/dev/null || true
wait "$MOCK_PID" 2>/dev/null || true
eval "${PREV_EXIT_TRAP:-trap - EXIT}"
say "Next: the whole pipeline, from generate() to the image (step group 85)."
