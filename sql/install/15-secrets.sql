-- Secrets at rest (src/secrets/): sealing and opening with keys derived from
-- the root key. Owner-only: no role is granted EXECUTE; SECURITY DEFINER
-- functions of other parts call them on behalf of their callers.

CREATE FUNCTION donatello.secret_seal(purpose text, row_id uuid, plaintext bytea) RETURNS bytea
    LANGUAGE c VOLATILE STRICT PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_secret_seal';
COMMENT ON FUNCTION donatello.secret_seal(text, uuid, bytea) IS
    'seal a secret for one purpose and one row (XChaCha20-Poly1305 under a key derived from the root key)';

CREATE FUNCTION donatello.secret_open(purpose text, row_id uuid, sealed bytea) RETURNS bytea
    LANGUAGE c STABLE STRICT PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_secret_open';
COMMENT ON FUNCTION donatello.secret_open(text, uuid, bytea) IS
    'open a sealed secret; fails if it was altered, moved to another row, or sealed under an unloaded key';

CREATE FUNCTION donatello.secret_reseal(purpose text, row_id uuid, sealed bytea) RETURNS bytea
    LANGUAGE c VOLATILE STRICT PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_secret_reseal';
COMMENT ON FUNCTION donatello.secret_reseal(text, uuid, bytea) IS
    'the same secret sealed under the current root key (for root key rotation)';

CREATE FUNCTION donatello.secret_key_id(sealed bytea) RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'donatello_secret_key_id';
COMMENT ON FUNCTION donatello.secret_key_id(bytea) IS
    'id of the root key that sealed a value (NULL if it is not a sealed value)';

CREATE FUNCTION donatello.root_key_id() RETURNS text
    LANGUAGE c STABLE PARALLEL RESTRICTED
    AS 'MODULE_PATHNAME', 'donatello_root_key_id';
COMMENT ON FUNCTION donatello.root_key_id() IS 'id of the current root key (not the key)';
