/*
 * dispatcher_curl.c
 *	  The libcurl multi driver of the dispatcher, run single-threaded in the
 *	  worker process.
 *
 * libcurl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when
 * to call it back on a timer (CURLMOPT_TIMERFUNCTION). The sockets go into the
 * worker's WaitEventSet next to its latch and the postmaster-death event, so
 * one wait covers "a response arrived", "a backend committed new work" and
 * "the server is going away". The set is rebuilt when curl adds or removes a
 * socket (PostgreSQL 15 cannot remove one event from a set), and modified in
 * place when only the direction changes.
 *
 * Each transfer is a DispatchRequest: its easy handle carries the SSRF guard
 * (CURLOPT_OPENSOCKETFUNCTION: the address curl is about to connect to is
 * checked, then connected to), no redirects, no proxy, http(s) only, the
 * connect and total timeouts, and a bounded response buffer.
 *
 * libcurl's threaded resolver may run getaddrinfo in a helper thread; that
 * thread never touches PostgreSQL or any DispatchRequest.
 */
#include "postgres.h"

#include <sys/socket.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "donatello.h"
#include "bgworker/dispatcher/dispatcher.h"

/* most bytes of response headers kept for an http request */
#define MAX_RESPONSE_HEADERS (64 * 1024)

/* One socket curl asked us to watch. */
typedef struct SocketWatch
{
	curl_socket_t fd;
	uint32		events;			/* WL_SOCKET_* */
	int			pos;			/* position in the wait set, -1 until rebuilt */
} SocketWatch;

static CURLM *multi = NULL;
static WaitEventSet *wait_set = NULL;
static bool wait_set_dirty = true;
static List *watches = NIL;		/* SocketWatch *, in TopMemoryContext */
static long curl_timer_ms = -1; /* -1: no timer */
static TimestampTz curl_timer_set_at = 0;
static List *finished = NIL;	/* DispatchRequest * whose transfer ended */
static List *idle_handles = NIL;	/* easy handles kept for reuse (reset) */
static int	in_flight = 0;

/* CURLMOPT_SOCKETFUNCTION: start, change or stop watching a socket. */
static int
on_socket(CURL *easy pg_attribute_unused(), curl_socket_t fd, int what,
		  void *userp pg_attribute_unused(), void *socketp)
{
	SocketWatch *watch = socketp;
	uint32		events = 0;

	if (what & CURL_POLL_IN)
		events |= WL_SOCKET_READABLE;
	if (what & CURL_POLL_OUT)
		events |= WL_SOCKET_WRITEABLE;

	if (what == CURL_POLL_REMOVE)
	{
		if (watch != NULL)
		{
			watches = list_delete_ptr(watches, watch);
			pfree(watch);
			curl_multi_assign(multi, fd, NULL);
		}
		wait_set_dirty = true;
		return 0;
	}
	if (watch == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		watch = palloc(sizeof(SocketWatch));
		watch->fd = fd;
		watch->pos = -1;
		watch->events = events;
		watches = lappend(watches, watch);
		MemoryContextSwitchTo(old);
		curl_multi_assign(multi, fd, watch);
		wait_set_dirty = true;
		return 0;
	}
	if (watch->events != events)
	{
		watch->events = events;
		if (!wait_set_dirty && watch->pos >= 0)
			ModifyWaitEvent(wait_set, watch->pos, events, NULL);
	}
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: remember when curl wants to be called back. */
static int
on_timer(CURLM *m pg_attribute_unused(), long timeout_ms, void *userp pg_attribute_unused())
{
	curl_timer_ms = timeout_ms;
	curl_timer_set_at = GetCurrentTimestamp();
	return 0;
}

/* Create the multi handle (once, at worker start). */
void
dispatch_curl_start(void)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		elog(ERROR, "could not initialize libcurl");
	multi = curl_multi_init();
	if (multi == NULL)
		elog(ERROR, "could not create a libcurl multi handle");
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
	dispatch_curl_configure();
}

/* Apply the connection settings (at start and after a reload). */
void
dispatch_curl_configure(void)
{
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) dispatcher_max_host_connections);
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) dispatcher_max_in_flight);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) dispatcher_max_in_flight);
}

/* CURLOPT_OPENSOCKETFUNCTION: the SSRF guard, on the address about to be used. */
static curl_socket_t
open_checked_socket(void *clientp, curlsocktype purpose pg_attribute_unused(),
					struct curl_sockaddr *address)
{
	DispatchRequest *req = clientp;

	if (!ssrf_host_allowed(req->host))
	{
		const char *why = ssrf_address_refusal(&address->addr);

		if (why != NULL)
		{
			char		text[64];

			(void) donatello_sockaddr_text(&address->addr, text, sizeof(text));
			snprintf(req->ssrf_refusal, sizeof(req->ssrf_refusal),
					 "refused by the SSRF guard: host \"%s\" resolves to %s, %s (not in donatello.allowed_hosts)",
					 req->host, text, why);
			return CURL_SOCKET_BAD;
		}
	}
	return socket(address->family, address->socktype, address->protocol);
}

/* CURLOPT_WRITEFUNCTION: keep the response body up to the configured size. */
static size_t
on_body(char *data, size_t size, size_t nmemb, void *userp)
{
	DispatchRequest *req = userp;
	size_t		len = size * nmemb;
	size_t		room = dispatcher_max_response_size > req->response.len ?
		(size_t) (dispatcher_max_response_size - req->response.len) : 0;

	if (len > room)
		req->response_truncated = true;
	if (room > 0)
		appendBinaryStringInfo(&req->response, data, Min(len, room));
	return len;
}

/* CURLOPT_HEADERFUNCTION: keep the last response's header block (bounded). */
static size_t
on_header(char *data, size_t size, size_t nmemb, void *userp)
{
	DispatchRequest *req = userp;
	size_t		len = size * nmemb;

	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0)
		resetStringInfo(&req->response_headers);
	if (req->response_headers.len + len <= MAX_RESPONSE_HEADERS)
		appendBinaryStringInfo(&req->response_headers, data, len);
	return len;
}

/* Build the header list of a webhook delivery: id, timestamp, signatures. */
static struct curl_slist *
webhook_headers(DispatchRequest *req, struct curl_slist *list)
{
	char	   *msg_id = DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&req->id)));
	int64		now_s = (int64) time(NULL);
	char	   *signature = webhook_signature_header(&req->keys, msg_id, now_s, req->body, req->body_len);
	char		line[64];

	list = curl_slist_append(list, psprintf("webhook-id: %s", msg_id));
	snprintf(line, sizeof(line), "webhook-timestamp: " INT64_FORMAT, now_s);
	list = curl_slist_append(list, line);
	list = curl_slist_append(list, psprintf("webhook-signature: %s", signature));
	list = curl_slist_append(list, "content-type: application/json");
	return list;
}

/* Start one transfer. The request's memory context must be current-safe. */
void
dispatch_curl_add(DispatchRequest *req)
{
	MemoryContext old = MemoryContextSwitchTo(req->cxt);
	struct curl_slist *headers = NULL;
	ListCell   *lc;
	CURL	   *easy = NULL;

	if (idle_handles != NIL)
	{
		easy = llast(idle_handles);
		idle_handles = list_delete_last(idle_handles);
	}
	else if ((easy = curl_easy_init()) == NULL)
		elog(ERROR, "could not create a libcurl easy handle");
	req->easy = easy;
	initStringInfo(&req->response);
	initStringInfo(&req->response_headers);
	req->curl_error[0] = '\0';
	req->ssrf_refusal[0] = '\0';
	req->status = 0;
	req->retry_after_s = -1;

	if (req->kind == DISPATCH_WEBHOOK)
		headers = webhook_headers(req, headers);
	foreach(lc, req->header_lines)
		headers = curl_slist_append(headers, lfirst(lc));
	headers = curl_slist_append(headers, "Expect:");
	req->curl_headers = headers;

	curl_easy_setopt(easy, CURLOPT_URL, req->url);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_PROXY, "");
	curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) dispatcher_connect_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) (req->timeout_ms > 0 ? req->timeout_ms : dispatcher_timeout_ms));
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->curl_error);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_checked_socket);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, req);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, dispatcher_user_agent());
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");

	if (strcmp(req->method, "GET") == 0)
		curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
	else if (strcmp(req->method, "HEAD") == 0)
		curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
	else
	{
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) req->body_len);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body ? req->body : "");
	}

	req->started_at = GetCurrentTimestamp();
	MemoryContextSwitchTo(old);
	if (curl_multi_add_handle(multi, easy) != CURLM_OK)
		elog(ERROR, "could not add a transfer to the libcurl multi handle");
	in_flight++;
}

/* Number of transfers started and not yet taken back as finished. */
int
dispatch_curl_in_flight(void)
{
	return in_flight;
}

/* Keep a finished easy handle for the next transfer, reset to no options. */
static void
release_handle(CURL *easy)
{
	MemoryContext old;

	if (list_length(idle_handles) >= dispatcher_max_in_flight)
	{
		curl_easy_cleanup(easy);
		return;
	}
	curl_easy_reset(easy);
	old = MemoryContextSwitchTo(TopMemoryContext);
	idle_handles = lappend(idle_handles, easy);
	MemoryContextSwitchTo(old);
}

/* Move every completed transfer to the finished list, with its outcome. */
static void
collect_completed(void)
{
	CURLMsg    *msg;
	int			pending;

	while ((msg = curl_multi_info_read(multi, &pending)) != NULL)
	{
		DispatchRequest *req;
		curl_off_t	total_us = 0;
		curl_off_t	retry_after = 0;
		MemoryContext old;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
		req->result = msg->data.result;
		curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &req->status);
		curl_easy_getinfo(req->easy, CURLINFO_TOTAL_TIME_T, &total_us);
		curl_easy_getinfo(req->easy, CURLINFO_RETRY_AFTER, &retry_after);
		req->latency_ms = total_us / 1000.0;
		req->retry_after_s = retry_after > 0 ? (long) retry_after : -1;
		/* a transfer that did not complete has no usable response */
		if (req->result != CURLE_OK)
			req->status = 0;
		if (req->status != 0)
			req->ssrf_refusal[0] = '\0';

		curl_multi_remove_handle(multi, req->easy);
		release_handle(req->easy);
		req->easy = NULL;
		curl_slist_free_all(req->curl_headers);
		req->curl_headers = NULL;
		in_flight--;

		old = MemoryContextSwitchTo(TopMemoryContext);
		finished = lappend(finished, req);
		MemoryContextSwitchTo(old);
	}
}

/* Rebuild the wait set: latch, postmaster death, and every watched socket. */
static void
rebuild_wait_set(void)
{
	ListCell   *lc;

	if (wait_set != NULL)
		FreeWaitEventSet(wait_set);
	wait_set = CreateWaitEventSet(TopMemoryContext, 2 + list_length(watches));
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	foreach(lc, watches)
	{
		SocketWatch *watch = lfirst(lc);

		watch->pos = AddWaitEventToSet(wait_set, watch->events, watch->fd, NULL, watch);
	}
	wait_set_dirty = false;
}

/* Milliseconds until curl's timer fires, -1 if none is set. */
static long
curl_timer_remaining_ms(void)
{
	long		elapsed;

	if (curl_timer_ms < 0)
		return -1;
	elapsed = (long) ((GetCurrentTimestamp() - curl_timer_set_at) / 1000);
	return Max(0, curl_timer_ms - elapsed);
}

/*
 * Wait for the latch, a socket or curl's timer, for at most timeout_ms (-1:
 * no limit besides curl's timer), and let curl act on what happened.
 * Returns 1 if the latch was set, else 0.
 */
long
dispatch_curl_wait(long timeout_ms)
{
	WaitEvent	events[64];
	long		timer = curl_timer_remaining_ms();
	int			n;
	int			i;
	int			running;
	bool		latch_set = false;

	if (timer >= 0 && (timeout_ms < 0 || timer < timeout_ms))
		timeout_ms = timer;
	if (wait_set_dirty)
		rebuild_wait_set();

	n = WaitEventSetWait(wait_set, timeout_ms, events, lengthof(events), PG_WAIT_EXTENSION);
	for (i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			latch_set = true;
		}
		else if (events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
		{
			int			action = 0;

			if (events[i].events & WL_SOCKET_READABLE)
				action |= CURL_CSELECT_IN;
			if (events[i].events & WL_SOCKET_WRITEABLE)
				action |= CURL_CSELECT_OUT;
			curl_multi_socket_action(multi, events[i].fd, action, &running);
		}
	}
	if (curl_timer_ms >= 0 && curl_timer_remaining_ms() == 0)
	{
		curl_timer_ms = -1;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	collect_completed();
	CHECK_FOR_INTERRUPTS();
	return latch_set ? 1 : 0;
}

/* Take the transfers that ended since the last call (the caller frees them). */
List *
dispatch_curl_take_finished(void)
{
	List	   *result = finished;

	finished = NIL;
	return result;
}
