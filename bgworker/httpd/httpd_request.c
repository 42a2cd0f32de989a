/*
 * httpd_request.c
 *	  One HTTP request, from its target to its response: decoding the target,
 *	  the route table, the transaction the route runs in (as the principal,
 *	  with PostgREST's request.* settings), and turning any error raised on
 *	  the way into a PostgREST error body.
 *
 * Errors. Code on the request path never returns an error: it raises one.
 * An HTTP-layer condition (bad filter, unknown relation, 406, 413 ...) is
 * raised with httpd_fail(), which remembers the status and PostgREST code;
 * anything else is a PostgreSQL error whose SQLSTATE picks the status
 * (httpd_response.c). Either way the transaction rolls back, and libmicrohttpd
 * never sees a longjmp: httpd_request_handle catches everything.
 */
#include "postgres.h"

#include <math.h>
#include <microhttpd.h>

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"

#include "donatello.h"
#include "bgworker/httpd/httpd.h"

/*
 * The route table, matched in order. An entry names a path (or, with
 * is_prefix, a path prefix whose remainder, decoded, is the handler's tail),
 * the methods it accepts, whether it runs inside the request's transaction
 * as the authenticated principal, and its label in /metrics.
 *
 * A raw route that serves bytes from a SQL function, such as
 * GET /images/{id}?exp=&sig= (httpd_image.c, the example to copy), is an
 * entry before the catch-all "/": its handler reads tail (the id) and
 * httpd_query_param(req, "exp") / (req, "sig"), calls its SQL function with
 * parameters (a saved plan), and fills resp->body with the bytes
 * (appendBinaryStringInfo), resp->content_type and its headers
 * (httpd_add_header). Query parameters are decoded for every route, but
 * filters, select= and order= are parsed only by the relation and rpc
 * handlers, so a raw route never meets them.
 */
const HttpRoute http_routes[] = {
	{"/", false, HTTP_GET | HTTP_HEAD, true, "openapi", httpd_route_openapi},
	{"/health", false, HTTP_GET | HTTP_HEAD, true, "health", httpd_route_health},
	{"/metrics", false, HTTP_GET | HTTP_HEAD, false, "metrics", httpd_route_metrics},
	{"/rpc/", true, HTTP_GET | HTTP_HEAD | HTTP_POST, true, "rpc", httpd_route_rpc},
	{"/images/", true, HTTP_GET | HTTP_HEAD, true, "image", httpd_route_image},
	{"/", true, HTTP_GET | HTTP_HEAD | HTTP_POST | HTTP_PATCH | HTTP_DELETE, true, "relation",
	httpd_route_relation},
};
const int	http_route_count = lengthof(http_routes);

/* The error raised by httpd_fail(), waiting for the catch in run_route(). */
typedef struct PendingError
{
	bool		set;
	int			status;
	char	   *code;
	char	   *message;
	char	   *details;
	char	   *hint;
} PendingError;

static PendingError pending_error;
static HttpRequest *current_request = NULL;

/* palloc0 for the parser (httpd_parse.c): the current memory context. */
void *
hp_alloc(size_t size)
{
	return palloc0(size);
}

/*
 * A new request from its raw target (libmicrohttpd's URI log callback): its
 * own memory context, the decoded path and query parameters. A target that
 * cannot be decoded is remembered and answered 400 later.
 */
HttpRequest *
httpd_request_new(const char *uri)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "donatello httpd request",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	HttpRequest *req = palloc0(sizeof(HttpRequest));
	const char *q = strchr(uri, '?');
	size_t		pathlen = q ? (size_t) (q - uri) : strlen(uri);
	const char *err = NULL;

	req->cxt = cxt;
	INSTR_TIME_SET_CURRENT(req->started_at);
	req->raw_uri = pstrdup(uri);
	req->route = http_route_count;
	initStringInfo(&req->body);
	if (!hp_percent_decode(uri, pathlen, false, &req->path, &err) ||
		(q != NULL && !hp_parse_query_string(q + 1, &req->params, &req->nparams, &err)))
	{
		req->bad_target = true;
		req->bad_target_reason = err;
		if (req->path == NULL)
			req->path = pstrdup("/");
	}
	MemoryContextSwitchTo(old);
	return req;
}

/* A request header's value (case-insensitive name), or NULL. */
const char *
httpd_header(HttpRequest *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

/* The first decoded query parameter with this key, or NULL. */
const char *
httpd_query_param(HttpRequest *req, const char *key)
{
	int			i;

	for (i = 0; i < req->nparams; i++)
		if (strcmp(req->params[i].key, key) == 0)
			return req->params[i].value;
	return NULL;
}

/* Add a response header (copied into the request's context). */
void
httpd_add_header(HttpRequest *req, HttpResponse *resp, const char *name, const char *value)
{
	MemoryContext old = MemoryContextSwitchTo(req->cxt);
	HttpHeader *h = palloc(sizeof(HttpHeader));

	h->name = pstrdup(name);
	h->value = pstrdup(value);
	resp->headers = lappend(resp->headers, h);
	MemoryContextSwitchTo(old);
}

/*
 * Raise an HTTP-layer error: status and PostgREST-style code (not a
 * SQLSTATE). Rolls back like any error.
 */
void
httpd_fail(int status, const char *code, const char *message, const char *details, const char *hint)
{
	MemoryContext cxt = current_request ? current_request->cxt : TopMemoryContext;

	pending_error.set = true;
	pending_error.status = status;
	pending_error.code = MemoryContextStrdup(cxt, code);
	pending_error.message = MemoryContextStrdup(cxt, message);
	pending_error.details = details ? MemoryContextStrdup(cxt, details) : NULL;
	pending_error.hint = hint ? MemoryContextStrdup(cxt, hint) : NULL;
	ereport(ERROR,
			(errcode(ERRCODE_DN_INVALID_ARGUMENT),
			 errmsg("%s", message),
			 details ? errdetail("%s", details) : 0,
			 hint ? errhint("%s", hint) : 0));
}

/* Set an error response. */
static void
set_error(HttpResponse *resp, int status, const char *code, const char *message,
		  const char *details, const char *hint)
{
	resp->status = status;
	resp->empty = false;
	resp->content_type = NULL;
	resetStringInfo(&resp->body);
	httpd_error_body(&resp->body, code, message, details, hint);
}

/* The method's bit. */
static int
method_bit(const char *m)
{
	if (strcmp(m, "GET") == 0)
		return HTTP_GET;
	if (strcmp(m, "HEAD") == 0)
		return HTTP_HEAD;
	if (strcmp(m, "POST") == 0)
		return HTTP_POST;
	if (strcmp(m, "PATCH") == 0)
		return HTTP_PATCH;
	if (strcmp(m, "DELETE") == 0)
		return HTTP_DELETE;
	if (strcmp(m, "OPTIONS") == 0)
		return HTTP_OPTIONS;
	if (strcmp(m, "PUT") == 0)
		return HTTP_PUT;
	return HTTP_OTHER;
}

/* Read Prefer and Accept into the request. */
static void
read_preferences(HttpRequest *req)
{
	const char *prefer = httpd_header(req, "Prefer");
	const char *accept = httpd_header(req, "Accept");

	if (prefer != NULL)
	{
		char	   *copy = pstrdup(prefer);
		char	   *save = NULL;
		char	   *tok;

		for (tok = strtok_r(copy, ",;", &save); tok; tok = strtok_r(NULL, ",;", &save))
		{
			while (*tok == ' ')
				tok++;
			if (strncmp(tok, "return=representation", 21) == 0)
				req->return_representation = true;
			else if (strncmp(tok, "return=headers-only", 19) == 0)
				req->return_headers_only = true;
			else if (strncmp(tok, "count=", 6) == 0)
				req->count_exact = true;	/* planned and estimated are exact here */
			else if (strncmp(tok, "resolution=merge-duplicates", 27) == 0)
				req->merge_duplicates = true;
			else if (strncmp(tok, "resolution=ignore-duplicates", 28) == 0)
				req->ignore_duplicates = true;
			else if (strncmp(tok, "tx=rollback", 11) == 0)
				req->tx_rollback = true;
		}
	}
	if (accept != NULL)
	{
		if (strstr(accept, "application/vnd.pgrst.object+json") != NULL)
			req->accept_object = true;
		else if (strstr(accept, "json") == NULL && strstr(accept, "*/*") == NULL &&
				 strstr(accept, "application/*") == NULL && accept[0] != '\0')
			httpd_fail(406, "PGRST107", "None of these media types are available",
					   accept, "Ask for application/json.");
	}
}

/* Run a route inside its own transaction, as the request's principal. */
static void
run_route(HttpRequest *req, HttpResponse *resp, const HttpRoute *route, const char *tail)
{
	volatile bool timeout_on = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	MemoryContextSwitchTo(req->cxt);
	pgstat_report_activity(STATE_RUNNING, req->raw_uri);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed in the HTTP worker");
		PushActiveSnapshot(GetTransactionSnapshot());
		if (http_statement_timeout_ms > 0)
		{
			enable_timeout_after(STATEMENT_TIMEOUT, http_statement_timeout_ms);
			timeout_on = true;
		}
		httpd_authenticate(req);
		read_preferences(req);
		httpd_apply_principal(req);
		route->handler(req, resp, tail);
		if (timeout_on)
			disable_timeout(STATEMENT_TIMEOUT, false);
		timeout_on = false;
		PopActiveSnapshot();
		SPI_finish();
		MemoryContextSwitchTo(req->cxt);
		if (req->tx_rollback)
			AbortCurrentTransaction();
		else
			CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		if (timeout_on)
			disable_timeout(STATEMENT_TIMEOUT, false);
		QueryCancelPending = false;
		MemoryContextSwitchTo(req->cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(req->cxt);
		if (pending_error.set)
			set_error(resp, pending_error.status, pending_error.code, pending_error.message,
					  pending_error.details, pending_error.hint);
		else
		{
			int			status = httpd_status_for_sqlstate(edata->sqlerrcode, req->authenticated);

			set_error(resp, status, unpack_sql_state(edata->sqlerrcode), edata->message,
					  edata->detail, edata->hint);
			if (status >= 500)
				ereport(LOG,
						(errmsg("donatello httpd: %s %s failed: %s", req->method_name,
								req->path, edata->message)));
		}
		if (resp->status == 401)
		{
			StringInfoData h;

			initStringInfo(&h);
			if (edata->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE)
				appendStringInfoString(&h, "Bearer");	/* anonymous: credentials needed */
			else
			{
				appendStringInfoString(&h, "Bearer error=\"invalid_token\", error_description=\"");
				for (const char *c = edata->message; c && *c; c++)
					if (*c != '"' && *c != '\\' && (unsigned char) *c >= 0x20)
						appendStringInfoChar(&h, *c);
				appendStringInfoChar(&h, '"');
			}
			httpd_add_header(req, resp, "WWW-Authenticate", h.data);
		}
		FreeErrorData(edata);
	}
	PG_END_TRY();
	pending_error.set = false;
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Answer a request: validate what libmicrohttpd gave us, find the route,
 * run it, add CORS headers and count it. Never raises.
 */
void
httpd_request_handle(HttpRequest *req, HttpResponse *resp)
{
	const HttpRoute *route = NULL;
	const char *tail = "";
	int			i;
	instr_time	now;
	bool		method_known = false;

	current_request = req;
	resp->status = 200;
	req->method = method_bit(req->method_name);

	if (req->bad_target)
		set_error(resp, 400, "PGRST100", "Could not parse the request target",
				  req->bad_target_reason, "Percent-encode reserved characters (RFC 3986).");
	else if (req->body_too_large)
	{
		char		details[128];

		snprintf(details, sizeof(details), "The request body is larger than %d bytes.", http_max_body_size);
		set_error(resp, 413, "DNH01", "Request body too large", details,
				  "Send a smaller body, or raise donatello.http_max_body_size.");
	}
	else if (!httpd_extension_ready && strcmp(req->path, "/metrics") != 0)
	{
		set_error(resp, 503, "PGRST002", "donatello is not installed in this database yet",
				  psprintf("The extension does not exist in database \"%s\".", donatello_database),
				  "Run CREATE EXTENSION donatello there; the HTTP workers notice within a second.");
		httpd_add_header(req, resp, "Retry-After", "1");
	}
	else if (req->method == HTTP_OPTIONS)
	{
		resp->status = 200;
		resp->empty = true;
		httpd_add_header(req, resp, "Allow", "GET, HEAD, POST, PATCH, DELETE, OPTIONS");
		httpd_cors_headers(req, resp, true);
	}
	else
	{
		for (i = 0; i < http_route_count; i++)
		{
			const HttpRoute *r = &http_routes[i];
			size_t		plen = strlen(r->prefix);

			if (!r->is_prefix)
			{
				if (strcmp(req->path, r->prefix) != 0)
					continue;
			}
			else if (strncmp(req->path, r->prefix, plen) != 0 || req->path[plen] == '\0' ||
					 strchr(req->path + plen, '/') != NULL)
				continue;
			if ((r->methods & req->method) == 0)
			{
				/* another route may take this path with this method */
				method_known = true;
				continue;
			}
			route = r;
			req->route = i;
			tail = req->path + (r->is_prefix ? plen : strlen(req->path));
			break;
		}
		if (route == NULL && method_known)
		{
			set_error(resp, 405, "DNH02", "Method not allowed",
					  psprintf("%s is not allowed on %s", req->method_name, req->path), NULL);
		}
		else if (route == NULL)
			set_error(resp, 404, "PGRST125", "Invalid path specified in request URL",
					  NULL, "Relations are /{name}, functions /rpc/{name}.");
		else if (route->transaction)
			run_route(req, resp, route, tail);
		else
		{
			PG_TRY();
			{
				route->handler(req, resp, tail);
			}
			PG_CATCH();
			{
				ErrorData  *edata;

				MemoryContextSwitchTo(req->cxt);
				edata = CopyErrorData();
				FlushErrorState();
				if (IsTransactionState())
					AbortCurrentTransaction();
				MemoryContextSwitchTo(req->cxt);
				set_error(resp, 500, unpack_sql_state(edata->sqlerrcode), edata->message,
						  edata->detail, edata->hint);
			}
			PG_END_TRY();
			pending_error.set = false;
		}
	}
	if (req->rate_limited_header)
	{
		httpd_add_header(req, resp, "X-RateLimit-Limit", psprintf("%d", req->rate_limit));
		httpd_add_header(req, resp, "X-RateLimit-Remaining", psprintf("%d", req->rate_remaining));
		httpd_add_header(req, resp, "X-RateLimit-Reset", psprintf("%ld", (long) ceil(req->rate_reset)));
		if (resp->status == 429)
			httpd_add_header(req, resp, "Retry-After", psprintf("%ld", Max(1L, (long) ceil(req->rate_reset))));
	}
	if (req->method != HTTP_OPTIONS)
		httpd_cors_headers(req, resp, false);
	if (resp->status == 204)
		resp->empty = true;
	INSTR_TIME_SET_CURRENT(now);
	INSTR_TIME_SUBTRACT(now, req->started_at);
	httpd_metrics_record(req->route, req->method, resp->status, INSTR_TIME_GET_DOUBLE(now));
	current_request = NULL;
}
