/*
 * apikey.c
 *	  API keys: the key format and its checksum, create_api_key,
 *	  verify_api_key (with a per-backend cache), rotate_api_key and
 *	  revoke_api_key.
 *
 * Storage: only SHA-256 of the whole key is stored (api_keys.key_hash,
 * unique index). Keys carry 178 random bits, so a fast, deterministic,
 * indexed digest is right (Argon2 is for low-entropy passwords). A pepper
 * derived from the root key is deliberately not used: derived keys follow
 * the current root key (docs/secrets.md), so a root key rotation would
 * invalidate every key.
 *
 * Cache: verify_api_key keeps, per backend, the row a key hash led to,
 * tagged with the credentials generation read before the row (credcache.c);
 * revoking, rotating or expiring a key, or deactivating its user, bumps the
 * generation at commit, so every session rejects the key from its next
 * verification on. Unknown hashes are never cached (an INSERT needs no
 * invalidation). Expiry is compared with the clock at every call.
 */
#include "postgres.h"

#include <sodium.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "port/pg_crc32c.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "credentials/credentials.h"
#include "credentials/apikey.h"
#include "credentials/ratelimit.h"
#include "rbac/rbac.h"

PG_FUNCTION_INFO_V1(donatello_create_api_key);
PG_FUNCTION_INFO_V1(donatello_verify_api_key);
PG_FUNCTION_INFO_V1(donatello_rotate_api_key);
PG_FUNCTION_INFO_V1(donatello_revoke_api_key);

#define APIKEY_PREFIX "dnk_"
#define APIKEY_PREFIX_LEN 4
#define APIKEY_RANDOM_CHARS 30
#define APIKEY_CHECKSUM_CHARS 6
#define APIKEY_LEN (APIKEY_PREFIX_LEN + APIKEY_RANDOM_CHARS + APIKEY_CHECKSUM_CHARS)
#define APIKEY_CACHE_MAX 4096

static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* settings */
static int	rotation_grace_seconds = 1800;
static int	rate_limit_requests = 1000;
static int	rate_limit_period_seconds = 60;

typedef struct ApiKeyCacheEntry
{
	uint8		hash[CRED_SHA256_BYTES];	/* hash key; must be first */
	uint64		generation;
	pg_uuid_t	key_id;
	bool		valid;			/* not revoked, owner active */
	TimestampTz expires_at;		/* 0: never */
	int			nscopes;
	char	  **scopes;
	Jsonb	   *result;
} ApiKeyCacheEntry;

static HTAB *key_cache = NULL;
static MemoryContext key_cache_cxt = NULL;
static SPIPlanPtr lookup_plan = NULL;

/* Define the API key settings (from _PG_init). */
void
apikey_init(void)
{
	DefineCustomIntVariable("donatello.api_key_rotation_grace",
							"How long the old key keeps working after rotate_api_key.",
							NULL, &rotation_grace_seconds, 1800, 0, 30 * 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.api_key_rate_limit",
							"Requests each API key may make per donatello.api_key_rate_limit_period.",
							NULL, &rate_limit_requests, 1000, 1, 100000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.api_key_rate_limit_period",
							"The period of donatello.api_key_rate_limit.",
							NULL, &rate_limit_period_seconds, 60, 1, 24 * 3600,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
}

/* CRC-32C of s[0..len) written as 6 base62 characters. */
static void
apikey_checksum(const char *s, size_t len, char out[APIKEY_CHECKSUM_CHARS])
{
	pg_crc32c	crc;
	uint64		v;
	int			i;

	INIT_CRC32C(crc);
	COMP_CRC32C(crc, s, len);
	FIN_CRC32C(crc);
	v = crc;
	for (i = APIKEY_CHECKSUM_CHARS - 1; i >= 0; i--)
	{
		out[i] = base62[v % 62];
		v /= 62;
	}
}

/* A new random key, palloc'd. */
static char *
apikey_generate(void)
{
	char	   *key = palloc(APIKEY_LEN + 1);
	int			i;

	memcpy(key, APIKEY_PREFIX, APIKEY_PREFIX_LEN);
	for (i = 0; i < APIKEY_RANDOM_CHARS; i++)
		key[APIKEY_PREFIX_LEN + i] = base62[randombytes_uniform(62)];
	apikey_checksum(key, APIKEY_PREFIX_LEN + APIKEY_RANDOM_CHARS,
					key + APIKEY_PREFIX_LEN + APIKEY_RANDOM_CHARS);
	key[APIKEY_LEN] = '\0';
	return key;
}

/* Raise DNA01 for a key that is not well formed, before any lookup. */
static void
apikey_check_format(const char *key)
{
	size_t		len = strlen(key);
	size_t		i;
	char		sum[APIKEY_CHECKSUM_CHARS];

	if (len != APIKEY_LEN || strncmp(key, APIKEY_PREFIX, APIKEY_PREFIX_LEN) != 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_CREDENTIALS),
				 errmsg("invalid API key"),
				 errdetail("An API key is \"dnk_\" followed by %d letters and digits.",
						   APIKEY_RANDOM_CHARS + APIKEY_CHECKSUM_CHARS)));
	for (i = APIKEY_PREFIX_LEN; i < len; i++)
		if (strchr(base62, key[i]) == NULL || key[i] == '\0')
			ereport(ERROR,
					(errhidestmt(true),
					 errcode(ERRCODE_DN_INVALID_CREDENTIALS),
					 errmsg("invalid API key"),
					 errdetail("An API key holds only letters and digits after \"dnk_\".")));
	apikey_checksum(key, APIKEY_PREFIX_LEN + APIKEY_RANDOM_CHARS, sum);
	if (memcmp(sum, key + APIKEY_PREFIX_LEN + APIKEY_RANDOM_CHARS, APIKEY_CHECKSUM_CHARS) != 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_CREDENTIALS),
				 errmsg("invalid API key"),
				 errdetail("The checksum does not match: the key was mistyped or cut short.")));
}

/* Does one of the scopes grant required ("*", "resource:*" or equal)? */
static bool
scope_granted(char **scopes, int n, const char *required)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		size_t		len = strlen(scopes[i]);

		if (strcmp(scopes[i], "*") == 0 || strcmp(scopes[i], required) == 0)
			return true;
		if (len >= 2 && scopes[i][len - 1] == '*' && scopes[i][len - 2] == ':' &&
			strncmp(scopes[i], required, len - 1) == 0)
			return true;
	}
	return false;
}

/* Fill an entry from the lookup row (SPI result row 0), allocating in cxt. */
static void
apikey_fill_entry(ApiKeyCacheEntry *e, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	bool		isnull;
	Datum		scopes_datum;
	Datum	   *elems;
	bool	   *elem_nulls;
	int			n,
				i;
	pg_uuid_t	user_id,
				org_id;
	StringInfoData json;

	cred_spi_uuid(0, 1, &e->key_id);
	cred_spi_uuid(0, 2, &user_id);
	cred_spi_uuid(0, 3, &org_id);
	scopes_datum = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);
	deconstruct_array(DatumGetArrayTypeP(scopes_datum), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &elem_nulls, &n);
	e->scopes = palloc(sizeof(char *) * (n + 1));
	e->nscopes = 0;
	for (i = 0; i < n; i++)
		if (!elem_nulls[i])
			e->scopes[e->nscopes++] = TextDatumGetCString(elems[i]);
	e->expires_at = cred_spi_timestamp(0, 5, 0);
	e->valid = cred_spi_bool(0, 6, false);

	initStringInfo(&json);
	appendStringInfoChar(&json, '{');
	cred_json_add_string(&json, "key_id", cred_uuid_string(&e->key_id));
	cred_json_add_string(&json, "user_id", cred_uuid_string(&user_id));
	cred_json_add_string(&json, "org_id", cred_uuid_string(&org_id));
	appendStringInfoString(&json, ",\"scopes\":[");
	for (i = 0; i < e->nscopes; i++)
	{
		if (i > 0)
			appendStringInfoChar(&json, ',');
		escape_json(&json, e->scopes[i]);
	}
	appendStringInfoString(&json, "]}");
	e->result = cred_jsonb_from_cstring(json.data);
	MemoryContextSwitchTo(old);
}

/*
 * Read the key row for a hash into e, allocating in cxt (the cache's context,
 * or the caller's when the entry will not be cached); false when there is none.
 */
static bool
apikey_lookup(const uint8 *hash, ApiKeyCacheEntry *e, MemoryContext cxt)
{
	DonatelloSavedUser saved;
	bytea	   *arg = palloc(VARHDRSZ + CRED_SHA256_BYTES);
	Datum		d;
	int			rc;
	bool		found;

	SET_VARSIZE(arg, VARHDRSZ + CRED_SHA256_BYTES);
	memcpy(VARDATA(arg), hash, CRED_SHA256_BYTES);
	d = PointerGetDatum(arg);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in verify_api_key");
	donatello_begin_as_owner(&saved);
	if (lookup_plan == NULL)
	{
		Oid			type = BYTEAOID;
		SPIPlanPtr	plan = SPI_prepare("SELECT k.id, k.user_id, k.org_id, k.scopes, k.expires_at,"
									   " k.revoked_at IS NULL AND u.active"
									   " FROM donatello.api_keys k JOIN donatello.users u"
									   " ON u.id OPERATOR(pg_catalog.=) k.user_id"
									   " AND u.org_id OPERATOR(pg_catalog.=) k.org_id"
									   " WHERE k.key_hash OPERATOR(pg_catalog.=) $1",
									   1, &type);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare the API key query");
		lookup_plan = plan;
	}
	PushActiveSnapshot(GetLatestSnapshot());
	rc = SPI_execute_plan(lookup_plan, &d, NULL, true, 1);
	PopActiveSnapshot();
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "API key query failed: %s", SPI_result_code_string(rc));
	found = SPI_processed == 1;
	if (found)
		apikey_fill_entry(e, cxt);
	donatello_end_as_owner(&saved);
	SPI_finish();
	return found;
}

/* Free what a stale cache entry points to (it is about to be overwritten). */
static void
apikey_free_entry(ApiKeyCacheEntry *e)
{
	int			i;

	for (i = 0; i < e->nscopes; i++)
		pfree(e->scopes[i]);
	pfree(e->scopes);
	pfree(e->result);
}

/* Create the cache (or empty it when it grew too large). */
static void
apikey_cache_reset(void)
{
	HASHCTL		info;

	if (key_cache_cxt == NULL)
		key_cache_cxt = AllocSetContextCreate(TopMemoryContext, "donatello API key cache",
											  ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(key_cache_cxt);
	info.keysize = CRED_SHA256_BYTES;
	info.entrysize = sizeof(ApiKeyCacheEntry);
	info.hcxt = key_cache_cxt;
	key_cache = hash_create("donatello API key cache", 256, &info,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* Verify a key; see apikey.h. */
Jsonb *
apikey_verify_cstring(const char *key, const char *required_scope)
{
	uint8		hash[CRED_SHA256_BYTES];
	uint64		generation = credcache_generation();
	ApiKeyCacheEntry *e = NULL;
	ApiKeyCacheEntry fresh;
	bool		usable = credcache_usable();
	Jsonb	   *result;

	apikey_check_format(key);
	cred_sha256(key, APIKEY_LEN, hash);

	if (key_cache == NULL || hash_get_num_entries(key_cache) >= APIKEY_CACHE_MAX)
		apikey_cache_reset();
	if (usable)
		e = hash_search(key_cache, hash, HASH_FIND, NULL);
	if (e == NULL || e->generation != generation)
	{
		memset(&fresh, 0, sizeof(fresh));
		if (!apikey_lookup(hash, &fresh, usable ? key_cache_cxt : CurrentMemoryContext))
			ereport(ERROR,
					(errhidestmt(true),
					 errcode(ERRCODE_DN_INVALID_CREDENTIALS),
					 errmsg("invalid API key"),
					 errdetail("No such key exists.")));
		if (usable)
		{
			bool		found;

			e = hash_search(key_cache, hash, HASH_ENTER, &found);
			if (found)
				apikey_free_entry(e);
			memcpy(fresh.hash, hash, CRED_SHA256_BYTES);
			fresh.generation = generation;
			*e = fresh;
		}
		else
			e = &fresh;
	}

	if (!e->valid)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_CREDENTIALS),
				 errmsg("API key %s has been revoked", cred_uuid_string(&e->key_id)),
				 errdetail("The key was revoked, or its user deactivated.")));
	if (e->expires_at != 0 && e->expires_at <= GetCurrentTimestamp())
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_CREDENTIALS),
				 errmsg("API key %s has expired", cred_uuid_string(&e->key_id)),
				 errdetail("It expired at %s.", cred_timestamp_string(e->expires_at))));
	if (required_scope != NULL && !scope_granted(e->scopes, e->nscopes, required_scope))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_PERMISSION_DENIED),
				 errmsg("API key %s lacks the scope \"%s\"", cred_uuid_string(&e->key_id), required_scope),
				 errhint("Create a key with this scope, or call with a key that has it.")));
	apikey_usage_count(&e->key_id);
	result = palloc(VARSIZE(e->result));
	memcpy(result, e->result, VARSIZE(e->result));
	return result;
}

/* Take one request from the key's rate limit bucket; see apikey.h. */
bool
apikey_rate_limit_take(const char *key_id, int *remaining, double *reset_seconds)
{
	char	   *bucket = psprintf("apikey:%s", key_id);

	return rate_limit_take_ex(bucket, rate_limit_requests, (double) rate_limit_period_seconds,
							  remaining, reset_seconds);
}

/* donatello.verify_api_key(key text, required_scope text) returns jsonb */
Datum
donatello_verify_api_key(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_CREDENTIALS),
				 errmsg("invalid API key"),
				 errdetail("The key is null.")));
	PG_RETURN_JSONB_P(apikey_verify_cstring(text_to_cstring(PG_GETARG_TEXT_PP(0)),
											PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1))));
}

/* Raise DNV01 unless every scope is a permission string; returns them as a text[] Datum. */
static Datum
apikey_checked_scopes(ArrayType *scopes)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i;

	if (ARR_NDIM(scopes) > 1)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("scopes must be a one-dimensional array")));
	deconstruct_array(scopes, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (i = 0; i < n; i++)
	{
		char	   *s = nulls[i] ? NULL : TextDatumGetCString(elems[i]);

		if (s == NULL || !rbac_permission_is_valid(s, (int) strlen(s)))
			ereport(ERROR,
					(errhidestmt(true),
					 errcode(ERRCODE_DN_INVALID_ARGUMENT),
					 errmsg("invalid scope \"%s\"", s ? s : "NULL"),
					 errhint("A scope is a permission: \"resource:action\", \"resource:*\" or \"*\".")));
	}
	return PointerGetDatum(scopes);
}

/*
 * Insert a key row (SPI connected) and return {"key_id", "key"} as JSON text;
 * records apikey.created (or apikey.rotated) with the key's id, never the key.
 */
static char *
apikey_insert(const pg_uuid_t *user_id, const pg_uuid_t *org_id, const char *name, Datum scopes,
			  bool has_expiry, TimestampTz expires_at, const char *event, const char *replaces,
			  pg_uuid_t *key_id)
{
	char	   *key = apikey_generate();
	Oid			types[7] = {UUIDOID, UUIDOID, TEXTOID, BYTEAOID, TEXTOID, TEXTARRAYOID, TIMESTAMPTZOID};
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	StringInfoData result,
				details;

	args[0] = cred_uuid_datum(org_id);
	args[1] = cred_uuid_datum(user_id);
	args[2] = CStringGetTextDatum(name);
	args[3] = PointerGetDatum(cred_sha256_bytea(key));
	args[4] = CStringGetTextDatum(pnstrdup(key, APIKEY_PREFIX_LEN + 4));
	args[5] = scopes;
	args[6] = TimestampTzGetDatum(expires_at);
	nulls[6] = has_expiry ? ' ' : 'n';
	cred_spi_exec("INSERT INTO donatello.api_keys (org_id, user_id, name, key_hash, key_prefix, scopes,"
				  " expires_at, created_by) VALUES ($1, $2, pg_catalog.btrim($3), $4, $5, $6, $7,"
				  " donatello.current_user_id()) RETURNING id",
				  7, types, args, nulls, SPI_OK_INSERT_RETURNING);
	cred_spi_uuid(0, 1, key_id);

	initStringInfo(&details);
	appendStringInfoChar(&details, '{');
	cred_json_add_string(&details, "key_id", cred_uuid_string(key_id));
	cred_json_add_string(&details, "name", name);
	if (replaces)
		cred_json_add_string(&details, "replaces", replaces);
	appendStringInfoChar(&details, '}');
	security_event_record(org_id, user_id, event, NULL, NULL, details.data);

	initStringInfo(&result);
	appendStringInfoChar(&result, '{');
	cred_json_add_string(&result, "key_id", cred_uuid_string(key_id));
	cred_json_add_string(&result, "key", key);
	return result.data;
}

/* donatello.create_api_key(user_id uuid, name text, scopes text[], expires_at timestamptz) returns jsonb */
Datum
donatello_create_api_key(PG_FUNCTION_ARGS)
{
	pg_uuid_t	user_id,
				org_id,
				key_id;
	char	   *name;
	Datum		scopes;
	Oid			type = UUIDOID;
	Datum		arg;
	StringInfoData out;
	char	   *json;
	Jsonb	   *result;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("user_id, name and scopes must not be null"),
				 errhint("Pass '{}' for a key without scopes.")));
	memcpy(&user_id, PG_GETARG_UUID_P(0), sizeof(pg_uuid_t));
	name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (strlen(name) == 0 || strlen(name) > 200 || strspn(name, " \t\n") == strlen(name))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("API key name must be 1 to 200 characters")));
	scopes = apikey_checked_scopes(PG_GETARG_ARRAYTYPE_P(2));
	if (!PG_ARGISNULL(3) && PG_GETARG_TIMESTAMPTZ(3) <= GetCurrentTransactionStartTimestamp())
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("API key expiry %s is not in the future", cred_timestamp_string(PG_GETARG_TIMESTAMPTZ(3)))));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in create_api_key");
	arg = cred_uuid_datum(&user_id);
	cred_spi_exec("SELECT org_id, active FROM donatello.users WHERE id = $1", 1, &type, &arg, NULL,
				  SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("user %s does not exist", cred_uuid_string(&user_id))));
	cred_spi_uuid(0, 1, &org_id);
	if (!cred_spi_bool(0, 2, false))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("user %s is deactivated", cred_uuid_string(&user_id)),
				 errhint("Deactivated users cannot hold API keys.")));
	json = apikey_insert(&user_id, &org_id, name, scopes, !PG_ARGISNULL(3),
						 PG_ARGISNULL(3) ? 0 : PG_GETARG_TIMESTAMPTZ(3), "apikey.created", NULL, &key_id);
	initStringInfo(&out);
	appendStringInfo(&out, "%s}", json);
	result = (Jsonb *) SPI_datumTransfer(PointerGetDatum(cred_jsonb_from_cstring(out.data)), false, -1);
	SPI_finish();
	PG_RETURN_JSONB_P(result);
}

/* donatello.rotate_api_key(key_id uuid) returns jsonb */
Datum
donatello_rotate_api_key(PG_FUNCTION_ARGS)
{
	pg_uuid_t	key_id,
				user_id,
				org_id,
				new_id;
	Oid			types[3] = {UUIDOID, INT4OID, UUIDOID};
	Datum		args[3];
	char	   *name;
	Datum		scopes;
	bool		isnull;
	TimestampTz expires_at;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	char	   *json;
	StringInfoData out;
	Jsonb	   *result;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errhidestmt(true),  errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("key_id must not be null")));
	memcpy(&key_id, PG_GETARG_UUID_P(0), sizeof(pg_uuid_t));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in rotate_api_key");
	args[0] = cred_uuid_datum(&key_id);
	cred_spi_exec("SELECT user_id, org_id, name, scopes, expires_at, revoked_at IS NOT NULL,"
				  " replaced_by IS NOT NULL FROM donatello.api_keys WHERE id = $1 FOR UPDATE",
				  1, types, args, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("API key %s does not exist", cred_uuid_string(&key_id))));
	cred_spi_uuid(0, 1, &user_id);
	cred_spi_uuid(0, 2, &org_id);
	name = cred_spi_text(0, 3);
	scopes = SPI_datumTransfer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull),
							   false, -1);
	expires_at = cred_spi_timestamp(0, 5, 0);
	if (cred_spi_bool(0, 6, false) || cred_spi_bool(0, 7, false) || (expires_at != 0 && expires_at <= now))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("API key %s cannot be rotated: it is revoked, expired or already rotated",
						cred_uuid_string(&key_id)),
				 errhint("Create a new key with create_api_key().")));

	json = apikey_insert(&user_id, &org_id, name, scopes, expires_at != 0, expires_at, "apikey.rotated",
						 cred_uuid_string(&key_id), &new_id);
	args[1] = Int32GetDatum(rotation_grace_seconds);
	args[2] = cred_uuid_datum(&new_id);
	cred_spi_exec("UPDATE donatello.api_keys SET expires_at = LEAST(coalesce(expires_at, 'infinity'),"
				  " now() + make_interval(secs => $2)), replaced_by = $3"
				  " WHERE id = $1 RETURNING expires_at",
				  3, types, args, NULL, SPI_OK_UPDATE_RETURNING);
	initStringInfo(&out);
	appendStringInfoString(&out, json);
	cred_json_add_string(&out, "replaces", cred_uuid_string(&key_id));
	cred_json_add_string(&out, "old_key_expires_at", cred_timestamp_string(cred_spi_timestamp(0, 1, 0)));
	appendStringInfoChar(&out, '}');
	result = (Jsonb *) SPI_datumTransfer(PointerGetDatum(cred_jsonb_from_cstring(out.data)), false, -1);
	SPI_finish();
	PG_RETURN_JSONB_P(result);
}

/* donatello.revoke_api_key(key_id uuid, reason text) */
Datum
donatello_revoke_api_key(PG_FUNCTION_ARGS)
{
	pg_uuid_t	key_id,
				user_id,
				org_id;
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		args[2];
	char	   *reason;
	StringInfoData details;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errhidestmt(true),  errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("key_id must not be null")));
	if (PG_ARGISNULL(1) || strspn(text_to_cstring(PG_GETARG_TEXT_PP(1)), " \t\n") ==
		strlen(text_to_cstring(PG_GETARG_TEXT_PP(1))))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("revoking an API key needs a reason"),
				 errhint("Say why, for the security log.")));
	memcpy(&key_id, PG_GETARG_UUID_P(0), sizeof(pg_uuid_t));
	reason = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in revoke_api_key");
	args[0] = cred_uuid_datum(&key_id);
	args[1] = CStringGetTextDatum(reason);
	cred_spi_exec("UPDATE donatello.api_keys SET revoked_at = coalesce(revoked_at, now()),"
				  " revoked_reason = coalesce(revoked_reason, $2) WHERE id = $1 RETURNING user_id, org_id",
				  2, types, args, NULL, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("API key %s does not exist", cred_uuid_string(&key_id))));
	cred_spi_uuid(0, 1, &user_id);
	cred_spi_uuid(0, 2, &org_id);
	initStringInfo(&details);
	appendStringInfoChar(&details, '{');
	cred_json_add_string(&details, "key_id", cred_uuid_string(&key_id));
	cred_json_add_string(&details, "reason", reason);
	appendStringInfoChar(&details, '}');
	security_event_record(&org_id, &user_id, "apikey.revoked", NULL, NULL, details.data);
	SPI_finish();
	PG_RETURN_VOID();
}
