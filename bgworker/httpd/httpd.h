/*
 * httpd.h
 *	  The PostgREST-style HTTP layer: donatello.http_workers background
 *	  workers share one listening socket (opened by the postmaster) and each
 *	  runs libmicrohttpd in external-select mode, single-threaded, in its own
 *	  process. A request is handled to the end inside the event loop's
 *	  callback: one transaction, the principal's role set locally, one SQL
 *	  statement built from catalog-checked identifiers and parameters.
 *
 * Files:
 *	  httpd_main.c		settings, the shared socket, the worker and its event loop
 *	  httpd_request.c	one request: body, transaction, route table, error capture
 *	  httpd_auth.c		JWT / API key / anonymous principal, rate limit
 *	  httpd_parse.c		query-string and filter grammar (no PostgreSQL dependency)
 *	  httpd_query.c		query string -> checked SQL, saved plans, JSON results (httpd_query.h)
 *	  httpd_relation.c	/{relation}: reads, inserts, upserts, updates, deletes
 *	  httpd_rpc.c		/rpc/{function}: overload choice, call, result shapes
 *	  httpd_response.c	statuses, error bodies (SQLSTATE -> HTTP), CORS
 *	  httpd_openapi.c	GET / (OpenAPI 3)
 *	  httpd_metrics.c	shared counters and GET /metrics
 *	  httpd_image.c		GET /images/{id}?exp=&sig= (signed image URLs)
 *
 * Adding a route: append an entry to http_routes[] in httpd_request.c (see
 * the comment there); a handler receives the decoded path tail and the
 * decoded query parameters, runs inside the request's transaction and fills
 * an HttpResponse. The parser is not involved.
 */
#ifndef DONATELLO_HTTPD_H
#define DONATELLO_HTTPD_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "portability/instr_time.h"

#include "bgworker/httpd/httpd_parse.h"

struct MHD_Connection;

/* methods, as bits so that a route can accept several */
#define HTTP_GET		0x01
#define HTTP_HEAD		0x02
#define HTTP_POST		0x04
#define HTTP_PATCH		0x08
#define HTTP_DELETE		0x10
#define HTTP_OPTIONS	0x20
#define HTTP_PUT		0x40
#define HTTP_OTHER		0x80

/* settings (docs/settings.md, "HTTP layer") */
extern int	http_port;
extern char *http_listen_address;
extern int	http_workers;
extern char *http_schemas;
extern int	http_statement_timeout_ms;
extern int	http_max_body_size;
extern int	http_max_header_size;
extern int	http_max_connections;
extern int	http_idle_timeout_s;
extern char *http_cors_origins;
extern char *http_roles;
extern int	http_shutdown_timeout_ms;

/* One request, from its first line to the response; lives in cxt. */
typedef struct HttpRequest
{
	MemoryContext cxt;
	struct MHD_Connection *conn;
	char	   *raw_uri;		/* as received: path and query string */
	const char *method_name;
	int			method;			/* HTTP_* bit */
	char	   *path;			/* percent-decoded path */
	HpParam    *params;			/* percent-decoded query parameters */
	int			nparams;
	StringInfoData body;
	bool		started;		/* the access handler has seen the headers */
	bool		body_too_large;
	bool		bad_target;		/* path or query string could not be decoded */
	const char *bad_target_reason;
	instr_time	started_at;
	int			route;			/* index in the metrics' route table */

	/* principal (httpd_auth.c) */
	const char *role;
	char	   *claims;			/* JSON text */
	bool		authenticated;
	bool		via_api_key;
	bool		rate_limited_header;	/* send X-RateLimit-* */
	int			rate_limit;
	int			rate_remaining;
	double		rate_reset;

	/* Prefer and Accept */
	bool		return_representation;
	bool		return_headers_only;
	bool		count_exact;
	bool		merge_duplicates;
	bool		ignore_duplicates;
	bool		tx_rollback;
	bool		accept_object;
	Oid			schema;			/* the schema the request works in */
	char	   *schema_name;
} HttpRequest;

/* An extra response header. */
typedef struct HttpHeader
{
	char	   *name;
	char	   *value;
} HttpHeader;

typedef struct HttpResponse
{
	int			status;
	StringInfoData body;
	const char *content_type;	/* NULL: application/json; charset=utf-8 */
	List	   *headers;		/* HttpHeader *, in the request's context */
	bool		empty;			/* no body (204, return=minimal) */
} HttpResponse;

/* A route handler: tail is the decoded path after the route's prefix. */
typedef void (*HttpRouteHandler) (HttpRequest *req, HttpResponse *resp, const char *tail);

typedef struct HttpRoute
{
	const char *prefix;			/* path, or path prefix when is_prefix */
	bool		is_prefix;
	int			methods;		/* HTTP_* bits it accepts */
	bool		transaction;	/* runs inside the request's transaction, as the principal */
	const char *metric_name;	/* the "route" label in /metrics */
	HttpRouteHandler handler;
} HttpRoute;

extern const HttpRoute http_routes[];
extern const int http_route_count;

/* httpd_main.c */
extern bool httpd_extension_ready;
extern void httpd_init(void);
extern bool httpd_shutting_down(void);

/* httpd_request.c */
extern HttpRequest *httpd_request_new(const char *uri);
extern void httpd_request_handle(HttpRequest *req, HttpResponse *resp);
extern const char *httpd_header(HttpRequest *req, const char *name);
extern const char *httpd_query_param(HttpRequest *req, const char *key);
extern void httpd_add_header(HttpRequest *req, HttpResponse *resp, const char *name, const char *value);
extern void httpd_fail(int status, const char *code, const char *message,
					   const char *details, const char *hint) pg_attribute_noreturn();

/* httpd_auth.c */
extern void httpd_authenticate(HttpRequest *req);
extern void httpd_apply_principal(HttpRequest *req);
extern bool httpd_role_allowed(const char *role);

/* httpd_query.c, httpd_relation.c, httpd_rpc.c */
extern void httpd_route_rpc(HttpRequest *req, HttpResponse *resp, const char *tail);
extern void httpd_route_relation(HttpRequest *req, HttpResponse *resp, const char *tail);
extern void httpd_resolve_schema(HttpRequest *req, bool for_write);
extern List *httpd_exposed_schemas(void);

/* httpd_response.c */
extern int	httpd_status_for_sqlstate(int sqlerrcode, bool authenticated);
extern void httpd_error_body(StringInfo buf, const char *code, const char *message,
							 const char *details, const char *hint);
extern void httpd_json_string(StringInfo buf, const char *s);
extern void httpd_cors_headers(HttpRequest *req, HttpResponse *resp, bool preflight);

/* httpd_openapi.c */
extern void httpd_route_openapi(HttpRequest *req, HttpResponse *resp, const char *tail);

/* httpd_image.c */
extern void httpd_route_image(HttpRequest *req, HttpResponse *resp, const char *tail);

/* httpd_metrics.c */
extern void httpd_metrics_shmem_init(void);
extern void httpd_metrics_record(int route, int method, int status, double seconds);
extern void httpd_metrics_rate_limited(void);
extern void httpd_route_metrics(HttpRequest *req, HttpResponse *resp, const char *tail);
extern void httpd_route_health(HttpRequest *req, HttpResponse *resp, const char *tail);

#endif							/* DONATELLO_HTTPD_H */
