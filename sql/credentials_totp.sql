-- One-time passwords against the RFC vectors, then TOTP enrollment, activation,
-- replay, the MFA lockout, backup codes and the MFA step of login.

-- RFC 4226 Appendix D: HOTP of "12345678901234567890", counters 0-9
SELECT c AS counter, donatello.hotp_code(convert_to('12345678901234567890', 'UTF8'), c) AS code,
       donatello.hotp_code(convert_to('12345678901234567890', 'UTF8'), c) =
       (ARRAY['755224','287082','359152','969429','338314','254676','287922','162583','399871','520489'])[c + 1]
       AS matches_rfc
  FROM generate_series(0, 9) AS c;

-- RFC 6238 Appendix B: all 18 values (8 digits; 20, 32 and 64-byte seeds)
WITH seeds(algorithm, secret) AS (VALUES
    ('sha1', 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ'),
    ('sha256', 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA'),
    ('sha512', 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNA')),
rfc(t, algorithm, code) AS (VALUES
    (59, 'sha1', '94287082'), (59, 'sha256', '46119246'), (59, 'sha512', '90693936'),
    (1111111109, 'sha1', '07081804'), (1111111109, 'sha256', '68084774'), (1111111109, 'sha512', '25091201'),
    (1111111111, 'sha1', '14050471'), (1111111111, 'sha256', '67062674'), (1111111111, 'sha512', '99943326'),
    (1234567890, 'sha1', '89005924'), (1234567890, 'sha256', '91819424'), (1234567890, 'sha512', '93441116'),
    (2000000000, 'sha1', '69279037'), (2000000000, 'sha256', '90698825'), (2000000000, 'sha512', '38618901'),
    (20000000000, 'sha1', '65353130'), (20000000000, 'sha256', '77737706'), (20000000000, 'sha512', '47863826'))
SELECT rfc.t AS unix_time, rfc.algorithm,
       donatello.totp_code(seeds.secret, to_timestamp(rfc.t), 8, rfc.algorithm) AS code,
       donatello.totp_code(seeds.secret, to_timestamp(rfc.t), 8, rfc.algorithm) = rfc.code AS matches_rfc
  FROM rfc JOIN seeds USING (algorithm)
 ORDER BY rfc.t, rfc.algorithm;

-- 6 digits are the last 6 of 8; base32 is case-insensitive, spaces and padding ignored
SELECT donatello.totp_code('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', to_timestamp(59)) AS six_digits,
       donatello.totp_code('gezd gnbv gy3t qojq gezd gnbv gy3t qojq====', to_timestamp(59)) AS same;

-- totp_verify: one step either side of "at" (the RFC code of t=59 is for step 1: 30..59 s)
SELECT at, donatello.totp_verify('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', '287082', to_timestamp(at)) AS accepted
  FROM unnest(ARRAY[0, 29, 30, 59, 60, 89, 90, 120]) AS at;
SELECT donatello.totp_verify('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', '94287082', to_timestamp(59), 8) AS eight_digits,
       donatello.totp_verify('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', '287083', to_timestamp(59)) AS wrong_code,
       donatello.totp_verify('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', '28708', to_timestamp(59)) AS too_short,
       donatello.totp_verify('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', ' 287082', to_timestamp(59)) AS not_digits;

-- bad arguments
SELECT donatello.totp_code('not base32!', now());
SELECT donatello.totp_code('GEZDGNBV', now(), 5);
SELECT donatello.totp_code('GEZDGNBV', now(), 6, 'md5');
SELECT donatello.totp_code('GEZDGNBV', now(), 6, 'sha1', 0);
SELECT donatello.hotp_code('\x00'::bytea, -1);

-- run a statement, return its SQLSTATE and message instead of failing
CREATE FUNCTION pg_temp.try(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '[0-9a-f]{8}-[0-9a-f-]{27}', '<id>', 'g');
END
$$;

SET donatello.password_memory = '8MB';
SET donatello.password_iterations = 1;
SET donatello.jwt_secret = 'regression-secret-regression-secret-0123456789';
SELECT donatello.create_organization('TOTP Org', 'totp-org') AS org \gset
SELECT donatello.create_user(:'org', 'mia@totp.test', 'Mia') AS mia \gset
SELECT donatello.set_password(:'mia', 'Secret-Phrase-2024!');

-- enrollment: base32 secret of 20 bytes, an otpauth URI, 10 backup codes
SELECT donatello.totp_enroll(:'mia') AS enrollment \gset
SELECT :'enrollment'::jsonb ->> 'secret' AS secret \gset
SELECT length(:'secret') AS secret_chars,
       :'enrollment'::jsonb ->> 'otpauth_uri' = 'otpauth://totp/donatello:mia@totp.test?secret=' || :'secret'
           || '&issuer=donatello&algorithm=SHA1&digits=6&period=30' AS uri_ok,
       jsonb_array_length(:'enrollment'::jsonb -> 'backup_codes') AS backup_codes,
       (SELECT bool_and(c ~ '^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$')
          FROM jsonb_array_elements_text(:'enrollment'::jsonb -> 'backup_codes') c) AS backup_format;
-- the secret is sealed, not stored in the clear; codes are stored hashed
SELECT position(convert_to(:'secret', 'UTF8') IN secret_sealed) = 0 AS secret_not_in_clear,
       donatello.secret_key_id(secret_sealed) = donatello.root_key_id() AS sealed_under_root_key,
       active
  FROM donatello.totp_credentials WHERE user_id = :'mia';
SELECT count(*) AS stored_codes, count(*) FILTER (WHERE length(code_hash) = 32) AS sha256_hashes
  FROM donatello.backup_codes WHERE user_id = :'mia';

-- no MFA until activated
SELECT donatello.login('mia@totp.test', 'Secret-Phrase-2024!', 'totp-org') ? 'access_token' AS tokens_without_mfa;

-- a wrong code does not activate; a code two steps away is outside the window
SELECT pg_temp.try(format('SELECT donatello.totp_activate(%L, %L)', :'mia', '000000x'));
SELECT pg_temp.try(format('SELECT donatello.totp_activate(%L, %L)', :'mia',
                          donatello.totp_code(:'secret', now() - interval '60 seconds')));
-- the previous step is inside the window
SELECT pg_temp.try(format('SELECT donatello.totp_activate(%L, %L)', :'mia',
                          donatello.totp_code(:'secret', now() - interval '30 seconds')));
SELECT active FROM donatello.totp_credentials WHERE user_id = :'mia';
-- enrolling again while active is refused
SELECT pg_temp.try(format('SELECT donatello.totp_enroll(%L)', :'mia'));

-- login now asks for the second factor
SELECT donatello.login('mia@totp.test', 'Secret-Phrase-2024!', 'totp-org') AS challenge \gset
SELECT :'challenge'::jsonb - 'mfa_token' AS challenge, :'challenge'::jsonb ->> 'mfa_token' ~ '^dnm_' AS token_format;
-- the current code works once; the step accepted at activation (previous) is a replay
SELECT pg_temp.try(format('SELECT donatello.login_mfa(%L, %L)', :'challenge'::jsonb ->> 'mfa_token',
                          donatello.totp_code(:'secret', now() - interval '30 seconds')));
SELECT donatello.login_mfa(:'challenge'::jsonb ->> 'mfa_token', donatello.totp_code(:'secret')) AS tokens \gset
SELECT :'tokens'::jsonb ?& ARRAY['access_token', 'refresh_token'] AS got_tokens;
-- the challenge is single use
SELECT pg_temp.try(format('SELECT donatello.login_mfa(%L, %L)', :'challenge'::jsonb ->> 'mfa_token',
                          donatello.totp_code(:'secret')));
-- an unknown challenge
SELECT pg_temp.try('SELECT donatello.login_mfa(''dnm_nothing'', ''123456'')');

-- the same code again, with a fresh challenge: a replay
SELECT donatello.login('mia@totp.test', 'Secret-Phrase-2024!', 'totp-org') ->> 'mfa_token' AS challenge2 \gset
SELECT pg_temp.try(format('SELECT donatello.login_mfa(%L, %L)', :'challenge2', donatello.totp_code(:'secret')));

-- a backup code works once
SELECT :'enrollment'::jsonb -> 'backup_codes' ->> 0 AS backup \gset
SELECT donatello.login_mfa(:'challenge2', upper(:'backup')) ? 'access_token' AS backup_code_accepted;
SELECT donatello.login('mia@totp.test', 'Secret-Phrase-2024!', 'totp-org') ->> 'mfa_token' AS challenge3 \gset
SELECT pg_temp.try(format('SELECT donatello.login_mfa(%L, %L)', :'challenge3', :'backup'));
SELECT count(*) FILTER (WHERE used_at IS NOT NULL) AS used_codes FROM donatello.backup_codes WHERE user_id = :'mia';

-- three wrong codes in a row lock MFA: the used backup code was the first, the third locks
SELECT pg_temp.try(format('SELECT donatello.login_mfa(%L, %L)', :'challenge3', '111111'));
SELECT pg_temp.try(format('SELECT donatello.login_mfa(%L, %L)', :'challenge3', '222222'));
-- now even the right code is refused
SELECT pg_temp.try(format('SELECT donatello.login_mfa(%L, %L)', :'challenge3',
                          donatello.totp_code(:'secret', now() + interval '30 seconds')));
-- an administrator unlocks
SELECT donatello.unlock_user(:'mia');
SELECT donatello.login_mfa(:'challenge3', donatello.totp_code(:'secret', now() + interval '30 seconds'))
       ? 'access_token' AS accepted_after_unlock;

-- the events, attributed, without codes or secrets
SELECT donatello.flush_security_events() >= 0 AS flushed;
SELECT event, count(*) FROM donatello.security_events WHERE user_id = :'mia' GROUP BY event ORDER BY event;
SELECT count(*) AS events_with_secrets FROM donatello.security_events
 WHERE details::text LIKE '%' || :'secret' || '%' OR details::text LIKE '%' || :'backup' || '%'
    OR details::text LIKE '%Secret-Phrase%';

-- turning MFA off forgets the secret and the codes
SELECT donatello.totp_disable(:'mia');
SELECT (SELECT count(*) FROM donatello.totp_credentials WHERE user_id = :'mia') AS secrets,
       (SELECT count(*) FROM donatello.backup_codes WHERE user_id = :'mia') AS codes;
SELECT pg_temp.try(format('SELECT donatello.totp_activate(%L, %L)', :'mia', '123456'));

-- SHA-256 and 8 digits by setting
SET donatello.totp_algorithm = 'sha256';
SET donatello.totp_digits = 8;
SELECT donatello.totp_enroll(:'mia') AS enrollment256 \gset
SELECT length(:'enrollment256'::jsonb ->> 'secret') AS secret_chars_32_bytes,
       :'enrollment256'::jsonb ->> 'otpauth_uri' LIKE '%algorithm=SHA256&digits=8%' AS uri_ok;
SELECT pg_temp.try(format('SELECT donatello.totp_activate(%L, %L)', :'mia',
                          donatello.totp_code(:'enrollment256'::jsonb ->> 'secret', now(), 8, 'sha256')));
