-- Credentials: passwords (Argon2id) with lockout, TOTP MFA with backup codes,
-- API keys, JWT sessions with rotating refresh tokens, and the security event
-- log. The rules are in docs/credentials.md; the logic is C, in
-- src/credentials/. TOTP secrets are sealed with donatello.secret_seal
-- (src/secrets/).
--
-- Nothing here stores a secret in the clear: passwords as Argon2id PHC
-- strings, API keys, refresh tokens, MFA challenges and backup codes as
-- SHA-256 digests (they are high-entropy random values), TOTP secrets sealed.

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

CREATE TABLE donatello.security_events (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    org_id       uuid NOT NULL REFERENCES donatello.organizations (id) ON DELETE CASCADE,
    occurred_at  timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    user_id      uuid,
    event        text NOT NULL CHECK (event ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$'),
    ip           inet,
    user_agent   text,
    details      jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(details) = 'object'),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, user_id) REFERENCES donatello.users (org_id, id) ON DELETE SET NULL (user_id)
);
CREATE INDEX security_events_user_idx ON donatello.security_events (user_id, occurred_at) WHERE user_id IS NOT NULL;
COMMENT ON TABLE donatello.security_events IS
    'every credential outcome (logins, lockouts, MFA, API keys, sessions); never holds a secret';

CREATE TABLE donatello.user_credentials (
    org_id               uuid NOT NULL,
    user_id              uuid PRIMARY KEY,
    password_hash        text,
    password_changed_at  timestamptz,
    failed_logins        integer NOT NULL DEFAULT 0,
    locked_until         timestamptz,
    mfa_failures         integer NOT NULL DEFAULT 0,
    mfa_locked_until     timestamptz,
    last_login_at        timestamptz,
    UNIQUE (org_id, user_id),
    FOREIGN KEY (org_id, user_id) REFERENCES donatello.users (org_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE donatello.user_credentials IS
    'password hash (Argon2id PHC string) and the persisted lockout counters of a user';

CREATE TABLE donatello.password_history (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id         uuid NOT NULL,
    user_id        uuid NOT NULL,
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    FOREIGN KEY (org_id, user_id) REFERENCES donatello.users (org_id, id) ON DELETE CASCADE
);
CREATE INDEX password_history_user_idx ON donatello.password_history (user_id, id DESC);
COMMENT ON TABLE donatello.password_history IS 'the last passwords of a user (hashes), which may not be reused';

CREATE TABLE donatello.totp_credentials (
    id             uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    org_id         uuid NOT NULL,
    user_id        uuid NOT NULL UNIQUE,
    secret_sealed  bytea NOT NULL,
    algorithm      text NOT NULL DEFAULT 'sha1' CHECK (algorithm IN ('sha1', 'sha256', 'sha512')),
    digits         integer NOT NULL DEFAULT 6 CHECK (digits IN (6, 8)),
    period         integer NOT NULL DEFAULT 30 CHECK (period BETWEEN 15 AND 300),
    active         boolean NOT NULL DEFAULT false,
    last_step      bigint,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    activated_at   timestamptz,
    FOREIGN KEY (org_id, user_id) REFERENCES donatello.users (org_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE donatello.totp_credentials IS
    'a user''s TOTP secret (sealed, the row id is the associated data); MFA is on when active';

CREATE TABLE donatello.backup_codes (
    org_id     uuid NOT NULL,
    user_id    uuid NOT NULL,
    code_hash  bytea NOT NULL,
    used_at    timestamptz,
    PRIMARY KEY (user_id, code_hash),
    FOREIGN KEY (org_id, user_id) REFERENCES donatello.users (org_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE donatello.backup_codes IS 'single-use MFA backup codes (SHA-256 of user id and code)';

CREATE TABLE donatello.mfa_challenges (
    token_hash  bytea PRIMARY KEY,
    org_id      uuid NOT NULL,
    user_id     uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    ip          inet,
    user_agent  text,
    FOREIGN KEY (org_id, user_id) REFERENCES donatello.users (org_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE donatello.mfa_challenges IS 'single-use tokens between a correct password and the MFA code';

CREATE TABLE donatello.sessions (
    id              uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    org_id          uuid NOT NULL,
    user_id         uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at      timestamptz NOT NULL,
    refreshed_at    timestamptz,
    revoked_at      timestamptz,
    revoked_reason  text,
    ip              inet,
    user_agent      text,
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, user_id) REFERENCES donatello.users (org_id, id) ON DELETE CASCADE
);
CREATE INDEX sessions_user_idx ON donatello.sessions (user_id) WHERE revoked_at IS NULL;
COMMENT ON TABLE donatello.sessions IS 'login sessions: the sid claim of access tokens; revoking one rejects its tokens at once';

CREATE TABLE donatello.refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    org_id      uuid NOT NULL,
    session_id  uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    FOREIGN KEY (org_id, session_id) REFERENCES donatello.sessions (org_id, id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_session_idx ON donatello.refresh_tokens (session_id);
COMMENT ON TABLE donatello.refresh_tokens IS
    'refresh tokens (SHA-256); each is used once, presenting a used one revokes its session';

CREATE TABLE donatello.api_keys (
    id              uuid PRIMARY KEY DEFAULT pg_catalog.gen_random_uuid(),
    org_id          uuid NOT NULL,
    user_id         uuid NOT NULL,
    name            text NOT NULL CHECK (pg_catalog.length(pg_catalog.btrim(name)) BETWEEN 1 AND 200),
    key_hash        bytea NOT NULL UNIQUE,
    key_prefix      text NOT NULL,
    scopes          text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by      uuid,
    expires_at      timestamptz,
    revoked_at      timestamptz,
    revoked_reason  text,
    replaced_by     uuid,
    last_used_at    timestamptz,
    usage_count     bigint NOT NULL DEFAULT 0,
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, user_id) REFERENCES donatello.users (org_id, id) ON DELETE CASCADE
);
CREATE INDEX api_keys_user_idx ON donatello.api_keys (user_id);
COMMENT ON TABLE donatello.api_keys IS
    'API keys (SHA-256 of the key; the key itself is shown once); usage is flushed from shared memory';

SELECT pg_catalog.pg_extension_config_dump('donatello.security_events', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.user_credentials', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.password_history', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.totp_credentials', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.backup_codes', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.mfa_challenges', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.sessions', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.refresh_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.api_keys', '');

DO $rls$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['security_events', 'user_credentials', 'password_history',
                             'totp_credentials', 'backup_codes', 'mfa_challenges', 'sessions',
                             'refresh_tokens', 'api_keys']
    LOOP
        EXECUTE format('ALTER TABLE donatello.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON donatello.%I USING (org_id = donatello.current_org_id())', t);
        EXECUTE format('CREATE POLICY service_all ON donatello.%I TO donatello_service USING (true)', t);
    END LOOP;
END
$rls$;

-- Principals read their organization's events, sessions and key metadata;
-- hashes and sealed secrets stay with the extension owner.
GRANT SELECT ON donatello.security_events TO donatello_user, donatello_service;
GRANT SELECT (id, org_id, user_id, created_at, expires_at, refreshed_at, revoked_at, revoked_reason, ip, user_agent)
    ON donatello.sessions TO donatello_user, donatello_service;
GRANT SELECT (id, org_id, user_id, name, key_prefix, scopes, created_at, created_by, expires_at,
              revoked_at, revoked_reason, replaced_by, last_used_at, usage_count)
    ON donatello.api_keys TO donatello_user, donatello_service;
GRANT SELECT (org_id, user_id, password_changed_at, failed_logins, locked_until, mfa_failures,
              mfa_locked_until, last_login_at)
    ON donatello.user_credentials TO donatello_user, donatello_service;

-- ---------------------------------------------------------------------------
-- Security events: the one entry point (the audit trail will route it)
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.record_security_event(org_id uuid, user_id uuid, event text, ip inet,
                                                user_agent text, details jsonb)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    INSERT INTO donatello.security_events (org_id, user_id, event, ip, user_agent, details)
    VALUES (record_security_event.org_id, record_security_event.user_id, record_security_event.event,
            record_security_event.ip, left(record_security_event.user_agent, 512),
            coalesce(record_security_event.details, '{}'));
END
$$;
COMMENT ON FUNCTION donatello.record_security_event(uuid, uuid, text, inet, text, jsonb) IS
    'record one security event; details must never hold a secret';

-- Flush the security events and lockout counters queued in shared memory by
-- attempts that failed (their own transaction rolled back with the error).
CREATE FUNCTION donatello.flush_security_events() RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'donatello_flush_security_events';
COMMENT ON FUNCTION donatello.flush_security_events() IS
    'write queued security events and lockout counters now (the maintenance worker does it right after each failure)';

-- ---------------------------------------------------------------------------
-- Passwords
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.password_hash(password text) RETURNS text
    LANGUAGE c VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'donatello_password_hash';
COMMENT ON FUNCTION donatello.password_hash(text) IS
    'Argon2id PHC string of a password with the configured cost (no policy check)';

CREATE FUNCTION donatello.password_verify(password text, hash text) RETURNS boolean
    LANGUAGE c VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'donatello_password_verify';
COMMENT ON FUNCTION donatello.password_verify(text, text) IS
    'true when the password matches an Argon2id PHC string';

CREATE FUNCTION donatello.password_policy_violations(password text, email text DEFAULT NULL) RETURNS text[]
    LANGUAGE c IMMUTABLE
    AS 'MODULE_PATHNAME', 'donatello_password_policy_violations';
COMMENT ON FUNCTION donatello.password_policy_violations(text, text) IS
    'the policy rules a password breaks (empty when acceptable); history is checked by set_password';

CREATE FUNCTION donatello.set_password(user_id uuid, password text) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_set_password';
COMMENT ON FUNCTION donatello.set_password(uuid, text) IS
    'set a user''s password after checking the policy (DNA06 lists every unmet rule)';

-- ---------------------------------------------------------------------------
-- Login, lockout, sessions
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.login(email text, password text, org_slug text DEFAULT NULL,
                                ip inet DEFAULT NULL, user_agent text DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_login';
COMMENT ON FUNCTION donatello.login(text, text, text, inet, text) IS
    'password login: tokens, or an MFA challenge; DNA01 on bad credentials, DNA02 when locked';

CREATE FUNCTION donatello.login_mfa(mfa_token text, code text) RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_login_mfa';
COMMENT ON FUNCTION donatello.login_mfa(text, text) IS
    'second login step: a TOTP or backup code against the MFA challenge token; returns the tokens';

CREATE FUNCTION donatello.unlock_user(user_id uuid) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_unlock_user';
COMMENT ON FUNCTION donatello.unlock_user(uuid) IS 'clear a user''s password and MFA lockouts';

CREATE FUNCTION donatello.refresh(refresh_token text) RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_refresh';
COMMENT ON FUNCTION donatello.refresh(text) IS
    'new access and refresh tokens for a refresh token (used once; reuse revokes the session)';

CREATE FUNCTION donatello.logout(refresh_token text) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_logout';
COMMENT ON FUNCTION donatello.logout(text) IS 'revoke the session a refresh token belongs to';

CREATE FUNCTION donatello.revoke_session(session_id uuid, reason text DEFAULT 'revoked') RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_revoke_session';
COMMENT ON FUNCTION donatello.revoke_session(uuid, text) IS
    'revoke a session: its refresh tokens and access tokens stop working at once';

-- ---------------------------------------------------------------------------
-- JWT
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.jwt_sign(claims jsonb) RETURNS text
    LANGUAGE c STABLE STRICT
    AS 'MODULE_PATHNAME', 'donatello_jwt_sign';
COMMENT ON FUNCTION donatello.jwt_sign(jsonb) IS
    'sign claims with the configured algorithm and key (donatello.jwt_algorithm)';

CREATE FUNCTION donatello.jwt_verify(token text) RETURNS jsonb
    LANGUAGE c STABLE
    AS 'MODULE_PATHNAME', 'donatello_jwt_verify';
COMMENT ON FUNCTION donatello.jwt_verify(text) IS
    'the claims of a valid token; DNA03 with the reason otherwise (signature, exp/nbf, aud/iss, revoked session)';

-- ---------------------------------------------------------------------------
-- TOTP
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.totp_code(secret_base32 text, at timestamptz DEFAULT pg_catalog.now(),
                                    digits integer DEFAULT 6, algorithm text DEFAULT 'sha1',
                                    period integer DEFAULT 30)
    RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_totp_code';
COMMENT ON FUNCTION donatello.totp_code(text, timestamptz, integer, text, integer) IS
    'RFC 6238 TOTP code of a base32 secret at a time';

CREATE FUNCTION donatello.totp_verify(secret_base32 text, code text, at timestamptz DEFAULT pg_catalog.now(),
                                      digits integer DEFAULT 6, algorithm text DEFAULT 'sha1',
                                      period integer DEFAULT 30)
    RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_totp_verify';
COMMENT ON FUNCTION donatello.totp_verify(text, text, timestamptz, integer, text, integer) IS
    'true when code is the TOTP code of the secret at "at" or one step either side (no replay state)';

CREATE FUNCTION donatello.hotp_code(secret bytea, counter bigint, digits integer DEFAULT 6,
                                    algorithm text DEFAULT 'sha1')
    RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_hotp_code';
COMMENT ON FUNCTION donatello.hotp_code(bytea, bigint, integer, text) IS 'RFC 4226 HOTP code';

CREATE FUNCTION donatello.totp_enroll(user_id uuid) RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_totp_enroll';
COMMENT ON FUNCTION donatello.totp_enroll(uuid) IS
    'new TOTP secret (base32), otpauth URI and 10 backup codes; MFA is on after totp_activate';

CREATE FUNCTION donatello.totp_activate(user_id uuid, code text) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_totp_activate';
COMMENT ON FUNCTION donatello.totp_activate(uuid, text) IS 'turn MFA on after a correct code from the enrolled secret';

CREATE FUNCTION donatello.totp_disable(user_id uuid) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_totp_disable';
COMMENT ON FUNCTION donatello.totp_disable(uuid) IS 'turn MFA off and forget the secret and backup codes';

-- ---------------------------------------------------------------------------
-- API keys and rate limits
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.create_api_key(user_id uuid, name text, scopes text[],
                                         expires_at timestamptz DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_create_api_key';
COMMENT ON FUNCTION donatello.create_api_key(uuid, text, text[], timestamptz) IS
    'new API key {key_id, key}; the key is shown only here';

CREATE FUNCTION donatello.verify_api_key(key text, required_scope text DEFAULT NULL) RETURNS jsonb
    LANGUAGE c STABLE
    AS 'MODULE_PATHNAME', 'donatello_verify_api_key';
COMMENT ON FUNCTION donatello.verify_api_key(text, text) IS
    '{key_id, user_id, org_id, scopes} of a valid key; DNA01 if unknown/revoked/expired, DNP01 if the scope is missing';

CREATE FUNCTION donatello.rotate_api_key(key_id uuid) RETURNS jsonb
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_rotate_api_key';
COMMENT ON FUNCTION donatello.rotate_api_key(uuid) IS
    'issue a replacement key; the old one stays valid for donatello.api_key_rotation_grace';

CREATE FUNCTION donatello.revoke_api_key(key_id uuid, reason text) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_revoke_api_key';
COMMENT ON FUNCTION donatello.revoke_api_key(uuid, text) IS 'revoke an API key; every session rejects it from the commit on';

CREATE FUNCTION donatello.flush_api_key_usage() RETURNS integer
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'donatello_flush_api_key_usage';
COMMENT ON FUNCTION donatello.flush_api_key_usage() IS
    'write the usage counted in shared memory to api_keys now (the maintenance worker does it periodically)';

CREATE FUNCTION donatello.rate_limit_take(bucket text, capacity integer, per interval) RETURNS boolean
    LANGUAGE c VOLATILE STRICT
    AS 'MODULE_PATHNAME', 'donatello_rate_limit_take';
COMMENT ON FUNCTION donatello.rate_limit_take(text, integer, interval) IS
    'take one token from a shared token bucket of capacity tokens refilled per interval; false when empty';

-- Any change to what verify_api_key and jwt_verify read invalidates the
-- per-backend credential caches of every session at commit.
CREATE FUNCTION donatello.credentials_invalidate() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'donatello_credentials_invalidate';
COMMENT ON FUNCTION donatello.credentials_invalidate() IS
    'statement trigger: API key and session caches of every backend are dropped when this commits';

CREATE TRIGGER credentials_invalidate
    AFTER UPDATE OF id, org_id, user_id, key_hash, scopes, expires_at, revoked_at OR DELETE OR TRUNCATE
    ON donatello.api_keys FOR EACH STATEMENT EXECUTE FUNCTION donatello.credentials_invalidate();
CREATE TRIGGER credentials_invalidate
    AFTER UPDATE OF id, org_id, user_id, expires_at, revoked_at OR DELETE OR TRUNCATE
    ON donatello.sessions FOR EACH STATEMENT EXECUTE FUNCTION donatello.credentials_invalidate();
CREATE TRIGGER credentials_invalidate AFTER UPDATE OF id, org_id, active OR DELETE OR TRUNCATE
    ON donatello.users FOR EACH STATEMENT EXECUTE FUNCTION donatello.credentials_invalidate();

-- Deactivating a user ends its sessions (jwt_verify rejects them at once anyway).
CREATE FUNCTION donatello.end_sessions_of_inactive_user() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    UPDATE donatello.sessions s
       SET revoked_at = now(), revoked_reason = 'user deactivated'
     WHERE s.org_id = NEW.org_id AND s.user_id = NEW.id AND s.revoked_at IS NULL;
    RETURN NULL;
END
$$;
CREATE TRIGGER end_sessions_of_inactive_user AFTER UPDATE OF active ON donatello.users
    FOR EACH ROW WHEN (OLD.active AND NOT NEW.active)
    EXECUTE FUNCTION donatello.end_sessions_of_inactive_user();

GRANT EXECUTE ON FUNCTION
    donatello.record_security_event(uuid, uuid, text, inet, text, jsonb),
    donatello.flush_security_events(),
    donatello.password_hash(text),
    donatello.password_verify(text, text),
    donatello.set_password(uuid, text),
    donatello.login(text, text, text, inet, text),
    donatello.login_mfa(text, text),
    donatello.unlock_user(uuid),
    donatello.refresh(text),
    donatello.logout(text),
    donatello.revoke_session(uuid, text),
    donatello.jwt_sign(jsonb),
    donatello.totp_enroll(uuid),
    donatello.totp_activate(uuid, text),
    donatello.totp_disable(uuid),
    donatello.create_api_key(uuid, text, text[], timestamptz),
    donatello.rotate_api_key(uuid),
    donatello.revoke_api_key(uuid, text),
    donatello.flush_api_key_usage()
    TO donatello_service;
GRANT EXECUTE ON FUNCTION
    donatello.password_policy_violations(text, text),
    donatello.jwt_verify(text),
    donatello.verify_api_key(text, text),
    donatello.totp_code(text, timestamptz, integer, text, integer),
    donatello.totp_verify(text, text, timestamptz, integer, text, integer),
    donatello.hotp_code(bytea, bigint, integer, text)
    TO donatello_anon, donatello_user, donatello_service;
-- not to anon/user: anyone able to create buckets with long periods could fill the table
GRANT EXECUTE ON FUNCTION donatello.rate_limit_take(text, integer, interval) TO donatello_service;

-- ---------------------------------------------------------------------------
-- donatello_api: what an HTTP client needs
-- ---------------------------------------------------------------------------

-- Raise DNP01 unless the current principal may manage target_user's
-- credentials: itself with apikey:manage, or a user of its organization with
-- apikey:manage and user:manage (org admins). Returns the caller's id.
CREATE FUNCTION donatello.check_credential_manager(target_user uuid, permission text DEFAULT 'apikey:manage')
    RETURNS uuid
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    caller uuid := donatello.current_user_id();
BEGIN
    IF caller IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNA03',
            MESSAGE = 'no authenticated principal',
            HINT = 'Send an access token (Authorization: Bearer ...) or set request.jwt.claims.';
    END IF;
    PERFORM donatello.require_permission(permission);
    IF target_user IS DISTINCT FROM caller THEN
        IF donatello.user_org(target_user) IS DISTINCT FROM donatello.user_org(caller) THEN
            RAISE EXCEPTION USING
                ERRCODE = 'DNV02',
                MESSAGE = format('user %s does not exist', target_user);
        END IF;
        PERFORM donatello.require_permission('user:manage');
    END IF;
    RETURN caller;
END
$$;
COMMENT ON FUNCTION donatello.check_credential_manager(uuid, text) IS
    'DNP01 unless the current principal may manage target_user''s credentials; returns the caller';

CREATE FUNCTION donatello_api.login(email text, password text, org_slug text DEFAULT NULL) RETURNS jsonb
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT donatello.login(email, password, org_slug,
                           nullif(current_setting('request.ip', true), '')::inet,
                           nullif(current_setting('request.headers', true), '')::jsonb ->> 'user-agent')
$$;
COMMENT ON FUNCTION donatello_api.login(text, text, text) IS
    'password login; IP and user agent come from request.ip and request.headers';

CREATE FUNCTION donatello_api.login_mfa(mfa_token text, code text) RETURNS jsonb
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT donatello.login_mfa(mfa_token, code) $$;
COMMENT ON FUNCTION donatello_api.login_mfa(text, text) IS 'second login step with a TOTP or backup code';

CREATE FUNCTION donatello_api.refresh(refresh_token text) RETURNS jsonb
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT donatello.refresh(refresh_token) $$;
COMMENT ON FUNCTION donatello_api.refresh(text) IS 'rotate a refresh token into new tokens';

CREATE FUNCTION donatello_api.logout(refresh_token text) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT donatello.logout(refresh_token) $$;
COMMENT ON FUNCTION donatello_api.logout(text) IS 'end the session of a refresh token';

CREATE FUNCTION donatello_api.totp_enroll() RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    caller uuid := donatello.current_user_id();
BEGIN
    IF caller IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'DNA03', MESSAGE = 'no authenticated principal';
    END IF;
    RETURN donatello.totp_enroll(caller);
END
$$;
COMMENT ON FUNCTION donatello_api.totp_enroll() IS 'enroll the current principal in TOTP MFA';

CREATE FUNCTION donatello_api.totp_activate(code text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    caller uuid := donatello.current_user_id();
BEGIN
    IF caller IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'DNA03', MESSAGE = 'no authenticated principal';
    END IF;
    PERFORM donatello.totp_activate(caller, code);
END
$$;
COMMENT ON FUNCTION donatello_api.totp_activate(text) IS 'turn MFA on for the current principal';

CREATE FUNCTION donatello_api.create_api_key(name text, scopes text[] DEFAULT '{}',
                                             expires_at timestamptz DEFAULT NULL, user_id uuid DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    target uuid := coalesce(create_api_key.user_id, donatello.current_user_id());
BEGIN
    PERFORM donatello.check_credential_manager(target);
    RETURN donatello.create_api_key(target, name, scopes, expires_at);
END
$$;
COMMENT ON FUNCTION donatello_api.create_api_key(text, text[], timestamptz, uuid) IS
    'create an API key for the current principal (or, for org admins, another user of the organization)';

CREATE FUNCTION donatello_api.api_keys(for_user uuid DEFAULT NULL)
    RETURNS TABLE (id uuid, user_id uuid, name text, key_prefix text, scopes text[], created_at timestamptz,
                   expires_at timestamptz, revoked_at timestamptz, last_used_at timestamptz, usage_count bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    target uuid := coalesce(for_user, donatello.current_user_id());
BEGIN
    PERFORM donatello.check_credential_manager(target);
    RETURN QUERY
        SELECT k.id, k.user_id, k.name, k.key_prefix, k.scopes, k.created_at, k.expires_at, k.revoked_at,
               k.last_used_at, k.usage_count
          FROM donatello.api_keys k
         WHERE k.user_id = target
         ORDER BY k.created_at, k.id;
END
$$;
COMMENT ON FUNCTION donatello_api.api_keys(uuid) IS 'list API keys (never the keys themselves)';

-- The owner of a key, for the RBAC check of the key wrappers; DNV02 if none.
CREATE FUNCTION donatello.api_key_owner(key_id uuid) RETURNS uuid
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    result uuid;
BEGIN
    SELECT k.user_id INTO result FROM donatello.api_keys k WHERE k.id = api_key_owner.key_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'DNV02', MESSAGE = format('API key %s does not exist', key_id);
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION donatello.api_key_owner(uuid) IS 'the user an API key belongs to; DNV02 if the key does not exist';

CREATE FUNCTION donatello_api.rotate_api_key(key_id uuid) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM donatello.check_credential_manager(donatello.api_key_owner(key_id));
    RETURN donatello.rotate_api_key(key_id);
END
$$;
COMMENT ON FUNCTION donatello_api.rotate_api_key(uuid) IS 'replace an API key; the old one keeps working for the grace period';

CREATE FUNCTION donatello_api.revoke_api_key(key_id uuid, reason text DEFAULT 'revoked by user') RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM donatello.check_credential_manager(donatello.api_key_owner(key_id));
    PERFORM donatello.revoke_api_key(key_id, reason);
END
$$;
COMMENT ON FUNCTION donatello_api.revoke_api_key(uuid, text) IS 'revoke an API key at once';

CREATE FUNCTION donatello_api.unlock_user(user_id uuid) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM donatello.check_credential_manager(unlock_user.user_id, 'user:manage');
    PERFORM donatello.unlock_user(unlock_user.user_id);
END
$$;
COMMENT ON FUNCTION donatello_api.unlock_user(uuid) IS
    'clear a user''s login and MFA lockouts (needs user:manage in the user''s organization)';

GRANT EXECUTE ON FUNCTION
    donatello_api.login(text, text, text),
    donatello_api.login_mfa(text, text),
    donatello_api.refresh(text),
    donatello_api.logout(text)
    TO donatello_anon, donatello_user, donatello_service;
GRANT EXECUTE ON FUNCTION
    donatello_api.totp_enroll(),
    donatello_api.totp_activate(text),
    donatello_api.create_api_key(text, text[], timestamptz, uuid),
    donatello_api.api_keys(uuid),
    donatello_api.rotate_api_key(uuid),
    donatello_api.revoke_api_key(uuid, text),
    donatello_api.unlock_user(uuid)
    TO donatello_user, donatello_service;
