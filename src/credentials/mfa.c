/*
 * mfa.c
 *	  TOTP multi-factor authentication: totp_enroll, totp_activate,
 *	  totp_disable and login_mfa, with single-use backup codes.
 *
 * The secret is sealed with secrets_seal("totp", row id, ...) (src/secrets/)
 * and opened only to verify a code. Backup codes are 80 random bits shown as
 * "xxxx-xxxx-xxxx-xxxx" (base32, lower case) and stored as SHA-256 of the
 * user id and the code without hyphens.
 *
 * Verification (totp.c): one step either side of now; a step at or before
 * the last accepted one is refused (replay). The TOTP row is locked
 * (FOR UPDATE) while verifying, so two concurrent uses of one code accept it
 * once. Wrong codes count in the login guard (guard.c, kind GUARD_MFA):
 * donatello.mfa_max_failures of them lock MFA for donatello.mfa_lockout
 * (DNA05); their events are deferred like login failures.
 */
#include "postgres.h"

#include <sodium.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "credentials/credentials.h"
#include "secrets/secrets.h"

PG_FUNCTION_INFO_V1(donatello_totp_enroll);
PG_FUNCTION_INFO_V1(donatello_totp_activate);
PG_FUNCTION_INFO_V1(donatello_totp_disable);
PG_FUNCTION_INFO_V1(donatello_login_mfa);

#define BACKUP_CODES 10
#define BACKUP_CODE_CHARS 16

static const struct config_enum_entry totp_algorithm_options[] = {
	{"sha1", TOTP_SHA1, false},
	{"sha256", TOTP_SHA256, false},
	{"sha512", TOTP_SHA512, false},
	{NULL, 0, false}
};

/* enrollment settings */
static int	totp_algorithm = TOTP_SHA1;
static int	totp_digits = 6;
static char *totp_issuer = NULL;

/* Define the TOTP enrollment settings (from _PG_init). */
void
mfa_init(void)
{
	DefineCustomEnumVariable("donatello.totp_algorithm",
							 "HMAC algorithm of new TOTP enrollments (sha1 works with every authenticator app).",
							 NULL, &totp_algorithm, TOTP_SHA1, totp_algorithm_options, PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.totp_digits",
							"Digits of the codes of new TOTP enrollments (6 or 8).",
							NULL, &totp_digits, 6, 6, 8, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("donatello.totp_issuer",
							   "Issuer shown by authenticator apps for new TOTP enrollments.",
							   NULL, &totp_issuer, "donatello", PGC_SUSET, 0, NULL, NULL, NULL);
}

/* A TOTP row, locked. */
typedef struct TotpRow
{
	pg_uuid_t	id;
	bytea	   *sealed;
	TotpAlgorithm algorithm;
	int			digits;
	int			period;
	bool		active;
	int64		last_step;		/* -1: none */
} TotpRow;

/* Read and lock a user's TOTP row; false when not enrolled. SPI connected. */
static bool
totp_row(const pg_uuid_t *user_id, TotpRow *row)
{
	Oid			type = UUIDOID;
	Datum		arg = cred_uuid_datum(user_id);
	bool		isnull;

	cred_spi_exec("SELECT id, secret_sealed, algorithm, digits, period, active, last_step"
				  " FROM donatello.totp_credentials WHERE user_id = $1 FOR UPDATE",
				  1, &type, &arg, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	cred_spi_uuid(0, 1, &row->id);
	row->sealed = DatumGetByteaPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	row->algorithm = totp_parse_algorithm(cred_spi_text(0, 3));
	row->digits = (int) cred_spi_int64(0, 4, 6);
	row->period = (int) cred_spi_int64(0, 5, 30);
	row->active = cred_spi_bool(0, 6, false);
	row->last_step = cred_spi_int64(0, 7, -1);
	return true;
}

/* The step a code matches, or -1; the secret is wiped after use. */
static int64
totp_row_match(const TotpRow *row, const char *code)
{
	size_t		len;
	char	   *secret = secrets_open("totp", &row->id, row->sealed, &len);
	int64		step;

	step = totp_match((const uint8 *) secret, len, code, row->digits, row->algorithm, row->period,
					  GetCurrentTimestamp(), row->last_step);
	sodium_memzero(secret, len);
	return step;
}

/* SHA-256 of user id and a normalized backup code; false if the code cannot be one. */
static bool
backup_code_hash(const pg_uuid_t *user_id, const char *code, bytea **out)
{
	char		norm[BACKUP_CODE_CHARS + 1];
	int			n = 0;
	const char *p;
	crypto_hash_sha256_state st;
	bytea	   *h;

	for (p = code; *p; p++)
	{
		if (*p == '-' || *p == ' ')
			continue;
		if (n >= BACKUP_CODE_CHARS)
			return false;
		norm[n++] = (*p >= 'A' && *p <= 'Z') ? *p - 'A' + 'a' : *p;
	}
	if (n != BACKUP_CODE_CHARS)
		return false;
	norm[n] = '\0';
	h = palloc(VARHDRSZ + CRED_SHA256_BYTES);
	SET_VARSIZE(h, VARHDRSZ + CRED_SHA256_BYTES);
	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, user_id->data, UUID_LEN);
	crypto_hash_sha256_update(&st, (const uint8 *) norm, n);
	crypto_hash_sha256_final(&st, (uint8 *) VARDATA(h));
	*out = h;
	return true;
}

/* Percent-encode a URI component (RFC 3986 unreserved characters kept). */
static void
append_uri_component(StringInfo buf, const char *s)
{
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '@')
			appendStringInfoChar(buf, (char) c);
		else
			appendStringInfo(buf, "%%%02X", c);
	}
}

/* Raise 55000 unless the user exists and is active; returns org and email. SPI connected. */
static void
mfa_user(const pg_uuid_t *user_id, pg_uuid_t *org_id, char **email)
{
	Oid			type = UUIDOID;
	Datum		arg = cred_uuid_datum(user_id);

	cred_spi_exec("SELECT org_id, email, active FROM donatello.users WHERE id = $1", 1, &type, &arg, NULL,
				  SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("user %s does not exist", cred_uuid_string(user_id))));
	cred_spi_uuid(0, 1, org_id);
	*email = cred_spi_text(0, 2);
	if (!cred_spi_bool(0, 3, false))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("user %s is deactivated", cred_uuid_string(user_id))));
}

/* donatello.totp_enroll(user_id uuid) returns jsonb */
Datum
donatello_totp_enroll(PG_FUNCTION_ARGS)
{
	pg_uuid_t	user_id,
				org_id,
				row_id;
	char	   *email;
	uint8		secret[64];
	size_t		secret_len = totp_algorithm == TOTP_SHA512 ? 64 : totp_algorithm == TOTP_SHA256 ? 32 : 20;
	char	   *secret_b32;
	Oid			types[6] = {UUIDOID, UUIDOID, UUIDOID, BYTEAOID, TEXTOID, INT4OID};
	Datum		args[6];
	StringInfoData uri,
				out;
	int			i,
				j;
	Jsonb	   *result;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errhidestmt(true),  errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("user_id must not be null")));
	memcpy(&user_id, PG_GETARG_UUID_P(0), sizeof(pg_uuid_t));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in totp_enroll");
	mfa_user(&user_id, &org_id, &email);
	args[0] = cred_uuid_datum(&user_id);
	cred_spi_exec("SELECT active FROM donatello.totp_credentials WHERE user_id = $1 FOR UPDATE",
				  1, types, args, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0 && cred_spi_bool(0, 1, false))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("MFA is already active for user %s", cred_uuid_string(&user_id)),
				 errhint("Turn it off with donatello.totp_disable() before enrolling again.")));
	cred_spi_exec("DELETE FROM donatello.totp_credentials WHERE user_id = $1", 1, types, args, NULL,
				  SPI_OK_DELETE);
	cred_spi_exec("DELETE FROM donatello.backup_codes WHERE user_id = $1", 1, types, args, NULL,
				  SPI_OK_DELETE);

	/* the secret, sealed to a row id chosen here */
	cred_spi_exec("SELECT pg_catalog.gen_random_uuid()", 0, NULL, NULL, NULL, SPI_OK_SELECT);
	cred_spi_uuid(0, 1, &row_id);
	randombytes_buf(secret, secret_len);
	secret_b32 = base32_encode(secret, secret_len);
	args[1] = cred_uuid_datum(&org_id);
	args[2] = cred_uuid_datum(&row_id);
	args[3] = PointerGetDatum(secrets_seal("totp", &row_id, secret, secret_len));
	sodium_memzero(secret, sizeof(secret));
	args[4] = CStringGetTextDatum(totp_algorithm_name((TotpAlgorithm) totp_algorithm));
	args[5] = Int32GetDatum(totp_digits);
	cred_spi_exec("INSERT INTO donatello.totp_credentials (id, org_id, user_id, secret_sealed, algorithm, digits)"
				  " VALUES ($3, $2, $1, $4, $5, $6)", 6, types, args, NULL, SPI_OK_INSERT);

	initStringInfo(&uri);
	appendStringInfoString(&uri, "otpauth://totp/");
	append_uri_component(&uri, totp_issuer);
	appendStringInfoChar(&uri, ':');
	append_uri_component(&uri, email);
	appendStringInfo(&uri, "?secret=%s&issuer=", secret_b32);
	append_uri_component(&uri, totp_issuer);
	appendStringInfo(&uri, "&algorithm=%s&digits=%d&period=30",
					 totp_algorithm == TOTP_SHA512 ? "SHA512" : totp_algorithm == TOTP_SHA256 ? "SHA256" : "SHA1",
					 totp_digits);

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	cred_json_add_string(&out, "secret", secret_b32);
	cred_json_add_string(&out, "otpauth_uri", uri.data);
	appendStringInfo(&out, ",\"algorithm\":\"%s\",\"digits\":%d,\"period\":30,\"backup_codes\":[",
					 totp_algorithm_name((TotpAlgorithm) totp_algorithm), totp_digits);
	for (i = 0; i < BACKUP_CODES; i++)
	{
		uint8		raw[10];
		char	   *b32;
		char		code[BACKUP_CODE_CHARS + 4];
		bytea	   *hash;
		int			o = 0;

		randombytes_buf(raw, sizeof(raw));
		b32 = base32_encode(raw, sizeof(raw));
		for (j = 0; j < BACKUP_CODE_CHARS; j++)
		{
			if (j > 0 && j % 4 == 0)
				code[o++] = '-';
			code[o++] = (b32[j] >= 'A' && b32[j] <= 'Z') ? b32[j] - 'A' + 'a' : b32[j];
		}
		code[o] = '\0';
		(void) backup_code_hash(&user_id, code, &hash);
		args[3] = PointerGetDatum(hash);
		cred_spi_exec("INSERT INTO donatello.backup_codes (org_id, user_id, code_hash) VALUES ($2, $1, $4)",
					  4, types, args, NULL, SPI_OK_INSERT);
		if (i > 0)
			appendStringInfoChar(&out, ',');
		appendStringInfo(&out, "\"%s\"", code);
	}
	appendStringInfoString(&out, "]}");
	security_event_record(&org_id, &user_id, "mfa.enrolled", NULL, NULL, "{}");
	result = (Jsonb *) SPI_datumTransfer(PointerGetDatum(cred_jsonb_from_cstring(out.data)), false, -1);
	SPI_finish();
	PG_RETURN_JSONB_P(result);
}

/* Read the persisted MFA counters of a user as a guard seed. SPI connected. */
static void
mfa_seed(const pg_uuid_t *user_id, GuardState *seed)
{
	Oid			type = UUIDOID;
	Datum		arg = cred_uuid_datum(user_id);

	memset(seed, 0, sizeof(*seed));
	cred_spi_exec("SELECT failed_logins, locked_until, mfa_failures, mfa_locked_until"
				  " FROM donatello.user_credentials WHERE user_id = $1",
				  1, &type, &arg, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return;
	seed->failures[GUARD_PASSWORD] = (int) cred_spi_int64(0, 1, 0);
	seed->locked_until[GUARD_PASSWORD] = cred_spi_timestamp(0, 2, 0);
	seed->failures[GUARD_MFA] = (int) cred_spi_int64(0, 3, 0);
	seed->locked_until[GUARD_MFA] = cred_spi_timestamp(0, 4, 0);
}

/* Raise DNA05 when MFA is locked; queue the event. */
static void
mfa_check_lock(const pg_uuid_t *user_id, const pg_uuid_t *org_id, const GuardState *seed,
			   const char *ip, const char *user_agent)
{
	TimestampTz until;

	if (!guard_is_locked(user_id, org_id, GUARD_MFA, seed, GetCurrentTimestamp(), &until))
		return;
	security_event_defer(org_id, user_id, "mfa.locked", ip, user_agent, "{}");
	ereport(ERROR,
			(errhidestmt(true),
			 errcode(ERRCODE_DN_MFA_LOCKED),
			 errmsg("MFA is locked after too many wrong codes"),
			 errdetail("MFA is locked until %s.", cred_timestamp_string(until)),
			 errhint("Wait until then, or ask an administrator to unlock the user.")));
}

/* Count a wrong code, queue its events, and raise DNA04 (or DNA05 when it locks). */
static void
pg_attribute_noreturn()
mfa_fail(const pg_uuid_t *user_id, const pg_uuid_t *org_id, const GuardState *seed, const char *stage,
		 const char *ip, const char *user_agent)
{
	int			failures;
	TimestampTz until;
	bool		locked_now;
	StringInfoData details;

	locked_now = guard_record_failure(user_id, org_id, GUARD_MFA, seed, GetCurrentTimestamp(),
									  &failures, &until);
	initStringInfo(&details);
	appendStringInfoChar(&details, '{');
	cred_json_add_string(&details, "stage", stage);
	appendStringInfo(&details, ",\"consecutive_failures\":%d}", failures);
	security_event_defer(org_id, user_id, "mfa.failure", ip, user_agent, details.data);
	if (locked_now)
	{
		security_event_defer(org_id, user_id, "mfa.lockout", ip, user_agent, details.data);
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_MFA_LOCKED),
				 errmsg("MFA is locked after too many wrong codes"),
				 errdetail("MFA is locked until %s.", cred_timestamp_string(until))));
	}
	ereport(ERROR,
			(errhidestmt(true),
			 errcode(ERRCODE_DN_INVALID_MFA_CODE),
			 errmsg("invalid MFA code"),
			 errhint("Enter the current code of your authenticator app, or an unused backup code.")));
}

/* donatello.totp_activate(user_id uuid, code text) */
Datum
donatello_totp_activate(PG_FUNCTION_ARGS)
{
	pg_uuid_t	user_id,
				org_id;
	char	   *email;
	char	   *code;
	TotpRow		row;
	GuardState	seed;
	int64		step;
	Oid			types[2] = {UUIDOID, INT8OID};
	Datum		args[2];

	donatello_require_preload("totp_activate");
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errhidestmt(true),  errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("user_id must not be null")));
	memcpy(&user_id, PG_GETARG_UUID_P(0), sizeof(pg_uuid_t));
	code = PG_ARGISNULL(1) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in totp_activate");
	mfa_user(&user_id, &org_id, &email);
	if (!totp_row(&user_id, &row))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("user %s has not enrolled in TOTP", cred_uuid_string(&user_id)),
				 errhint("Call donatello.totp_enroll() first.")));
	mfa_seed(&user_id, &seed);
	mfa_check_lock(&user_id, &org_id, &seed, NULL, NULL);
	step = totp_row_match(&row, code);
	if (step < 0)
		mfa_fail(&user_id, &org_id, &seed, "activate", NULL, NULL);
	guard_record_success(&user_id, &org_id, GUARD_MFA, &seed);
	args[0] = cred_uuid_datum(&row.id);
	args[1] = Int64GetDatum(step);
	cred_spi_exec("UPDATE donatello.totp_credentials SET active = true,"
				  " activated_at = coalesce(activated_at, now()), last_step = $2 WHERE id = $1",
				  2, types, args, NULL, SPI_OK_UPDATE);
	if (!row.active)
		security_event_record(&org_id, &user_id, "mfa.activated", NULL, NULL, "{}");
	SPI_finish();
	PG_RETURN_VOID();
}

/* donatello.totp_disable(user_id uuid) */
Datum
donatello_totp_disable(PG_FUNCTION_ARGS)
{
	pg_uuid_t	user_id,
				org_id;
	char	   *email;
	Oid			type = UUIDOID;
	Datum		arg;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errhidestmt(true),  errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("user_id must not be null")));
	memcpy(&user_id, PG_GETARG_UUID_P(0), sizeof(pg_uuid_t));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in totp_disable");
	mfa_user(&user_id, &org_id, &email);
	arg = cred_uuid_datum(&user_id);
	cred_spi_exec("DELETE FROM donatello.totp_credentials WHERE user_id = $1", 1, &type, &arg, NULL,
				  SPI_OK_DELETE);
	if (SPI_processed > 0)
		security_event_record(&org_id, &user_id, "mfa.disabled", NULL, NULL, "{}");
	cred_spi_exec("DELETE FROM donatello.backup_codes WHERE user_id = $1", 1, &type, &arg, NULL,
				  SPI_OK_DELETE);
	SPI_finish();
	PG_RETURN_VOID();
}

/* Raise DNA03 about an MFA token. */
static void
pg_attribute_noreturn()
mfa_token_fail(const char *message)
{
	ereport(ERROR,
			(errhidestmt(true),
			 errcode(ERRCODE_DN_INVALID_TOKEN),
			 errmsg("%s", message),
			 errhint("Log in again with your password to get a new MFA token.")));
}

/* donatello.login_mfa(mfa_token text, code text) returns jsonb */
Datum
donatello_login_mfa(PG_FUNCTION_ARGS)
{
	pg_uuid_t	user_id,
				org_id;
	char	   *code;
	char	   *ip,
			   *user_agent;
	TimestampTz expires_at;
	bool		used,
				active;
	TotpRow		row;
	GuardState	seed;
	int64		step;
	const char *method = NULL;
	Oid			types[2] = {BYTEAOID, INT8OID};
	Datum		args[2];
	bytea	   *token_hash;
	Jsonb	   *result;

	donatello_require_preload("login_mfa");
	if (PG_ARGISNULL(0))
		mfa_token_fail("MFA token is missing");
	code = PG_ARGISNULL(1) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in login_mfa");
	token_hash = cred_sha256_bytea(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	args[0] = PointerGetDatum(token_hash);
	cred_spi_exec("SELECT c.org_id, c.user_id, c.expires_at, c.used_at IS NOT NULL, host(c.ip), c.user_agent,"
				  " u.active FROM donatello.mfa_challenges c"
				  " JOIN donatello.users u ON u.id = c.user_id AND u.org_id = c.org_id"
				  " WHERE c.token_hash = $1 FOR UPDATE OF c",
				  1, types, args, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		mfa_token_fail("MFA token is invalid");
	cred_spi_uuid(0, 1, &org_id);
	cred_spi_uuid(0, 2, &user_id);
	expires_at = cred_spi_timestamp(0, 3, 0);
	used = cred_spi_bool(0, 4, true);
	ip = cred_spi_text(0, 5);
	user_agent = cred_spi_text(0, 6);
	active = cred_spi_bool(0, 7, false);
	if (used)
		mfa_token_fail("MFA token was already used");
	if (expires_at <= GetCurrentTimestamp())
		mfa_token_fail("MFA token has expired");
	if (!active)
		mfa_token_fail("the user of this MFA token is deactivated");

	mfa_seed(&user_id, &seed);
	mfa_check_lock(&user_id, &org_id, &seed, ip, user_agent);
	if (!totp_row(&user_id, &row) || !row.active)
		mfa_token_fail("MFA is no longer active for this user");

	step = totp_row_match(&row, code);
	if (step >= 0)
	{
		Datum		upd[2];
		Oid			updtypes[2] = {UUIDOID, INT8OID};

		upd[0] = cred_uuid_datum(&row.id);
		upd[1] = Int64GetDatum(step);
		cred_spi_exec("UPDATE donatello.totp_credentials SET last_step = $2 WHERE id = $1",
					  2, updtypes, upd, NULL, SPI_OK_UPDATE);
		method = "password+totp";
	}
	else
	{
		bytea	   *code_hash;

		if (backup_code_hash(&user_id, code, &code_hash))
		{
			Datum		b[2];
			Oid			btypes[2] = {UUIDOID, BYTEAOID};

			b[0] = cred_uuid_datum(&user_id);
			b[1] = PointerGetDatum(code_hash);
			cred_spi_exec("UPDATE donatello.backup_codes SET used_at = now()"
						  " WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
						  2, btypes, b, NULL, SPI_OK_UPDATE);
			if (SPI_processed == 1)
				method = "password+backup_code";
		}
	}
	if (method == NULL)
		mfa_fail(&user_id, &org_id, &seed, "login", ip, user_agent);

	guard_record_success(&user_id, &org_id, GUARD_MFA, &seed);
	cred_spi_exec("UPDATE donatello.mfa_challenges SET used_at = now() WHERE token_hash = $1",
				  1, types, args, NULL, SPI_OK_UPDATE);
	{
		StringInfoData details;

		initStringInfo(&details);
		appendStringInfoChar(&details, '{');
		cred_json_add_string(&details, "method", strchr(method, '+') + 1);
		appendStringInfoChar(&details, '}');
		security_event_record(&org_id, &user_id, "mfa.success", ip, user_agent, details.data);
	}
	result = session_issue(&user_id, &org_id, ip, user_agent, method);
	result = (Jsonb *) SPI_datumTransfer(PointerGetDatum(result), false, -1);
	SPI_finish();
	PG_RETURN_JSONB_P(result);
}
