-- JWT: HS256 signing and verification, what is refused and why.
-- (RS256/ES256 and interoperability with the npm jose library are tested in
-- test/client/jwt.test.mjs.)

CREATE FUNCTION pg_temp.try(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
-- base64url of a text, for hand-made tokens
CREATE FUNCTION pg_temp.b64url(t text) RETURNS text LANGUAGE sql AS $$
    SELECT rtrim(translate(encode(convert_to(t, 'UTF8'), 'base64'), E'+/\n', '-_'), '=')
$$;

SET donatello.jwt_secret = '';
SELECT pg_temp.try($$SELECT donatello.jwt_sign('{"sub": "x"}')$$);
SET donatello.jwt_secret = 'too-short';
SELECT pg_temp.try($$SELECT donatello.jwt_sign('{"sub": "x"}')$$);
SET donatello.jwt_secret = 'regression-secret-regression-secret-0123456789';
SHOW donatello.jwt_algorithm;
SHOW donatello.jwt_leeway;

SELECT donatello.jwt_sign(jsonb_build_object('sub', 'someone', 'role', 'donatello_user',
       'exp', extract(epoch FROM now())::bigint + 60)) AS token \gset
SELECT split_part(:'token', '.', 1) = pg_temp.b64url('{"alg":"HS256","typ":"JWT"}') AS header_ok,
       donatello.jwt_verify(:'token') - 'exp' AS claims;

-- tampering with the payload breaks the signature
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)',
       split_part(:'token', '.', 1) || '.' || pg_temp.b64url('{"sub":"admin","role":"donatello_user"}') || '.' ||
       split_part(:'token', '.', 3)));
-- a signature of another secret
SET donatello.jwt_secret = 'another-secret-another-secret-another-secret!';
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', :'token'));
SET donatello.jwt_secret = 'regression-secret-regression-secret-0123456789';

-- alg none, other algorithms, malformed tokens
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)',
       pg_temp.b64url('{"alg":"none","typ":"JWT"}') || '.' || pg_temp.b64url('{"sub":"admin"}') || '.'));
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)',
       pg_temp.b64url('{"alg":"none"}') || '.' || pg_temp.b64url('{"sub":"admin"}') || '.' || split_part(:'token', '.', 3)));
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)',
       pg_temp.b64url('{"alg":"RS256"}') || '.' || split_part(:'token', '.', 2) || '.' || split_part(:'token', '.', 3)));
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)',
       pg_temp.b64url('{"typ":"JWT"}') || '.' || split_part(:'token', '.', 2) || '.' || split_part(:'token', '.', 3)));
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)',
       pg_temp.b64url('{"alg":"HS256","crit":["exp"]}') || '.' || split_part(:'token', '.', 2) || '.' || split_part(:'token', '.', 3)));
SELECT pg_temp.try('SELECT donatello.jwt_verify(''abc'')');
SELECT pg_temp.try('SELECT donatello.jwt_verify(''a.b.c.d'')');
SELECT pg_temp.try('SELECT donatello.jwt_verify(''!!!.e30.sig'')');
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', pg_temp.b64url('not json') || '.e30.abc'));
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', pg_temp.b64url('[1]') || '.e30.abc'));
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', split_part(:'token', '.', 1) || '.' || split_part(:'token', '.', 2) || '.'));
SELECT pg_temp.try('SELECT donatello.jwt_verify('''')');
SELECT pg_temp.try('SELECT donatello.jwt_verify(NULL)');

-- exp and nbf, with 30 seconds of leeway
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', donatello.jwt_sign(
       jsonb_build_object('sub', 'x', 'exp', extract(epoch FROM now())::bigint - 20)))) AS expired_within_leeway;
SELECT regexp_replace(pg_temp.try(format('SELECT donatello.jwt_verify(%L)', donatello.jwt_sign(
       jsonb_build_object('sub', 'x', 'exp', extract(epoch FROM now())::bigint - 120)))), '\d+ seconds', 'N seconds')
       AS expired;
SELECT regexp_replace(pg_temp.try(format('SELECT donatello.jwt_verify(%L)', donatello.jwt_sign(
       jsonb_build_object('sub', 'x', 'nbf', extract(epoch FROM now())::bigint + 300)))), '\d+ seconds', 'N seconds')
       AS not_yet_valid;
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', donatello.jwt_sign(
       jsonb_build_object('sub', 'x', 'nbf', extract(epoch FROM now())::bigint + 10)))) AS nbf_within_leeway;
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', donatello.jwt_sign('{"exp": "tomorrow"}')));
SET donatello.jwt_leeway = 0;
SELECT regexp_replace(pg_temp.try(format('SELECT donatello.jwt_verify(%L)', donatello.jwt_sign(
       jsonb_build_object('sub', 'x', 'exp', extract(epoch FROM now())::bigint - 20)))), '\d+ seconds', 'N seconds')
       AS expired_without_leeway;
RESET donatello.jwt_leeway;

-- audience and issuer, when configured
SET donatello.jwt_audience = 'donatello-api';
SET donatello.jwt_issuer = 'https://auth.example';
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', :'token')) AS no_aud;
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', donatello.jwt_sign(
       '{"aud": "someone-else", "iss": "https://auth.example"}'))) AS wrong_aud;
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', donatello.jwt_sign(
       '{"aud": ["x", "donatello-api"], "iss": "https://auth.example"}'))) AS aud_in_array;
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', donatello.jwt_sign(
       '{"aud": "donatello-api", "iss": "https://evil.example"}'))) AS wrong_iss;
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', donatello.jwt_sign(
       '{"aud": "donatello-api"}'))) AS no_iss;
RESET donatello.jwt_audience;
RESET donatello.jwt_issuer;

-- a sid must name a live session whose user is sub
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', donatello.jwt_sign(
       jsonb_build_object('sub', gen_random_uuid(), 'sid', '00000000-0000-0000-0000-000000000000'))));
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', donatello.jwt_sign('{"sid": "not-a-uuid"}')));

-- asymmetric algorithms need their keys configured
SET donatello.jwt_algorithm = 'RS256';
SELECT pg_temp.try($$SELECT donatello.jwt_sign('{}')$$);
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)', :'token'));
SET donatello.jwt_public_key = '/nonexistent/key.pem';
SELECT pg_temp.try(format('SELECT donatello.jwt_verify(%L)',
       pg_temp.b64url('{"alg":"RS256"}') || '.e30.' || split_part(:'token', '.', 3)));
RESET donatello.jwt_algorithm;
RESET donatello.jwt_public_key;

-- the secret is not visible to non-superusers
SET ROLE donatello_user;
SELECT pg_temp.try('SHOW donatello.jwt_secret');
RESET ROLE;
