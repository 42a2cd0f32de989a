# Step group: the HTTP layer (issue 7): donatello answering PostgREST-style
# HTTP itself, from its background workers. Uses ORG and BOB (password set in
# 20-credentials.sh; Bob has no TOTP) from the earlier steps.

step "HTTP: the extension serves HTTP itself (donatello.http_port, $(psql -XAtc 'SHOW donatello.http_workers') workers)"
http GET /health
say "Anonymous callers get what donatello_anon may see; the views need a principal:"
http GET '/organizations?select=name,slug'

step "HTTP: log in over HTTP (POST /rpc/login), then call with the access token"
TOKENS_JSON=$(curl -sS -X POST "$DONATELLO_HTTP_URL/rpc/login" -H 'Content-Type: application/json' \
	-d '{"email": "bob@acme.test", "password": "Quiet-Meadow-Engine-4", "org_slug": "acme"}')
printf '%s  $ curl -X POST $DONATELLO_HTTP_URL/rpc/login -d '"'"'{"email": "bob@acme.test", "password": "…", "org_slug": "acme"}'"'"'%s\n' "$DIM" "$RESET"
ACCESS=$(node -e 'process.stdout.write(JSON.parse(process.argv[1]).access_token)' "$TOKENS_JSON")
say "  access_token: ${ACCESS:0:24}…  (a JWT signed with donatello.jwt_secret)"
http GET '/users?select=email,name&order=email' -H "Authorization: Bearer $ACCESS"
http POST /rpc/my_permissions -H "Authorization: Bearer $ACCESS" -H 'Content-Type: application/json' \
	-d "{\"department_id\": \"$DESIGN\"}"
say "A filter, an order and a count, PostgREST style (Content-Range carries the total):"
curl -sS -D - -o /dev/null "$DONATELLO_HTTP_URL/departments?select=name&order=name.desc&limit=1" \
	-H "Authorization: Bearer $ACCESS" -H 'Prefer: count=exact' | grep -i '^content-range' | sed 's/^/  /'

step "HTTP: an API key (X-API-Key) instead of a token, with its rate-limit headers"
HTTP_KEY=$(sql_value "SELECT donatello.create_api_key(:'alice', 'demo over http', '{*}') ->> 'key'")
say "  a key of Alice's (donatello.create_api_key): ${HTTP_KEY:0:8}… (shown once)"
curl -sS -D - "$DONATELLO_HTTP_URL/organizations?select=slug" -H "X-API-Key: $HTTP_KEY" |
	grep -iE '^(HTTP/|x-ratelimit|\[)' | sed 's/^/  /'

step "HTTP: errors are PostgREST-shaped, with the status from the SQLSTATE"
http GET /rpc/my_permissions -H 'Authorization: Bearer not-a-token'
http GET '/users?select=password_hash' -H "X-API-Key: $HTTP_KEY"
http GET /no_such_relation
