/*
 * sessions.c
 *	  Sessions and their tokens: session_issue() (login and login_mfa),
 *	  donatello.refresh(), donatello.logout() and donatello.revoke_session().
 *
 * A session lives donatello.refresh_token_lifetime from login (not sliding,
 * so a refresh writes no column that invalidates caches). Access tokens are
 * JWTs with sub, org, role = donatello_user, sid, iat, exp (and aud/iss when
 * configured). Refresh tokens are "dnr_" + 256 random bits, stored as
 * SHA-256, used once: each refresh marks the presented token used and issues
 * a new one. A used token presented again is reuse (a stolen token, or a
 * copy that raced the real client): the whole session is revoked. That
 * revocation, and its event, must survive the DNA03 the caller gets, so they
 * are deferred (deferred.c) and take effect at once through
 * session_revocation_pending().
 *
 * Concurrency: refresh locks the token row (FOR UPDATE), so of two refreshes
 * with one token exactly one succeeds; the other sees it used.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "credentials/credentials.h"
#include "credentials/jwt.h"

PG_FUNCTION_INFO_V1(donatello_refresh);
PG_FUNCTION_INFO_V1(donatello_logout);
PG_FUNCTION_INFO_V1(donatello_revoke_session);

#define REFRESH_TOKEN_PREFIX "dnr_"

/* Raise DNA03 about a refresh token (never showing it). */
static void
pg_attribute_noreturn()
refresh_fail(const char *message, const char *detail)
{
	ereport(ERROR,
			(errhidestmt(true),
			 errcode(ERRCODE_DN_INVALID_TOKEN),
			 errmsg("%s", message),
			 detail ? errdetail("%s", detail) : 0,
			 errhint("Log in again.")));
}

/* Seconds since the Unix epoch, now. */
static int64
unix_now(void)
{
	return (int64) (GetCurrentTransactionStartTimestamp() / USECS_PER_SEC) +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

/* Insert a fresh refresh token for a session; returns the token. SPI connected. */
static char *
refresh_token_insert(const pg_uuid_t *org_id, const pg_uuid_t *session_id, TimestampTz expires_at)
{
	char	   *token = cred_random_token(REFRESH_TOKEN_PREFIX, 32);
	Oid			types[4] = {BYTEAOID, UUIDOID, UUIDOID, TIMESTAMPTZOID};
	Datum		args[4];

	args[0] = PointerGetDatum(cred_sha256_bytea(token));
	args[1] = cred_uuid_datum(org_id);
	args[2] = cred_uuid_datum(session_id);
	args[3] = TimestampTzGetDatum(expires_at);
	cred_spi_exec("INSERT INTO donatello.refresh_tokens (token_hash, org_id, session_id, expires_at)"
				  " VALUES ($1, $2, $3, $4)", 4, types, args, NULL, SPI_OK_INSERT);
	return token;
}

/* The tokens response: a signed access token for the session plus the refresh token. */
static Jsonb *
tokens_response(const pg_uuid_t *user_id, const pg_uuid_t *org_id, const pg_uuid_t *session_id,
				const char *refresh_token)
{
	StringInfoData claims,
				out;
	int64		now = unix_now();
	char	   *access;

	initStringInfo(&claims);
	appendStringInfoChar(&claims, '{');
	cred_json_add_string(&claims, "sub", cred_uuid_string(user_id));
	cred_json_add_string(&claims, "org", cred_uuid_string(org_id));
	cred_json_add_string(&claims, "role", "donatello_user");
	cred_json_add_string(&claims, "sid", cred_uuid_string(session_id));
	if (jwt_configured_audience())
		cred_json_add_string(&claims, "aud", jwt_configured_audience());
	if (jwt_configured_issuer())
		cred_json_add_string(&claims, "iss", jwt_configured_issuer());
	appendStringInfo(&claims, ",\"iat\":" INT64_FORMAT ",\"exp\":" INT64_FORMAT "}",
					 now, now + access_token_lifetime_seconds);
	access = jwt_sign_jsonb(cred_jsonb_from_cstring(claims.data));

	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	cred_json_add_string(&out, "access_token", access);
	cred_json_add_string(&out, "refresh_token", refresh_token);
	cred_json_add_string(&out, "token_type", "bearer");
	appendStringInfo(&out, ",\"expires_in\":%d}", access_token_lifetime_seconds);
	return cred_jsonb_from_cstring(out.data);
}

/*
 * Start a session for a user who just proved who they are (SPI connected):
 * inserts the session and its first refresh token, records login.success,
 * and returns the tokens response.
 */
Jsonb *
session_issue(const pg_uuid_t *user_id, const pg_uuid_t *org_id, const char *ip,
			  const char *user_agent, const char *method)
{
	Oid			types[5] = {UUIDOID, UUIDOID, INT4OID, TEXTOID, TEXTOID};
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	pg_uuid_t	session_id;
	TimestampTz expires_at;
	char	   *refresh;
	StringInfoData details;

	args[0] = cred_uuid_datum(org_id);
	args[1] = cred_uuid_datum(user_id);
	args[2] = Int32GetDatum(refresh_token_lifetime_seconds);
	args[3] = ip ? CStringGetTextDatum(ip) : (Datum) 0;
	nulls[3] = ip ? ' ' : 'n';
	args[4] = user_agent ? CStringGetTextDatum(user_agent) : (Datum) 0;
	nulls[4] = user_agent ? ' ' : 'n';
	cred_spi_exec("INSERT INTO donatello.sessions (org_id, user_id, expires_at, ip, user_agent)"
				  " VALUES ($1, $2, now() + make_interval(secs => $3), $4::inet, left($5, 512))"
				  " RETURNING id, expires_at",
				  5, types, args, nulls, SPI_OK_INSERT_RETURNING);
	cred_spi_uuid(0, 1, &session_id);
	expires_at = cred_spi_timestamp(0, 2, 0);
	refresh = refresh_token_insert(org_id, &session_id, expires_at);

	initStringInfo(&details);
	appendStringInfoChar(&details, '{');
	cred_json_add_string(&details, "session_id", cred_uuid_string(&session_id));
	cred_json_add_string(&details, "method", method);
	appendStringInfoChar(&details, '}');
	security_event_record(org_id, user_id, "login.success", ip, user_agent, details.data);
	return tokens_response(user_id, org_id, &session_id, refresh);
}

/* The session id, org and user of a refresh token row (SPI result row 0). */
typedef struct RefreshRow
{
	pg_uuid_t	session_id;
	pg_uuid_t	org_id;
	pg_uuid_t	user_id;
	bool		used;
	TimestampTz token_expires;
	bool		session_live;
	TimestampTz session_expires;
	bool		user_active;
} RefreshRow;

/* Find and lock a refresh token row; false when unknown. SPI connected. */
static bool
refresh_row(const char *token, RefreshRow *row)
{
	Oid			type = BYTEAOID;
	Datum		arg = PointerGetDatum(cred_sha256_bytea(token));

	cred_spi_exec("SELECT rt.session_id, rt.org_id, s.user_id, rt.used_at IS NOT NULL, rt.expires_at,"
				  " s.revoked_at IS NULL, s.expires_at, u.active"
				  " FROM donatello.refresh_tokens rt"
				  " JOIN donatello.sessions s ON s.id = rt.session_id AND s.org_id = rt.org_id"
				  " JOIN donatello.users u ON u.id = s.user_id AND u.org_id = s.org_id"
				  " WHERE rt.token_hash = $1 FOR UPDATE OF rt",
				  1, &type, &arg, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	cred_spi_uuid(0, 1, &row->session_id);
	cred_spi_uuid(0, 2, &row->org_id);
	cred_spi_uuid(0, 3, &row->user_id);
	row->used = cred_spi_bool(0, 4, true);
	row->token_expires = cred_spi_timestamp(0, 5, 0);
	row->session_live = cred_spi_bool(0, 6, false) && !session_revocation_pending(&row->session_id);
	row->session_expires = cred_spi_timestamp(0, 7, 0);
	row->user_active = cred_spi_bool(0, 8, false);
	return true;
}

/* Event details naming a session (and a reason). */
static char *
session_details(const pg_uuid_t *session_id, const char *reason)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	cred_json_add_string(&buf, "session_id", cred_uuid_string(session_id));
	if (reason)
		cred_json_add_string(&buf, "reason", reason);
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* donatello.refresh(refresh_token text) returns jsonb */
Datum
donatello_refresh(PG_FUNCTION_ARGS)
{
	char	   *token;
	RefreshRow row;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	Oid			types[2] = {BYTEAOID, UUIDOID};
	Datum		args[2];
	char	   *fresh;
	Jsonb	   *result;

	if (PG_ARGISNULL(0))
		refresh_fail("refresh token is missing", NULL);
	token = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in refresh");
	if (!refresh_row(token, &row))
		refresh_fail("refresh token is invalid", "No session has such a refresh token.");
	if (row.used)
	{
		if (row.session_live)
		{
			session_revoke_defer(&row.org_id, &row.session_id, "refresh token reuse");
			security_event_defer(&row.org_id, &row.user_id, "session.refresh_reuse", NULL, NULL,
								 session_details(&row.session_id, "refresh token reuse"));
		}
		refresh_fail("refresh token was already used",
					 "Reusing a refresh token revokes its session; every token of the session is now invalid.");
	}
	if (!row.session_live)
		refresh_fail("the session of this refresh token has been revoked", NULL);
	if (!row.user_active)
		refresh_fail("the user of this session is deactivated", NULL);
	if (row.token_expires <= now || row.session_expires <= now)
		refresh_fail("refresh token has expired", NULL);

	args[0] = PointerGetDatum(cred_sha256_bytea(token));
	args[1] = cred_uuid_datum(&row.session_id);
	cred_spi_exec("UPDATE donatello.refresh_tokens SET used_at = now() WHERE token_hash = $1",
				  1, types, args, NULL, SPI_OK_UPDATE);
	cred_spi_exec("UPDATE donatello.sessions SET refreshed_at = now() WHERE id = $2 AND $1 IS NOT NULL",
				  2, types, args, NULL, SPI_OK_UPDATE);
	fresh = refresh_token_insert(&row.org_id, &row.session_id, row.session_expires);
	security_event_record(&row.org_id, &row.user_id, "session.refreshed", NULL, NULL,
						  session_details(&row.session_id, NULL));
	result = tokens_response(&row.user_id, &row.org_id, &row.session_id, fresh);
	result = (Jsonb *) SPI_datumTransfer(PointerGetDatum(result), false, -1);
	SPI_finish();
	PG_RETURN_JSONB_P(result);
}

/* Revoke one session now (SPI connected); false when it was not live. */
static bool
session_revoke_now(const pg_uuid_t *session_id, const char *reason, pg_uuid_t *org_id,
				   pg_uuid_t *user_id, bool *exists)
{
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		args[2];
	bool		was_live;

	args[0] = cred_uuid_datum(session_id);
	args[1] = CStringGetTextDatum(reason);
	cred_spi_exec("SELECT org_id, user_id, revoked_at IS NULL FROM donatello.sessions WHERE id = $1 FOR UPDATE",
				  1, types, args, NULL, SPI_OK_SELECT);
	*exists = SPI_processed == 1;
	if (!*exists)
		return false;
	cred_spi_uuid(0, 1, org_id);
	cred_spi_uuid(0, 2, user_id);
	was_live = cred_spi_bool(0, 3, false);
	if (was_live)
		cred_spi_exec("UPDATE donatello.sessions SET revoked_at = now(), revoked_reason = $2 WHERE id = $1",
					  2, types, args, NULL, SPI_OK_UPDATE);
	return was_live;
}

/* donatello.logout(refresh_token text) */
Datum
donatello_logout(PG_FUNCTION_ARGS)
{
	RefreshRow row;
	pg_uuid_t	org_id,
				user_id;
	bool		exists;

	if (PG_ARGISNULL(0))
		refresh_fail("refresh token is missing", NULL);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in logout");
	if (!refresh_row(text_to_cstring(PG_GETARG_TEXT_PP(0)), &row))
		refresh_fail("refresh token is invalid", "No session has such a refresh token.");
	if (session_revoke_now(&row.session_id, "logout", &org_id, &user_id, &exists))
		security_event_record(&org_id, &user_id, "session.logout", NULL, NULL,
							  session_details(&row.session_id, NULL));
	SPI_finish();
	PG_RETURN_VOID();
}

/* donatello.revoke_session(session_id uuid, reason text) */
Datum
donatello_revoke_session(PG_FUNCTION_ARGS)
{
	pg_uuid_t	session_id,
				org_id,
				user_id;
	bool		exists;
	char	   *reason;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errhidestmt(true),  errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("session_id must not be null")));
	memcpy(&session_id, PG_GETARG_UUID_P(0), sizeof(pg_uuid_t));
	reason = PG_ARGISNULL(1) ? "revoked" : text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in revoke_session");
	if (session_revoke_now(&session_id, reason, &org_id, &user_id, &exists))
		security_event_record(&org_id, &user_id, "session.revoked", NULL, NULL,
							  session_details(&session_id, reason));
	if (!exists)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("session %s does not exist", cred_uuid_string(&session_id))));
	SPI_finish();
	PG_RETURN_VOID();
}
