/*
 * claims.c
 *	  The current principal: donatello.current_user_id() and
 *	  donatello.current_org_id(), read from the request.jwt.claims setting
 *	  (a JSON object, as PostgREST sets it): "sub" is the user id, "org" the
 *	  organization id.
 *
 * Row-level security calls these once per row, so the parsed claims are kept
 * with a copy of the raw setting and parsed again only when it changes.
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "donatello.h"
#include "tenancy/claims.h"

PG_FUNCTION_INFO_V1(donatello_current_user_id);
PG_FUNCTION_INFO_V1(donatello_current_org_id);

#define CLAIMS_SETTING "request.jwt.claims"

typedef struct ParsedClaims
{
	char	   *raw;			/* copy of the setting, in TopMemoryContext */
	bool		has_user;
	pg_uuid_t	user_id;
	bool		has_org;
	pg_uuid_t	org_id;
} ParsedClaims;

static ParsedClaims claims = {0};

/* Is s (len bytes) a uuid in canonical or 32-hex-digit form? */
bool
donatello_looks_like_uuid(const char *s, int len)
{
	int			i,
				digits = 0;

	if (len != 36 && len != 32)
		return false;
	for (i = 0; i < len; i++)
	{
		if (len == 36 && (i == 8 || i == 13 || i == 18 || i == 23))
		{
			if (s[i] != '-')
				return false;
		}
		else if (isxdigit((unsigned char) s[i]))
			digits++;
		else
			return false;
	}
	return digits == 32;
}

/* Read one string claim as a uuid; false when absent or JSON null. */
static bool
claim_uuid(Jsonb *jb, const char *key, pg_uuid_t *out)
{
	JsonbValue	v;
	char	   *s;

	if (!getKeyJsonValueFromContainer(&jb->root, key, strlen(key), &v) || v.type == jbvNull)
		return false;
	if (v.type != jbvString || !donatello_looks_like_uuid(v.val.string.val, v.val.string.len))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("the \"%s\" claim of %s is not a uuid", key, CLAIMS_SETTING),
				 errhint("donatello identifies users and organizations by uuid.")));
	s = pnstrdup(v.val.string.val, v.val.string.len);
	memcpy(out, DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(s))), sizeof(pg_uuid_t));
	pfree(s);
	return true;
}

/* Parse the setting if it changed since the last call. */
static void
claims_refresh(void)
{
	const char *raw = GetConfigOption(CLAIMS_SETTING, true, false);
	ParsedClaims fresh = {0};
	Jsonb	   *jb;

	if (raw == NULL || raw[0] == '\0')
	{
		if (claims.raw)
			pfree(claims.raw);
		memset(&claims, 0, sizeof(claims));
		return;
	}
	if (claims.raw != NULL && strcmp(raw, claims.raw) == 0)
		return;

	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(raw)));
	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", CLAIMS_SETTING)));
	fresh.has_user = claim_uuid(jb, "sub", &fresh.user_id);
	fresh.has_org = claim_uuid(jb, "org", &fresh.org_id);
	fresh.raw = MemoryContextStrdup(TopMemoryContext, raw);

	if (claims.raw)
		pfree(claims.raw);
	claims = fresh;
}

/* The current principal's user id; false when there is none. */
bool
donatello_claims_user_id(pg_uuid_t *out)
{
	claims_refresh();
	if (claims.has_user)
		memcpy(out, &claims.user_id, sizeof(pg_uuid_t));
	return claims.has_user;
}

/* The current principal's organization id; false when there is none. */
bool
donatello_claims_org_id(pg_uuid_t *out)
{
	claims_refresh();
	if (claims.has_org)
		memcpy(out, &claims.org_id, sizeof(pg_uuid_t));
	return claims.has_org;
}

/* Return a uuid copy as a Datum. */
static Datum
uuid_datum(const pg_uuid_t *u)
{
	pg_uuid_t  *copy = palloc(sizeof(pg_uuid_t));

	memcpy(copy, u, sizeof(pg_uuid_t));
	return UUIDPGetDatum(copy);
}

/* donatello.current_user_id() */
Datum
donatello_current_user_id(PG_FUNCTION_ARGS)
{
	pg_uuid_t	u;

	if (!donatello_claims_user_id(&u))
		PG_RETURN_NULL();
	PG_RETURN_DATUM(uuid_datum(&u));
}

/* donatello.current_org_id() */
Datum
donatello_current_org_id(PG_FUNCTION_ARGS)
{
	pg_uuid_t	u;

	if (!donatello_claims_org_id(&u))
		PG_RETURN_NULL();
	PG_RETURN_DATUM(uuid_datum(&u));
}
