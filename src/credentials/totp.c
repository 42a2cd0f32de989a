/*
 * totp.c
 *	  One-time passwords: HOTP (RFC 4226) and TOTP (RFC 6238) with HMAC-SHA1,
 *	  SHA-256 or SHA-512 from OpenSSL, base32 (RFC 4648) for secrets, the
 *	  pure SQL functions donatello.hotp_code() and donatello.totp_code(), and
 *	  totp_match(), the verification used by MFA (window of one step either
 *	  side, steps at or before the last accepted one refused: no replay).
 *
 * No shared state. Codes are compared in constant time.
 */
#include "postgres.h"

#include <openssl/crypto.h>

#include "datatype/timestamp.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "credentials/credentials.h"

PG_FUNCTION_INFO_V1(donatello_totp_code);
PG_FUNCTION_INFO_V1(donatello_hotp_code);
PG_FUNCTION_INFO_V1(donatello_totp_verify);

static const char base32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/* The algorithm named sha1, sha256 or sha512 (case-insensitive); DNV01 otherwise. */
TotpAlgorithm
totp_parse_algorithm(const char *name)
{
	if (pg_strcasecmp(name, "sha1") == 0)
		return TOTP_SHA1;
	if (pg_strcasecmp(name, "sha256") == 0)
		return TOTP_SHA256;
	if (pg_strcasecmp(name, "sha512") == 0)
		return TOTP_SHA512;
	ereport(ERROR,
			(errhidestmt(true),
			 errcode(ERRCODE_DN_INVALID_ARGUMENT),
			 errmsg("unsupported one-time password algorithm \"%s\"", name),
			 errhint("Use sha1, sha256 or sha512.")));
	return TOTP_SHA1;			/* keep the compiler quiet */
}

/* The lower-case name of an algorithm. */
const char *
totp_algorithm_name(TotpAlgorithm alg)
{
	switch (alg)
	{
		case TOTP_SHA256:
			return "sha256";
		case TOTP_SHA512:
			return "sha512";
		default:
			return "sha1";
	}
}

/* Raise DNV01 unless digits is 6, 7 or 8. */
static void
check_digits(int digits)
{
	if (digits < 6 || digits > 8)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("one-time passwords have 6 to 8 digits, not %d", digits)));
}

/* RFC 4226 section 5.3: HMAC, dynamic truncation, modulo 10^digits. */
uint32
hotp_value(const uint8 *secret, size_t secret_len, uint64 counter, int digits, TotpAlgorithm alg)
{
	uint8		msg[8];
	uint8		mac[CRED_HMAC_MAX_BYTES];
	size_t		mac_len;
	int			offset,
				i;
	uint32		binary,
				modulo = 1;

	for (i = 7; i >= 0; i--)
	{
		msg[i] = (uint8) (counter & 0xff);
		counter >>= 8;
	}
	mac_len = cred_hmac(alg == TOTP_SHA256 ? CRED_SHA256 : alg == TOTP_SHA512 ? CRED_SHA512 : CRED_SHA1,
						secret, secret_len, msg, sizeof(msg), mac);
	offset = mac[mac_len - 1] & 0x0f;
	binary = ((uint32) (mac[offset] & 0x7f) << 24) |
		((uint32) mac[offset + 1] << 16) |
		((uint32) mac[offset + 2] << 8) |
		(uint32) mac[offset + 3];
	for (i = 0; i < digits; i++)
		modulo *= 10;
	OPENSSL_cleanse(mac, sizeof(mac));
	return binary % modulo;
}

/* Format a code with leading zeros into out (digits + 1 bytes). */
void
hotp_format(uint32 value, int digits, char *out)
{
	snprintf(out, digits + 1, "%0*u", digits, value);
}

/* RFC 4648 base32 with no padding, palloc'd. */
char *
base32_encode(const uint8 *data, size_t len)
{
	char	   *out = palloc((len * 8 + 4) / 5 + 1);
	size_t		i,
				o = 0;
	uint32		buffer = 0;
	int			bits = 0;

	for (i = 0; i < len; i++)
	{
		buffer = (buffer << 8) | data[i];
		bits += 8;
		while (bits >= 5)
		{
			out[o++] = base32_alphabet[(buffer >> (bits - 5)) & 31];
			bits -= 5;
		}
	}
	if (bits > 0)
		out[o++] = base32_alphabet[(buffer << (5 - bits)) & 31];
	out[o] = '\0';
	return out;
}

/*
 * Decode base32, case-insensitively, ignoring spaces, hyphens and trailing
 * '=' padding (as authenticator apps show secrets). False on anything else.
 */
bool
base32_decode(const char *s, uint8 **out, size_t *outlen)
{
	size_t		len = strlen(s);
	uint8	   *buf = palloc(len * 5 / 8 + 1);
	size_t		o = 0;
	uint32		buffer = 0;
	int			bits = 0;
	bool		padding = false;
	const char *p;

	for (p = s; *p; p++)
	{
		char		c = *p;
		const char *pos;

		if (c == ' ' || c == '-')
			continue;
		if (c == '=')
		{
			padding = true;
			continue;
		}
		if (padding)
			return false;		/* data after padding */
		if (c >= 'a' && c <= 'z')
			c = c - 'a' + 'A';
		pos = strchr(base32_alphabet, c);
		if (pos == NULL || c == '\0')
			return false;
		buffer = (buffer << 5) | (uint32) (pos - base32_alphabet);
		bits += 5;
		if (bits >= 8)
		{
			buf[o++] = (uint8) ((buffer >> (bits - 8)) & 0xff);
			bits -= 8;
		}
	}
	*out = buf;
	*outlen = o;
	return true;
}

/* Seconds since the Unix epoch of a timestamptz. */
static int64
unix_seconds(TimestampTz t)
{
	int64		us = t + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;

	return us >= 0 ? us / USECS_PER_SEC : -((-us + USECS_PER_SEC - 1) / USECS_PER_SEC);
}

/* The time step containing t (floor division, so times before 1970 work too). */
static int64
totp_step(TimestampTz t, int period)
{
	int64		secs = unix_seconds(t);

	return secs >= 0 ? secs / period : -((-secs + period - 1) / period);
}

/*
 * The step (current, previous or next) whose code equals code, refusing steps
 * at or before last_step (-1: none accepted yet); -1 when nothing matches.
 * Every candidate is computed and compared in constant time.
 */
int64
totp_match(const uint8 *secret, size_t secret_len, const char *code, int digits,
		   TotpAlgorithm alg, int period, TimestampTz now, int64 last_step)
{
	int64		current = totp_step(now, period);
	int64		matched = -1;
	int64		step;
	size_t		i;

	if (strlen(code) != (size_t) digits)
		return -1;
	for (i = 0; i < (size_t) digits; i++)
		if (code[i] < '0' || code[i] > '9')
			return -1;
	for (step = current - 1; step <= current + 1; step++)
	{
		char		expected[9];
		bool		equal;

		if (step < 0)
			continue;
		hotp_format(hotp_value(secret, secret_len, (uint64) step, digits, alg), digits, expected);
		equal = CRYPTO_memcmp(expected, code, digits) == 0;
		if (equal && step > last_step && matched < 0)
			matched = step;
	}
	return matched;
}

/* donatello.hotp_code(secret bytea, counter bigint, digits int, algorithm text) returns text */
Datum
donatello_hotp_code(PG_FUNCTION_ARGS)
{
	bytea	   *secret = PG_GETARG_BYTEA_PP(0);
	int64		counter = PG_GETARG_INT64(1);
	int			digits = PG_GETARG_INT32(2);
	TotpAlgorithm alg = totp_parse_algorithm(text_to_cstring(PG_GETARG_TEXT_PP(3)));
	char		code[9];

	check_digits(digits);
	if (counter < 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("HOTP counter must not be negative, got " INT64_FORMAT, counter)));
	hotp_format(hotp_value((const uint8 *) VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret),
						   (uint64) counter, digits, alg), digits, code);
	PG_RETURN_TEXT_P(cstring_to_text(code));
}

/* Decode a base32 secret argument; DNV01 (never showing it) when invalid. */
static void
secret_argument(text *arg, uint8 **secret, size_t *secret_len)
{
	char	   *b32 = text_to_cstring(arg);

	if (!base32_decode(b32, secret, secret_len) || *secret_len == 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("TOTP secret is not valid base32"),
				 errhint("Use the letters A-Z and the digits 2-7 (RFC 4648).")));
}

/* Raise DNV01 unless period is 1 to 3600 seconds and at a finite time after 1970. */
static void
check_period_and_time(int period, TimestampTz at)
{
	if (period < 1 || period > 3600)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("TOTP period must be between 1 and 3600 seconds, not %d", period)));
	if (TIMESTAMP_NOT_FINITE(at))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("TOTP time must be finite")));
	if (totp_step(at, period) < 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("TOTP time must not be before 1970-01-01")));
}

/*
 * donatello.totp_verify(secret_base32 text, code text, at timestamptz, digits int,
 * algorithm text, period int) returns boolean: is code valid at "at", one step
 * either side? Pure: replay protection needs the stored last step, which
 * totp_activate and login_mfa keep.
 */
Datum
donatello_totp_verify(PG_FUNCTION_ARGS)
{
	char	   *code = text_to_cstring(PG_GETARG_TEXT_PP(1));
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(2);
	int			digits = PG_GETARG_INT32(3);
	TotpAlgorithm alg = totp_parse_algorithm(text_to_cstring(PG_GETARG_TEXT_PP(4)));
	int			period = PG_GETARG_INT32(5);
	uint8	   *secret;
	size_t		secret_len;
	bool		ok;

	check_digits(digits);
	check_period_and_time(period, at);
	secret_argument(PG_GETARG_TEXT_PP(0), &secret, &secret_len);
	ok = totp_match(secret, secret_len, code, digits, alg, period, at, -1) >= 0;
	OPENSSL_cleanse(secret, secret_len);
	PG_RETURN_BOOL(ok);
}

/* donatello.totp_code(secret_base32 text, at timestamptz, digits int, algorithm text, period int) returns text */
Datum
donatello_totp_code(PG_FUNCTION_ARGS)
{
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(1);
	int			digits = PG_GETARG_INT32(2);
	TotpAlgorithm alg = totp_parse_algorithm(text_to_cstring(PG_GETARG_TEXT_PP(3)));
	int			period = PG_GETARG_INT32(4);
	uint8	   *secret;
	size_t		secret_len;
	int64		step;
	char		code[9];

	check_digits(digits);
	check_period_and_time(period, at);
	secret_argument(PG_GETARG_TEXT_PP(0), &secret, &secret_len);
	step = totp_step(at, period);
	hotp_format(hotp_value(secret, secret_len, (uint64) step, digits, alg), digits, code);
	OPENSSL_cleanse(secret, secret_len);
	PG_RETURN_TEXT_P(cstring_to_text(code));
}
