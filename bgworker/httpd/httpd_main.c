/*
 * httpd_main.c
 *	  The HTTP workers: settings, the listening socket shared by all workers,
 *	  their registration and the event loop.
 *
 * The socket. The postmaster opens it in _PG_init (when the library is
 * preloaded and donatello.http_port is not 0), non-blocking, and every worker
 * it forks inherits it: donatello.http_workers processes accept on one
 * socket, and the kernel hands each connection to one of them. A worker that
 * crashes is restarted by the postmaster and finds the socket still open;
 * connections that arrive meanwhile wait in the backlog.
 *
 * The loop. Each worker runs libmicrohttpd in external-select mode with its
 * epoll back-end: the process waits on one WaitEventSet holding its latch,
 * postmaster death and libmicrohttpd's epoll descriptor, then lets
 * libmicrohttpd run. No thread is ever started; a request is answered inside
 * libmicrohttpd's callback, synchronously (httpd_request.c), so one worker
 * serves one request at a time and concurrency comes from the worker count.
 *
 * Signals. SIGHUP reloads the settings (every donatello.http_* setting that
 * is not PGC_POSTMASTER applies to the next request). SIGTERM stops
 * accepting, lets the connections that are open finish (responses carry
 * "Connection: close" from then on) for at most
 * donatello.http_shutdown_timeout, then exits.
 */
#include "postgres.h"

#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>
#include <microhttpd.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "bgworker/worker.h"
#include "bgworker/httpd/httpd.h"

/* settings (docs/settings.md, "HTTP layer") */
int			http_port = 0;
char	   *http_listen_address = NULL;
int			http_workers = 2;
char	   *http_schemas = NULL;
int			http_statement_timeout_ms = 10000;
int			http_max_body_size = 1024 * 1024;
int			http_max_header_size = 16 * 1024;
int			http_max_connections = 512;
int			http_idle_timeout_s = 60;
char	   *http_cors_origins = NULL;
char	   *http_roles = NULL;
int			http_shutdown_timeout_ms = 5000;

/* the listening socket, opened by the postmaster and inherited by the workers */
static int	http_listen_fd = -1;

static void httpd_close_listen_socket(int code, Datum arg);

static volatile sig_atomic_t shutdown_requested = false;

/* CREATE EXTENSION has run (checked every second until then) */
bool		httpd_extension_ready = false;

/* a declared body larger than this is refused without reading it */
#define DISCARD_LIMIT (64ULL * 1024 * 1024)

PGDLLEXPORT void donatello_httpd_main(Datum arg);

/* Open, bind and listen on the configured address (in the postmaster). */
static int
httpd_open_socket(void)
{
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	struct addrinfo *ai;
	char		port[16];
	int			rc;
	int			fd = -1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	snprintf(port, sizeof(port), "%d", http_port);
	rc = getaddrinfo(http_listen_address[0] ? http_listen_address : NULL, port, &hints, &res);
	if (rc != 0)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("donatello HTTP layer disabled: could not resolve \"%s\": %s",
						http_listen_address, gai_strerror(rc)),
				 errhint("Set donatello.http_listen_address to an address of this host.")));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next)
	{
		int			one = 1;

		fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
		if (fd < 0)
			continue;
		(void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0 &&
			fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		ereport(WARNING,
				(errcode_for_socket_access(),
				 errmsg("donatello HTTP layer disabled: could not listen on %s:%d: %m",
						http_listen_address, http_port),
				 errhint("Free the port or change donatello.http_port, then restart the server.")));
	return fd;
}

/* Define the HTTP settings; open the socket and register the workers (from _PG_init). */
void
httpd_init(void)
{
	int			i;

	DefineCustomIntVariable("donatello.http_port",
							"TCP port of the HTTP layer; 0 disables it.",
							NULL, &http_port, 0, 0, 65535, PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("donatello.http_listen_address",
							   "Address the HTTP layer listens on (host name or IP address; empty: all).",
							   NULL, &http_listen_address, "127.0.0.1", PGC_POSTMASTER, 0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.http_workers",
							"Number of HTTP worker processes sharing the listening socket.",
							"Each worker serves one request at a time.",
							&http_workers, 2, 1, 64, PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("donatello.http_schemas",
							   "Schemas exposed over HTTP, comma-separated; the first is the default.",
							   "Accept-Profile and Content-Profile choose among them.",
							   &http_schemas, "donatello_api", PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.http_statement_timeout",
							"Longest time an HTTP request's statement may run.",
							"0 disables the limit.",
							&http_statement_timeout_ms, 10000, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.http_max_body_size",
							"Largest request body accepted; a larger one is answered 413.",
							NULL, &http_max_body_size, 1024 * 1024, 0, 1024 * 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.http_max_header_size",
							"Memory for a request's line and headers; beyond it the request is refused.",
							NULL, &http_max_header_size, 16 * 1024, 4096, 1024 * 1024,
							PGC_POSTMASTER, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.http_max_connections",
							"Most open HTTP connections per worker.",
							NULL, &http_max_connections, 512, 1, 65536, PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.http_idle_timeout",
							"An idle (keep-alive) HTTP connection is closed after this long.",
							NULL, &http_idle_timeout_s, 60, 1, 3600, PGC_POSTMASTER, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomStringVariable("donatello.http_cors_origins",
							   "Origins allowed by CORS, comma-separated; '*' allows any; empty disables CORS.",
							   NULL, &http_cors_origins, "*", PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("donatello.http_roles",
							   "PostgreSQL roles a JWT's \"role\" claim may name, comma-separated.",
							   NULL, &http_roles, "donatello_anon,donatello_user,donatello_service",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.http_shutdown_timeout",
							"On SIGTERM, how long a worker lets open connections finish.",
							NULL, &http_shutdown_timeout_ms, 5000, 0, 600000, PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	httpd_metrics_shmem_init();
	if (http_port == 0)
		return;
	http_listen_fd = httpd_open_socket();
	if (http_listen_fd < 0)
		return;
	on_proc_exit(httpd_close_listen_socket, (Datum) 0);
	for (i = 0; i < http_workers; i++)
	{
		char		name[BGW_MAXLEN];

		snprintf(name, sizeof(name), "donatello httpd %d", i + 1);
		donatello_worker_register(name, "donatello_httpd_main", 1, Int32GetDatum(i));
	}
}

/*
 * Postmaster exit: close the listening socket before the data directory's
 * lock file goes (callbacks run in reverse order, and the lock file's was
 * registered before shared_preload_libraries were loaded), as PostgreSQL
 * closes its own ports; otherwise, once pg_ctl reports the server stopped,
 * the port could still accept a connection for a moment. Children reset the
 * postmaster's exit callbacks, so only the postmaster runs this.
 */
static void
httpd_close_listen_socket(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	if (http_listen_fd >= 0)
	{
		close(http_listen_fd);
		http_listen_fd = -1;
	}
}

/* Does the extension exist in donatello.database? (its own short transaction) */
static bool
httpd_check_extension(void)
{
	bool		exists;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	exists = donatello_extension_exists();
	CommitTransactionCommand();
	return exists;
}

/* true once SIGTERM arrived: responses ask the client to close the connection. */
bool
httpd_shutting_down(void)
{
	return shutdown_requested;
}

/* SIGTERM: finish what is open, then exit (see the file header). */
static void
httpd_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	shutdown_requested = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/* libmicrohttpd's log goes to the server log. */
static void
httpd_mhd_log(void *cls pg_attribute_unused(), const char *fmt, va_list ap)
{
	char		buf[512];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	elog(DEBUG1, "libmicrohttpd: %s", buf);
}

/* A request begins: keep its raw target; the result is the request's closure. */
static void *
httpd_mhd_uri(void *cls pg_attribute_unused(), const char *uri,
			  struct MHD_Connection *conn)
{
	HttpRequest *req = httpd_request_new(uri);

	req->conn = conn;
	return req;
}

/* A request ends (answered, or its connection died): free it. */
static void
httpd_mhd_completed(void *cls pg_attribute_unused(), struct MHD_Connection *conn pg_attribute_unused(),
					void **con_cls, enum MHD_RequestTerminationCode toe pg_attribute_unused())
{
	HttpRequest *req = *con_cls;

	if (req != NULL)
		MemoryContextDelete(req->cxt);
	*con_cls = NULL;
}

/* Hand a finished HttpResponse to libmicrohttpd. */
static enum MHD_Result
httpd_queue(HttpRequest *req, HttpResponse *resp)
{
	struct MHD_Response *r;
	enum MHD_Result rc;
	ListCell   *lc;

	r = MHD_create_response_from_buffer(resp->empty ? 0 : resp->body.len,
										resp->empty ? (void *) "" : resp->body.data,
										MHD_RESPMEM_MUST_COPY);
	if (r == NULL)
		return MHD_NO;
	if (!resp->empty || resp->status != 204)
		MHD_add_response_header(r, "Content-Type",
								resp->content_type ? resp->content_type : "application/json; charset=utf-8");
	foreach(lc, resp->headers)
	{
		HttpHeader *h = lfirst(lc);

		MHD_add_response_header(r, h->name, h->value);
	}
	if (shutdown_requested)
		MHD_add_response_header(r, "Connection", "close");
	rc = MHD_queue_response(req->conn, resp->status, r);
	MHD_destroy_response(r);
	return rc;
}

/*
 * libmicrohttpd's access handler: called once the headers are in, once per
 * chunk of body, and once more when the body is complete; the last call
 * answers.
 */
static enum MHD_Result
httpd_mhd_access(void *cls pg_attribute_unused(), struct MHD_Connection *conn,
				 const char *url pg_attribute_unused(), const char *method,
				 const char *version pg_attribute_unused(), const char *upload_data,
				 size_t *upload_data_size, void **con_cls)
{
	HttpRequest *req = *con_cls;
	HttpResponse resp;
	MemoryContext old;

	if (req == NULL)
		return MHD_NO;
	req->conn = conn;
	if (!req->started)
	{
		const char *length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
														 MHD_HTTP_HEADER_CONTENT_LENGTH);
		unsigned long long declared = length ? strtoull(length, NULL, 10) : 0;

		req->started = true;
		req->method_name = MemoryContextStrdup(req->cxt, method);

		/*
		 * A body over the limit is read and discarded, then answered 413: a
		 * client still sending would otherwise see the connection reset
		 * before it reads the answer. Past DISCARD_LIMIT it is answered at
		 * once and the connection closed.
		 */
		if (declared > (unsigned long long) http_max_body_size)
			req->body_too_large = true;
		if (declared <= DISCARD_LIMIT)
			return MHD_YES;		/* wait for the body, if any */
	}
	else if (*upload_data_size > 0)
	{
		if (!req->body_too_large)
		{
			if ((size_t) req->body.len + *upload_data_size > (size_t) http_max_body_size)
				req->body_too_large = true;
			else
				appendBinaryStringInfo(&req->body, upload_data, (int) *upload_data_size);
		}
		*upload_data_size = 0;
		return MHD_YES;
	}

	old = MemoryContextSwitchTo(req->cxt);
	memset(&resp, 0, sizeof(resp));
	initStringInfo(&resp.body);
	httpd_request_handle(req, &resp);
	MemoryContextSwitchTo(old);
	return httpd_queue(req, &resp);
}

/* Worker entry point: the event loop. */
void
donatello_httpd_main(Datum arg)
{
	struct MHD_Daemon *daemon;
	const union MHD_DaemonInfo *info;
	WaitEventSet *set;
	bool		draining = false;
	TimestampTz drain_deadline = 0;
	TimestampTz extension_checked_at = GetCurrentTimestamp();

	/*
	 * Not donatello_worker_start(): that waits for CREATE EXTENSION without
	 * serving, and connections would hang meanwhile; here the loop runs at
	 * once and answers 503 until the extension exists.
	 */
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, httpd_sigterm);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(donatello_database, NULL, 0);
	pgstat_report_appname(MyBgworkerEntry->bgw_name);
	if (http_listen_fd < 0)
		proc_exit(0);
	httpd_extension_ready = httpd_check_extension();

	daemon = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG,
							  0, NULL, NULL, httpd_mhd_access, NULL,
							  MHD_OPTION_LISTEN_SOCKET, http_listen_fd,
							  MHD_OPTION_URI_LOG_CALLBACK, httpd_mhd_uri, NULL,
							  MHD_OPTION_NOTIFY_COMPLETED, httpd_mhd_completed, NULL,
							  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) http_max_header_size,
							  MHD_OPTION_CONNECTION_LIMIT, (unsigned int) http_max_connections,
							  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) http_idle_timeout_s,
							  MHD_OPTION_EXTERNAL_LOGGER, httpd_mhd_log, NULL,
							  MHD_OPTION_END);
	if (daemon == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("donatello httpd %d: could not start libmicrohttpd", DatumGetInt32(arg) + 1)));
	info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_EPOLL_FD);
	set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(set, WL_SOCKET_READABLE, info->epoll_fd, NULL, NULL);
	pgstat_report_activity(STATE_IDLE, NULL);

	for (;;)
	{
		WaitEvent	event;
		MHD_UNSIGNED_LONG_LONG mhd_timeout;
		long		timeout = -1;

		if (MHD_get_timeout(daemon, &mhd_timeout) == MHD_YES)
			timeout = (long) Min(mhd_timeout, (MHD_UNSIGNED_LONG_LONG) 60000);
		if (draining)
			timeout = timeout < 0 ? 100 : Min(timeout, 100);
		if (!httpd_extension_ready)
			timeout = timeout < 0 ? 1000 : Min(timeout, 1000);
		(void) WaitEventSetWait(set, timeout, &event, 1, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);

		/*
		 * Absorb procsignal barriers (DROP DATABASE waits for every backend to
		 * do so) and other interrupts. A statement-timeout cancel that fired
		 * after its request ended is stale here: drop it rather than fail.
		 */
		QueryCancelPending = false;
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (shutdown_requested && !draining)
		{
			/* stop accepting; the socket stays open for the other workers */
			(void) MHD_quiesce_daemon(daemon);
			draining = true;
			drain_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), http_shutdown_timeout_ms);
		}
		if (!httpd_extension_ready &&
			GetCurrentTimestamp() >= TimestampTzPlusMilliseconds(extension_checked_at, 1000))
		{
			httpd_extension_ready = httpd_check_extension();
			extension_checked_at = GetCurrentTimestamp();
		}
		MHD_run(daemon);
		if (draining)
		{
			const union MHD_DaemonInfo *open = MHD_get_daemon_info(daemon,
																   MHD_DAEMON_INFO_CURRENT_CONNECTIONS);

			if (open == NULL || open->num_connections == 0 || GetCurrentTimestamp() >= drain_deadline)
			{
				MHD_stop_daemon(daemon);
				ereport(LOG,
						(errmsg("donatello httpd %d: shut down", DatumGetInt32(arg) + 1)));
				/* 1: a worker stopped alone (pg_terminate_backend) is started again */
				proc_exit(1);
			}
		}
	}
}
