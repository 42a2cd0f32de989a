-- bench/credentials: :calls verifications per path in one query each, in one
-- backend, donatello's C against the PL/pgSQL + pgcrypto references of
-- bench/credentials/reference.sql. Run by bench/credentials/run.
\set QUIET on
\set ON_ERROR_STOP on
\ir reference.sql

CREATE OR REPLACE FUNCTION pg_temp.seconds(query text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    EXECUTE query;
    RETURN extract(epoch FROM clock_timestamp() - t0);
END $$;

-- the same, in a transaction that changed api_keys: donatello then bypasses
-- its per-backend cache and reads the table at every call (the cold path)
CREATE OR REPLACE FUNCTION pg_temp.seconds_uncached(query text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz;
BEGIN
    UPDATE donatello.api_keys SET revoked_at = NULL WHERE false;
    t0 := clock_timestamp();
    EXECUTE query;
    RETURN extract(epoch FROM clock_timestamp() - t0);
END $$;

SET donatello.jwt_secret = 'bench-secret-bench-secret-bench-secret-42';

-- 1,000 users with one API key each; the workload cycles through all keys
SELECT donatello.create_organization('Bench', 'bench') AS org \gset
CREATE TABLE bench_keys AS
    SELECT (donatello.create_api_key(donatello.create_user(:'org', 'u' || i || '@bench.test', 'U' || i),
                                     'bench', ARRAY['generation:create', 'model:*'])) ->> 'key' AS key
      FROM generate_series(1, 1000) AS i;
CREATE TABLE api_calls AS SELECT k.key FROM bench_keys k, generate_series(1, (:calls / 1000)) AS g;

-- TOTP: 1,000 secrets (20 bytes, 32 base32 characters); half the codes are
-- right (now), half wrong (every step of the window computed)
CREATE TABLE totp_secrets AS
    SELECT (SELECT string_agg(substr('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567', (get_byte(r, j) % 32) + 1, 1), '')
              FROM generate_series(0, 31) AS j) AS secret
      FROM (SELECT gen_random_bytes(32) AS r FROM generate_series(1, 1000)) AS x;
CREATE TABLE totp_calls AS
    SELECT s.secret, CASE WHEN g % 2 = 0 THEN donatello.totp_code(s.secret) ELSE '000000' END AS code
      FROM totp_secrets s, generate_series(1, (:calls / 1000)) AS g;

-- JWT: 1,000 HS256 tokens without a session (signature and claims only), and
-- 1,000 access tokens of real sessions (plus the session check)
CREATE TABLE jwt_tokens AS
    SELECT donatello.jwt_sign(jsonb_build_object('sub', 'user-' || i, 'role', 'donatello_user',
                              'iat', extract(epoch FROM now())::bigint,
                              'exp', extract(epoch FROM now())::bigint + 3600)) AS token
      FROM generate_series(1, 1000) AS i;
CREATE TABLE jwt_calls AS SELECT t.token FROM jwt_tokens t, generate_series(1, (:calls / 1000)) AS g;
ANALYZE api_calls; ANALYZE totp_calls; ANALYZE jwt_calls;

-- both sides must agree before they are timed
SELECT count(*) FILTER (WHERE donatello.verify_api_key(key, 'generation:create') <> cred_reference.verify_api_key(key, 'generation:create'))
       AS api_key_disagreements FROM bench_keys;
SELECT count(*) FILTER (WHERE donatello.totp_verify(secret, code) <> cred_reference.totp_verify(secret, code))
       AS totp_disagreements, count(*) FILTER (WHERE donatello.totp_verify(secret, code)) AS totp_accepted
  FROM (SELECT DISTINCT secret, code FROM totp_calls) t;
SELECT count(*) FILTER (WHERE donatello.jwt_verify(token) <> cred_reference.jwt_verify(token, current_setting('donatello.jwt_secret')))
       AS jwt_disagreements FROM jwt_tokens;

SELECT count(*) AS n FROM api_calls \gset
SELECT pg_temp.seconds('SELECT count(key) FROM api_calls') AS scan_s \gset
SELECT pg_temp.seconds('SELECT count(donatello.verify_api_key(key, ''generation:create'')) FROM api_calls') AS api_c_s \gset
SELECT pg_temp.seconds_uncached('SELECT count(donatello.verify_api_key(key, ''generation:create'')) FROM api_calls') AS api_cold_s \gset
SELECT pg_temp.seconds('SELECT count(cred_reference.verify_api_key(key, ''generation:create'')) FROM api_calls') AS api_ref_s \gset
SELECT pg_temp.seconds('SELECT count(*) FILTER (WHERE donatello.totp_verify(secret, code)) FROM totp_calls') AS totp_c_s \gset
SELECT pg_temp.seconds('SELECT count(*) FILTER (WHERE cred_reference.totp_verify(secret, code)) FROM totp_calls') AS totp_ref_s \gset
SELECT pg_temp.seconds('SELECT count(donatello.jwt_verify(token)) FROM jwt_calls') AS jwt_c_s \gset
SELECT pg_temp.seconds(format('SELECT count(cred_reference.jwt_verify(token, %L)) FROM jwt_calls',
                              current_setting('donatello.jwt_secret'))) AS jwt_ref_s \gset

-- access tokens of live sessions: jwt_verify also checks the session (cached per backend)
SELECT donatello.set_password(id, 'Bench-Password-2024!') FROM donatello.users WHERE email = 'u1@bench.test';
SET donatello.password_memory = '8MB';
CREATE TABLE session_tokens AS
    SELECT donatello.login('u1@bench.test', 'Bench-Password-2024!') ->> 'access_token' AS token
      FROM generate_series(1, 100);
CREATE TABLE session_calls AS SELECT t.token FROM session_tokens t, generate_series(1, (:calls / 100)) AS g;
SELECT pg_temp.seconds('SELECT count(donatello.jwt_verify(token)) FROM session_calls') AS jwt_sid_s \gset

\echo
\echo calls per path: :n (1,000 distinct keys / secrets / tokens), one backend
SELECT format('%-44s %10s %14s', 'path', 'seconds', 'per second') AS " "
UNION ALL SELECT format('%-44s %10s %14s', 'scan of the call table (no work)', round(:scan_s::numeric, 3), '-')
UNION ALL SELECT format('%-44s %10s %14s', 'verify_api_key, donatello C', round(:api_c_s::numeric, 3), to_char(:n / :api_c_s, 'FM999,999,999'))
UNION ALL SELECT format('%-44s %10s %14s', 'verify_api_key, donatello C, cache bypassed', round(:api_cold_s::numeric, 3), to_char(:n / :api_cold_s, 'FM999,999,999'))
UNION ALL SELECT format('%-44s %10s %14s', 'verify_api_key, PL/pgSQL + pgcrypto', round(:api_ref_s::numeric, 3), to_char(:n / :api_ref_s, 'FM999,999,999'))
UNION ALL SELECT format('%-44s %10s %14s', 'TOTP verification, donatello C', round(:totp_c_s::numeric, 3), to_char(:n / :totp_c_s, 'FM999,999,999'))
UNION ALL SELECT format('%-44s %10s %14s', 'TOTP verification, PL/pgSQL + pgcrypto', round(:totp_ref_s::numeric, 3), to_char(:n / :totp_ref_s, 'FM999,999,999'))
UNION ALL SELECT format('%-44s %10s %14s', 'jwt_verify HS256, donatello C', round(:jwt_c_s::numeric, 3), to_char(:n / :jwt_c_s, 'FM999,999,999'))
UNION ALL SELECT format('%-44s %10s %14s', 'jwt_verify HS256, SQL + pgcrypto', round(:jwt_ref_s::numeric, 3), to_char(:n / :jwt_ref_s, 'FM999,999,999'))
UNION ALL SELECT format('%-44s %10s %14s', 'jwt_verify with session check, donatello C', round(:jwt_sid_s::numeric, 3), to_char(:n / :jwt_sid_s, 'FM999,999,999'))
UNION ALL SELECT format('ratios (C / reference): API keys %sx (cache bypassed %sx), TOTP %sx, JWT %sx',
                        round(:api_ref_s / :api_c_s, 1), round(:api_ref_s / :api_cold_s, 1), round(:totp_ref_s / :totp_c_s, 1), round(:jwt_ref_s / :jwt_c_s, 1))
UNION ALL SELECT format('targets: API keys >= 100,000/s and >= 10x: %s; TOTP >= 50,000/s and >= 10x: %s',
                        CASE WHEN :n / :api_c_s >= 100000 AND :api_ref_s / :api_c_s >= 10 THEN 'met' ELSE 'MISSED' END,
                        CASE WHEN :n / :totp_c_s >= 50000 AND :totp_ref_s / :totp_c_s >= 10 THEN 'met' ELSE 'MISSED' END);
