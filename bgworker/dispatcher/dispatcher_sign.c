/*
 * dispatcher_sign.c
 *	  Standard Webhooks signatures and the signing keys they need.
 *
 *	  webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>
 *
 * The key is the 32 random bytes behind the endpoint's "whsec_<base64>"
 * secret. During a rotation's overlap period the header carries two
 * signatures, space-separated, the new key's first.
 *
 * Keys are stored sealed (secrets at rest, src/secrets/); the worker opens
 * them with secrets_open in the claim transaction and keeps the
 * plaintext in a process-local cache keyed by endpoint id, checked against a
 * digest of the sealed values so that a rotation is noticed at the next
 * claim. The cache is private to the dispatcher process; nothing is shared.
 */
#include "postgres.h"

#include <sodium.h>

#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "bgworker/dispatcher/dispatcher.h"
#include "secrets/secrets.h"

#define SECRET_PREFIX "whsec_"
#define KEY_CACHE_MAX 10000

/* One cached endpoint's keys. */
typedef struct KeyCacheEntry
{
	pg_uuid_t	endpoint_id;	/* hash key */
	uint8		sealed_digest[crypto_generichash_BYTES];
	WebhookKeys keys;
} KeyCacheEntry;

static HTAB *key_cache = NULL;

/* The "whsec_<base64>" text of a key (palloc'd). */
char *
webhook_secret_string(const uint8 *key, int key_len)
{
	size_t		b64_len = sodium_base64_ENCODED_LEN(key_len, sodium_base64_VARIANT_ORIGINAL);
	char	   *out = palloc(strlen(SECRET_PREFIX) + b64_len);

	strcpy(out, SECRET_PREFIX);
	sodium_bin2base64(out + strlen(SECRET_PREFIX), b64_len, key, key_len, sodium_base64_VARIANT_ORIGINAL);
	return out;
}

/* Append " v1,<base64 HMAC>" (without the leading space when first) to buf. */
static void
append_signature(StringInfo buf, const uint8 *key, int key_len, const char *msg_id,
				 const char *timestamp, const char *body, int body_len)
{
	crypto_auth_hmacsha256_state state;
	uint8		mac[crypto_auth_hmacsha256_BYTES];
	char		b64[sodium_base64_ENCODED_LEN(crypto_auth_hmacsha256_BYTES, sodium_base64_VARIANT_ORIGINAL)];

	crypto_auth_hmacsha256_init(&state, key, key_len);
	crypto_auth_hmacsha256_update(&state, (const uint8 *) msg_id, strlen(msg_id));
	crypto_auth_hmacsha256_update(&state, (const uint8 *) ".", 1);
	crypto_auth_hmacsha256_update(&state, (const uint8 *) timestamp, strlen(timestamp));
	crypto_auth_hmacsha256_update(&state, (const uint8 *) ".", 1);
	crypto_auth_hmacsha256_update(&state, (const uint8 *) body, body_len);
	crypto_auth_hmacsha256_final(&state, mac);
	sodium_bin2base64(b64, sizeof(b64), mac, sizeof(mac), sodium_base64_VARIANT_ORIGINAL);
	sodium_memzero(&state, sizeof(state));

	if (buf->len > 0)
		appendStringInfoChar(buf, ' ');
	appendStringInfo(buf, "v1,%s", b64);
}

/* The value of the webhook-signature header for one attempt (palloc'd). */
char *
webhook_signature_header(const WebhookKeys *keys, const char *msg_id, int64 timestamp,
						 const char *body, int body_len)
{
	StringInfoData buf;
	char		ts[32];

	snprintf(ts, sizeof(ts), INT64_FORMAT, timestamp);
	initStringInfo(&buf);
	append_signature(&buf, keys->key, keys->key_len, msg_id, ts, body, body_len);
	if (keys->previous_len > 0)
		append_signature(&buf, keys->previous, keys->previous_len, msg_id, ts, body, body_len);
	return buf.data;
}

/* Open one sealed key (secrets at rest); returns its length. */
static int
open_sealed_key(const pg_uuid_t *endpoint_id, bytea *sealed, uint8 *out)
{
	size_t		len;
	char	   *plain = secrets_open("webhook_secret", endpoint_id, sealed, &len);

	if (len == 0 || len > DISPATCH_HMAC_KEY_MAX)
		elog(ERROR, "webhook signing key has an invalid length %zu", len);
	memcpy(out, plain, len);
	sodium_memzero(plain, len);
	pfree(plain);
	return (int) len;
}

/* Digest of the sealed values, to notice a rotation. */
static void
sealed_digest(bytea *sealed, bytea *previous_sealed, uint8 *digest)
{
	crypto_generichash_state state;

	crypto_generichash_init(&state, NULL, 0, crypto_generichash_BYTES);
	crypto_generichash_update(&state, (const uint8 *) VARDATA_ANY(sealed), VARSIZE_ANY_EXHDR(sealed));
	if (previous_sealed != NULL)
		crypto_generichash_update(&state, (const uint8 *) VARDATA_ANY(previous_sealed),
								  VARSIZE_ANY_EXHDR(previous_sealed));
	crypto_generichash_final(&state, digest, crypto_generichash_BYTES);
}

/*
 * Fill keys for an endpoint from its sealed secret and, during an overlap
 * period, its previous one (NULL otherwise). Uses the cache; opens the
 * secrets on a miss.
 */
void
webhook_keys_open(WebhookKeys *keys, const pg_uuid_t *endpoint_id, bytea *sealed, bytea *previous_sealed)
{
	uint8		digest[crypto_generichash_BYTES];
	KeyCacheEntry *entry;
	bool		found;

	if (key_cache == NULL || hash_get_num_entries(key_cache) >= KEY_CACHE_MAX)
	{
		HASHCTL		ctl;

		if (key_cache != NULL)
			hash_destroy(key_cache);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(pg_uuid_t);
		ctl.entrysize = sizeof(KeyCacheEntry);
		ctl.hcxt = TopMemoryContext;
		key_cache = hash_create("donatello webhook keys", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}

	sealed_digest(sealed, previous_sealed, digest);
	entry = hash_search(key_cache, endpoint_id, HASH_ENTER, &found);
	if (!found || memcmp(entry->sealed_digest, digest, sizeof(digest)) != 0)
	{
		/* not valid until both keys are in */
		memset(entry->sealed_digest, 0, sizeof(entry->sealed_digest));
		entry->keys.key_len = open_sealed_key(endpoint_id, sealed, entry->keys.key);
		entry->keys.previous_len = previous_sealed == NULL ? 0 :
			open_sealed_key(endpoint_id, previous_sealed, entry->keys.previous);
		memcpy(entry->sealed_digest, digest, sizeof(digest));
	}
	*keys = entry->keys;
}
