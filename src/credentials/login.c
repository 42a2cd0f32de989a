/*
 * login.c
 *	  donatello.login() and donatello.unlock_user().
 *
 * login(email, password, org_slug, ip, user_agent):
 *	1. find the user by email (case-insensitive), within org_slug when given;
 *	   an unknown email, an email of several organizations without org_slug,
 *	   or a user without a password costs one dummy Argon2id verification and
 *	   raises the same DNA01 as a wrong password;
 *	2. lock the user's user_credentials row, so attempts on one account run
 *	   one at a time, and consult the login guard (guard.c): a locked account
 *	   raises DNA02 without looking at the password;
 *	3. verify the password; a failure counts in the guard, and the failure
 *	   that reaches donatello.login_max_failures locks the account and raises
 *	   DNA02; others raise DNA01; an inactive user always gets DNA01;
 *	4. on success clear the count, rehash when the cost settings changed,
 *	   and return either an MFA challenge (single use, for
 *	   donatello.mfa_token_lifetime) or the session tokens.
 * Failures roll the caller's transaction back, so their events go through
 * security_event_defer(). Events never hold the password; the email of an
 * unknown user is not recorded either (people type passwords into it).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/inet.h"
#include "utils/timestamp.h"

#include <sodium.h>

#include "donatello.h"
#include "credentials/credentials.h"
#include "tenancy/claims.h"

PG_FUNCTION_INFO_V1(donatello_login);
PG_FUNCTION_INFO_V1(donatello_unlock_user);

/* What login knows about the caller, for events. */
typedef struct LoginAttempt
{
	char	   *ip;
	char	   *user_agent;
	pg_uuid_t	org_id;
	bool		org_known;
	pg_uuid_t	user_id;
	bool		user_known;
} LoginAttempt;

/* Raise the one DNA01 every bad email/password combination gets. */
static void
pg_attribute_noreturn()
login_invalid(void)
{
	ereport(ERROR,
			(errhidestmt(true),
			 errcode(ERRCODE_DN_INVALID_CREDENTIALS),
			 errmsg("invalid email or password"),
			 errhint("If your account belongs to several organizations, pass org_slug.")));
}

/* Details {"reason": reason} plus an optional count. */
static char *
reason_details(const char *reason, int failures)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	cred_json_add_string(&buf, "reason", reason);
	if (failures > 0)
		appendStringInfo(&buf, ",\"consecutive_failures\":%d", failures);
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* Queue a failure event when the organization is known. */
static void
login_defer_event(const LoginAttempt *a, const char *event, const char *details)
{
	if (a->org_known)
		security_event_defer(&a->org_id, a->user_known ? &a->user_id : NULL, event, a->ip,
							 a->user_agent, details);
	else
		ereport(LOG,
				(errmsg("donatello: %s from %s for an email of no single organization", event,
						a->ip ? a->ip : "an unknown address")));
}

/* Raise DNA02 for a locked account. */
static void
pg_attribute_noreturn()
login_locked(TimestampTz until)
{
	ereport(ERROR,
			(errhidestmt(true),
			 errcode(ERRCODE_DN_ACCOUNT_LOCKED),
			 errmsg("account is locked after too many failed logins"),
			 errdetail("The account is locked until %s.", cred_timestamp_string(until)),
			 errhint("Wait until then, or ask an administrator to unlock it.")));
}

/* Find the user; false for none or several. Fills org/user in a. SPI connected. */
static bool
login_find_user(const char *email, const char *org_slug, LoginAttempt *a, bool *active)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2];
	char		nulls[2] = {' ', ' '};

	if (org_slug)
	{
		args[0] = CStringGetTextDatum(org_slug);
		cred_spi_exec("SELECT id FROM donatello.organizations WHERE slug = $1", 1, types, args, NULL,
					  SPI_OK_SELECT);
		a->org_known = SPI_processed == 1 && cred_spi_uuid(0, 1, &a->org_id);
		if (!a->org_known)
			return false;
	}
	args[0] = CStringGetTextDatum(email);
	args[1] = org_slug ? CStringGetTextDatum(org_slug) : (Datum) 0;
	nulls[1] = org_slug ? ' ' : 'n';
	cred_spi_exec("SELECT u.id, u.org_id, u.active FROM donatello.users u"
				  " JOIN donatello.organizations o ON o.id = u.org_id"
				  " WHERE lower(u.email) = lower(btrim($1)) AND ($2::text IS NULL OR o.slug = $2) LIMIT 2",
				  2, types, args, nulls, SPI_OK_SELECT);
	if (SPI_processed != 1)
		return false;
	cred_spi_uuid(0, 1, &a->user_id);
	cred_spi_uuid(0, 2, &a->org_id);
	a->user_known = a->org_known = true;
	*active = cred_spi_bool(0, 3, false);
	return true;
}

/* Read and lock the credentials row; false when the user has no password. */
static bool
login_read_credentials(const pg_uuid_t *user_id, char **hash, GuardState *seed)
{
	Oid			type = UUIDOID;
	Datum		arg = cred_uuid_datum(user_id);

	cred_spi_exec("SELECT password_hash, failed_logins, locked_until, mfa_failures, mfa_locked_until"
				  " FROM donatello.user_credentials WHERE user_id = $1 FOR NO KEY UPDATE",
				  1, &type, &arg, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	*hash = cred_spi_text(0, 1);
	seed->failures[GUARD_PASSWORD] = (int) cred_spi_int64(0, 2, 0);
	seed->locked_until[GUARD_PASSWORD] = cred_spi_timestamp(0, 3, 0);
	seed->failures[GUARD_MFA] = (int) cred_spi_int64(0, 4, 0);
	seed->locked_until[GUARD_MFA] = cred_spi_timestamp(0, 5, 0);
	return *hash != NULL;
}

/* Start the MFA step: a single-use challenge token. SPI connected. */
static Jsonb *
login_mfa_challenge(const LoginAttempt *a)
{
	char	   *token = cred_random_token("dnm_", 32);
	Oid			types[6] = {BYTEAOID, UUIDOID, UUIDOID, INT4OID, TEXTOID, TEXTOID};
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	StringInfoData out;

	args[0] = PointerGetDatum(cred_sha256_bytea(token));
	args[1] = cred_uuid_datum(&a->org_id);
	args[2] = cred_uuid_datum(&a->user_id);
	args[3] = Int32GetDatum(mfa_token_lifetime_seconds);
	args[4] = a->ip ? CStringGetTextDatum(a->ip) : (Datum) 0;
	nulls[4] = a->ip ? ' ' : 'n';
	args[5] = a->user_agent ? CStringGetTextDatum(a->user_agent) : (Datum) 0;
	nulls[5] = a->user_agent ? ' ' : 'n';
	cred_spi_exec("INSERT INTO donatello.mfa_challenges (token_hash, org_id, user_id, expires_at, ip, user_agent)"
				  " VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5::inet, left($6, 512))",
				  6, types, args, nulls, SPI_OK_INSERT);
	security_event_record(&a->org_id, &a->user_id, "login.mfa_required", a->ip, a->user_agent, "{}");

	initStringInfo(&out);
	appendStringInfoString(&out, "{\"mfa_required\":true");
	cred_json_add_string(&out, "mfa_token", token);
	appendStringInfo(&out, ",\"expires_in\":%d}", mfa_token_lifetime_seconds);
	return cred_jsonb_from_cstring(out.data);
}

/* donatello.login(email, password, org_slug, ip, user_agent) returns jsonb */
Datum
donatello_login(PG_FUNCTION_ARGS)
{
	LoginAttempt a;
	char	   *email,
			   *password,
			   *hash = NULL;
	bool		active = false;
	GuardState	seed;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz until;
	int			failures;
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		args[2];
	Jsonb	   *result;

	donatello_require_preload("login");
	memset(&a, 0, sizeof(a));
	memset(&seed, 0, sizeof(seed));
	if (!PG_ARGISNULL(3))
		a.ip = DatumGetCString(DirectFunctionCall1(inet_out, PG_GETARG_DATUM(3)));
	if (!PG_ARGISNULL(4))
		a.user_agent = text_to_cstring(PG_GETARG_TEXT_PP(4));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		login_invalid();
	email = text_to_cstring(PG_GETARG_TEXT_PP(0));
	password = text_to_cstring(PG_GETARG_TEXT_PP(1));
	password_dummy_prepare();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in login");

	if (!login_find_user(email, PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2)), &a, &active) ||
		!login_read_credentials(&a.user_id, &hash, &seed))
	{
		password_dummy_verify(password);
		sodium_memzero(password, strlen(password));
		login_defer_event(&a, "login.failure",
						  reason_details(a.user_known ? "no password set" : "unknown email", 0));
		login_invalid();
	}

	if (guard_is_locked(&a.user_id, &a.org_id, GUARD_PASSWORD, &seed, now, &until))
	{
		sodium_memzero(password, strlen(password));
		login_defer_event(&a, "login.locked", reason_details("account locked", 0));
		login_locked(until);
	}

	if (!password_verify_cstring(password, hash) || !active)
	{
		bool		wrong = active;	/* an inactive user's attempts do not lock it */
		bool		locked_now = false;

		sodium_memzero(password, strlen(password));
		failures = 0;
		if (wrong)
			locked_now = guard_record_failure(&a.user_id, &a.org_id, GUARD_PASSWORD, &seed, now,
											  &failures, &until);
		login_defer_event(&a, "login.failure",
						  reason_details(active ? "wrong password" : "user deactivated", failures));
		if (locked_now)
		{
			StringInfoData details;

			initStringInfo(&details);
			appendStringInfo(&details, "{\"consecutive_failures\":%d", failures);
			cred_json_add_string(&details, "locked_until", cred_timestamp_string(until));
			appendStringInfoChar(&details, '}');
			login_defer_event(&a, "login.lockout", details.data);
			login_locked(until);
		}
		login_invalid();
	}

	/* the password is right */
	guard_record_success(&a.user_id, &a.org_id, GUARD_PASSWORD, &seed);
	args[0] = cred_uuid_datum(&a.user_id);
	if (password_needs_rehash(hash))
	{
		args[1] = CStringGetTextDatum(password_hash_cstring(password));
		cred_spi_exec("UPDATE donatello.user_credentials SET password_hash = $2 WHERE user_id = $1",
					  2, types, args, NULL, SPI_OK_UPDATE);
		security_event_record(&a.org_id, &a.user_id, "password.rehashed", a.ip, a.user_agent, "{}");
	}
	sodium_memzero(password, strlen(password));
	cred_spi_exec("UPDATE donatello.user_credentials SET failed_logins = 0, locked_until = NULL,"
				  " last_login_at = now() WHERE user_id = $1",
				  1, types, args, NULL, SPI_OK_UPDATE);
	cred_spi_exec("SELECT 1 FROM donatello.totp_credentials WHERE user_id = $1 AND active",
				  1, types, args, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		result = login_mfa_challenge(&a);
	else
		result = session_issue(&a.user_id, &a.org_id, a.ip, a.user_agent, "password");
	result = (Jsonb *) SPI_datumTransfer(PointerGetDatum(result), false, -1);
	SPI_finish();
	PG_RETURN_JSONB_P(result);
}

/* donatello.unlock_user(user_id uuid) */
Datum
donatello_unlock_user(PG_FUNCTION_ARGS)
{
	pg_uuid_t	user_id,
				org_id,
				caller;
	Oid			type = UUIDOID;
	Datum		arg;
	StringInfoData details;

	donatello_require_preload("unlock_user");
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errhidestmt(true),  errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("user_id must not be null")));
	memcpy(&user_id, PG_GETARG_UUID_P(0), sizeof(pg_uuid_t));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in unlock_user");
	arg = cred_uuid_datum(&user_id);
	cred_spi_exec("SELECT org_id FROM donatello.users WHERE id = $1", 1, &type, &arg, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("user %s does not exist", cred_uuid_string(&user_id))));
	cred_spi_uuid(0, 1, &org_id);

	/* wait for a running flush, so it cannot write the old counters back */
	cred_spi_exec("SELECT pg_catalog.pg_advisory_xact_lock(25710, 1)", 0, NULL, NULL, NULL, SPI_OK_SELECT);
	guard_unlock(&user_id);
	cred_spi_exec("UPDATE donatello.user_credentials SET failed_logins = 0, locked_until = NULL,"
				  " mfa_failures = 0, mfa_locked_until = NULL WHERE user_id = $1",
				  1, &type, &arg, NULL, SPI_OK_UPDATE);
	initStringInfo(&details);
	appendStringInfoChar(&details, '{');
	if (donatello_claims_user_id(&caller))
		cred_json_add_string(&details, "unlocked_by", cred_uuid_string(&caller));
	appendStringInfoChar(&details, '}');
	security_event_record(&org_id, &user_id, "login.unlocked", NULL, NULL, details.data);
	SPI_finish();
	PG_RETURN_VOID();
}
