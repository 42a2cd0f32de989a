/*
 * blocklist_cache.c
 *	  Compiled blocklists per organization: compiled on first use, kept in
 *	  each backend's memory, and invalidated cluster-wide when an
 *	  organization's terms change.
 *
 * Invalidation. Shared memory holds BLOCKLIST_SLOTS generation counters; an
 * organization uses the slot its id hashes to. A row trigger on
 * donatello.blocked_terms records which organizations the transaction
 * changed; at commit, after the change became visible to other sessions,
 * their slots are bumped (a TRUNCATE bumps every slot). A compiled blocklist
 * carries the slot value read *before* the snapshot it was compiled with
 * was taken, so a result computed before a commit became visible is never
 * served after that commit's bump. Two organizations sharing a slot only
 * cost each other a recompilation.
 *
 * The changing transaction sees its own change at once: for an organization
 * it changed, it compiles from the tables on every call and caches nothing.
 * PREPARE TRANSACTION of such a transaction is refused (its commit would run
 * in another backend, out of reach of the callback). A standby never caches:
 * changes reach it through WAL replay, which fires no trigger. Content checks
 * need the library preloaded (the counters live in shared memory).
 *
 * Locking: the counters are atomics and need no lock. The cache itself is
 * backend-local (no locking); donatello.content_cache_size bounds its memory
 * and the least recently used blocklists are dropped first.
 *
 * Proved by test/isolation/specs/blocklist_cache.spec.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "donatello.h"
#include "safety/safety.h"

#define BLOCKLIST_SLOTS 1024

PG_FUNCTION_INFO_V1(donatello_blocklist_invalidate);
PG_FUNCTION_INFO_V1(donatello_content_cache_stats);

/* the shared generation counters */
typedef struct BlocklistShared
{
	pg_atomic_uint64 slot[BLOCKLIST_SLOTS];
} BlocklistShared;

typedef struct BlocklistCacheEntry
{
	pg_uuid_t	org_id;			/* hash key */
	CompiledBlocklist *blocklist;
} BlocklistCacheEntry;

/* donatello.content_cache_size, in kB, per backend */
static int	content_cache_size_kb = 32768;

static BlocklistShared *blocklist_shared = NULL;
static HTAB *blocklist_cache = NULL;
static CompiledBlocklist *lru_head = NULL;	/* most recently used */
static CompiledBlocklist *lru_tail = NULL;
static Size cache_bytes = 0;

/* organizations whose terms this transaction changed (TopTransactionContext) */
static List *xact_changed_orgs = NIL;
static bool xact_changed_all = false;

static int64 cache_hits = 0;
static int64 cache_misses = 0;
static int64 cache_bypasses = 0;

static SPIPlanPtr terms_plan = NULL;

/* Create or attach to the generation counters. */
static void
blocklist_shmem_startup(void)
{
	bool		found;
	int			i;

	blocklist_shared = ShmemInitStruct("donatello blocklist generations",
									   sizeof(BlocklistShared), &found);
	if (!found)
		for (i = 0; i < BLOCKLIST_SLOTS; i++)
			pg_atomic_init_u64(&blocklist_shared->slot[i], 1);
}

/* Define donatello.content_cache_size and register the counters. */
void
blocklist_cache_init(void)
{
	DefineCustomIntVariable("donatello.content_cache_size",
							"Memory each backend may use for compiled content blocklists.",
							"The least recently used organizations' blocklists are dropped first; "
							"a blocklist larger than this is compiled for each check.",
							&content_cache_size_kb,
							32768, 0, 4 * 1024 * 1024,
							PGC_SUSET,
							GUC_UNIT_KB,
							NULL, NULL, NULL);
	donatello_shmem_register(sizeof(BlocklistShared), 0, "donatello_blocklist",
							 blocklist_shmem_startup);
}

/* The slot an organization's generation lives in. */
static pg_atomic_uint64 *
org_slot(const pg_uuid_t *org_id)
{
	uint32		h = hash_bytes(org_id->data, UUID_LEN) ^ (uint32) MyDatabaseId;

	return &blocklist_shared->slot[h % BLOCKLIST_SLOTS];
}

/* Has the current transaction changed this organization's terms? */
static bool
changed_in_transaction(const pg_uuid_t *org_id)
{
	ListCell   *lc;

	if (xact_changed_all)
		return true;
	foreach(lc, xact_changed_orgs)
		if (memcmp(lfirst(lc), org_id, sizeof(pg_uuid_t)) == 0)
			return true;
	return false;
}

/* Row/statement trigger on blocked_terms: remember which organizations changed. */
Datum
donatello_blocklist_invalidate(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	HeapTuple	tuples[2];
	int			i;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("donatello.blocklist_invalidate() must be called as a trigger")));

	/* not preloaded: no cache anywhere to invalidate, and no callback to clear the list */
	if (blocklist_shared == NULL)
		return PointerGetDatum(NULL);

	if (!TRIGGER_FIRED_FOR_ROW(td->tg_event))
	{
		xact_changed_all = true;	/* TRUNCATE */
		return PointerGetDatum(NULL);
	}

	tuples[0] = td->tg_trigtuple;
	tuples[1] = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : NULL;
	for (i = 0; i < 2; i++)
	{
		bool		isnull;
		int			attno;
		Datum		d;

		if (tuples[i] == NULL)
			continue;
		attno = SPI_fnumber(td->tg_relation->rd_att, "org_id");
		if (attno <= 0)
			elog(ERROR, "blocked_terms has no org_id column");
		d = heap_getattr(tuples[i], attno, td->tg_relation->rd_att, &isnull);
		if (!isnull && !changed_in_transaction(DatumGetUUIDP(d)))
		{
			MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
			pg_uuid_t  *copy = palloc(sizeof(pg_uuid_t));

			memcpy(copy, DatumGetUUIDP(d), sizeof(pg_uuid_t));
			xact_changed_orgs = lappend(xact_changed_orgs, copy);
			MemoryContextSwitchTo(old);
		}
	}
	return PointerGetDatum(NULL);
}

/* At commit, bump the changed organizations' slots; at any end, forget. */
static void
blocklist_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	ListCell   *lc;
	int			i;

	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (xact_changed_all || xact_changed_orgs != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that changed donatello blocked terms"),
						 errhint("Change blocked terms in an ordinary transaction.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (blocklist_shared != NULL)
			{
				if (xact_changed_all)
					for (i = 0; i < BLOCKLIST_SLOTS; i++)
						pg_atomic_fetch_add_u64(&blocklist_shared->slot[i], 1);
				else
					foreach(lc, xact_changed_orgs)
						pg_atomic_fetch_add_u64(org_slot(lfirst(lc)), 1);
			}
			xact_changed_orgs = NIL;
			xact_changed_all = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			xact_changed_orgs = NIL;	/* the list lived in TopTransactionContext */
			xact_changed_all = false;
			break;
		default:
			break;
	}
}

/* Register the transaction callback (every backend that loads the library). */
void
blocklist_invalidate_init(void)
{
	RegisterXactCallback(blocklist_xact_callback, NULL);
}

/* Unlink a blocklist from the LRU list. */
static void
lru_unlink(CompiledBlocklist *bl)
{
	if (bl->lru_prev)
		bl->lru_prev->lru_next = bl->lru_next;
	else
		lru_head = bl->lru_next;
	if (bl->lru_next)
		bl->lru_next->lru_prev = bl->lru_prev;
	else
		lru_tail = bl->lru_prev;
	bl->lru_prev = bl->lru_next = NULL;
}

/* Put a blocklist at the head of the LRU list. */
static void
lru_push_front(CompiledBlocklist *bl)
{
	bl->lru_prev = NULL;
	bl->lru_next = lru_head;
	if (lru_head)
		lru_head->lru_prev = bl;
	lru_head = bl;
	if (lru_tail == NULL)
		lru_tail = bl;
}

/* Drop one cached blocklist and free its memory. */
static void
cache_drop(CompiledBlocklist *bl)
{
	lru_unlink(bl);
	hash_search(blocklist_cache, &bl->org_id, HASH_REMOVE, NULL);
	cache_bytes -= bl->bytes;
	MemoryContextDelete(bl->context);
}

/* Can this backend cache blocklists? */
static bool
cache_usable(void)
{
	if (blocklist_shared == NULL || content_cache_size_kb == 0 || RecoveryInProgress())
		return false;
	if (blocklist_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(pg_uuid_t);
		ctl.entrysize = sizeof(BlocklistCacheEntry);
		ctl.hcxt = TopMemoryContext;
		blocklist_cache = hash_create("donatello blocklist cache", 64, &ctl,
									  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	return true;
}

/* Compile an organization's blocklist from the tables into a new context under parent. */
static CompiledBlocklist *
compile_blocklist(const pg_uuid_t *org_id, uint64 generation, MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "donatello blocklist",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;
	CompiledBlocklist *bl;
	DonatelloSavedUser saved;
	Snapshot	snapshot;
	Datum		arg = UUIDPGetDatum(unconstify(pg_uuid_t *, org_id));
	Oid			argtype = UUIDOID;
	char	  **folded;
	int		   *folded_len;
	uint64		i;
	int			rc;

	donatello_begin_as_owner(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (terms_plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare("SELECT term, folded, category FROM donatello.blocked_terms"
									   " WHERE org_id OPERATOR(pg_catalog.=) $1 ORDER BY id",
									   1, &argtype);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare the blocklist query: %s",
				 SPI_result_code_string(SPI_result));
		terms_plan = plan;
	}
	/* the latest snapshot: committed terms plus this transaction's own changes */
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	rc = SPI_execute_snapshot(terms_plan, &arg, NULL, snapshot, InvalidSnapshot, true, false, 0);
	UnregisterSnapshot(snapshot);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "blocklist query failed: %s", SPI_result_code_string(rc));

	old = MemoryContextSwitchTo(cxt);
	bl = palloc0(sizeof(CompiledBlocklist));
	bl->org_id = *org_id;
	bl->generation = generation;
	bl->context = cxt;
	bl->nterms = (int) SPI_processed;
	bl->terms = palloc(sizeof(char *) * (SPI_processed + 1));
	bl->categories = palloc(sizeof(char *) * (SPI_processed + 1));
	folded = palloc(sizeof(char *) * (SPI_processed + 1));
	folded_len = palloc(sizeof(int) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *f = SPI_getvalue(tup, desc, 2);

		bl->terms[i] = SPI_getvalue(tup, desc, 1);
		bl->categories[i] = SPI_getvalue(tup, desc, 3);
		folded[i] = text_to_utf8(f, strlen(f), &folded_len[i]);
	}
	bl->automaton = blocklist_build(bl->nterms, folded, folded_len);
	MemoryContextSwitchTo(old);

	SPI_finish();
	donatello_end_as_owner(&saved);
	bl->bytes = MemoryContextMemAllocated(cxt, true);
	return bl;
}

/*
 * The organization's compiled blocklist: from the cache when it is current,
 * otherwise compiled now (and cached when that is allowed). An uncached one
 * lives in the caller's memory context.
 */
const CompiledBlocklist *
blocklist_for_org(const pg_uuid_t *org_id)
{
	BlocklistCacheEntry *entry;
	CompiledBlocklist *bl;
	uint64		generation;
	bool		found;

	donatello_require_preload("content checks");
	if (!cache_usable() || changed_in_transaction(org_id))
	{
		cache_bypasses++;
		return compile_blocklist(org_id, 0, CurrentMemoryContext);
	}

	/* read the generation before the compile snapshot is taken */
	generation = pg_atomic_read_u64(org_slot(org_id));
	entry = hash_search(blocklist_cache, org_id, HASH_FIND, NULL);
	if (entry != NULL)
	{
		if (entry->blocklist->generation == generation)
		{
			cache_hits++;
			lru_unlink(entry->blocklist);
			lru_push_front(entry->blocklist);
			return entry->blocklist;
		}
		cache_drop(entry->blocklist);
	}

	cache_misses++;
	bl = compile_blocklist(org_id, generation, CurrentMemoryContext);
	if (bl->bytes > (Size) content_cache_size_kb * 1024)
		return bl;				/* too large to keep: freed with the caller's context */

	while (lru_tail != NULL && cache_bytes + bl->bytes > (Size) content_cache_size_kb * 1024)
		cache_drop(lru_tail);
	MemoryContextSetParent(bl->context, TopMemoryContext);
	entry = hash_search(blocklist_cache, org_id, HASH_ENTER, &found);
	entry->blocklist = bl;
	lru_push_front(bl);
	cache_bytes += bl->bytes;
	return bl;
}

/* donatello.content_cache_stats(): this backend's blocklist cache */
Datum
donatello_content_cache_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int64GetDatum(blocklist_cache ? hash_get_num_entries(blocklist_cache) : 0);
	values[1] = Int64GetDatum((int64) cache_bytes);
	values[2] = Int64GetDatum(cache_hits);
	values[3] = Int64GetDatum(cache_misses);
	values[4] = Int64GetDatum(cache_bypasses);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
