/*
 * jwt.c
 *	  JWS compact tokens: donatello.jwt_sign() and donatello.jwt_verify().
 *
 * The algorithm is fixed by donatello.jwt_algorithm (HS256 with
 * donatello.jwt_secret, the secret a PostgREST server would share; RS256 or
 * ES256 with donatello.jwt_public_key, and donatello.jwt_private_key for
 * signing). The token header's "alg" must equal it: "none" and every other
 * algorithm are refused before any key is used, so an HS256 token "signed"
 * with an RSA public key (algorithm confusion) never verifies.
 *
 * Claims: "exp" and "nbf" are checked with donatello.jwt_leeway; "aud" and
 * "iss" when donatello.jwt_audience / donatello.jwt_issuer are set; a "sid"
 * claim (donatello's access tokens) must name a live session of an active
 * user whose id is "sub" (credcache.c).
 *
 * No shared state. Parsed keys are cached per backend with the setting text
 * they came from, and parsed again when the setting changes.
 */
#include "postgres.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "donatello.h"
#include "credentials/credentials.h"
#include "credentials/jwt.h"

PG_FUNCTION_INFO_V1(donatello_jwt_sign);
PG_FUNCTION_INFO_V1(donatello_jwt_verify);

typedef enum JwtAlgorithm
{
	JWT_HS256,
	JWT_RS256,
	JWT_ES256
} JwtAlgorithm;

static const struct config_enum_entry jwt_algorithm_options[] = {
	{"HS256", JWT_HS256, false},
	{"RS256", JWT_RS256, false},
	{"ES256", JWT_ES256, false},
	{NULL, 0, false}
};

static const char *const jwt_algorithm_names[] = {"HS256", "RS256", "ES256"};

/* settings (docs/settings.md) */
static char *jwt_secret = NULL;
static int	jwt_algorithm = JWT_HS256;
static char *jwt_public_key = NULL;
static char *jwt_private_key = NULL;
static char *jwt_audience = NULL;
static char *jwt_issuer = NULL;
static int	jwt_leeway_seconds = 30;

/* parsed keys and the setting text they came from */
static EVP_PKEY *public_pkey = NULL;
static char *public_source = NULL;
static EVP_PKEY *private_pkey = NULL;
static char *private_source = NULL;

/* Define the JWT settings (from _PG_init). */
void
jwt_init(void)
{
	DefineCustomStringVariable("donatello.jwt_secret",
							   "Secret for HS256 tokens (at least 32 characters), as PostgREST's jwt-secret.",
							   NULL, &jwt_secret, NULL, PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	DefineCustomEnumVariable("donatello.jwt_algorithm",
							 "The only JWT algorithm accepted and used: HS256, RS256 or ES256.",
							 "The alg header of a token must equal it.",
							 &jwt_algorithm, JWT_HS256, jwt_algorithm_options, PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("donatello.jwt_public_key",
							   "PEM public key (or the path of a PEM file) verifying RS256/ES256 tokens.",
							   NULL, &jwt_public_key, NULL, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("donatello.jwt_private_key",
							   "PEM private key (or the path of a PEM file) signing RS256/ES256 tokens.",
							   NULL, &jwt_private_key, NULL, PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("donatello.jwt_audience",
							   "When set, tokens must carry this audience (aud) and issued tokens do.",
							   NULL, &jwt_audience, NULL, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("donatello.jwt_issuer",
							   "When set, tokens must carry this issuer (iss) and issued tokens do.",
							   NULL, &jwt_issuer, NULL, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.jwt_leeway",
							"Clock skew tolerated when checking exp and nbf.",
							NULL, &jwt_leeway_seconds, 30, 0, 600, PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
}

/* Raise DNA03 with a message (never the token). */
static void
pg_attribute_noreturn()
jwt_fail(const char *message)
{
	ereport(ERROR,
			(errhidestmt(true),
			 errcode(ERRCODE_DN_INVALID_TOKEN),
			 errmsg("invalid token: %s", message)));
}

/* The HS256 secret, checked for presence and length. */
static const char *
jwt_hs256_secret(void)
{
	if (jwt_secret == NULL || strlen(jwt_secret) < 32)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("donatello.jwt_secret must be set to at least 32 characters for HS256"),
				 errhint("Set it in postgresql.conf to the secret your PostgREST or token issuer uses.")));
	return jwt_secret;
}

/* The PEM text of a key setting: the value itself, or the file it names. */
static char *
key_pem_text(const char *setting, const char *name)
{
	FILE	   *f;
	StringInfoData buf;
	char		chunk[1024];
	size_t		n;

	if (strncmp(setting, "-----BEGIN", 10) == 0)
		return pstrdup(setting);
	f = AllocateFile(setting, "r");
	if (f == NULL)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode_for_file_access(),
				 errmsg("could not open the key file \"%s\" named by %s: %m", setting, name)));
	initStringInfo(&buf);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		appendBinaryStringInfo(&buf, chunk, n);
	FreeFile(f);
	return buf.data;
}

/* Parse (or reuse) the configured public or private key for RS256/ES256. */
static EVP_PKEY *
jwt_asymmetric_key(bool private_key)
{
	const char *setting = private_key ? jwt_private_key : jwt_public_key;
	const char *name = private_key ? "donatello.jwt_private_key" : "donatello.jwt_public_key";
	EVP_PKEY  **cached = private_key ? &private_pkey : &public_pkey;
	char	  **source = private_key ? &private_source : &public_source;
	char	   *pem;
	BIO		   *bio;
	EVP_PKEY   *key;
	int			want = jwt_algorithm == JWT_RS256 ? EVP_PKEY_RSA : EVP_PKEY_EC;

	if (setting == NULL || setting[0] == '\0')
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be set for %s", name, jwt_algorithm_names[jwt_algorithm])));
	if (*cached == NULL || *source == NULL || strcmp(*source, setting) != 0)
	{
		pem = key_pem_text(setting, name);
		bio = BIO_new_mem_buf(pem, -1);
		key = private_key ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
			: PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
		BIO_free(bio);
		if (private_key)
			explicit_bzero(pem, strlen(pem));
		if (key == NULL)
			ereport(ERROR,
					(errhidestmt(true),
					 errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s does not hold a PEM %s key", name, private_key ? "private" : "public")));
		if (*cached)
			EVP_PKEY_free(*cached);
		if (*source)
			pfree(*source);
		*cached = key;
		*source = MemoryContextStrdup(TopMemoryContext, setting);
	}
	if (EVP_PKEY_base_id(*cached) != want)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is not a%s key, as %s needs", name,
						want == EVP_PKEY_RSA ? "n RSA" : "n EC P-256", jwt_algorithm_names[jwt_algorithm])));
	return *cached;
}

/* Sign data; returns the JWS signature bytes (raw R||S for ES256). */
static uint8 *
jwt_signature(const char *data, size_t len, size_t *siglen)
{
	uint8	   *sig;

	if (jwt_algorithm == JWT_HS256)
	{
		const char *secret = jwt_hs256_secret();

		sig = palloc(CRED_HMAC_MAX_BYTES);
		*siglen = cred_hmac(CRED_SHA256, secret, strlen(secret), data, len, sig);
		return sig;
	}
	else
	{
		EVP_PKEY   *key = jwt_asymmetric_key(true);
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		size_t		n = 0;
		uint8	   *der;

		if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
			EVP_DigestSign(ctx, NULL, &n, (const uint8 *) data, len) != 1)
			elog(ERROR, "could not start signing the token");
		der = palloc(n);
		if (EVP_DigestSign(ctx, der, &n, (const uint8 *) data, len) != 1)
			elog(ERROR, "could not sign the token");
		EVP_MD_CTX_free(ctx);
		if (jwt_algorithm == JWT_RS256)
		{
			*siglen = n;
			return der;
		}
		else
		{
			const uint8 *p = der;
			ECDSA_SIG  *es = d2i_ECDSA_SIG(NULL, &p, (long) n);
			const BIGNUM *r,
					   *s;

			if (es == NULL)
				elog(ERROR, "could not decode the ECDSA signature");
			ECDSA_SIG_get0(es, &r, &s);
			sig = palloc0(64);
			if (BN_bn2binpad(r, sig, 32) != 32 || BN_bn2binpad(s, sig + 32, 32) != 32)
				elog(ERROR, "ECDSA signature does not fit P-256");
			ECDSA_SIG_free(es);
			*siglen = 64;
			return sig;
		}
	}
}

/* Check a JWS signature over data with the configured algorithm. */
static bool
jwt_signature_ok(const char *data, size_t len, const uint8 *sig, size_t siglen)
{
	if (jwt_algorithm == JWT_HS256)
	{
		size_t		n;
		uint8	   *expected = jwt_signature(data, len, &n);

		return siglen == n && CRYPTO_memcmp(expected, sig, n) == 0;
	}
	else
	{
		EVP_PKEY   *key = jwt_asymmetric_key(false);
		EVP_MD_CTX *ctx;
		const uint8 *check = sig;
		size_t		check_len = siglen;
		uint8	   *der = NULL;
		int			rc;

		if (jwt_algorithm == JWT_ES256)
		{
			ECDSA_SIG  *es;
			BIGNUM	   *r,
					   *s;
			int			n;

			if (siglen != 64)
				return false;
			es = ECDSA_SIG_new();
			r = BN_bin2bn(sig, 32, NULL);
			s = BN_bin2bn(sig + 32, 32, NULL);
			if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1)
				elog(ERROR, "out of memory decoding an ECDSA signature");
			n = i2d_ECDSA_SIG(es, &der);
			ECDSA_SIG_free(es);
			if (n <= 0)
				return false;
			check = der;
			check_len = (size_t) n;
		}
		ctx = EVP_MD_CTX_new();
		if (ctx == NULL || EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) != 1)
			elog(ERROR, "could not start verifying the token");
		rc = EVP_DigestVerify(ctx, check, check_len, (const uint8 *) data, len);
		EVP_MD_CTX_free(ctx);
		if (der)
			OPENSSL_free(der);
		return rc == 1;
	}
}

/* Decode one base64url part into a JSON object; DNA03 naming the part otherwise. */
static Jsonb *
jwt_decode_json_part(const char *s, size_t len, const char *part)
{
	uint8	   *raw;
	size_t		rawlen;
	char	   *json;
	JsonLexContext *lex;

	if (!cred_base64url_decode(s, len, &raw, &rawlen))
		jwt_fail(psprintf("the %s is not base64url", part));
	json = palloc(rawlen + 1);
	memcpy(json, raw, rawlen);
	json[rawlen] = '\0';
	if (memchr(raw, '\0', rawlen) != NULL || !pg_verifymbstr(json, (int) rawlen, true))
		jwt_fail(psprintf("the %s is not UTF-8 text", part));
	lex = makeJsonLexContextCstringLen(json, (int) rawlen, GetDatabaseEncoding(), true);
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		jwt_fail(psprintf("the %s is not JSON", part));
	{
		Jsonb	   *jb = cred_jsonb_from_cstring(json);

		if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
			jwt_fail(psprintf("the %s is not a JSON object", part));
		return jb;
	}
}

/* Look up a top-level key of an object. */
static bool
jwt_claim(Jsonb *jb, const char *key, JsonbValue *v)
{
	return getKeyJsonValueFromContainer(&jb->root, key, strlen(key), v) != NULL;
}

/* A string claim as a C string, NULL when absent; DNA03 when not a string. */
static char *
jwt_string_claim(Jsonb *jb, const char *key)
{
	JsonbValue	v;

	if (!jwt_claim(jb, key, &v) || v.type == jbvNull)
		return NULL;
	if (v.type != jbvString)
		jwt_fail(psprintf("the \"%s\" claim is not a string", key));
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/* A NumericDate claim in seconds; false when absent; DNA03 when not a number. */
static bool
jwt_time_claim(Jsonb *jb, const char *key, double *out)
{
	JsonbValue	v;

	if (!jwt_claim(jb, key, &v) || v.type == jbvNull)
		return false;
	if (v.type != jbvNumeric)
		jwt_fail(psprintf("the \"%s\" claim is not a number", key));
	*out = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v.val.numeric)));
	return true;
}

/* Check that "aud" (a string or an array of strings) contains the audience. */
static void
jwt_check_audience(Jsonb *claims)
{
	JsonbValue	v;
	bool		ok = false;

	if (jwt_audience == NULL || jwt_audience[0] == '\0')
		return;
	if (!jwt_claim(claims, "aud", &v))
		jwt_fail(psprintf("the token has no \"aud\" claim; \"%s\" is required", jwt_audience));
	if (v.type == jbvString)
		ok = v.val.string.len == (int) strlen(jwt_audience) &&
			memcmp(v.val.string.val, jwt_audience, v.val.string.len) == 0;
	else if (v.type == jbvBinary)
	{
		JsonbValue	want;

		want.type = jbvString;
		want.val.string.val = jwt_audience;
		want.val.string.len = (int) strlen(jwt_audience);
		ok = (v.val.binary.data->header & JB_FARRAY) != 0 &&
			findJsonbValueFromContainer(v.val.binary.data, JB_FARRAY, &want) != NULL;
	}
	if (!ok)
		jwt_fail(psprintf("the audience does not include \"%s\"", jwt_audience));
}

/* Check that the "sid" session is live and belongs to "sub". */
static void
jwt_check_session(Jsonb *claims)
{
	char	   *sid = jwt_string_claim(claims, "sid");
	char	   *sub;
	pg_uuid_t	session_id;
	SessionValidity sv;

	if (sid == NULL)
		return;
	if (strlen(sid) != 36)
		jwt_fail("the \"sid\" claim is not a session id");
	memcpy(&session_id, DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(sid))),
		   sizeof(pg_uuid_t));
	if (session_revocation_pending(&session_id))
		jwt_fail(psprintf("session %s has been revoked", sid));
	credcache_session(&session_id, &sv);
	if (!sv.found)
		jwt_fail(psprintf("session %s does not exist", sid));
	if (!sv.valid)
		jwt_fail(psprintf("session %s has been revoked or its user deactivated", sid));
	if (sv.expires_at <= GetCurrentTimestamp())
		jwt_fail(psprintf("session %s has expired", sid));
	sub = jwt_string_claim(claims, "sub");
	if (sub == NULL || strcmp(sub, cred_uuid_string(&sv.user_id)) != 0)
		jwt_fail(psprintf("the \"sub\" claim does not match the user of session %s", sid));
}

/* Verify a compact JWS; see jwt.h. */
Jsonb *
jwt_verify_cstring(const char *token)
{
	const char *dot1,
			   *dot2;
	Jsonb	   *header,
			   *claims;
	char	   *alg;
	uint8	   *sig;
	size_t		siglen;
	double		exp,
				nbf,
				now;
	JsonbValue	v;
	char	   *iss;

	if (token == NULL || token[0] == '\0')
		jwt_fail("the token is empty");
	dot1 = strchr(token, '.');
	dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	if (dot1 == NULL || dot2 == NULL || strchr(dot2 + 1, '.') != NULL)
		jwt_fail("expected three dot-separated parts");

	header = jwt_decode_json_part(token, dot1 - token, "header");
	alg = jwt_string_claim(header, "alg");
	if (alg == NULL)
		jwt_fail("the header has no \"alg\"");
	if (pg_strcasecmp(alg, "none") == 0)
		jwt_fail("unsigned tokens (alg \"none\") are not accepted");
	if (strcmp(alg, jwt_algorithm_names[jwt_algorithm]) != 0)
		jwt_fail(psprintf("algorithm \"%s\" is not the configured \"%s\"", alg,
						  jwt_algorithm_names[jwt_algorithm]));
	if (jwt_claim(header, "crit", &v))
		jwt_fail("critical header parameters (\"crit\") are not supported");

	if (!cred_base64url_decode(dot2 + 1, strlen(dot2 + 1), &sig, &siglen) || siglen == 0)
		jwt_fail("the signature is not base64url");
	if (!jwt_signature_ok(token, dot2 - token, sig, siglen))
		jwt_fail("bad signature");

	claims = jwt_decode_json_part(dot1 + 1, dot2 - dot1 - 1, "payload");
	now = (double) (GetCurrentTimestamp() / USECS_PER_SEC) +
		(double) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
	if (jwt_time_claim(claims, "exp", &exp) && now > exp + jwt_leeway_seconds)
		jwt_fail(psprintf("the token expired %.0f seconds ago", now - exp));
	if (jwt_time_claim(claims, "nbf", &nbf) && now + jwt_leeway_seconds < nbf)
		jwt_fail(psprintf("the token is not valid for another %.0f seconds (nbf)", nbf - now));
	jwt_check_audience(claims);
	if (jwt_issuer != NULL && jwt_issuer[0] != '\0')
	{
		iss = jwt_string_claim(claims, "iss");
		if (iss == NULL || strcmp(iss, jwt_issuer) != 0)
			jwt_fail(psprintf("the issuer is not \"%s\"", jwt_issuer));
	}
	jwt_check_session(claims);
	return claims;
}

/* Sign claims; see jwt.h. */
char *
jwt_sign_jsonb(Jsonb *claims)
{
	char	   *header_json = psprintf("{\"alg\":\"%s\",\"typ\":\"JWT\"}", jwt_algorithm_names[jwt_algorithm]);
	char	   *payload_json;
	char	   *signing_input;
	uint8	   *sig;
	size_t		siglen;

	if (!JB_ROOT_IS_OBJECT(claims) || JB_ROOT_IS_SCALAR(claims))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("JWT claims must be a JSON object")));
	payload_json = JsonbToCString(NULL, &claims->root, VARSIZE(claims));
	signing_input = psprintf("%s.%s",
							 cred_base64url_encode((const uint8 *) header_json, strlen(header_json)),
							 cred_base64url_encode((const uint8 *) payload_json, strlen(payload_json)));
	sig = jwt_signature(signing_input, strlen(signing_input), &siglen);
	return psprintf("%s.%s", signing_input, cred_base64url_encode(sig, siglen));
}

/* The configured audience and issuer, for tokens donatello issues (NULL if unset). */
const char *
jwt_configured_audience(void)
{
	return (jwt_audience && jwt_audience[0]) ? jwt_audience : NULL;
}

/* See jwt_configured_audience. */
const char *
jwt_configured_issuer(void)
{
	return (jwt_issuer && jwt_issuer[0]) ? jwt_issuer : NULL;
}

/* donatello.jwt_sign(claims jsonb) returns text */
Datum
donatello_jwt_sign(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(jwt_sign_jsonb(PG_GETARG_JSONB_P(0))));
}

/* donatello.jwt_verify(token text) returns jsonb */
Datum
donatello_jwt_verify(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		jwt_fail("the token is null");
	PG_RETURN_JSONB_P(jwt_verify_cstring(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}
