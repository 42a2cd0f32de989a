/*
 * common.c
 *	  The credentials part's init (its settings, shared memory and the
 *	  maintenance tasks of its files) and helpers the other files share:
 *	  digests, base64url, random tokens, uuid and SPI result accessors.
 *
 * No shared state lives here; see guard.c, deferred.c, credcache.c,
 * apikey_usage.c and ratelimit.c for the shared memory and its locking.
 */
#include "postgres.h"

#include <sodium.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "credentials/credentials.h"
#include "credentials/apikey.h"
#include "credentials/jwt.h"
#include "credentials/ratelimit.h"

/* settings: lockout thresholds and token lifetimes (docs/settings.md) */
int			login_max_failures = 5;
int			login_lockout_seconds = 900;
int			mfa_max_failures = 3;
int			mfa_lockout_seconds = 900;
int			mfa_token_lifetime_seconds = 300;
int			access_token_lifetime_seconds = 900;
int			refresh_token_lifetime_seconds = 7 * 24 * 3600;

/* Define the settings shared by login, MFA and sessions. */
static void
define_credential_settings(void)
{
	DefineCustomIntVariable("donatello.login_max_failures",
							"Consecutive wrong passwords that lock an account.",
							NULL, &login_max_failures, 5, 1, 100,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.login_lockout",
							"How long an account stays locked after too many wrong passwords.",
							NULL, &login_lockout_seconds, 900, 1, 7 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.mfa_max_failures",
							"Consecutive wrong MFA codes that lock MFA for a user.",
							NULL, &mfa_max_failures, 3, 1, 100,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.mfa_lockout",
							"How long MFA stays locked after too many wrong codes.",
							NULL, &mfa_lockout_seconds, 900, 1, 7 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.mfa_token_lifetime",
							"How long the MFA challenge token returned by login stays usable.",
							NULL, &mfa_token_lifetime_seconds, 300, 30, 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.access_token_lifetime",
							"Lifetime of the access tokens (JWT) issued at login and refresh.",
							NULL, &access_token_lifetime_seconds, 900, 30, 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.refresh_token_lifetime",
							"Lifetime of a session and of its refresh tokens.",
							NULL, &refresh_token_lifetime_seconds, 7 * 24 * 3600, 60, 365 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
}

/* The part's init, called from _PG_init: settings, shared memory, tasks. */
void
credentials_init(void)
{
	if (sodium_init() < 0)
		elog(FATAL, "libsodium could not be initialized");
	define_credential_settings();
	password_init();
	jwt_init();
	mfa_init();
	apikey_init();
	guard_shmem_init();
	deferred_shmem_init();
	credcache_shmem_init();
	apikey_usage_shmem_init();
	rate_limit_shmem_init();
}

/* SHA-256 of a buffer. */
void
cred_sha256(const void *data, size_t len, uint8 out[CRED_SHA256_BYTES])
{
	crypto_hash_sha256(out, data, len);
}

/* SHA-256 of a C string as a bytea. */
bytea *
cred_sha256_bytea(const char *s)
{
	bytea	   *result = palloc(VARHDRSZ + CRED_SHA256_BYTES);

	SET_VARSIZE(result, VARHDRSZ + CRED_SHA256_BYTES);
	cred_sha256(s, strlen(s), (uint8 *) VARDATA(result));
	return result;
}

/* base64url without padding (RFC 4648 section 5), palloc'd. */
char *
cred_base64url_encode(const uint8 *data, size_t len)
{
	size_t		outlen = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char	   *out = palloc(outlen);

	sodium_bin2base64(out, outlen, data, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return out;
}

/* Strict base64url decoding (no padding, no stray characters). */
bool
cred_base64url_decode(const char *s, size_t len, uint8 **out, size_t *outlen)
{
	size_t		cap = len * 3 / 4 + 3;
	const char *end;
	uint8	   *buf = palloc(cap);

	if (sodium_base642bin(buf, cap, s, len, NULL, outlen, &end,
						  sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 || end != s + len)
	{
		pfree(buf);
		return false;
	}
	*out = buf;
	return true;
}

/* A random token: prefix followed by nbytes of CSPRNG output in base64url. */
char *
cred_random_token(const char *prefix, size_t nbytes)
{
	uint8		raw[64];
	char	   *encoded;
	char	   *result;

	Assert(nbytes <= sizeof(raw));
	randombytes_buf(raw, nbytes);
	encoded = cred_base64url_encode(raw, nbytes);
	sodium_memzero(raw, sizeof(raw));
	result = psprintf("%s%s", prefix, encoded);
	sodium_memzero(encoded, strlen(encoded));
	pfree(encoded);
	return result;
}

/* A palloc'd copy of a uuid as a Datum. */
Datum
cred_uuid_datum(const pg_uuid_t *u)
{
	pg_uuid_t  *copy = palloc(sizeof(pg_uuid_t));

	memcpy(copy, u, sizeof(pg_uuid_t));
	return UUIDPGetDatum(copy);
}

/* A uuid in canonical text form. */
char *
cred_uuid_string(const pg_uuid_t *u)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, cred_uuid_datum(u)));
}

/* Column col (1-based) of SPI result row as a uuid; false when NULL. */
bool
cred_spi_uuid(int row, int col, pg_uuid_t *out)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	if (isnull)
		return false;
	memcpy(out, DatumGetUUIDP(d), sizeof(pg_uuid_t));
	return true;
}

/* Column as a palloc'd C string (in the caller's context), or NULL. */
char *
cred_spi_text(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* Column as a boolean. */
bool
cred_spi_bool(int row, int col, bool if_null)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? if_null : DatumGetBool(d);
}

/* Column as an int8 (the column must be int8 or int4). */
int64
cred_spi_int64(int row, int col, int64 if_null)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	if (isnull)
		return if_null;
	if (SPI_gettypeid(SPI_tuptable->tupdesc, col) == INT4OID)
		return DatumGetInt32(d);
	return DatumGetInt64(d);
}

/* Column as a timestamptz. */
TimestampTz
cred_spi_timestamp(int row, int col, TimestampTz if_null)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? if_null : DatumGetTimestampTz(d);
}

/*
 * Run one statement through SPI (connected by the caller); elog on an
 * unexpected result code (expected: SPI_OK_SELECT, SPI_OK_UPDATE, ...).
 */
void
cred_spi_exec(const char *sql, int nargs, const Oid *types, const Datum *values,
			  const char *nulls, int expected)
{
	int			rc;

	rc = SPI_execute_with_args(sql, nargs, unconstify(Oid *, types), unconstify(Datum *, values),
							   nulls, false, 0);
	if (rc != expected)
		elog(ERROR, "donatello credentials query failed (%s): %s", SPI_result_code_string(rc), sql);
}

/* A timestamptz as text in the session's DateStyle. */
char *
cred_timestamp_string(TimestampTz t)
{
	return DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(t)));
}

/* Append "key": "value" (JSON-escaped, with a leading comma when needed). */
void
cred_json_add_string(StringInfo buf, const char *key, const char *value)
{
	if (buf->len > 0 && buf->data[buf->len - 1] != '{')
		appendStringInfoChar(buf, ',');
	escape_json(buf, key);
	appendStringInfoChar(buf, ':');
	if (value)
		escape_json(buf, value);
	else
		appendStringInfoString(buf, "null");
}

/* Parse a JSON text we built ourselves into a Jsonb. */
Jsonb *
cred_jsonb_from_cstring(const char *json)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

/* Does a database with this oid still exist (items queued by a dropped database are dropped)? */
bool
cred_database_exists(Oid dboid)
{
	return SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(dboid));
}

/* HMAC contexts, one per digest, fetched once per backend (fetching per call costs more than the MAC) */
static EVP_MAC *hmac_algorithm = NULL;
static EVP_MAC_CTX *hmac_contexts[3];

/* HMAC of data with key under SHA-1, SHA-256 or SHA-512; returns the MAC length. */
size_t
cred_hmac(CredDigest digest, const void *key, size_t keylen, const void *data, size_t len,
		  uint8 out[CRED_HMAC_MAX_BYTES])
{
	static const char *const names[3] = {"SHA1", "SHA256", "SHA512"};
	EVP_MAC_CTX *ctx;
	size_t		outlen = 0;

	if (hmac_algorithm == NULL && (hmac_algorithm = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL)
		elog(ERROR, "OpenSSL has no HMAC");
	ctx = hmac_contexts[digest];
	if (ctx == NULL)
	{
		OSSL_PARAM	params[2];

		ctx = EVP_MAC_CTX_new(hmac_algorithm);
		params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, unconstify(char *, names[digest]), 0);
		params[1] = OSSL_PARAM_construct_end();
		if (ctx == NULL || EVP_MAC_CTX_set_params(ctx, params) != 1)
			elog(ERROR, "could not set up HMAC-%s", names[digest]);
		hmac_contexts[digest] = ctx;
	}
	/* an empty key is legal HMAC but OpenSSL wants a non-NULL pointer */
	if (EVP_MAC_init(ctx, keylen > 0 ? key : (const void *) "", keylen, NULL) != 1 ||
		EVP_MAC_update(ctx, data, len) != 1 ||
		EVP_MAC_final(ctx, out, &outlen, CRED_HMAC_MAX_BYTES) != 1)
		elog(ERROR, "HMAC-%s failed", names[digest]);
	return outlen;
}
