/*
 * credentials.h
 *	  Internal declarations shared by the files of the credentials part:
 *	  settings, small helpers (random tokens, digests, SPI), the login guard
 *	  (lockout counters in shared memory), deferred writes (security events
 *	  and session revocations that must survive the caller's rollback), the
 *	  per-backend credential caches, TOTP and sessions.
 *
 * The C entry points other parts may call are in jwt.h, apikey.h and
 * ratelimit.h.
 */
#ifndef DONATELLO_CREDENTIALS_H
#define DONATELLO_CREDENTIALS_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

/* ---- common.c: settings and helpers ---- */
extern int	login_max_failures;
extern int	login_lockout_seconds;
extern int	mfa_max_failures;
extern int	mfa_lockout_seconds;
extern int	mfa_token_lifetime_seconds;
extern int	access_token_lifetime_seconds;
extern int	refresh_token_lifetime_seconds;

extern void credentials_init(void);

#define CRED_SHA256_BYTES 32
#define CRED_HMAC_MAX_BYTES 64

typedef enum CredDigest
{
	CRED_SHA1 = 0,
	CRED_SHA256 = 1,
	CRED_SHA512 = 2
} CredDigest;

extern size_t cred_hmac(CredDigest digest, const void *key, size_t keylen, const void *data,
						size_t len, uint8 out[CRED_HMAC_MAX_BYTES]);

extern void cred_sha256(const void *data, size_t len, uint8 out[CRED_SHA256_BYTES]);
extern bytea *cred_sha256_bytea(const char *s);
extern char *cred_base64url_encode(const uint8 *data, size_t len);
extern bool cred_base64url_decode(const char *s, size_t len, uint8 **out, size_t *outlen);
extern char *cred_random_token(const char *prefix, size_t nbytes);
extern Datum cred_uuid_datum(const pg_uuid_t *u);
extern char *cred_uuid_string(const pg_uuid_t *u);
extern bool cred_spi_uuid(int row, int col, pg_uuid_t *out);
extern char *cred_spi_text(int row, int col);
extern bool cred_spi_bool(int row, int col, bool if_null);
extern int64 cred_spi_int64(int row, int col, int64 if_null);
extern TimestampTz cred_spi_timestamp(int row, int col, TimestampTz if_null);
extern void cred_spi_exec(const char *sql, int nargs, const Oid *types, const Datum *values,
						  const char *nulls, int expected);
extern char *cred_timestamp_string(TimestampTz t);
extern void cred_json_add_string(StringInfo buf, const char *key, const char *value);
extern Jsonb *cred_jsonb_from_cstring(const char *json);
extern bool cred_database_exists(Oid dboid);

/* ---- password.c ---- */
extern char *password_hash_cstring(const char *password);
extern bool password_verify_cstring(const char *password, const char *hash);
extern bool password_needs_rehash(const char *hash);
extern void password_dummy_prepare(void);
extern void password_dummy_verify(const char *password);
extern void password_init(void);

/* ---- guard.c: lockout counters in shared memory ---- */
typedef enum GuardKind
{
	GUARD_PASSWORD = 0,
	GUARD_MFA = 1
} GuardKind;

/* persisted counters of a user, as read from user_credentials */
typedef struct GuardState
{
	int			failures[2];
	TimestampTz locked_until[2];
} GuardState;

extern void guard_shmem_init(void);
extern bool guard_is_locked(const pg_uuid_t *user_id, const pg_uuid_t *org_id, GuardKind kind,
							const GuardState *seed, TimestampTz now, TimestampTz *until);
extern bool guard_record_failure(const pg_uuid_t *user_id, const pg_uuid_t *org_id, GuardKind kind,
								 const GuardState *seed, TimestampTz now, int *failures,
								 TimestampTz *until);
extern void guard_record_success(const pg_uuid_t *user_id, const pg_uuid_t *org_id, GuardKind kind,
								 const GuardState *seed);
extern void guard_unlock(const pg_uuid_t *user_id);
extern int	guard_flush(void);

/* ---- deferred.c: writes that survive the caller's rollback ---- */
extern void deferred_shmem_init(void);
extern void security_event_record(const pg_uuid_t *org_id, const pg_uuid_t *user_id,
								  const char *event, const char *ip, const char *user_agent,
								  const char *details_json);
extern void security_event_defer(const pg_uuid_t *org_id, const pg_uuid_t *user_id,
								 const char *event, const char *ip, const char *user_agent,
								 const char *details_json);
extern void session_revoke_defer(const pg_uuid_t *org_id, const pg_uuid_t *session_id,
								 const char *reason);
extern bool session_revocation_pending(const pg_uuid_t *session_id);
extern void deferred_wake_flusher(void);

/* ---- credcache.c: per-backend caches, invalidated at commit ---- */
extern void credcache_shmem_init(void);
extern uint64 credcache_generation(void);
extern bool credcache_usable(void);

typedef struct SessionValidity
{
	bool		found;
	bool		valid;			/* not revoked, not expired, user active */
	pg_uuid_t	user_id;
	TimestampTz expires_at;
} SessionValidity;

extern void credcache_session(const pg_uuid_t *session_id, SessionValidity *out);

/* ---- totp.c ---- */
typedef enum TotpAlgorithm
{
	TOTP_SHA1,
	TOTP_SHA256,
	TOTP_SHA512
} TotpAlgorithm;

extern TotpAlgorithm totp_parse_algorithm(const char *name);
extern const char *totp_algorithm_name(TotpAlgorithm alg);
extern uint32 hotp_value(const uint8 *secret, size_t secret_len, uint64 counter, int digits,
						 TotpAlgorithm alg);
extern void hotp_format(uint32 value, int digits, char *out);
extern char *base32_encode(const uint8 *data, size_t len);
extern bool base32_decode(const char *s, uint8 **out, size_t *outlen);
extern int64 totp_match(const uint8 *secret, size_t secret_len, const char *code, int digits,
						TotpAlgorithm alg, int period, TimestampTz now, int64 last_step);

/* ---- mfa.c ---- */
extern void mfa_init(void);

/* ---- sessions.c ---- */
extern Jsonb *session_issue(const pg_uuid_t *user_id, const pg_uuid_t *org_id, const char *ip,
							const char *user_agent, const char *method);

#endif							/* DONATELLO_CREDENTIALS_H */
