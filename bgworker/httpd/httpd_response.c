/*
 * httpd_response.c
 *	  Response shaping shared by every route: the SQLSTATE -> HTTP status
 *	  table (PostgREST's, plus donatello's DN class), the error body
 *	  {"code","message","details","hint"}, JSON strings, and CORS.
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/varlena.h"

#include "donatello.h"
#include "bgworker/httpd/httpd.h"

/* donatello's own codes (ARCHITECTURE.md, docs/errors.md) */
static const struct
{
	const char *sqlstate;
	int			status;
}			dn_statuses[] =
{
	{"DNA01", 401}, {"DNA02", 403}, {"DNA03", 401}, {"DNA04", 401}, {"DNA05", 403},
	{"DNA06", 400}, {"DNP01", 403}, {"DNB01", 402}, {"DNB02", 402}, {"DNB03", 409}, {"DNB04", 409},
	{"DNR01", 429}, {"DNS01", 403}, {"DNS02", 403}, {"DNM01", 503}, {"DNV01", 400},
	{"DNV02", 404},
};

/*
 * The HTTP status of an error, from its SQLSTATE: the DN class by table,
 * PT### as PostgREST's "raise with a status" convention, then PostgREST's
 * mapping. 42501 is 401 for an anonymous request, 403 otherwise.
 */
int
httpd_status_for_sqlstate(int sqlerrcode, bool authenticated)
{
	const char *s = unpack_sql_state(sqlerrcode);
	int			i;

	if (s[0] == 'D' && s[1] == 'N')
	{
		for (i = 0; i < (int) lengthof(dn_statuses); i++)
			if (strcmp(s, dn_statuses[i].sqlstate) == 0)
				return dn_statuses[i].status;
		return 400;
	}
	if (s[0] == 'P' && s[1] == 'T' && isdigit((unsigned char) s[2]) &&
		isdigit((unsigned char) s[3]) && isdigit((unsigned char) s[4]))
	{
		int			status = atoi(s + 2);

		if (status >= 100 && status <= 599)
			return status;
	}
	if (strcmp(s, "42501") == 0)
		return authenticated ? 403 : 401;
	if (strcmp(s, "23503") == 0 || strcmp(s, "23505") == 0)
		return 409;
	if (strcmp(s, "25006") == 0)
		return 405;
	if (strcmp(s, "P0001") == 0)
		return 400;
	if (strcmp(s, "42883") == 0 || strcmp(s, "42P01") == 0)
		return 404;
	if (strcmp(s, "42P17") == 0)
		return 500;
	if (strcmp(s, "57014") == 0)
		return 504;				/* statement timeout (PostgREST answers 500 or 504) */
	if (strncmp(s, "08", 2) == 0 || strncmp(s, "53", 2) == 0)
		return 503;
	if (strncmp(s, "0L", 2) == 0 || strncmp(s, "0P", 2) == 0 || strncmp(s, "28", 2) == 0)
		return 403;
	if (strncmp(s, "09", 2) == 0 || strncmp(s, "25", 2) == 0 || strncmp(s, "2D", 2) == 0 ||
		strncmp(s, "38", 2) == 0 || strncmp(s, "39", 2) == 0 || strncmp(s, "3B", 2) == 0 ||
		strncmp(s, "40", 2) == 0 || strncmp(s, "54", 2) == 0 || strncmp(s, "55", 2) == 0 ||
		strncmp(s, "57", 2) == 0 || strncmp(s, "58", 2) == 0 || strncmp(s, "F0", 2) == 0 ||
		strncmp(s, "HV", 2) == 0 || strncmp(s, "P0", 2) == 0 || strncmp(s, "XX", 2) == 0)
		return 500;
	return 400;
}

/* Append s as a JSON string (or null). */
void
httpd_json_string(StringInfo buf, const char *s)
{
	if (s == NULL)
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, s);
}

/* {"code": ..., "message": ..., "details": ..., "hint": ...} */
void
httpd_error_body(StringInfo buf, const char *code, const char *message,
				 const char *details, const char *hint)
{
	appendStringInfoString(buf, "{\"code\":");
	httpd_json_string(buf, code);
	appendStringInfoString(buf, ",\"message\":");
	httpd_json_string(buf, message);
	appendStringInfoString(buf, ",\"details\":");
	httpd_json_string(buf, details);
	appendStringInfoString(buf, ",\"hint\":");
	httpd_json_string(buf, hint);
	appendStringInfoChar(buf, '}');
}

/* Is origin allowed by donatello.http_cors_origins? Sets *any for "*". */
static bool
origin_allowed(const char *origin, bool *any)
{
	char	   *copy = pstrdup(http_cors_origins);
	char	   *save = NULL;
	char	   *tok;

	*any = false;
	for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
	{
		if (strcmp(tok, "*") == 0)
		{
			*any = true;
			return true;
		}
		if (strcmp(tok, origin) == 0)
			return true;
	}
	return false;
}

/*
 * CORS headers for a request that carries Origin and whose origin is
 * allowed; for a preflight (OPTIONS), the methods and headers too.
 */
void
httpd_cors_headers(HttpRequest *req, HttpResponse *resp, bool preflight)
{
	const char *origin = httpd_header(req, "Origin");
	bool		any;

	if (origin == NULL || http_cors_origins[0] == '\0' || !origin_allowed(origin, &any))
		return;
	httpd_add_header(req, resp, "Access-Control-Allow-Origin", any ? "*" : origin);
	if (!any)
	{
		httpd_add_header(req, resp, "Vary", "Origin");
		httpd_add_header(req, resp, "Access-Control-Allow-Credentials", "true");
	}
	httpd_add_header(req, resp, "Access-Control-Expose-Headers",
					 "Content-Range, Content-Location, Range-Unit, Retry-After, "
					 "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset");
	if (preflight)
	{
		const char *asked = httpd_header(req, "Access-Control-Request-Headers");

		httpd_add_header(req, resp, "Access-Control-Allow-Methods",
						 "GET, HEAD, POST, PATCH, DELETE, OPTIONS");
		httpd_add_header(req, resp, "Access-Control-Allow-Headers",
						 asked ? asked : "Authorization, Content-Type, Accept, Prefer, Range, "
						 "Accept-Profile, Content-Profile, X-API-Key, apikey");
		httpd_add_header(req, resp, "Access-Control-Max-Age", "86400");
	}
}
