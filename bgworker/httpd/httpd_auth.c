/*
 * httpd_auth.c
 *	  Who is asking: a Bearer JWT (verified by the credentials part), an API
 *	  key (X-API-Key or apikey header), or nobody (donatello_anon). Then the
 *	  principal is installed for the transaction as PostgREST does it:
 *	  SET LOCAL ROLE, and request.jwt.claims, request.headers, request.method,
 *	  request.path set locally.
 *
 * An API key also takes one token from the key's rate-limit bucket; an
 * empty bucket answers 429. Invalid credentials raise DNA01/DNA03 from the
 * verifiers, which the request maps to 401 with WWW-Authenticate.
 */
#include "postgres.h"

#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>

#include "utils/builtins.h"
#include "utils/formatting.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/varlena.h"

#include "donatello.h"
#include "bgworker/httpd/httpd.h"
#include "credentials/apikey.h"
#include "credentials/jwt.h"

#define ANON_ROLE "donatello_anon"
#define API_KEY_ROLE "donatello_user"

/* Is role among donatello.http_roles? */
bool
httpd_role_allowed(const char *role)
{
	char	   *copy = pstrdup(http_roles);
	List	   *names = NIL;
	ListCell   *lc;
	bool		found = false;

	if (!SplitIdentifierString(copy, ',', &names))
		return false;
	foreach(lc, names)
		if (strcmp((char *) lfirst(lc), role) == 0)
			found = true;
	return found;
}

/* The string value of a top-level key of a JSON object, or NULL. */
static char *
jsonb_get_text(Jsonb *jb, const char *key)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&jb->root, key, strlen(key), NULL);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* The JSON text of a top-level key's value, or "null". */
static char *
jsonb_get_json(Jsonb *jb, const char *key)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&jb->root, key, strlen(key), NULL);

	if (v == NULL)
		return pstrdup("null");
	return JsonbToCString(NULL, &JsonbValueToJsonb(v)->root, 0);
}

/* Bearer token: verify, then take the role claim. */
static void
authenticate_jwt(HttpRequest *req, const char *authorization)
{
	const char *token = authorization + 7;
	Jsonb	   *claims;
	char	   *role;

	while (*token == ' ')
		token++;
	claims = jwt_verify_cstring(token);
	role = jsonb_get_text(claims, "role");
	if (role == NULL)
		role = pstrdup(ANON_ROLE);
	if (!httpd_role_allowed(role))
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_TOKEN),
				 errmsg("the token's role is not allowed over HTTP"),
				 errdetail("Role \"%s\" is not in donatello.http_roles.", role),
				 errhint("Sign tokens with one of the roles listed in donatello.http_roles.")));
	req->role = role;
	req->claims = JsonbToCString(NULL, &claims->root, 0);
	req->authenticated = strcmp(role, ANON_ROLE) != 0;
}

/* API key: verify, turn into claims, take a rate-limit token. */
static void
authenticate_api_key(HttpRequest *req, const char *key)
{
	Jsonb	   *info = apikey_verify_cstring(key, NULL);
	char	   *key_id = jsonb_get_text(info, "key_id");
	char	   *user_id = jsonb_get_text(info, "user_id");
	char	   *org_id = jsonb_get_text(info, "org_id");
	StringInfoData claims;
	const char *limit = GetConfigOption("donatello.api_key_rate_limit", true, false);
	int			remaining = 0;
	double		reset = 0;
	bool		ok;

	if (key_id == NULL)
		elog(ERROR, "API key verification returned no key_id");
	initStringInfo(&claims);
	appendStringInfoString(&claims, "{\"sub\": ");
	httpd_json_string(&claims, user_id);
	appendStringInfoString(&claims, ", \"org\": ");
	httpd_json_string(&claims, org_id);
	appendStringInfoString(&claims, ", \"role\": \"" API_KEY_ROLE "\", \"key_id\": ");
	httpd_json_string(&claims, key_id);
	appendStringInfo(&claims, ", \"scopes\": %s}", jsonb_get_json(info, "scopes"));
	req->role = API_KEY_ROLE;
	req->claims = claims.data;
	req->authenticated = true;
	req->via_api_key = true;

	ok = apikey_rate_limit_take(key_id, &remaining, &reset);
	req->rate_limited_header = true;
	req->rate_limit = limit ? atoi(limit) : 0;
	req->rate_remaining = remaining;
	req->rate_reset = reset;
	if (!ok)
	{
		httpd_metrics_rate_limited();
		httpd_fail(429, "DNR01", "rate limit exceeded for this API key",
				   psprintf("The key may make %s requests per %s seconds.", limit ? limit : "?",
							GetConfigOption("donatello.api_key_rate_limit_period", true, false)),
				   psprintf("Retry after %ld seconds.", Max(1L, (long) ceil(reset))));
	}
}

/* Establish the request's principal (inside the request's transaction). */
void
httpd_authenticate(HttpRequest *req)
{
	const char *authorization = httpd_header(req, "Authorization");
	const char *key = httpd_header(req, "X-API-Key");

	if (key == NULL)
		key = httpd_header(req, "apikey");
	req->role = ANON_ROLE;
	req->claims = "{\"role\": \"" ANON_ROLE "\"}";
	req->authenticated = false;
	if (authorization != NULL)
	{
		if (pg_strncasecmp(authorization, "Bearer ", 7) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_DN_INVALID_TOKEN),
					 errmsg("the Authorization header is not a Bearer token"),
					 errhint("Send \"Authorization: Bearer <JWT>\", or an API key in X-API-Key.")));
		authenticate_jwt(req, authorization);
	}
	else if (key != NULL)
		authenticate_api_key(req, key);
}

/* libmicrohttpd header iterator: append "name": "value" with a lower-cased name. */
static enum MHD_Result
append_header(void *cls, enum MHD_ValueKind kind pg_attribute_unused(), const char *key, const char *value)
{
	StringInfo	buf = cls;
	char	   *lower;

	/* credentials stay out of settings that functions (and their logs) can read */
	if (pg_strcasecmp(key, "Authorization") == 0 || pg_strcasecmp(key, "X-API-Key") == 0 ||
		pg_strcasecmp(key, "apikey") == 0 || pg_strcasecmp(key, "Cookie") == 0)
		return MHD_YES;
	lower = asc_tolower(key, strlen(key));
	if (buf->len > 1)
		appendStringInfoString(buf, ", ");
	httpd_json_string(buf, lower);
	appendStringInfoString(buf, ": ");
	httpd_json_string(buf, value ? value : "");
	return MHD_YES;
}

/* Set one setting for the rest of the transaction. */
static void
set_local(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
							 true, 0, false);
}

/*
 * request.ip: the address of the client's end of the connection (what the
 * audit trail records when no X-Forwarded-For header is present).
 */
static void
set_client_address(HttpRequest *req)
{
	const union MHD_ConnectionInfo *info;
	char		text[INET6_ADDRSTRLEN];

	info = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (info != NULL && info->client_addr != NULL &&
		donatello_sockaddr_text(info->client_addr, text, sizeof(text)))
		set_local("request.ip", text);
}

/* SET LOCAL ROLE and the request.* settings, as PostgREST does. */
void
httpd_apply_principal(HttpRequest *req)
{
	StringInfoData headers;

	initStringInfo(&headers);
	appendStringInfoChar(&headers, '{');
	MHD_get_connection_values(req->conn, MHD_HEADER_KIND, append_header, &headers);
	appendStringInfoChar(&headers, '}');

	set_local("request.jwt.claims", req->claims);
	set_local("request.headers", headers.data);
	set_local("request.method", req->method_name);
	set_local("request.path", req->path);
	set_client_address(req);
	set_local("role", req->role);
}
