/*
 * dispatcher_main.c
 *	  The outbound dispatcher worker: its settings, its registration and its
 *	  main loop.
 *
 * The loop, each turn:
 *	  1. in one transaction: record the attempts that finished, then claim due
 *		 outbox rows up to donatello.dispatcher_max_in_flight; after the
 *		 commit, start their transfers (nothing is sent before its claim
 *		 commits); both in batches (see donatello_dispatcher_main);
 *	  2. run pending completion hooks (one transaction each);
 *	  3. wait on the latch, curl's sockets and curl's timer, at most until the
 *		 next scheduled retry is due.
 * Backends that queue work wake the worker at commit
 * (donatello_worker_wake_at_commit(WORKER_DISPATCHER)); nothing polls.
 *
 * A unit that fails (a broken row, a secret that cannot be opened) is logged
 * and rolled back; the worker waits a second before the next turn so that a
 * persistent error cannot spin.
 */
#include "postgres.h"

#include <sodium.h>

#include "access/xlog.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "bgworker/worker.h"
#include "bgworker/dispatcher/dispatcher.h"

/* settings (docs/settings.md, "Outbound dispatcher") */
int			dispatcher_max_in_flight = 256;
int			dispatcher_max_host_connections = 32;
int			dispatcher_connect_timeout_ms = 5000;
int			dispatcher_timeout_ms = 30000;
int			dispatcher_max_response_size = 1024 * 1024;
int			dispatcher_response_excerpt_size = 1024;
char	   *dispatcher_allowed_hosts = NULL;
char	   *webhook_retry_schedule = NULL;
int			webhook_retry_jitter = 10;
int			webhook_disable_after_s = 5 * 24 * 3600;
int			webhook_secret_overlap_s = 24 * 3600;
static bool dispatcher_enabled = true;

/* pause after a failed unit, so that a persistent error does not spin */
#define FAILED_UNIT_PAUSE_MS 1000
/* longest wait before finished requests are recorded (batching, see below) */
#define RECORD_DELAY_MS 10

/*
 * Claimed requests wait until their claim's commit record is on disk: were a
 * claim lost in a crash, its rows would come back 'pending' and be sent again
 * with no trace that they had been in flight. Other backends' commits usually
 * flush the WAL past the claim within a fraction of a millisecond; after
 * CLAIM_FLUSH_WAIT_MS the worker flushes it itself.
 */
#define CLAIM_FLUSH_WAIT_MS 2

PGDLLEXPORT void donatello_dispatcher_main(Datum arg);

PG_FUNCTION_INFO_V1(donatello_dispatcher_wake_at_commit);

/* Define the dispatcher's settings and register its worker (from _PG_init). */
void
dispatcher_init(void)
{
	DefineCustomBoolVariable("donatello.dispatcher_enabled",
							 "Starts the outbound dispatcher background worker.",
							 "Off: webhooks and queued HTTP requests wait in donatello.outbox.",
							 &dispatcher_enabled, true, PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.dispatcher_max_in_flight",
							"Most outbound requests the dispatcher has in flight at once.",
							NULL, &dispatcher_max_in_flight, 256, 1, 10000, PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.dispatcher_max_host_connections",
							"Most connections the dispatcher opens to one host.",
							"Requests beyond this wait for a free connection to the host.",
							&dispatcher_max_host_connections, 32, 1, 10000, PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.dispatcher_connect_timeout",
							"Time allowed to connect to a receiver or provider.",
							NULL, &dispatcher_connect_timeout_ms, 5000, 1, 300000, PGC_SIGHUP,
							GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.dispatcher_timeout",
							"Time allowed for a whole outbound request, connection included.",
							"A queued HTTP request's policy may set its own (timeout_ms).",
							&dispatcher_timeout_ms, 30000, 1, 3600000, PGC_SIGHUP,
							GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.dispatcher_max_response_size",
							"Most bytes of a response body kept; the rest is read and discarded.",
							NULL, &dispatcher_max_response_size, 1024 * 1024, 0, 1024 * 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.dispatcher_response_excerpt_size",
							"Most bytes of a response body kept in the attempt log.",
							NULL, &dispatcher_response_excerpt_size, 1024, 0, 65536,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomStringVariable("donatello.allowed_hosts",
							   "Hosts the dispatcher may reach even at loopback, private or link-local addresses.",
							   "Comma-separated host names or IP addresses, compared with the URL's host. "
							   "Every other host is refused at such addresses (SSRF guard).",
							   &dispatcher_allowed_hosts, "", PGC_SIGHUP, 0,
							   ssrf_allowed_hosts_check, ssrf_allowed_hosts_assign, NULL);
	DefineCustomStringVariable("donatello.webhook_retry_schedule",
							   "Delays between webhook delivery attempts.",
							   "Comma-separated delays with units; a delivery gets one attempt more than "
							   "there are delays.",
							   &webhook_retry_schedule, "1min, 5min, 15min, 1h, 6h, 24h", PGC_SIGHUP, 0,
							   retry_schedule_check, retry_schedule_assign, NULL);
	DefineCustomIntVariable("donatello.webhook_retry_jitter",
							"Random spread applied to each webhook retry delay, in percent.",
							NULL, &webhook_retry_jitter, 10, 0, 100, PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.webhook_disable_after",
							"An endpoint whose every delivery failed for this long is disabled.",
							NULL, &webhook_disable_after_s, 5 * 24 * 3600, 60, INT_MAX, PGC_SIGHUP,
							GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.webhook_secret_overlap",
							"How long a rotated webhook secret keeps signing beside the new one.",
							NULL, &webhook_secret_overlap_s, 24 * 3600, 0, 30 * 24 * 3600, PGC_SUSET,
							GUC_UNIT_S, NULL, NULL, NULL);

	if (dispatcher_enabled)
		donatello_worker_register("donatello dispatcher", "donatello_dispatcher_main", 1, (Datum) 0);
}

/* The user-agent of every outbound request. */
const char *
dispatcher_user_agent(void)
{
	static char agent[128];

	if (agent[0] == '\0')
		snprintf(agent, sizeof(agent), "donatello/%s (+webhooks; %s)", DONATELLO_VERSION, curl_version());
	return agent;
}

/* donatello.dispatcher_wake_at_commit(): wake the dispatcher after commit. */
Datum
donatello_dispatcher_wake_at_commit(PG_FUNCTION_ARGS pg_attribute_unused())
{
	donatello_worker_wake_at_commit(WORKER_DISPATCHER);
	PG_RETURN_VOID();
}

/* Arguments and results of one turn's unit of work. */
typedef struct TurnWork
{
	List	   *finished;		/* requests whose outcome to record, or NIL */
	int			max_requests;	/* rows to claim at most (0: no claim) */
	MemoryContext staging;		/* claimed requests are built here */
	List	   *claimed;
	long		next_due_ms;
	bool		events_queued;	/* recording emitted webhook.delivery_failed events */
} TurnWork;

/* Unit: put rows left in flight by an earlier run back in the queue. */
static void
recover_unit(void *arg pg_attribute_unused())
{
	dispatcher_queue_recover();
}

/*
 * Unit: record the finished requests' outcomes, then claim due rows and learn
 * when the next one is due; one transaction for both, so that a busy worker
 * commits once per turn.
 */
static void
turn_unit(void *arg)
{
	TurnWork   *work = arg;

	if (work->finished != NIL)
		work->events_queued = dispatcher_queue_record(work->finished);
	if (work->max_requests > 0)
	{
		work->claimed = dispatcher_queue_claim(work->max_requests, work->staging);
		work->next_due_ms = dispatcher_queue_next_due_ms();
	}
}

/* Unit: run one pending completion hook; *arg receives how many ran. */
static void
hook_unit(void *arg)
{
	*(int *) arg = dispatcher_queue_run_hooks(1);
}

/*
 * Start the transfers of claimed requests whose claim is on disk: at once
 * when the WAL is flushed past claim_lsn, or (blocking) once the claim has
 * waited CLAIM_FLUSH_WAIT_MS. Returns the requests still waiting.
 */
static List *
start_durable_claims(List *waiting, XLogRecPtr claim_lsn, TimestampTz claimed_at)
{
	ListCell   *lc;

	if (waiting == NIL)
		return NIL;
	if (GetFlushRecPtr(NULL) < claim_lsn)
	{
		if (GetCurrentTimestamp() < TimestampTzPlusMilliseconds(claimed_at, CLAIM_FLUSH_WAIT_MS))
			return waiting;
		XLogFlush(claim_lsn);
	}
	foreach(lc, waiting)
		dispatch_curl_add(lfirst(lc));
	list_free(waiting);
	return NIL;
}

/* Requests out of the queue: being transferred, or claimed and waiting for the flush. */
static int
requests_out(List *awaiting_flush)
{
	return dispatch_curl_in_flight() + list_length(awaiting_flush);
}

/* Free finished requests. */
static void
free_requests(List *requests)
{
	ListCell   *lc;

	foreach(lc, requests)
		MemoryContextDelete(((DispatchRequest *) lfirst(lc))->cxt);
	list_free(requests);
}

/* true when a finished batch holds a queued HTTP request (it may have a hook) */
static bool
batch_has_http(List *requests)
{
	ListCell   *lc;

	foreach(lc, requests)
		if (((DispatchRequest *) lfirst(lc))->kind == DISPATCH_HTTP)
			return true;
	return false;
}

/* Append the transfers that ended to the unrecorded list; note when the first came. */
static List *
gather_finished(List *unrecorded, TimestampTz *oldest)
{
	List	   *finished = dispatch_curl_take_finished();

	if (finished == NIL)
		return unrecorded;
	if (unrecorded == NIL)
	{
		*oldest = GetCurrentTimestamp();
		return finished;
	}
	unrecorded = list_concat(unrecorded, finished);
	list_free(finished);
	return unrecorded;
}

/*
 * Worker entry point.
 *
 * Batching. A transaction per response would cost more than the response:
 * each turn's unit records and claims in batches. New work (a wake-up, a
 * scheduled retry coming due) is claimed at once, for latency. A backlog
 * (the last claim filled all the room it had) is claimed when a quarter of
 * max_in_flight is free again, not one request at a time. Outcomes are
 * recorded along with a claim, or when a quarter of max_in_flight has
 * finished, or when nothing is in flight, or RECORD_DELAY_MS after the first
 * of them finished.
 */
void
donatello_dispatcher_main(Datum arg pg_attribute_unused())
{
	MemoryContext requests_cxt;
	List	   *unrecorded = NIL;
	TimestampTz oldest_unrecorded = 0;
	bool		hooks_pending = true;
	bool		need_claim = true;
	bool		backlog = false;
	TimestampTz next_due_at = 0;
	List	   *awaiting_flush = NIL;	/* claimed, not yet on disk */
	XLogRecPtr	claim_lsn = InvalidXLogRecPtr;
	TimestampTz claimed_at = 0;

	donatello_worker_start(WORKER_DISPATCHER);

	/*
	 * The worker's commits do not wait for the WAL flush: an outcome lost in
	 * a crash leaves its row 'sending', which is sent again after the restart
	 * (at-least-once holds); a claim's requests are not sent before the claim
	 * is on disk (start_durable_claims), so every row sent before a crash is
	 * 'sending' after it, without the loop blocking in each claim's commit.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	if (sodium_init() < 0)
		elog(ERROR, "could not initialize libsodium");
	dispatch_curl_start();
	requests_cxt = AllocSetContextCreate(TopMemoryContext, "donatello dispatcher requests",
										 ALLOCSET_DEFAULT_SIZES);
	while (!donatello_worker_run_unit("dispatcher: queueing again what was in flight", recover_unit, NULL))
		donatello_worker_wait(FAILED_UNIT_PAUSE_MS, PG_WAIT_EXTENSION);

	for (;;)
	{
		TurnWork	work;
		bool		failed = false;
		long		timeout = -1;
		int			batch = Max(1, dispatcher_max_in_flight / 4);
		int			room;
		bool		claim_now;
		bool		record_now;
		TimestampTz now;

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			dispatch_curl_configure();
			need_claim = true;
		}

		/* 0. claimed requests whose claim reached the disk go out */
		awaiting_flush = start_durable_claims(awaiting_flush, claim_lsn, claimed_at);

		/* 1. outcomes of finished attempts, and new work, in one transaction */
		unrecorded = gather_finished(unrecorded, &oldest_unrecorded);
		now = GetCurrentTimestamp();
		room = dispatcher_max_in_flight - requests_out(awaiting_flush);
		if (next_due_at != 0 && now >= next_due_at)
			need_claim = true;
		claim_now = room > 0 &&
			(need_claim || (backlog && (room >= batch || requests_out(awaiting_flush) == 0)));
		record_now = unrecorded != NIL &&
			(claim_now || list_length(unrecorded) >= batch || requests_out(awaiting_flush) == 0 ||
			 now >= TimestampTzPlusMilliseconds(oldest_unrecorded, RECORD_DELAY_MS));
		if (claim_now || record_now)
		{
			bool		http = record_now && batch_has_http(unrecorded);

			work.finished = record_now ? unrecorded : NIL;
			work.max_requests = claim_now ? room : 0;
			work.claimed = NIL;
			work.next_due_ms = -1;
			work.events_queued = false;
			work.staging = AllocSetContextCreate(requests_cxt, "donatello dispatcher claim",
												 ALLOCSET_SMALL_SIZES);
			if (donatello_worker_run_unit("dispatcher: recording responses and claiming requests",
										  turn_unit, &work))
			{
				ListCell   *lc;

				if (record_now)
				{
					free_requests(unrecorded);
					unrecorded = NIL;
					hooks_pending |= http;
					/* a webhook.delivery_failed event may wait for a claim */
					need_claim |= work.events_queued;
				}
				foreach(lc, work.claimed)
				{
					DispatchRequest *req = lfirst(lc);

					MemoryContextSetParent(req->cxt, requests_cxt);
					awaiting_flush = lappend(awaiting_flush, req);
				}
				if (work.claimed != NIL)
				{
					claim_lsn = XactLastCommitEnd;
					claimed_at = GetCurrentTimestamp();
					awaiting_flush = start_durable_claims(awaiting_flush, claim_lsn, claimed_at);
				}
				if (claim_now)
				{
					backlog = list_length(work.claimed) == work.max_requests;
					if (backlog || work.next_due_ms < 0)
						next_due_at = 0;	/* a backlog is claimed as room frees up */
					else if (work.next_due_ms == 0)
					{
						/* due but not claimed: rows locked by another transaction; look again soon */
						next_due_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 50);
					}
					else
						next_due_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), work.next_due_ms);
					need_claim = false;
				}
			}
			else
				failed = true;
			/* on failure this frees whatever the claim had built */
			MemoryContextDelete(work.staging);
		}

		/* 2. completion hooks, one transaction each, after their responses were recorded */
		while (hooks_pending && !failed)
		{
			int			hooks_run = 0;

			if (!donatello_worker_run_unit("dispatcher: running a completion hook", hook_unit, &hooks_run))
				failed = true;
			else if (hooks_run == 0)
				hooks_pending = false;
		}

		/* 3. wait for responses, new work, the next scheduled retry or the record delay */
		if (failed)
			timeout = FAILED_UNIT_PAUSE_MS;
		else
		{
			now = GetCurrentTimestamp();
			if (next_due_at != 0)
				timeout = Max(0, (long) ((next_due_at - now) / 1000));
			if (unrecorded != NIL)
			{
				long		record_in = Max(0, (long) ((TimestampTzPlusMilliseconds(oldest_unrecorded, RECORD_DELAY_MS) - now) / 1000));

				timeout = timeout < 0 ? record_in : Min(timeout, record_in);
			}
			if (backlog && requests_out(awaiting_flush) == 0)
				timeout = 0;
			if (awaiting_flush != NIL)
				timeout = timeout < 0 ? 1 : Min(timeout, 1);
		}
		pgstat_report_activity(STATE_IDLE, NULL);

		/*
		 * A wake-up that arrived while a unit of work ran may have had its
		 * latch reset inside that unit (a lock wait does); the shared
		 * "pending" flag keeps it. Look at it before sleeping.
		 */
		if (timeout != 0)
		{
			bool		woken = donatello_worker_wait(0, PG_WAIT_EXTENSION);

			dispatch_curl_configure();	/* the call handles a pending reload */
			if (woken)
			{
				need_claim = true;
				continue;
			}
		}
		if (dispatch_curl_wait(timeout))
		{
			/* woken: claim next; this wake-up's pending flag is spent here */
			need_claim = true;
			(void) donatello_worker_wait(0, PG_WAIT_EXTENSION);
			dispatch_curl_configure();
		}
	}
}
