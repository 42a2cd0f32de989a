/*
 * image_url.c
 *	  Signed, expiring image URLs: /images/{id}?exp={unix seconds}&sig={sig}.
 *
 * sig = base64url, without padding, of
 *	  HMAC-SHA256(key, "donatello image url v1\n" || id || "\n" || exp)
 * where key is derived from the root key for the purpose "image_url"
 * (secrets_derive_key; OpenSSL computes the HMAC). Verification recomputes
 * it and compares in constant time, then checks that exp is still in the
 * future. Rotating the root key invalidates every URL signed before: they
 * expire within donatello.image_url_ttl anyway, and new ones are signed on
 * demand.
 */
#include "postgres.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "images/images.h"
#include "secrets/secrets.h"

PG_FUNCTION_INFO_V1(donatello_sign_image_url);
PG_FUNCTION_INFO_V1(donatello_image_url);
PG_FUNCTION_INFO_V1(donatello_verify_image_url);

#define IMAGE_URL_PURPOSE "image_url"
#define IMAGE_URL_MAC_BYTES 32
#define IMAGE_URL_MAX_TTL_S (30 * SECS_PER_DAY)

/* donatello.image_url_ttl, in seconds */
static int	image_url_ttl_s = 3600;

/* Define donatello.image_url_ttl. */
void
image_url_init(void)
{
	DefineCustomIntVariable("donatello.image_url_ttl",
							"How long a signed image URL stays valid when no lifetime is given.",
							NULL,
							&image_url_ttl_s,
							3600, 1, IMAGE_URL_MAX_TTL_S,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
}

/* Unix seconds of a timestamp (rounded down). */
static int64
timestamp_to_unix(TimestampTz t)
{
	int64		seconds = t / USECS_PER_SEC;

	if (t < 0 && t % USECS_PER_SEC != 0)
		seconds--;
	return seconds + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

/* The MAC of (image id, expiry). */
static void
image_url_mac(const pg_uuid_t *image_id, int64 expires_at, unsigned char mac[IMAGE_URL_MAC_BYTES])
{
	unsigned char key[SECRETS_KEY_BYTES];
	char	   *id = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(unconstify(pg_uuid_t *, image_id))));
	char	   *message = psprintf("donatello image url v1\n%s\n" INT64_FORMAT, id, expires_at);
	unsigned int mac_len = 0;

	secrets_derive_key(IMAGE_URL_PURPOSE, key);
	if (HMAC(EVP_sha256(), key, sizeof(key), (const unsigned char *) message, strlen(message),
			 mac, &mac_len) == NULL || mac_len != IMAGE_URL_MAC_BYTES)
	{
		sodium_memzero(key, sizeof(key));
		elog(ERROR, "HMAC-SHA256 failed");
	}
	sodium_memzero(key, sizeof(key));
}

/* The signature of an image URL (palloc'd, 43 characters). */
char *
image_url_sign(const pg_uuid_t *image_id, int64 expires_at)
{
	unsigned char mac[IMAGE_URL_MAC_BYTES];
	char	   *sig = palloc(IMAGE_URL_SIGNATURE_CHARS + 1);

	image_url_mac(image_id, expires_at, mac);
	sodium_bin2base64(sig, IMAGE_URL_SIGNATURE_CHARS + 1, mac, sizeof(mac),
					  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return sig;
}

/* Is the signature right for (image, expiry), and the expiry after now (Unix seconds)? */
bool
image_url_verify(const pg_uuid_t *image_id, int64 expires_at, const char *signature, size_t len,
				 int64 now)
{
	unsigned char given[IMAGE_URL_MAC_BYTES];
	unsigned char expected[IMAGE_URL_MAC_BYTES];
	size_t		given_len = 0;
	bool		match;

	if (len != IMAGE_URL_SIGNATURE_CHARS ||
		sodium_base642bin(given, sizeof(given), signature, len, NULL, &given_len, NULL,
						  sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
		given_len != sizeof(given))
		return false;
	image_url_mac(image_id, expires_at, expected);
	match = CRYPTO_memcmp(given, expected, sizeof(given)) == 0;
	return match && now < expires_at;
}

/* The URL path and query for an image and an expiry. */
static text *
signed_url(const pg_uuid_t *image_id, int64 expires_at)
{
	char	   *id = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(unconstify(pg_uuid_t *, image_id))));

	return cstring_to_text(psprintf("/images/%s?exp=" INT64_FORMAT "&sig=%s",
									id, expires_at, image_url_sign(image_id, expires_at)));
}

/* donatello.sign_image_url(image_id uuid, expires_at timestamptz) returns text */
Datum
donatello_sign_image_url(PG_FUNCTION_ARGS)
{
	TimestampTz expires_at = PG_GETARG_TIMESTAMPTZ(1);

	if (TIMESTAMP_NOT_FINITE(expires_at))
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("an image URL must expire at a finite time")));
	PG_RETURN_TEXT_P(signed_url(PG_GETARG_UUID_P(0), timestamp_to_unix(expires_at)));
}

/* donatello.image_url(image_id uuid, expires_in interval default null) returns text */
Datum
donatello_image_url(PG_FUNCTION_ARGS)
{
	int64		now = timestamp_to_unix(GetCurrentTimestamp());
	int64		lifetime = image_url_ttl_s;

	if (!PG_ARGISNULL(1))
	{
		Interval   *in = PG_GETARG_INTERVAL_P(1);
		double		seconds = DatumGetFloat8(DirectFunctionCall2(interval_part,
																 CStringGetTextDatum("epoch"),
																 IntervalPGetDatum(in)));

		if (seconds < 1 || seconds > IMAGE_URL_MAX_TTL_S)
			ereport(ERROR,
					(errcode(ERRCODE_DN_INVALID_ARGUMENT),
					 errmsg("invalid image URL lifetime: must be from 1 second to 30 days"),
					 errhint("Pass an interval such as '15 minutes', or NULL for donatello.image_url_ttl.")));
		lifetime = (int64) seconds;
	}
	PG_RETURN_TEXT_P(signed_url(PG_GETARG_UUID_P(0), now + lifetime));
}

/* donatello.verify_image_url(image_id uuid, exp bigint, sig text) returns boolean */
Datum
donatello_verify_image_url(PG_FUNCTION_ARGS)
{
	text	   *sig = PG_GETARG_TEXT_PP(2);

	PG_RETURN_BOOL(image_url_verify(PG_GETARG_UUID_P(0), PG_GETARG_INT64(1),
									VARDATA_ANY(sig), VARSIZE_ANY_EXHDR(sig),
									timestamp_to_unix(GetCurrentTimestamp())));
}
