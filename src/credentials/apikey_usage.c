/*
 * apikey_usage.c
 *	  API key usage (api_keys.usage_count and last_used_at) without writing
 *	  the key row on every verification, so verification never waits on a
 *	  row lock of a hot key.
 *
 * Each backend counts uses in a local table; at the end of each transaction
 * (commit or abort: the use happened either way) it adds its counts to a
 * shared table; the maintenance worker's flush (deferred.c) moves the shared
 * counts into api_keys with one UPDATE per key. A flush that fails, or a
 * shared table that is full, loses counts; usage is statistics, not billing.
 *
 * Locking: the shared table (dynahash, fixed size) is guarded by one LWLock
 * of the "donatello_api_key_usage" tranche, taken once per transaction per
 * backend that verified keys, and by the flush to move the counts out.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "credentials/credentials.h"
#include "credentials/apikey.h"

PG_FUNCTION_INFO_V1(donatello_flush_api_key_usage);

#define USAGE_TRANCHE "donatello_api_key_usage"
#define USAGE_SHARED_ENTRIES 8192

typedef struct UsageEntry
{
	pg_uuid_t	key_id;			/* hash key; must be first */
	Oid			dboid;
	int64		count;
	TimestampTz last_used;
} UsageEntry;

static HTAB *shared_usage = NULL;
static LWLock *usage_lock = NULL;
static HTAB *local_usage = NULL;
static bool callback_registered = false;
static uint64 usage_lost = 0;

/* shmem startup: create or attach the shared table. */
static void
usage_shmem_startup(void)
{
	HASHCTL		info;

	info.keysize = sizeof(pg_uuid_t);
	info.entrysize = sizeof(UsageEntry);
	shared_usage = ShmemInitHash("donatello API key usage", USAGE_SHARED_ENTRIES, USAGE_SHARED_ENTRIES,
								 &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	usage_lock = &(GetNamedLWLockTranche(USAGE_TRANCHE))[0].lock;
}

/* Register the shared table (from _PG_init). */
void
apikey_usage_shmem_init(void)
{
	donatello_shmem_register(hash_estimate_size(USAGE_SHARED_ENTRIES, sizeof(UsageEntry)), 1,
							 USAGE_TRANCHE, usage_shmem_startup);
}

/* At the end of a transaction, add the local counts to the shared table. */
static void
usage_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	HASH_SEQ_STATUS seq;
	UsageEntry *local;
	bool		lost = false;

	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT)
		return;
	if (local_usage == NULL || hash_get_num_entries(local_usage) == 0 || shared_usage == NULL)
		return;
	LWLockAcquire(usage_lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, local_usage);
	while ((local = hash_seq_search(&seq)) != NULL)
	{
		bool		found;
		UsageEntry *shared = hash_search(shared_usage, &local->key_id, HASH_ENTER_NULL, &found);

		if (shared == NULL)
		{
			lost = true;
			usage_lost += local->count;
		}
		else if (!found)
			*shared = *local;
		else
		{
			shared->count += local->count;
			shared->last_used = Max(shared->last_used, local->last_used);
		}
		hash_search(local_usage, &local->key_id, HASH_REMOVE, NULL);
	}
	LWLockRelease(usage_lock);
	if (lost)
		deferred_wake_flusher();
}

/* Remove the shared counts of databases that no longer exist. */
static void
usage_drop_dropped_databases(void)
{
	HASH_SEQ_STATUS seq;
	UsageEntry *e;
	Oid			others[16];
	int			nothers = 0,
				i;

	LWLockAcquire(usage_lock, LW_SHARED);
	hash_seq_init(&seq, shared_usage);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		bool		known = false;

		for (i = 0; i < nothers; i++)
			known |= others[i] == e->dboid;
		if (!known && e->dboid != MyDatabaseId && nothers < (int) lengthof(others))
			others[nothers++] = e->dboid;
	}
	LWLockRelease(usage_lock);
	for (i = 0; i < nothers; i++)
	{
		if (cred_database_exists(others[i]))
			continue;
		LWLockAcquire(usage_lock, LW_EXCLUSIVE);
		hash_seq_init(&seq, shared_usage);
		while ((e = hash_seq_search(&seq)) != NULL)
			if (e->dboid == others[i])
				hash_search(shared_usage, &e->key_id, HASH_REMOVE, NULL);
		LWLockRelease(usage_lock);
	}
}

/* Count one use of a key in this backend. */
void
apikey_usage_count(const pg_uuid_t *key_id)
{
	UsageEntry *e;
	bool		found;

	if (local_usage == NULL)
	{
		HASHCTL		info;

		info.keysize = sizeof(pg_uuid_t);
		info.entrysize = sizeof(UsageEntry);
		info.hcxt = TopMemoryContext;
		local_usage = hash_create("donatello local API key usage", 64, &info,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	if (!callback_registered)
	{
		RegisterXactCallback(usage_xact_callback, NULL);
		callback_registered = true;
	}
	e = hash_search(local_usage, key_id, HASH_ENTER, &found);
	if (!found)
	{
		e->count = 0;
		e->dboid = MyDatabaseId;
	}
	e->count++;
	e->last_used = GetCurrentTransactionStartTimestamp();
}

/*
 * Move this database's shared counts into api_keys (SPI connected, as the
 * extension owner); drop those of databases that no longer exist. Returns
 * the number of keys updated.
 */
int
apikey_usage_flush(void)
{
	HASH_SEQ_STATUS seq;
	UsageEntry *e;
	UsageEntry *copies;
	int			n = 0,
				i,
				written = 0;

	if (shared_usage == NULL)
		return 0;
	copies = palloc(sizeof(UsageEntry) * USAGE_SHARED_ENTRIES);
	LWLockAcquire(usage_lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, shared_usage);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->dboid != MyDatabaseId)
			continue;
		copies[n++] = *e;
		hash_search(shared_usage, &e->key_id, HASH_REMOVE, NULL);
	}
	LWLockRelease(usage_lock);
	usage_drop_dropped_databases();

	for (i = 0; i < n; i++)
	{
		Oid			types[3] = {UUIDOID, INT8OID, TIMESTAMPTZOID};
		Datum		args[3];

		args[0] = cred_uuid_datum(&copies[i].key_id);
		args[1] = Int64GetDatum(copies[i].count);
		args[2] = TimestampTzGetDatum(copies[i].last_used);
		cred_spi_exec("UPDATE donatello.api_keys SET usage_count = usage_count OPERATOR(pg_catalog.+) $2,"
					  " last_used_at = GREATEST(last_used_at, $3) WHERE id OPERATOR(pg_catalog.=) $1",
					  3, types, args, NULL, SPI_OK_UPDATE);
		written += (int) SPI_processed;
	}
	pfree(copies);
	return written;
}

/* donatello.flush_api_key_usage() returns integer */
Datum
donatello_flush_api_key_usage(PG_FUNCTION_ARGS)
{
	DonatelloSavedUser saved;
	int			n;

	donatello_require_preload("flush_api_key_usage");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in flush_api_key_usage");
	donatello_begin_as_owner(&saved);
	n = apikey_usage_flush();
	donatello_end_as_owner(&saved);
	SPI_finish();
	PG_RETURN_INT32(n);
}
