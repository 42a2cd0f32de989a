# Step group: credentials (issue 3): passwords and lockout, login with a TOTP
# code, refresh tokens, an API key created, used and revoked, security events.
# Uses ORG, ALICE (org_admin), BOB, CAROL (deactivated) from 10-tenancy-rbac.sh.

step "Server settings for tokens (the throwaway cluster has a random donatello.jwt_secret)"
run_sql "SHOW donatello.jwt_algorithm;
SHOW donatello.password_memory;"

step "Passwords: a policy with every unmet rule listed, Argon2id hashes"
expect_error DNA06 "SELECT donatello.set_password(:'alice', 'alice2024');"
do_sql "SELECT donatello.set_password(:'alice', 'Blue-Harbor-Lantern-7');
SELECT donatello.set_password(:'bob', 'Quiet-Meadow-Engine-4');
SELECT donatello.set_password(:'carol', 'Silver-Canyon-Falcon-2');"
run_sql "SELECT u.email, left(c.password_hash, 31) || '…' AS phc_string
  FROM donatello.user_credentials c JOIN donatello.users u ON u.id = c.user_id ORDER BY 1;"

step "Logging in with a password: an access token (JWT) and a refresh token"
remember TOKENS "$(sql_value "SELECT donatello.login('alice@acme.test', 'Blue-Harbor-Lantern-7', 'acme', '203.0.113.5', 'demo-browser/1.0')")"
run_sql "SELECT :'tokens'::jsonb - 'access_token' - 'refresh_token' AS response,
       left(:'tokens'::jsonb ->> 'access_token', 24) || '…' AS access_token,
       left(:'tokens'::jsonb ->> 'refresh_token', 10) || '…' AS refresh_token;
SELECT jsonb_pretty(donatello.jwt_verify(:'tokens'::jsonb ->> 'access_token') - 'iat' - 'exp') AS claims;"
say "Wrong passwords, unknown emails and deactivated users all get the same answer:"
expect_error DNA01 "SELECT donatello.login('alice@acme.test', 'not-her-password', 'acme');"
expect_error DNA01 "SELECT donatello.login('nobody@acme.test', 'Blue-Harbor-Lantern-7', 'acme');"
expect_error DNA01 "SELECT donatello.login('carol@acme.test', 'Silver-Canyon-Falcon-2', 'acme');"

step "Five wrong passwords in a row lock the account for 15 minutes"
for i in 1 2 3 4; do
	expect_error DNA01 "SELECT donatello.login('bob@acme.test', 'guess-$i', 'acme', '198.51.100.23');" >/dev/null
done
say "  (four wrong guesses refused with DNA01)"
expect_error DNA02 "SELECT donatello.login('bob@acme.test', 'guess-5', 'acme', '198.51.100.23');"
expect_error DNA02 "SELECT donatello.login('bob@acme.test', 'Quiet-Meadow-Engine-4', 'acme');"
say "The failures rolled back with their errors; their counters and events were queued in shared"
say "memory and written by the maintenance worker (flush_security_events() writes what is left now):"
run_sql "SELECT donatello.flush_security_events() AS still_queued_written_now;
SELECT failed_logins, locked_until > now() AS locked FROM donatello.user_credentials WHERE user_id = :'bob';"
say "An administrator unlocks Bob:"
do_sql "SELECT donatello.unlock_user(:'bob');"
run_sql "SELECT donatello.login('bob@acme.test', 'Quiet-Meadow-Engine-4', 'acme') ? 'access_token' AS bob_logged_in;"

step "TOTP: Alice enrolls, and activates with her authenticator app (oathtool)"
remember ENROLLMENT "$(sql_value "SET ROLE donatello_user;
SELECT set_config('request.jwt.claims', json_build_object('sub', :'alice', 'org', :'org')::text, false) IS NULL;
SELECT donatello_api.totp_enroll();" | tail -n 1)"
remember TOTP_SECRET "$(sql_value "SELECT :'enrollment'::jsonb ->> 'secret'")"
run_sql "SELECT :'enrollment'::jsonb ->> 'otpauth_uri' AS scan_this_qr_code,
       jsonb_array_length(:'enrollment'::jsonb -> 'backup_codes') AS backup_codes;"
STEP_NOW=$(($(date +%s) / 30))
remember CODE "$(oathtool --totp -b -N "@$((STEP_NOW * 30 + 1))" "$TOTP_SECRET")"
say "  oathtool --totp -b <secret>  ->  $CODE"
as_principal alice org "SELECT donatello_api.totp_activate(:'code');"
run_sql "SELECT active AS mfa_active, activated_at IS NOT NULL AS activated FROM donatello.totp_credentials WHERE user_id = :'alice';"

step "Login with a password and a TOTP code"
remember CHALLENGE "$(sql_value "SELECT donatello.login('alice@acme.test', 'Blue-Harbor-Lantern-7', 'acme', '203.0.113.5', 'demo-browser/1.0')")"
run_sql "SELECT :'challenge'::jsonb - 'mfa_token' AS response;"
say "The code already used to activate is a replay:"
expect_error DNA04 "SELECT donatello.login_mfa(:'challenge'::jsonb ->> 'mfa_token', :'code');"
remember NEXT_CODE "$(oathtool --totp -b -N "@$(((STEP_NOW + 1) * 30 + 1))" "$TOTP_SECRET")"
say "  the authenticator's next code: $NEXT_CODE"
remember MFA_TOKENS "$(sql_value "SELECT donatello.login_mfa(:'challenge'::jsonb ->> 'mfa_token', :'next_code')")"
run_sql "SELECT :'mfa_tokens'::jsonb ?& ARRAY['access_token', 'refresh_token'] AS logged_in_with_mfa,
       donatello.jwt_verify(:'mfa_tokens'::jsonb ->> 'access_token') ->> 'sub' = :'alice' AS token_is_alices;"

step "Refresh tokens rotate; presenting a used one revokes the session"
remember REFRESHED "$(sql_value "SELECT donatello.refresh(:'mfa_tokens'::jsonb ->> 'refresh_token')")"
run_sql "SELECT :'refreshed'::jsonb ->> 'refresh_token' <> :'mfa_tokens'::jsonb ->> 'refresh_token' AS new_refresh_token;"
expect_error DNA03 "SELECT donatello.refresh(:'mfa_tokens'::jsonb ->> 'refresh_token');"
expect_error DNA03 "SELECT donatello.jwt_verify(:'refreshed'::jsonb ->> 'access_token');"

step "An API key: created (shown once), used, rate limited, revoked"
remember APIKEY "$(sql_value "SET ROLE donatello_user;
SELECT set_config('request.jwt.claims', json_build_object('sub', :'alice', 'org', :'org')::text, false) IS NULL;
SELECT donatello_api.create_api_key('render farm', '{generation:create,model:read}');" | tail -n 1)"
run_sql "SELECT :'apikey'::jsonb ->> 'key' AS key_shown_once;
SELECT name, key_prefix, scopes, encode(key_hash, 'hex') AS stored_sha256 FROM donatello.api_keys;"
run_sql "SELECT donatello.verify_api_key(:'apikey'::jsonb ->> 'key', 'generation:create') - 'key_id' AS verified;"
expect_error DNP01 "SELECT donatello.verify_api_key(:'apikey'::jsonb ->> 'key', 'budget:manage');"
say "A mistyped key is refused by its checksum, before any lookup:"
expect_error DNA01 "SELECT donatello.verify_api_key(overlay(:'apikey'::jsonb ->> 'key' placing 'x' from 12 for 1));"
say "Eight requests against a bucket of 5 per minute (the HTTP layer answers 429 to a refusal):"
run_sql "SELECT count(*) FILTER (WHERE ok) AS allowed, count(*) FILTER (WHERE NOT ok) AS refused
  FROM (SELECT donatello.rate_limit_take('demo:' || (:'apikey'::jsonb ->> 'key_id'), 5, '1 minute') AS ok
          FROM generate_series(1, 8)) AS requests;"
as_principal alice org "SELECT donatello_api.revoke_api_key((:'apikey'::jsonb ->> 'key_id')::uuid, 'rotating the render farm');"
expect_error DNA01 "SELECT donatello.verify_api_key(:'apikey'::jsonb ->> 'key');"
run_sql "SELECT donatello.flush_api_key_usage() AS keys_flushed;
SELECT name, usage_count, last_used_at IS NOT NULL AS used, revoked_reason FROM donatello.api_keys;"

step "Every outcome is a security event (never with a secret)"
run_sql "SELECT donatello.flush_security_events() AS still_queued_written_now;
SELECT to_char(e.occurred_at, 'HH24:MI:SS') AS at, u.email, e.event, host(e.ip) AS ip,
       e.details - 'occurred_at' - 'session_id' - 'key_id' AS details
  FROM donatello.security_events e LEFT JOIN donatello.users u ON u.id = e.user_id
 WHERE e.org_id = :'org' ORDER BY e.id;"
