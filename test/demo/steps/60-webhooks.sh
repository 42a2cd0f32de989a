# Step group: signed webhooks (issue: outbound dispatcher).
# A local receiver (Node, verifying with the npm standardwebhooks library)
# listens on 127.0.0.1:18600 while this step runs (and answers 410 on /gone);
# the step starts and stops it.

WEBHOOK_DEMO_PORT=18600
WEBHOOK_DEMO_LOG=$DEMO_DIR/webhook-receiver.log
WEBHOOK_DEMO_PID=

# Stop the receiver and put donatello.allowed_hosts back.
webhook_demo_cleanup() {
	if [ -n "$WEBHOOK_DEMO_PID" ]; then
		kill "$WEBHOOK_DEMO_PID" 2>/dev/null || true
		wait "$WEBHOOK_DEMO_PID" 2>/dev/null || true
		WEBHOOK_DEMO_PID=
	fi
	psql -X -q -c "ALTER SYSTEM RESET donatello.allowed_hosts" -c "SELECT pg_reload_conf()" >/dev/null
}

# Wait (at most 20 s) until the receiver's log has a line matching $1.
webhook_demo_await() {
	local i
	for i in $(seq 200); do
		grep -q "$1" "$WEBHOOK_DEMO_LOG" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "  demo: the receiver never logged $1" >&2
	cat "$WEBHOOK_DEMO_LOG" >&2
	exit 1
}

step "Webhooks: a receiver on this machine is allowed by name (SSRF guard)"
say "Outbound requests may not reach loopback or private addresses unless the host is allow-listed:"
do_sql "ALTER SYSTEM SET donatello.allowed_hosts = '127.0.0.1';
SELECT pg_reload_conf();"
until [ "$(sql_value "SHOW donatello.allowed_hosts")" = "127.0.0.1" ]; do sleep 0.1; done
trap webhook_demo_cleanup EXIT
run_sql "SELECT url, coalesce(donatello.check_outbound_url(url), 'allowed') AS dispatcher_says
  FROM unnest(ARRAY['http://127.0.0.1:$WEBHOOK_DEMO_PORT/hooks', 'http://localhost:$WEBHOOK_DEMO_PORT/hooks',
                    'http://169.254.169.254/latest/meta-data/', 'http://10.0.0.1/']) AS url;"
expect_error DNV01 "SELECT donatello.create_webhook_endpoint(:'org', 'http://169.254.169.254/latest/meta-data/', '{*}');"

step "Alice (org_admin, holds webhook:manage) registers an endpoint for generation events"
ENDPOINT_JSON=$(sql_value "SET ROLE donatello_user;
SELECT set_config('request.jwt.claims', json_build_object('sub', :'alice', 'org', :'org')::text, false) IS NULL;
SELECT donatello_api.create_webhook_endpoint('http://127.0.0.1:$WEBHOOK_DEMO_PORT/hooks', '{generation.*}', 'image pipeline');" | tail -1)
remember ENDPOINT "$(sed 's/.*"id": "\([^"]*\)".*/\1/' <<<"$ENDPOINT_JSON")"
WEBHOOK_SECRET=$(sed 's/.*"secret": "\([^"]*\)".*/\1/' <<<"$ENDPOINT_JSON")
say "  endpoint $ENDPOINT, secret ${WEBHOOK_SECRET:0:12}... (shown once; stored sealed):"
run_sql "SELECT url, events, active FROM donatello.webhook_endpoints WHERE id = :'endpoint';
SELECT length(secret_sealed) AS sealed_bytes, donatello.secret_key_id(secret_sealed) IS NOT NULL AS sealed_under_root_key
  FROM donatello.webhook_endpoints WHERE id = :'endpoint';"

step "A receiver verifies every delivery with the npm standardwebhooks library"
(cd test/client && exec node lib/webhook-receiver.mjs --port "$WEBHOOK_DEMO_PORT" --path /hooks --secret "$WEBHOOK_SECRET" \
	--answer /gone=410) \
	>"$WEBHOOK_DEMO_LOG" 2>&1 &
WEBHOOK_DEMO_PID=$!
webhook_demo_await listening
say "  receiver listening on 127.0.0.1:$WEBHOOK_DEMO_PORT (pid $WEBHOOK_DEMO_PID)"
say "An event, emitted in a transaction: nothing leaves before COMMIT, and the dispatcher is woken at commit."
run_sql "BEGIN;
SELECT donatello.emit_event(:'org', 'generation.completed', '{\"generation_id\": \"g_81\", \"images\": 4}') IS NOT NULL AS emitted;
SELECT state FROM donatello.outbox WHERE endpoint_id = :'endpoint';
COMMIT;"
webhook_demo_await '"verified":true'
say "The receiver's log (signature checked before anything else):"
sed 's/^/  receiver> /' "$WEBHOOK_DEMO_LOG"

step "Every attempt is logged, readable by holders of webhook:manage in the organization only"
until [ "$(sql_value "SELECT state FROM donatello.outbox WHERE endpoint_id = :'endpoint'")" = succeeded ]; do sleep 0.1; done
as_principal alice org "SELECT d.event_type, d.state, d.attempt_count, a.status_code, round(a.latency_ms::numeric, 1) AS latency_ms, a.response_excerpt
  FROM donatello_api.webhook_deliveries d JOIN donatello_api.webhook_delivery_attempts a ON a.delivery_id = d.id;"
as_principal dave org "SELECT count(*) AS deliveries_dave_sees FROM donatello_api.webhook_deliveries;"

step "A receiver that answers 410 Gone turns the endpoint off"
do_sql "SELECT donatello.create_webhook_endpoint(:'org', 'http://127.0.0.1:$WEBHOOK_DEMO_PORT/gone', '{budget.*}', 'retired');
SELECT donatello.emit_event(:'org', 'budget.threshold_reached', '{\"department\": \"Design\", \"percent\": 80}');"
until [ "$(sql_value "SELECT count(*) FROM donatello.webhook_endpoints WHERE description = 'retired' AND NOT active")" = 1 ]; do sleep 0.1; done
run_sql "SELECT description, active, disabled_reason FROM donatello.webhook_endpoints WHERE org_id = :'org' ORDER BY created_at;"

webhook_demo_cleanup
trap - EXIT
