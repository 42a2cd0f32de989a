/*
 * deferred.c
 *	  Security events, and writes that must survive the caller's rollback.
 *
 * security_event_record() records an event in the caller's transaction
 * through donatello.record_security_event() (the one entry point the audit
 * trail will route). An attempt that fails raises an error, which rolls that
 * transaction back; its events (login failure, lockout, MFA failure) and the
 * session revocation caused by a reused refresh token go through
 * security_event_defer() / session_revoke_defer() instead: they are queued
 * in shared memory, the maintenance worker is woken at once, and its flush
 * writes them (again through record_security_event) in its own transaction,
 * together with the login guard's counters (guard.c). Until a queued
 * revocation is written, session_revocation_pending() makes jwt_verify and
 * refresh treat the session as revoked.
 *
 * Items carry their database: a flush writes only its own database's items
 * (the maintenance worker runs in donatello.database; another database's
 * items wait for donatello.flush_security_events() there), and drops the
 * items of databases that no longer exist. Flushes in one database are
 * serialized by a transaction-level advisory lock; a flush reads the queue
 * without removing anything and, at its commit, marks what it wrote done and
 * moves the tail past done items (a transaction callback), so a flush that
 * fails loses nothing and a second flusher waits for the first and then
 * writes only the rest.
 *
 * Locking: the queue (a ring of DEFERRED_CAPACITY fixed-size items) is
 * guarded by one LWLock of the "donatello_deferred" tranche, held to copy
 * items in or out; nothing that can ereport runs under it.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "bgworker/worker.h"
#include "credentials/credentials.h"
#include "credentials/apikey.h"

PG_FUNCTION_INFO_V1(donatello_flush_security_events);

#define DEFERRED_TRANCHE "donatello_deferred"
#define DEFERRED_CAPACITY 1024

typedef enum DeferredKind
{
	DEFERRED_EVENT = 1,
	DEFERRED_SESSION_REVOKE = 2
} DeferredKind;

typedef struct DeferredItem
{
	int			kind;
	Oid			dboid;			/* database the item belongs to */
	bool		done;			/* written by a committed flush */
	bool		has_user;
	pg_uuid_t	org_id;
	pg_uuid_t	id;				/* user (event) or session (revocation) */
	TimestampTz at;
	char		event[64];
	char		ip[64];
	char		user_agent[256];
	char		details[512];	/* JSON object; the revocation reason */
} DeferredItem;

typedef struct DeferredQueue
{
	uint64		head;			/* next item to write */
	uint64		tail;			/* oldest item not yet flushed */
	uint64		dropped;		/* items lost because the queue was full */
	DeferredItem items[DEFERRED_CAPACITY];
} DeferredQueue;

static DeferredQueue *deferred = NULL;
static LWLock *deferred_lock = NULL;

/* donatello.credentials_flush_interval (ms) */
static int	flush_interval_ms = 1000;

/* queue positions this backend's running flush wrote; marked done at commit */
static uint64 *flushed_positions = NULL;
static int	flushed_count = 0;
static bool flush_pending = false;
static bool callback_registered = false;

/* shmem startup: create or attach the queue. */
static void
deferred_shmem_startup(void)
{
	bool		found;

	deferred = ShmemInitStruct("donatello deferred writes", sizeof(DeferredQueue), &found);
	if (!found)
		memset(deferred, 0, sizeof(DeferredQueue));
	deferred_lock = &(GetNamedLWLockTranche(DEFERRED_TRANCHE))[0].lock;
}

static void deferred_flush_task(void *arg);

/* Register the queue and the flush task (from _PG_init). */
void
deferred_shmem_init(void)
{
	DefineCustomIntVariable("donatello.credentials_flush_interval",
							"How often the maintenance worker writes login counters, API key usage and deferred security events.",
							"Failed attempts also wake the worker at once.",
							&flush_interval_ms, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	donatello_shmem_register(MAXALIGN(sizeof(DeferredQueue)), 1, DEFERRED_TRANCHE,
							 deferred_shmem_startup);
	maintenance_register_task("flush credential counters and events", &flush_interval_ms,
							  deferred_flush_task);
}

/* Record an event now, in the caller's transaction (SPI connected by the caller). */
void
security_event_record(const pg_uuid_t *org_id, const pg_uuid_t *user_id, const char *event,
					  const char *ip, const char *user_agent, const char *details_json)
{
	Oid			types[6] = {UUIDOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	args[0] = cred_uuid_datum(org_id);
	args[1] = user_id ? cred_uuid_datum(user_id) : (Datum) 0;
	nulls[1] = user_id ? ' ' : 'n';
	args[2] = CStringGetTextDatum(event);
	args[3] = ip ? CStringGetTextDatum(ip) : (Datum) 0;
	nulls[3] = ip ? ' ' : 'n';
	args[4] = user_agent ? CStringGetTextDatum(user_agent) : (Datum) 0;
	nulls[4] = user_agent ? ' ' : 'n';
	args[5] = CStringGetTextDatum(details_json ? details_json : "{}");
	cred_spi_exec("SELECT donatello.record_security_event($1, $2, $3, $4::pg_catalog.inet, $5,"
				  " $6::pg_catalog.jsonb)",
				  6, types, args, nulls, SPI_OK_SELECT);
}

/* Set the maintenance worker's latch now (the caller's transaction will abort). */
void
deferred_wake_flusher(void)
{
	donatello_worker_wake(WORKER_MAINTENANCE);
}

/* Copy s into a fixed buffer, cut at a character boundary. */
static void
copy_clipped(char *dst, size_t size, const char *s)
{
	size_t		len;

	if (s == NULL)
	{
		dst[0] = '\0';
		return;
	}
	len = strlen(s);
	if (len >= size)
		len = pg_mbcliplen(s, len, size - 1);
	memcpy(dst, s, len);
	dst[len] = '\0';
}

/* Append an item to the queue; when full, log it instead. */
static void
deferred_push(const DeferredItem *item)
{
	bool		full;

	donatello_require_preload("security events of failed attempts");
	LWLockAcquire(deferred_lock, LW_EXCLUSIVE);
	full = deferred->head - deferred->tail >= DEFERRED_CAPACITY;
	if (full)
		deferred->dropped++;
	else
	{
		deferred->items[deferred->head % DEFERRED_CAPACITY] = *item;
		deferred->head++;
	}
	LWLockRelease(deferred_lock);
	if (full)
		ereport(WARNING,
				(errmsg("donatello security event queue is full; \"%s\" for organization %s was not stored",
						item->event, cred_uuid_string(&item->org_id)),
				 errhint("Check that the donatello maintenance worker runs.")));
	deferred_wake_flusher();
}

/* Queue an event to be recorded even though the caller's transaction aborts. */
void
security_event_defer(const pg_uuid_t *org_id, const pg_uuid_t *user_id, const char *event,
					 const char *ip, const char *user_agent, const char *details_json)
{
	DeferredItem item;

	memset(&item, 0, sizeof(item));
	item.kind = DEFERRED_EVENT;
	item.dboid = MyDatabaseId;
	memcpy(&item.org_id, org_id, sizeof(pg_uuid_t));
	if (user_id)
	{
		item.has_user = true;
		memcpy(&item.id, user_id, sizeof(pg_uuid_t));
	}
	item.at = GetCurrentTimestamp();
	copy_clipped(item.event, sizeof(item.event), event);
	copy_clipped(item.ip, sizeof(item.ip), ip);
	copy_clipped(item.user_agent, sizeof(item.user_agent), user_agent);
	if (details_json && strlen(details_json) >= sizeof(item.details))
		details_json = "{\"truncated\": true}";
	copy_clipped(item.details, sizeof(item.details), details_json ? details_json : "{}");
	deferred_push(&item);
}

/* Queue the revocation of a session (refresh token reuse). */
void
session_revoke_defer(const pg_uuid_t *org_id, const pg_uuid_t *session_id, const char *reason)
{
	DeferredItem item;

	memset(&item, 0, sizeof(item));
	item.kind = DEFERRED_SESSION_REVOKE;
	item.dboid = MyDatabaseId;
	memcpy(&item.org_id, org_id, sizeof(pg_uuid_t));
	memcpy(&item.id, session_id, sizeof(pg_uuid_t));
	item.at = GetCurrentTimestamp();
	copy_clipped(item.details, sizeof(item.details), reason);
	deferred_push(&item);
}

/* Is a revocation of this session queued and not yet written? */
bool
session_revocation_pending(const pg_uuid_t *session_id)
{
	uint64		i;
	bool		pending = false;

	if (deferred == NULL)
		return false;
	LWLockAcquire(deferred_lock, LW_SHARED);
	for (i = deferred->tail; i < deferred->head && !pending; i++)
	{
		DeferredItem *item = &deferred->items[i % DEFERRED_CAPACITY];

		pending = item->kind == DEFERRED_SESSION_REVOKE && !item->done &&
			item->dboid == MyDatabaseId &&
			memcmp(&item->id, session_id, sizeof(pg_uuid_t)) == 0;
	}
	LWLockRelease(deferred_lock);
	return pending;
}

/*
 * At the commit of a flush, mark the items it wrote done and move the tail
 * past every done item; at abort, keep them for the next flush.
 */
static void
deferred_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	int			i;

	if (!flush_pending)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		LWLockAcquire(deferred_lock, LW_EXCLUSIVE);
		for (i = 0; i < flushed_count; i++)
			if (flushed_positions[i] >= deferred->tail && flushed_positions[i] < deferred->head)
				deferred->items[flushed_positions[i] % DEFERRED_CAPACITY].done = true;
		while (deferred->tail < deferred->head && deferred->items[deferred->tail % DEFERRED_CAPACITY].done)
			deferred->tail++;
		LWLockRelease(deferred_lock);
		flush_pending = false;
	}
	else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
			 event == XACT_EVENT_PREPARE)
		flush_pending = false;
}

/* Write one queued item (SPI connected). */
static void
deferred_write(const DeferredItem *item)
{
	if (item->kind == DEFERRED_EVENT)
	{
		Oid			types[7] = {UUIDOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
		Datum		args[7];
		char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

		args[0] = cred_uuid_datum(&item->org_id);
		args[1] = cred_uuid_datum(&item->id);
		nulls[1] = item->has_user ? ' ' : 'n';
		args[2] = CStringGetTextDatum(item->event);
		args[3] = CStringGetTextDatum(item->ip);
		nulls[3] = item->ip[0] ? ' ' : 'n';
		args[4] = CStringGetTextDatum(item->user_agent);
		nulls[4] = item->user_agent[0] ? ' ' : 'n';
		args[5] = CStringGetTextDatum(item->details);
		args[6] = TimestampTzGetDatum(item->at);
		cred_spi_exec("SELECT donatello.record_security_event($1, $2, $3, $4::pg_catalog.inet, $5,"
					  " $6::pg_catalog.jsonb OPERATOR(pg_catalog.||)"
					  " pg_catalog.jsonb_build_object('occurred_at', $7))",
					  7, types, args, nulls, SPI_OK_SELECT);
	}
	else
	{
		Oid			types[4] = {UUIDOID, UUIDOID, TIMESTAMPTZOID, TEXTOID};
		Datum		args[4];

		args[0] = cred_uuid_datum(&item->id);
		args[1] = cred_uuid_datum(&item->org_id);
		args[2] = TimestampTzGetDatum(item->at);
		args[3] = CStringGetTextDatum(item->details);
		cred_spi_exec("UPDATE donatello.sessions SET revoked_at = $3, revoked_reason = $4"
					  " WHERE id OPERATOR(pg_catalog.=) $1 AND org_id OPERATOR(pg_catalog.=) $2"
					  " AND revoked_at IS NULL",
					  4, types, args, NULL, SPI_OK_UPDATE);
	}
}

/*
 * Write this database's queued items and the login guard's counters, in the
 * current transaction (SPI connected, running as the extension owner); items
 * of databases that no longer exist are dropped. Returns the number of items
 * written.
 */
static int
deferred_flush(void)
{
	uint64		from,
				upto,
				i;
	DeferredItem *copy;
	int			n = 0,
				written = 0;

	if (deferred == NULL)
		return 0;
	if (!callback_registered)
	{
		RegisterXactCallback(deferred_xact_callback, NULL);
		callback_registered = true;
	}
	/* serialize this database's flushes until commit; the key is ('d' << 8 | 'n', 1) */
	cred_spi_exec("SELECT pg_catalog.pg_advisory_xact_lock(25710, 1)", 0, NULL, NULL, NULL, SPI_OK_SELECT);

	LWLockAcquire(deferred_lock, LW_SHARED);
	from = deferred->tail;
	upto = deferred->head;
	copy = palloc(sizeof(DeferredItem) * Max(upto - from, 1));
	for (i = from; i < upto; i++)
		copy[i - from] = deferred->items[i % DEFERRED_CAPACITY];
	LWLockRelease(deferred_lock);

	if (flushed_positions == NULL)
		flushed_positions = MemoryContextAlloc(TopMemoryContext, sizeof(uint64) * DEFERRED_CAPACITY);
	for (i = from; i < upto; i++)
	{
		DeferredItem *item = &copy[i - from];

		if (item->done)
			continue;
		if (item->dboid == MyDatabaseId)
		{
			deferred_write(item);
			written++;
		}
		else if (cred_database_exists(item->dboid))
			continue;
		flushed_positions[n++] = i;
	}
	pfree(copy);

	flushed_count = n;
	flush_pending = true;
	guard_flush();
	return written;
}

/* Maintenance task: flush (the worker runs it as a superuser, SPI connected). */
static void
deferred_flush_task(void *arg pg_attribute_unused())
{
	if (!donatello_extension_exists())
		return;
	deferred_flush();
	apikey_usage_flush();
}

/* donatello.flush_security_events() returns integer */
Datum
donatello_flush_security_events(PG_FUNCTION_ARGS)
{
	DonatelloSavedUser saved;
	int			n;

	donatello_require_preload("flush_security_events");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in flush_security_events");
	donatello_begin_as_owner(&saved);
	n = deferred_flush();
	donatello_end_as_owner(&saved);
	SPI_finish();
	PG_RETURN_INT32(n);
}
