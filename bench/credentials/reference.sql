-- Reference implementations for bench/credentials, in PL/pgSQL and SQL with
-- pgcrypto: the same lookups and checks as donatello's C, written the way an
-- application would without donatello.

CREATE SCHEMA cred_reference;

-- verify_api_key: format check, SHA-256 lookup, revoked/expired/owner checks,
-- scope check, the same jsonb result. (No checksum: CRC-32C is not in SQL.)
CREATE FUNCTION cred_reference.verify_api_key(key text, required_scope text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    r record;
BEGIN
    IF key IS NULL OR key !~ '^dnk_[0-9A-Za-z]{36}$' THEN
        RAISE EXCEPTION USING ERRCODE = 'DNA01', MESSAGE = 'invalid API key';
    END IF;
    SELECT k.id, k.user_id, k.org_id, k.scopes, k.expires_at, k.revoked_at, u.active INTO r
      FROM donatello.api_keys k JOIN donatello.users u ON u.id = k.user_id AND u.org_id = k.org_id
     WHERE k.key_hash = digest(key, 'sha256');
    IF NOT FOUND OR r.revoked_at IS NOT NULL OR NOT r.active THEN
        RAISE EXCEPTION USING ERRCODE = 'DNA01', MESSAGE = 'invalid API key';
    END IF;
    IF r.expires_at IS NOT NULL AND r.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION USING ERRCODE = 'DNA01', MESSAGE = 'API key has expired';
    END IF;
    IF required_scope IS NOT NULL AND NOT EXISTS (
        SELECT FROM unnest(r.scopes) s
         WHERE s = '*' OR s = required_scope OR (s LIKE '%:*' AND required_scope LIKE left(s, -1) || '%')) THEN
        RAISE EXCEPTION USING ERRCODE = 'DNP01', MESSAGE = 'missing scope';
    END IF;
    RETURN jsonb_build_object('key_id', r.id, 'user_id', r.user_id, 'org_id', r.org_id, 'scopes', to_jsonb(r.scopes));
END
$$;

-- base32 (RFC 4648) to bytes
CREATE FUNCTION cred_reference.base32_decode(s text) RETURNS bytea LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    alphabet constant text := 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
    clean text := upper(replace(replace(s, ' ', ''), '=', ''));
    buffer bigint := 0;
    bits int := 0;
    out bytea := '';
    v int;
BEGIN
    FOR i IN 1 .. length(clean) LOOP
        v := strpos(alphabet, substr(clean, i, 1)) - 1;
        IF v < 0 THEN
            RAISE EXCEPTION 'invalid base32';
        END IF;
        buffer := ((buffer << 5) | v) & 65535;
        bits := bits + 5;
        IF bits >= 8 THEN
            out := out || set_byte('\x00'::bytea, 0, ((buffer >> (bits - 8)) & 255)::int);
            bits := bits - 8;
        END IF;
    END LOOP;
    RETURN out;
END
$$;

-- RFC 4226 HOTP with pgcrypto's hmac
CREATE FUNCTION cred_reference.hotp(secret bytea, counter bigint, digits int, algorithm text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    mac bytea := hmac(int8send(counter), secret, algorithm);
    o int := get_byte(mac, length(mac) - 1) & 15;
    bin bigint := ((get_byte(mac, o) & 127)::bigint << 24) | (get_byte(mac, o + 1) << 16)
                  | (get_byte(mac, o + 2) << 8) | get_byte(mac, o + 3);
BEGIN
    RETURN lpad((bin % (10 ^ digits)::bigint)::text, digits, '0');
END
$$;

-- TOTP verification, one step either side
CREATE FUNCTION cred_reference.totp_verify(secret_base32 text, code text, at timestamptz DEFAULT now(),
                                          digits int DEFAULT 6, algorithm text DEFAULT 'sha1', period int DEFAULT 30)
    RETURNS boolean LANGUAGE plpgsql STABLE AS $$
DECLARE
    secret bytea := cred_reference.base32_decode(secret_base32);
    step bigint := floor(extract(epoch FROM at) / period)::bigint;
BEGIN
    FOR s IN step - 1 .. step + 1 LOOP
        IF cred_reference.hotp(secret, s, digits, algorithm) = code THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END
$$;

-- jwt_verify for HS256: split, recompute the HMAC, compare, decode, check exp/nbf
CREATE FUNCTION cred_reference.b64url_decode(s text) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT decode(translate(s, '-_', '+/') || repeat('=', (4 - length(s) % 4) % 4), 'base64')
$$;
CREATE FUNCTION cred_reference.jwt_verify(token text, secret text) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    parts text[] := string_to_array(token, '.');
    header jsonb;
    claims jsonb;
    now_s numeric := extract(epoch FROM clock_timestamp());
BEGIN
    IF cardinality(parts) <> 3 THEN
        RAISE EXCEPTION USING ERRCODE = 'DNA03', MESSAGE = 'malformed token';
    END IF;
    header := convert_from(cred_reference.b64url_decode(parts[1]), 'UTF8')::jsonb;
    IF header ->> 'alg' IS DISTINCT FROM 'HS256' THEN
        RAISE EXCEPTION USING ERRCODE = 'DNA03', MESSAGE = 'wrong algorithm';
    END IF;
    IF hmac(parts[1] || '.' || parts[2], secret, 'sha256') <> cred_reference.b64url_decode(parts[3]) THEN
        RAISE EXCEPTION USING ERRCODE = 'DNA03', MESSAGE = 'bad signature';
    END IF;
    claims := convert_from(cred_reference.b64url_decode(parts[2]), 'UTF8')::jsonb;
    IF (claims ->> 'exp')::numeric + 30 < now_s OR (claims ->> 'nbf')::numeric - 30 > now_s THEN
        RAISE EXCEPTION USING ERRCODE = 'DNA03', MESSAGE = 'expired or not yet valid';
    END IF;
    RETURN claims;
END
$$;
