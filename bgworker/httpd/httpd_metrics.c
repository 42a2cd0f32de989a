/*
 * httpd_metrics.c
 *	  Counters of the HTTP layer in shared memory, shown by GET /metrics in
 *	  Prometheus' text format; and GET /health.
 *
 * Shared state: one HttpMetrics struct, every field an atomic counter
 * updated with pg_atomic_fetch_add_u64 by the workers that answer requests
 * and read without a lock by /metrics (a scrape may see one request counted
 * in the total and not yet in the histogram; Prometheus tolerates that).
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "utils/snapmgr.h"
#include "port/atomics.h"
#include "storage/shmem.h"

#include "donatello.h"
#include "bgworker/httpd/httpd.h"

#define METRIC_ROUTES	16		/* >= http_route_count + 1 ("unmatched") */
#define METRIC_METHODS	8
#define METRIC_BUCKETS	13

static const int metric_statuses[] = {
	200, 201, 204, 206, 400, 401, 402, 403, 404, 405, 406, 409, 413, 416, 429, 431, 500, 503, 504
};
#define METRIC_STATUSES (lengthof(metric_statuses) + 1)	/* + "other" */

static const double metric_buckets[METRIC_BUCKETS - 1] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5
};
static const char *const method_names[METRIC_METHODS] = {
	"GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS", "PUT", "other"
};

typedef struct HttpMetrics
{
	pg_atomic_uint64 requests[METRIC_ROUTES][METRIC_METHODS][METRIC_STATUSES];
	pg_atomic_uint64 latency[METRIC_ROUTES][METRIC_BUCKETS];	/* last: +Inf */
	pg_atomic_uint64 latency_sum_us[METRIC_ROUTES];
	pg_atomic_uint64 rate_limited;
} HttpMetrics;

static HttpMetrics *metrics = NULL;

/* shmem startup: create or attach the counters. */
static void
metrics_shmem_startup(void)
{
	bool		found;

	metrics = ShmemInitStruct("donatello http metrics", sizeof(HttpMetrics), &found);
	if (!found)
	{
		pg_atomic_uint64 *c = (pg_atomic_uint64 *) metrics;
		size_t		i;

		for (i = 0; i < sizeof(HttpMetrics) / sizeof(pg_atomic_uint64); i++)
			pg_atomic_init_u64(&c[i], 0);
	}
}

/* Reserve the counters' shared memory (from _PG_init). */
void
httpd_metrics_shmem_init(void)
{
	StaticAssertStmt(sizeof(HttpMetrics) % sizeof(pg_atomic_uint64) == 0, "HttpMetrics is counters only");
	donatello_shmem_register(MAXALIGN(sizeof(HttpMetrics)), 0, NULL, metrics_shmem_startup);
}

/* Index of a method bit. */
static int
method_index(int method)
{
	int			i;

	for (i = 0; i < METRIC_METHODS - 1; i++)
		if (method == (1 << i))
			return i;
	return METRIC_METHODS - 1;
}

/* Count one answered request. */
void
httpd_metrics_record(int route, int method, int status, double seconds)
{
	int			s,
				b;

	if (metrics == NULL)
		return;
	route = Min(route, METRIC_ROUTES - 1);
	for (s = 0; s < (int) lengthof(metric_statuses); s++)
		if (metric_statuses[s] == status)
			break;
	pg_atomic_fetch_add_u64(&metrics->requests[route][method_index(method)][s], 1);
	for (b = 0; b < METRIC_BUCKETS - 1; b++)
		if (seconds <= metric_buckets[b])
			break;
	pg_atomic_fetch_add_u64(&metrics->latency[route][b], 1);
	pg_atomic_fetch_add_u64(&metrics->latency_sum_us[route], (uint64) (seconds * 1e6));
}

/* Count one request refused by an API key's rate limit. */
void
httpd_metrics_rate_limited(void)
{
	if (metrics != NULL)
		pg_atomic_fetch_add_u64(&metrics->rate_limited, 1);
}

/* The /metrics label of a route index. */
static const char *
route_label(int r)
{
	return r < http_route_count ? http_routes[r].metric_name : "unmatched";
}

/*
 * The dispatcher's backlog: outbox rows waiting or in flight, by kind and
 * state, read in a short transaction of the worker's own (not as the
 * request's principal, which may not read donatello.outbox). The dispatcher
 * keeps no shared counters of its own; its outcomes are in the outbox.
 */
static void
append_dispatcher_backlog(StringInfo out)
{
	MemoryContext cxt = CurrentMemoryContext;
	uint64		i;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_execute("SELECT kind, state, count(*) FROM donatello.outbox"
						" WHERE state IN ('pending', 'sending') GROUP BY 1, 2 ORDER BY 1, 2",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "outbox query failed");
		appendStringInfoString(out,
							   "# HELP donatello_dispatcher_backlog Outbox rows waiting or being sent, by kind and state.\n"
							   "# TYPE donatello_dispatcher_backlog gauge\n");
		for (i = 0; i < SPI_processed; i++)
			appendStringInfo(out, "donatello_dispatcher_backlog{kind=\"%s\",state=\"%s\"} %s\n",
							 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
							 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2),
							 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3));
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		AbortCurrentTransaction();
		appendStringInfoString(out, "# donatello_dispatcher_backlog: the outbox could not be read\n");
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
}

/* Route: GET /metrics (no authentication; reads the counters, then the outbox). */
void
httpd_route_metrics(HttpRequest *req pg_attribute_unused(), HttpResponse *resp,
					const char *tail pg_attribute_unused())
{
	StringInfo	out = &resp->body;
	int			r,
				m,
				s,
				b;

	resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
	resp->status = 200;
	if (metrics == NULL)
		return;
	appendStringInfoString(out,
						   "# HELP donatello_http_requests_total HTTP requests answered, by route, method and status.\n"
						   "# TYPE donatello_http_requests_total counter\n");
	for (r = 0; r < Min(http_route_count + 1, METRIC_ROUTES); r++)
		for (m = 0; m < METRIC_METHODS; m++)
			for (s = 0; s < (int) METRIC_STATUSES; s++)
			{
				uint64		n = pg_atomic_read_u64(&metrics->requests[r][m][s]);

				if (n == 0)
					continue;
				if (s < (int) lengthof(metric_statuses))
					appendStringInfo(out, "donatello_http_requests_total{route=\"%s\",method=\"%s\",status=\"%d\"} " UINT64_FORMAT "\n",
									 route_label(r), method_names[m], metric_statuses[s], n);
				else
					appendStringInfo(out, "donatello_http_requests_total{route=\"%s\",method=\"%s\",status=\"other\"} " UINT64_FORMAT "\n",
									 route_label(r), method_names[m], n);
			}
	appendStringInfoString(out,
						   "# HELP donatello_http_request_duration_seconds Time from request line to response, by route.\n"
						   "# TYPE donatello_http_request_duration_seconds histogram\n");
	for (r = 0; r < Min(http_route_count + 1, METRIC_ROUTES); r++)
	{
		uint64		cumulative = 0;

		for (b = 0; b < METRIC_BUCKETS; b++)
		{
			cumulative += pg_atomic_read_u64(&metrics->latency[r][b]);
			if (b < METRIC_BUCKETS - 1)
				appendStringInfo(out, "donatello_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} " UINT64_FORMAT "\n",
								 route_label(r), metric_buckets[b], cumulative);
			else
				appendStringInfo(out, "donatello_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} " UINT64_FORMAT "\n",
								 route_label(r), cumulative);
		}
		appendStringInfo(out, "donatello_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n",
						 route_label(r), pg_atomic_read_u64(&metrics->latency_sum_us[r]) / 1e6);
		appendStringInfo(out, "donatello_http_request_duration_seconds_count{route=\"%s\"} " UINT64_FORMAT "\n",
						 route_label(r), cumulative);
	}
	appendStringInfo(out,
					 "# HELP donatello_http_rate_limited_total Requests refused by an API key's rate limit.\n"
					 "# TYPE donatello_http_rate_limited_total counter\n"
					 "donatello_http_rate_limited_total " UINT64_FORMAT "\n",
					 pg_atomic_read_u64(&metrics->rate_limited));
	appendStringInfo(out,
					 "# HELP donatello_http_workers Configured HTTP worker processes.\n"
					 "# TYPE donatello_http_workers gauge\n"
					 "donatello_http_workers %d\n", http_workers);
	append_dispatcher_backlog(out);
}

/* Route: GET /health: the database answers a query in a transaction. */
void
httpd_route_health(HttpRequest *req pg_attribute_unused(), HttpResponse *resp,
				   const char *tail pg_attribute_unused())
{
	if (SPI_execute("SELECT 1", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "health query failed");
	appendStringInfo(&resp->body, "{\"status\":\"ok\",\"version\":\"%s\"}", DONATELLO_VERSION);
	resp->status = 200;
}
