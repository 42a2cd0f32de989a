-- Passwords (Argon2id, policy, history), login with lockout, sessions and
-- refresh tokens, and the security events they leave.

-- run a statement, return its SQLSTATE and message instead of failing
CREATE FUNCTION pg_temp.try(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
-- same, with the DETAIL and HINT
CREATE FUNCTION pg_temp.try_verbose(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    d text;
    h text;
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    RETURN SQLSTATE || ': ' || SQLERRM || E'\nDETAIL: ' || coalesce(d, '') || E'\nHINT: ' || coalesce(h, '');
END
$$;

-- defaults: Argon2id with 64 MiB and two passes; PHC string in m,t,p order
SHOW donatello.password_memory;
SHOW donatello.password_iterations;
SELECT donatello.password_hash('Some-Password-1') AS phc \gset
SELECT :'phc' ~ '^\$argon2id\$v=19\$m=65536,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$' AS phc_format,
       donatello.password_verify('Some-Password-1', :'phc') AS right_one,
       donatello.password_verify('Some-Password-2', :'phc') AS wrong_one,
       donatello.password_verify('Some-Password-1', 'not a hash') AS garbage;

-- cheaper hashes for the rest of this test
SET donatello.password_memory = '8MB';
SET donatello.password_iterations = 1;
SET donatello.jwt_secret = 'regression-secret-regression-secret-0123456789';

-- the policy: every unmet rule is listed
SELECT donatello.password_policy_violations('short');
SELECT donatello.password_policy_violations('alllowercaseletters');
SELECT donatello.password_policy_violations('Has-Name-nora-99', 'nora@acme.test');
SELECT donatello.password_policy_violations('Fine-Password-2024!', 'nora@acme.test');
SELECT donatello.password_policy_violations('Ünïcode-Pässwörd-9');

SELECT donatello.create_organization('Login Org', 'login-org') AS org \gset
SELECT donatello.create_organization('Other Org', 'other-org') AS other \gset
SELECT donatello.create_user(:'org', 'nora@login.test', 'Nora') AS nora \gset
SELECT donatello.create_user(:'org', 'omar@login.test', 'Omar') AS omar \gset
SELECT donatello.create_user(:'org', 'pia@login.test', 'Pia') AS pia \gset
SELECT donatello.create_user(:'other', 'omar@login.test', 'Omar Elsewhere') AS omar2 \gset

SELECT pg_temp.try_verbose(format('SELECT donatello.set_password(%L, %L)', :'nora', 'nora'));
SELECT pg_temp.try_verbose(format('SELECT donatello.set_password(%L, %L)', :'nora', 'xNora-Login-2024!'));
SELECT regexp_replace(pg_temp.try(format('SELECT donatello.set_password(%L, %L)', gen_random_uuid(), 'Fine-Password-2024!')),
                      '[0-9a-f-]{36}', '<id>') AS unknown_user;

-- history: none of the last five passwords
SELECT donatello.set_password(:'nora', 'Password-Number-1!');
SELECT donatello.set_password(:'nora', 'Password-Number-2!');
SELECT donatello.set_password(:'nora', 'Password-Number-3!');
SELECT donatello.set_password(:'nora', 'Password-Number-4!');
SELECT donatello.set_password(:'nora', 'Password-Number-5!');
SELECT pg_temp.try_verbose(format('SELECT donatello.set_password(%L, %L)', :'nora', 'Password-Number-1!'));
SELECT pg_temp.try(format('SELECT donatello.set_password(%L, %L)', :'nora', 'Password-Number-5!'));
SELECT donatello.set_password(:'nora', 'Password-Number-6!');
SELECT pg_temp.try(format('SELECT donatello.set_password(%L, %L)', :'nora', 'Password-Number-1!'));
SELECT count(*) AS history_rows FROM donatello.password_history WHERE user_id = :'nora';
SELECT password_hash ~ '^\$argon2id\$v=19\$m=8192,t=1,p=1\$' AS stored_as_phc FROM donatello.user_credentials
 WHERE user_id = :'nora';

SELECT donatello.set_password(:'omar', 'Second-Secret-2024!');
SELECT donatello.set_password(:'omar2', 'Second-Secret-2024!');
SELECT donatello.set_password(:'pia', 'Third-Secret-2024!');

-- success: tokens
SELECT donatello.login('nora@login.test', 'Password-Number-1!', NULL, '192.0.2.7', 'regress/1.0') AS tokens \gset
SELECT jsonb_object_keys(:'tokens'::jsonb) AS key ORDER BY 1;
SELECT :'tokens'::jsonb ->> 'token_type' AS token_type, :'tokens'::jsonb -> 'expires_in' AS expires_in,
       :'tokens'::jsonb ->> 'refresh_token' ~ '^dnr_[A-Za-z0-9_-]{43}$' AS refresh_format;
SELECT c - 'iat' - 'exp' - 'sid' - 'sub' - 'org' AS claims, (c ->> 'exp')::bigint - (c ->> 'iat')::bigint AS lifetime,
       c ->> 'sub' = :'nora' AS sub_is_user, c ->> 'org' = :'org' AS org_is_org
  FROM donatello.jwt_verify(:'tokens'::jsonb ->> 'access_token') AS c;
SELECT user_id = :'nora' AS session_user, host(ip), user_agent, expires_at - created_at AS lifetime
  FROM donatello.sessions WHERE id = (donatello.jwt_verify(:'tokens'::jsonb ->> 'access_token') ->> 'sid')::uuid;

-- case-insensitive email; org_slug narrows the search
SELECT donatello.login('NORA@Login.Test', 'Password-Number-1!', 'login-org') ? 'access_token' AS case_insensitive;

-- the same error for a wrong password, an unknown email, a deactivated user,
-- and an email of two organizations without org_slug
SELECT pg_temp.try_verbose($$SELECT donatello.login('nora@login.test', 'wrong')$$);
SELECT pg_temp.try_verbose($$SELECT donatello.login('nobody@login.test', 'Password-Number-1!', 'login-org')$$);
SELECT pg_temp.try($$SELECT donatello.login('omar@login.test', 'Second-Secret-2024!')$$);
SELECT donatello.login('omar@login.test', 'Second-Secret-2024!', 'other-org') ? 'access_token' AS with_slug;
SELECT pg_temp.try($$SELECT donatello.login('nora@login.test', 'Password-Number-1!', 'no-such-org')$$);
SELECT pg_temp.try($$SELECT donatello.login(NULL, NULL)$$);

-- five consecutive failures lock for 15 minutes; the fifth says so
SELECT donatello.unlock_user(:'nora');
SELECT pg_temp.try($$SELECT donatello.login('nora@login.test', 'wrong-1')$$);
SELECT pg_temp.try($$SELECT donatello.login('nora@login.test', 'wrong-2')$$);
-- a success clears the count
SELECT donatello.login('nora@login.test', 'Password-Number-1!') ? 'access_token' AS success_clears;
SELECT pg_temp.try($$SELECT donatello.login('nora@login.test', 'wrong-1')$$) FROM generate_series(1, 4);
SELECT regexp_replace(pg_temp.try_verbose($$SELECT donatello.login('nora@login.test', 'wrong-5')$$),
                      'until [^\n]*', 'until <time>') AS fifth;
-- locked: even the right password is refused, without looking at it
SELECT pg_temp.try($$SELECT donatello.login('nora@login.test', 'Password-Number-1!')$$);
SELECT donatello.flush_security_events() >= 0 AS flushed;
SELECT failed_logins, locked_until - now() BETWEEN interval '14 minutes' AND interval '15 minutes' AS locked_15_minutes
  FROM donatello.user_credentials WHERE user_id = :'nora';
SELECT donatello.unlock_user(:'nora');
SELECT donatello.login('nora@login.test', 'Password-Number-1!') ? 'access_token' AS unlocked;

-- inactive users cannot log in, and their sessions end
SELECT donatello.login('pia@login.test', 'Third-Secret-2024!') AS pia_tokens \gset
SELECT donatello.jwt_verify(:'pia_tokens'::jsonb ->> 'access_token') ->> 'role' AS before_deactivation;
SELECT donatello.deactivate_user(:'pia');
SELECT regexp_replace(pg_temp.try(format('SELECT donatello.jwt_verify(%L)', :'pia_tokens'::jsonb ->> 'access_token')),
                      '[0-9a-f-]{36}', '<sid>') AS after_deactivation;
SELECT pg_temp.try($$SELECT donatello.login('pia@login.test', 'Third-Secret-2024!')$$);
SELECT pg_temp.try(format('SELECT donatello.refresh(%L)', :'pia_tokens'::jsonb ->> 'refresh_token'));

-- rehash on login when the cost settings change
SET donatello.password_memory = '16MB';
SELECT donatello.login('nora@login.test', 'Password-Number-1!') ? 'access_token' AS rehashed_login;
SELECT password_hash ~ '^\$argon2id\$v=19\$m=16384,t=1,p=1\$' AS rehashed FROM donatello.user_credentials
 WHERE user_id = :'nora';

-- refresh: rotates; the old refresh token is then reuse, which revokes the session
SELECT donatello.login('nora@login.test', 'Password-Number-1!') AS t1 \gset
SELECT donatello.refresh(:'t1'::jsonb ->> 'refresh_token') AS t2 \gset
SELECT :'t2'::jsonb ->> 'refresh_token' <> :'t1'::jsonb ->> 'refresh_token' AS rotated,
       donatello.jwt_verify(:'t2'::jsonb ->> 'access_token') ->> 'sid' =
       donatello.jwt_verify(:'t1'::jsonb ->> 'access_token') ->> 'sid' AS same_session;
SELECT pg_temp.try_verbose(format('SELECT donatello.refresh(%L)', :'t1'::jsonb ->> 'refresh_token'));
-- at once: the newer refresh token and every access token of the session are dead
SELECT pg_temp.try(format('SELECT donatello.refresh(%L)', :'t2'::jsonb ->> 'refresh_token'));
SELECT regexp_replace(pg_temp.try(format('SELECT donatello.jwt_verify(%L)', :'t2'::jsonb ->> 'access_token')),
                      '[0-9a-f-]{36}', '<sid>') AS access_after_reuse;
SELECT donatello.flush_security_events() >= 0 AS flushed;
SELECT revoked_reason FROM donatello.sessions
 WHERE id = (donatello.jwt_verify(:'tokens'::jsonb ->> 'access_token') ->> 'sid')::uuid
    OR id = (SELECT session_id FROM donatello.refresh_tokens
              WHERE token_hash = sha256(convert_to(:'t1'::jsonb ->> 'refresh_token', 'UTF8')))
 ORDER BY 1 NULLS FIRST;
SELECT pg_temp.try($$SELECT donatello.refresh('dnr_unknown')$$);

-- logout ends the session; revoke_session too
SELECT donatello.login('nora@login.test', 'Password-Number-1!') AS t3 \gset
SELECT donatello.logout(:'t3'::jsonb ->> 'refresh_token');
SELECT regexp_replace(pg_temp.try(format('SELECT donatello.jwt_verify(%L)', :'t3'::jsonb ->> 'access_token')),
                      '[0-9a-f-]{36}', '<sid>') AS after_logout;
SELECT donatello.login('nora@login.test', 'Password-Number-1!') AS t4 \gset
SELECT donatello.revoke_session((donatello.jwt_verify(:'t4'::jsonb ->> 'access_token') ->> 'sid')::uuid, 'stolen laptop');
SELECT pg_temp.try(format('SELECT donatello.refresh(%L)', :'t4'::jsonb ->> 'refresh_token'));
SELECT regexp_replace(pg_temp.try(format('SELECT donatello.revoke_session(%L)', gen_random_uuid())),
                      '[0-9a-f-]{36}', '<id>') AS unknown_session;

-- the HTTP wrappers read IP and user agent from the request settings
SET request.ip = '198.51.100.9';
SET request.headers = '{"user-agent": "browser/2"}';
SET ROLE donatello_anon;
SELECT donatello_api.login('nora@login.test', 'Password-Number-1!', 'login-org') AS t5 \gset
SELECT donatello_api.refresh(:'t5'::jsonb ->> 'refresh_token') ? 'access_token' AS anon_can_refresh;
RESET ROLE;
SELECT host(ip), user_agent FROM donatello.sessions ORDER BY created_at DESC, id LIMIT 1;

-- every outcome is an event with user, IP and user agent; no secret in any of them
SELECT donatello.flush_security_events() >= 0 AS flushed;
SELECT event, count(*) FROM donatello.security_events WHERE org_id = :'org' GROUP BY event ORDER BY event;
SELECT event, host(ip), user_agent, details - 'occurred_at' - 'session_id' AS details
  FROM donatello.security_events WHERE org_id = :'org' AND ip IS NOT NULL ORDER BY id LIMIT 4;
SELECT count(*) AS failures_with_occurred_at FROM donatello.security_events
 WHERE event = 'login.failure' AND details ? 'occurred_at';
SELECT count(*) AS events_with_secrets FROM donatello.security_events
 WHERE details::text ~ 'Password-Number|wrong-|dnr_|dnm_|argon2';
