# Step group: the generation pipeline end to end (issue 8), requested over HTTP:
# budgets for two departments, a generation by Bob (Design) whose first model
# fails so the job falls back to the next, the image written to ./tmp/demo/,
# the budget settled at the actual cost, the generation.completed webhook
# verified by the receiver of step 60, and two refusals: a prompt with a card
# number (DNS01) and a department whose budget cannot pay (DNB01).
# Uses :'org', :'design', :'marketing', :'bob', the providers and
# models of step 80 and $WEBHOOK_SECRET of step 60. Runs the mock provider on
# 127.0.0.1:18801 and the webhook receiver on 127.0.0.1:18600 while it runs.

PIPE_MOCK_PORT=18801
PIPE_RECEIVER_PORT=18600
PIPE_RECEIVER_LOG=$DEMO_DIR/pipeline-receiver.log
PIPE_LISTEN_LOG=$DEMO_DIR/pipeline-notifications.log
PIPE_PIDS=()

# Stop what this step started and put donatello.allowed_hosts back.
pipeline_demo_cleanup() {
	local pid
	for pid in "${PIPE_PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	PIPE_PIDS=()
	psql -X -q -c "ALTER SYSTEM RESET donatello.allowed_hosts" -c "SELECT pg_reload_conf()" >/dev/null
}

# pipeline_demo_until "SQL" VALUE: wait (at most 60 s) until the SQL returns VALUE
pipeline_demo_until() {
	local i
	for i in $(seq 600); do
		[ "$(sql_value "$1")" = "$2" ] && return 0
		sleep 0.1
	done
	echo "  demo: timed out waiting for $2 from: $1" >&2
	exit 1
}

step "Budgets: Design gets 5.00 more room this month, Marketing may spend 0.05 (hard limits)"
say "Raising Design's limit above what it has spent also unlocks it (it hit its limit earlier):"
do_sql "SELECT donatello.set_budget(:'design', (SELECT spent + 5.00 FROM donatello.budget_status(:'design')), 'hard');
SELECT donatello.set_budget(:'marketing', 0.05, 'hard');"
say "Erin (Marketing) becomes a member, so she may ask for generations:"
do_sql "SELECT donatello.grant_role(:'erin', 'member');"
run_sql "SELECT d.name AS department, b.\"limit\", b.spent, b.reserved, b.available
  FROM donatello.departments d, donatello.budget_status(d.id) b
 WHERE d.org_id = :'org' ORDER BY 1;"

step "The mock provider again, with mock-premium broken (every request answers 500)"
trap pipeline_demo_cleanup EXIT
node test/fixtures/mock-provider/server.mjs --port "$PIPE_MOCK_PORT" --api-key sk-demo-mock-key --fail mock-premium=500 \
	>"$DEMO_DIR/pipeline-mock.log" 2>&1 &
PIPE_PIDS+=($!)
(cd test/client && exec node lib/webhook-receiver.mjs --port "$PIPE_RECEIVER_PORT" --path /hooks --secret "$WEBHOOK_SECRET") \
	>"$PIPE_RECEIVER_LOG" 2>&1 &
PIPE_PIDS+=($!)
for _ in $(seq 100); do
	curl -fsS "http://127.0.0.1:$PIPE_MOCK_PORT/health" >/dev/null 2>&1 && grep -q listening "$PIPE_RECEIVER_LOG" && break
	sleep 0.1
done
say "$(head -1 "$DEMO_DIR/pipeline-mock.log"); the webhook receiver of step 60 listens again on :$PIPE_RECEIVER_PORT"
say "Providers on this machine are reached because the host is allow-listed (SSRF guard):"
do_sql "ALTER SYSTEM SET donatello.allowed_hosts = '127.0.0.1';
SELECT pg_reload_conf();"
until [ "$(sql_value "SHOW donatello.allowed_hosts")" = "127.0.0.1" ]; do sleep 0.1; done
say "Design prefers quality, so its ranking puts mock-premium, the broken model, first:"
run_sql "SELECT (x->>'rank')::int AS rank, x->>'provider' AS provider, x->>'model' AS model, x->>'score' AS score,
       x->>'estimated_cost' AS estimated_cost
  FROM jsonb_array_elements(donatello.rank_models('a lighthouse at night, oil painting', '{}', :'design')->'candidates') x;"

step "Bob (Design) asks for an image: checks, routing, budget reservation, job queued"
(cd test/client && exec node --input-type=module -e '
import pg from "pg";
const c = new pg.Client();
await c.connect();
c.on("notification", (n) => {
  console.log(n.payload);
  if (/"status": "(completed|failed)"/.test(n.payload)) c.end();
});
await c.query("LISTEN donatello_generation");
console.log("listening");
') >"$PIPE_LISTEN_LOG" 2>&1 &
PIPE_PIDS+=($!)
until grep -q listening "$PIPE_LISTEN_LOG"; do sleep 0.1; done
say "Over HTTP, with the access token Bob got from POST /rpc/login (step group 70):"
GEN_BODY='{"prompt": "a lighthouse at night, oil painting", "settings": {"size": "1024x1024"}}'
printf '%s  $ curl -X POST $DONATELLO_HTTP_URL/rpc/generate -H "Authorization: Bearer $ACCESS" -d '"'"'%s'"'"'%s\n' "$DIM" "$GEN_BODY" "$RESET"
GEN_OUT=$(curl -sS -X POST "$DONATELLO_HTTP_URL/rpc/generate" -H "Authorization: Bearer $ACCESS" \
	-H 'Content-Type: application/json' -d "$GEN_BODY" -w '\n%{http_code}')
say "  $(head -1 <<<"$GEN_OUT")  (HTTP $(tail -1 <<<"$GEN_OUT"))"
remember JOB "$(head -1 <<<"$GEN_OUT" | tr -d '"')"
say "  job $JOB"
as_principal bob org "SELECT s->>'status' AS status, s->'estimated_cost' AS estimated_cost,
       s->'ranking'->'candidates'->0->>'model' AS first_choice
  FROM donatello_api.generation_status(:'job') s;"
say "The reservation covers the dearest model the job may fall back to:"
run_sql "SELECT d.name AS department, b.spent, b.reserved, b.available
  FROM donatello.departments d, donatello.budget_status(d.id) b WHERE d.id = :'design';"

step "The dispatcher calls mock-premium: 500, retried after 2 s and 4 s, then falls back to the next-ranked model"
say "(the provider key is added by the dispatcher as it sends; the requesting session never opens it)"
pipeline_demo_until "SELECT status FROM donatello.generation_jobs WHERE id = :'job'" completed
run_sql "SELECT c->>'call' AS call, c->>'model' AS model, c->>'state' AS state, a->>'attempt' AS attempt,
       a->>'status' AS http_status, a->>'error' AS error, a->>'latency_ms' AS latency_ms,
       to_char((a->>'started_at')::timestamptz, 'HH24:MI:SS.MS') AS started
  FROM jsonb_array_elements(donatello.generation_status(:'job')->'calls') c,
       jsonb_array_elements(c->'attempts') a;"
say "Progress as a LISTEN donatello_generation client saw it:"
for _ in $(seq 50); do grep -q '"completed"' "$PIPE_LISTEN_LOG" && break; sleep 0.1; done
grep -v listening "$PIPE_LISTEN_LOG" | sed 's/^/  notify> /'
say "The circuits were told: one failure for mock-premium, one success for the model that answered:"
run_sql "SELECT m.model, c.state, c.failures, c.last_failure_at IS NOT NULL AS failed_once, c.last_success_at IS NOT NULL AS succeeded
  FROM donatello_api.models m JOIN donatello.model_circuits c ON c.model_id = m.id ORDER BY 1;"

step "The image: stored with its hash, type and size, served by a signed URL, written to ./tmp/demo/"
run_sql "SELECT i.model, i.mime_type, i.width, i.height, i.byte_size, left(encode(i.content_hash, 'hex'), 16) || '…' AS sha256,
       encode(i.prompt_hash, 'hex') = encode(sha256('a lighthouse at night, oil painting'), 'hex') AS prompt_hash_ok
  FROM donatello.images i WHERE i.job_id = :'job';"
IMAGE_URL=$(sql_value "SELECT donatello.generation_status(:'job')->'images'->0->>'url'")
IMAGE_ID=$(sed -n 's|^/images/\([^?]*\)?.*|\1|p' <<<"$IMAGE_URL")
IMAGE_EXP=$(sed -n 's/.*exp=\([0-9]*\).*/\1/p' <<<"$IMAGE_URL")
IMAGE_SIG=$(sed -n 's/.*sig=\(.*\)$/\1/p' <<<"$IMAGE_URL")
say "The HTTP layer serves it (the URL is signed and expires; its ETag is the content hash):"
printf '%s  $ curl "$DONATELLO_HTTP_URL%s"%s\n' "$DIM" "$IMAGE_URL" "$RESET"
curl -fsS -D "$DEMO_DIR/lighthouse.headers" -o "$DEMO_DIR/lighthouse.png" "$DONATELLO_HTTP_URL$IMAGE_URL"
grep -iE '^(HTTP/|content-type|etag|cache-control)' "$DEMO_DIR/lighthouse.headers" | tr -d '\r' | sed 's/^/  /'
say "  wrote $DEMO_DIR/lighthouse.png: $(file -b "$DEMO_DIR/lighthouse.png" 2>/dev/null || echo PNG), sha256 $(sha256sum "$DEMO_DIR/lighthouse.png" | cut -c1-16)…"
say "A URL whose expiry was pushed back no longer matches its signature:"
expect_http 403 GET "/images/$IMAGE_ID?exp=$((IMAGE_EXP + 3600))&sig=$IMAGE_SIG"

step "The budget is settled at the actual cost (the model that answered), nothing stays reserved"
run_sql "SELECT s->'estimated_cost' AS reserved_for, s->'actual_cost' AS actual_cost, s->'model'->>'model' AS model
  FROM donatello.generation_status(:'job') s;
SELECT d.name AS department, b.spent, b.reserved, b.available
  FROM donatello.departments d, donatello.budget_status(d.id) b WHERE d.id = :'design';"

step "The organization's webhook receiver got generation.completed, signature verified"
for _ in $(seq 200); do grep -q 'generation.completed' "$PIPE_RECEIVER_LOG" && break; sleep 0.1; done
grep 'generation.completed' "$PIPE_RECEIVER_LOG" | head -1 | node -e '
let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
  const line = JSON.parse(s);
  const d = line.data;
  console.log(`  receiver> verified=${line.verified} type=${line.type} job=${d.job_id} model=${d.model} cost=${d.cost}`);
  console.log(`  receiver> image ${d.images[0].width}x${d.images[0].height} ${d.images[0].mime_type} at ${d.images[0].url.slice(0, 60)}…`);
});'

step "A prompt with a credit card number is refused before anything is reserved (403, DNS01)"
expect_http 403 POST /rpc/generate -H "Authorization: Bearer $ACCESS" -H 'Content-Type: application/json' \
	-d '{"prompt": "a birthday card for my card 4111 1111 1111 1111, exp 12/29"}'

step "Marketing's budget cannot pay for a request: refused (402, DNB01)"
say "Erin (Marketing, cost first) calls with an API key of hers; the job could fall back to mock-premium (0.08), more than Marketing has:"
ERIN_KEY=$(sql_value "SELECT donatello.create_api_key(:'erin', 'erin over http', '{*}') ->> 'key'")
expect_http 402 POST /rpc/generate -H "X-API-Key: $ERIN_KEY" -H 'Content-Type: application/json' \
	-d '{"prompt": "a spring sale poster with tulips"}'
run_sql "SELECT d.name AS department, b.\"limit\", b.spent, b.reserved, b.available
  FROM donatello.departments d, donatello.budget_status(d.id) b
 WHERE d.org_id = :'org' ORDER BY 1;
SELECT count(*) AS jobs, count(*) FILTER (WHERE status = 'completed') AS completed FROM donatello.generation_jobs;"

pipeline_demo_cleanup
trap - EXIT
