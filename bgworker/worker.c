/*
 * worker.c
 *	  The life of a donatello background worker, shared by maintenance,
 *	  dispatcher and httpd:
 *
 *	  1. registered from _PG_init (donatello_worker_register);
 *	  2. starts with signal handlers (SIGHUP reloads, SIGTERM exits), connects
 *		 to donatello.database and waits, without failing, until the
 *		 extension exists there (donatello_worker_start);
 *	  3. sleeps on its latch with a named wait event, exiting on postmaster
 *		 death and reloading settings on SIGHUP (donatello_worker_wait);
 *	  4. does each unit of work in its own transaction; an error in a unit is
 *		 reported and rolled back, and the worker carries on
 *		 (donatello_worker_run_unit).
 *
 * Waking at commit. Each running worker publishes its latch in a small shared
 * table indexed by kind. A backend that queued work calls
 * donatello_worker_wake_at_commit(kind): the worker's latch is set right after
 * the commit, never before (so the worker's next snapshot sees the work) and
 * never after a rollback. A wake-up also raises a per-kind "pending" flag:
 * code inside a unit of work (a lock wait, say) may reset the process latch,
 * and the flag makes sure such a wake-up is not lost.
 *
 * Locking: the latch table is guarded by one spinlock, held only to copy a
 * pointer in or out; the pending flags are atomics.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "donatello.h"
#include "bgworker/worker.h"

/* how long to sleep between checks while the extension does not exist yet */
#define WAIT_FOR_EXTENSION_MS 5000

typedef struct WorkerLatches
{
	slock_t		mutex;
	Latch	   *latch[WORKER_KIND_COUNT];
	pg_atomic_uint32 pending[WORKER_KIND_COUNT];	/* woken since last wait */
} WorkerLatches;

static WorkerLatches *worker_latches = NULL;
static DonatelloWorkerKind my_kind = WORKER_KIND_COUNT;
static bool wake_pending[WORKER_KIND_COUNT];
static bool wake_callback_registered = false;

/* shmem startup: create or attach the latch table. */
static void
worker_shmem_startup(void)
{
	bool		found;
	int			i;

	worker_latches = ShmemInitStruct("donatello worker latches", sizeof(WorkerLatches), &found);
	if (!found)
	{
		SpinLockInit(&worker_latches->mutex);
		for (i = 0; i < WORKER_KIND_COUNT; i++)
		{
			worker_latches->latch[i] = NULL;
			pg_atomic_init_u32(&worker_latches->pending[i], 0);
		}
	}
}

/* Register the latch table's shared memory (from _PG_init). */
void
worker_shmem_init(void)
{
	donatello_shmem_register(MAXALIGN(sizeof(WorkerLatches)), 0, NULL, worker_shmem_startup);
}

/* Register a background worker that runs donatello's function. */
void
donatello_worker_register(const char *name, const char *function, int restart_seconds, Datum arg)
{
	BackgroundWorker worker;

	if (!process_shared_preload_libraries_in_progress)
		return;
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = restart_seconds;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "donatello");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", name);
	worker.bgw_main_arg = arg;
	RegisterBackgroundWorker(&worker);
}

/* on_shmem_exit: stop advertising this worker's latch. */
static void
worker_unpublish_latch(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	SpinLockAcquire(&worker_latches->mutex);
	if (worker_latches->latch[my_kind] == MyLatch)
		worker_latches->latch[my_kind] = NULL;
	SpinLockRelease(&worker_latches->mutex);
}

/* Is the extension installed? Runs its own short transaction. */
static bool
worker_extension_installed(void)
{
	bool		exists;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	exists = donatello_extension_exists();
	CommitTransactionCommand();
	return exists;
}

/*
 * Start of every worker's main function: signals, connection, the wait for
 * CREATE EXTENSION, and publishing the latch so backends can wake us.
 */
void
donatello_worker_start(DonatelloWorkerKind kind)
{
	my_kind = kind;
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(donatello_database, NULL, 0);
	pgstat_report_appname(MyBgworkerEntry->bgw_name);

	while (!worker_extension_installed())
	{
		pgstat_report_activity(STATE_IDLE, "waiting for CREATE EXTENSION donatello");
		donatello_worker_wait(WAIT_FOR_EXTENSION_MS, PG_WAIT_EXTENSION);
	}

	if (kind < WORKER_KIND_COUNT)
	{
		SpinLockAcquire(&worker_latches->mutex);
		worker_latches->latch[kind] = MyLatch;
		SpinLockRelease(&worker_latches->mutex);
		on_shmem_exit(worker_unpublish_latch, (Datum) 0);
	}
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Sleep until woken or the timeout passes (-1: no timeout); then handle
 * interrupts and a pending reload. Returns true if woken (including by a
 * wake-up that arrived while the worker was busy, which returns at once).
 */
bool
donatello_worker_wait(long timeout_ms, uint32 wait_event_info)
{
	int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;
	int			rc = 0;
	bool		woken = false;

	if (my_kind < WORKER_KIND_COUNT && worker_latches != NULL &&
		pg_atomic_exchange_u32(&worker_latches->pending[my_kind], 0) != 0)
		woken = true;
	else
	{
		if (timeout_ms >= 0)
			events |= WL_TIMEOUT;
		rc = WaitLatch(MyLatch, events, timeout_ms, wait_event_info);
		if (my_kind < WORKER_KIND_COUNT && worker_latches != NULL)
			woken = pg_atomic_exchange_u32(&worker_latches->pending[my_kind], 0) != 0;
	}
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
	return woken || (rc & WL_LATCH_SET) != 0;
}

/*
 * Run fn(arg) in its own transaction, SPI connected and a snapshot pushed.
 * An error is logged and rolled back, and false returned; the worker goes on.
 */
bool
donatello_worker_run_unit(const char *activity, donatello_unit_fn fn, void *arg)
{
	MemoryContext unit_cxt = CurrentMemoryContext;
	volatile bool ok = true;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, activity);

	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed in donatello worker");
		PushActiveSnapshot(GetTransactionSnapshot());
		fn(arg);
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		/* report, then unwind the transaction and carry on */
		MemoryContextSwitchTo(unit_cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		ok = false;
	}
	PG_END_TRY();

	MemoryContextSwitchTo(unit_cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

/* Set the latch of the running worker of this kind, if any. */
void
donatello_worker_wake(DonatelloWorkerKind kind)
{
	Latch	   *latch;

	if (worker_latches == NULL)
		return;
	pg_atomic_write_u32(&worker_latches->pending[kind], 1);
	SpinLockAcquire(&worker_latches->mutex);
	latch = worker_latches->latch[kind];
	SpinLockRelease(&worker_latches->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/* Transaction callback: deliver the wake-ups requested in this transaction. */
static void
worker_wake_callback(XactEvent event, void *arg pg_attribute_unused())
{
	int			i;

	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		for (i = 0; i < WORKER_KIND_COUNT; i++)
			if (wake_pending[i])
				donatello_worker_wake((DonatelloWorkerKind) i);
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		memset(wake_pending, 0, sizeof(wake_pending));
}

/* Wake the worker of this kind after the current transaction commits. */
void
donatello_worker_wake_at_commit(DonatelloWorkerKind kind)
{
	if (!wake_callback_registered)
	{
		RegisterXactCallback(worker_wake_callback, NULL);
		wake_callback_registered = true;
	}
	wake_pending[kind] = true;
}
