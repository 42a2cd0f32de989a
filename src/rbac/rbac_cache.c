/*
 * rbac_cache.c
 *	  The shared permission cache: compiled users, role closures and
 *	  department→organization facts, shared by every backend of the cluster.
 *
 * Structure. A fixed-size shared hash table (dynahash, partitioned) maps
 * (database, kind, id) to an entry; an entry points at a variable-size blob in
 * a dynamic shared area created in place inside the main shared memory
 * segment. donatello.permission_cache_size bounds the area; the number of
 * entries is derived from it (one per 512 bytes).
 *
 * Validity. A cluster-wide generation counter is bumped after every commit
 * that changed RBAC data (rbac_invalidate.c). An entry is valid only while its
 * generation equals the current one. A backend reads the generation *before*
 * it takes the snapshot it compiles with, and stores the result tagged with
 * that generation, so a result computed before a commit became visible can
 * never be served after that commit's bump. Negative entries (an unknown user
 * or department) are also tagged with a second counter, bumped after every
 * commit that inserted users or departments, so creating a user invalidates
 * only the negative entries.
 *
 * Locking rules.
 *	- The hash table is split into RBAC_CACHE_PARTITIONS partitions, each
 *	  guarded by one LWLock of the "donatello_permission_cache" tranche,
 *	  chosen by the key's hash code. Readers hold it shared while they look at
 *	  the entry *and* its blob; writers hold it exclusive to replace an entry,
 *	  and free the old blob before releasing it, so no reader ever sees a freed
 *	  blob.
 *	- Eviction takes every partition lock exclusively, in partition order.
 *	- The generation and the counters are atomics and need no lock.
 *	- The dynamic shared area does its own locking for allocation.
 *	- Nothing that can ereport runs while a partition lock is held except
 *	  dynahash/DSA internals that only fail on corruption.
 *
 * Memory pressure. When the area or the table is full, entries of old
 * generations are dropped first; if that frees less than a quarter of the
 * space, every entry is dropped. Entries are rebuilt on demand.
 */
#include "postgres.h"

#include "access/xlog.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/dsa.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "donatello.h"
#include "rbac/rbac.h"

#define RBAC_CACHE_PARTITIONS 16
#define RBAC_CACHE_BYTES_PER_ENTRY 512
#define RBAC_CACHE_TRANCHE "donatello_permission_cache"

typedef struct RbacCacheKey
{
	Oid			dbid;
	uint32		kind;			/* RbacCacheKind */
	pg_uuid_t	id;
} RbacCacheKey;

typedef struct RbacCacheEntry
{
	RbacCacheKey key;			/* hash key; must be first */
	RbacStamp	stamp;
	bool		negative;		/* an unknown id: also depends on stamp.inserts */
	dsa_pointer blob;
	uint32		size;
} RbacCacheEntry;

/* The fixed part of the cache in the main shared memory segment. */
typedef struct RbacCacheShared
{
	pg_atomic_uint64 generation;	/* bumped after each RBAC commit */
	pg_atomic_uint64 inserts;	/* bumped after each commit inserting users or departments */
	pg_atomic_uint64 evictions;
	pg_atomic_uint64 bytes_used;
	int			dsa_tranche_id;
	Size		dsa_size;
	char		dsa_space[FLEXIBLE_ARRAY_MEMBER];	/* the in-place area */
} RbacCacheShared;

/* donatello.permission_cache_size, in kB; 0 disables the cache */
static int	permission_cache_size_kb = 32768;

static RbacCacheShared *rbac_shared = NULL;
static HTAB *rbac_htab = NULL;
static LWLockPadded *rbac_locks = NULL;
static dsa_area *rbac_dsa = NULL;

int64		rbac_backend_hits = 0;
int64		rbac_backend_misses = 0;
int64		rbac_backend_bypasses = 0;

/* Size of the dynamic shared area holding the blobs. */
static Size
rbac_dsa_size(void)
{
	Size		size = (Size) permission_cache_size_kb * 1024;

	return MAXALIGN(Max(size, dsa_minimum_size()));
}

/* Maximum number of entries, derived from the area size. */
static long
rbac_max_entries(void)
{
	return Max(128, (long) (rbac_dsa_size() / RBAC_CACHE_BYTES_PER_ENTRY));
}

/* Total shared memory the cache needs. */
static Size
rbac_cache_shmem_size(void)
{
	Size		size;

	size = MAXALIGN(offsetof(RbacCacheShared, dsa_space));
	size = add_size(size, rbac_dsa_size());
	size = add_size(size, hash_estimate_size(rbac_max_entries(), sizeof(RbacCacheEntry)));
	return size;
}

/* Create (postmaster) or attach to (EXEC_BACKEND child) the shared cache. */
static void
rbac_cache_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;
	long		max_entries = rbac_max_entries();

	rbac_shared = ShmemInitStruct("donatello permission cache",
								  MAXALIGN(offsetof(RbacCacheShared, dsa_space)) + rbac_dsa_size(),
								  &found);
	rbac_locks = GetNamedLWLockTranche(RBAC_CACHE_TRANCHE);

	info.keysize = sizeof(RbacCacheKey);
	info.entrysize = sizeof(RbacCacheEntry);
	info.num_partitions = RBAC_CACHE_PARTITIONS;
	rbac_htab = ShmemInitHash("donatello permission cache entries",
							  max_entries, max_entries, &info,
							  HASH_ELEM | HASH_BLOBS | HASH_PARTITION | HASH_FIXED_SIZE);

	if (!found)
	{
		dsa_area   *area;

		pg_atomic_init_u64(&rbac_shared->generation, 1);
		pg_atomic_init_u64(&rbac_shared->inserts, 1);
		pg_atomic_init_u64(&rbac_shared->evictions, 0);
		pg_atomic_init_u64(&rbac_shared->bytes_used, 0);
		rbac_shared->dsa_size = rbac_dsa_size();
		rbac_shared->dsa_tranche_id = LWLockNewTrancheId();

		area = dsa_create_in_place(rbac_shared->dsa_space, rbac_shared->dsa_size,
								   rbac_shared->dsa_tranche_id, NULL);
		dsa_pin(area);
		/* never grow beyond the in-place space: no DSM segments */
		dsa_set_size_limit(area, rbac_shared->dsa_size);
		dsa_detach(area);
	}
}

/* Define donatello.permission_cache_size and register the shared memory. */
void
rbac_cache_init(void)
{
	DefineCustomIntVariable("donatello.permission_cache_size",
							"Shared memory for compiled permission sets.",
							"0 disables the cache: every check then reads the tables.",
							&permission_cache_size_kb,
							32768, 0, 1024 * 1024,
							PGC_POSTMASTER,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	if (permission_cache_size_kb > 0)
		donatello_shmem_register(rbac_cache_shmem_size(), RBAC_CACHE_PARTITIONS,
								 RBAC_CACHE_TRANCHE, rbac_cache_shmem_startup);
}

/* on_shmem_exit: drop this backend's reference to the shared area. */
static void
rbac_cache_detach(int code pg_attribute_unused(), Datum arg pg_attribute_unused())
{
	if (rbac_dsa != NULL)
	{
		dsa_detach(rbac_dsa);
		dsa_release_in_place(rbac_shared->dsa_space);
		rbac_dsa = NULL;
	}
}

/* Attach this backend to the shared area on first use. */
static void
rbac_cache_attach(void)
{
	MemoryContext old;

	if (rbac_dsa != NULL)
		return;
	LWLockRegisterTranche(rbac_shared->dsa_tranche_id, "donatello_permission_cache_area");
	old = MemoryContextSwitchTo(TopMemoryContext);
	rbac_dsa = dsa_attach_in_place(rbac_shared->dsa_space, NULL);
	dsa_pin_mapping(rbac_dsa);
	MemoryContextSwitchTo(old);
	on_shmem_exit(rbac_cache_detach, (Datum) 0);
}

/*
 * Can this backend use the shared cache? Not when it is disabled, and not on
 * a standby: RBAC changes arrive there through WAL replay, which fires no
 * trigger, so a standby always reads the tables.
 */
bool
rbac_cache_usable(void)
{
	if (rbac_shared == NULL || RecoveryInProgress())
		return false;
	rbac_cache_attach();
	return true;
}

/* The current counters; read before taking a snapshot to compile with. */
RbacStamp
rbac_cache_stamp(void)
{
	RbacStamp	stamp = {0, 0};

	if (rbac_shared != NULL)
	{
		stamp.generation = pg_atomic_read_u64(&rbac_shared->generation);
		stamp.inserts = pg_atomic_read_u64(&rbac_shared->inserts);
	}
	return stamp;
}

/* Is an entry valid under the current counters? */
static inline bool
entry_is_current(const RbacCacheEntry *entry, const RbacStamp *now)
{
	return entry->stamp.generation == now->generation &&
		(!entry->negative || entry->stamp.inserts == now->inserts);
}

/* Invalidate every entry; called after a commit that changed RBAC data. */
void
rbac_cache_bump_generation(void)
{
	if (rbac_shared != NULL)
		pg_atomic_fetch_add_u64(&rbac_shared->generation, 1);
}

/* Invalidate negative entries; called after a commit that inserted users or departments. */
void
rbac_cache_bump_inserts(void)
{
	if (rbac_shared != NULL)
		pg_atomic_fetch_add_u64(&rbac_shared->inserts, 1);
}

/* Build a key with its padding cleared (the hash covers every byte). */
static void
rbac_cache_make_key(RbacCacheKey *key, RbacCacheKind kind, const pg_uuid_t *id)
{
	memset(key, 0, sizeof(*key));
	key->dbid = MyDatabaseId;
	key->kind = (uint32) kind;
	memcpy(&key->id, id, sizeof(pg_uuid_t));
}

static inline LWLock *
rbac_partition_lock(uint32 hashcode)
{
	return &rbac_locks[hashcode % RBAC_CACHE_PARTITIONS].lock;
}

/*
 * Look up a valid entry and run reader on its blob under the partition lock.
 * Returns true on a hit, with the reader's answer in *result.
 */
bool
rbac_cache_read(RbacCacheKind kind, const pg_uuid_t *id,
				rbac_blob_reader reader, void *arg, bool *result)
{
	RbacCacheKey key;
	RbacCacheEntry *entry;
	uint32		hashcode;
	LWLock	   *lock;
	RbacStamp	now = rbac_cache_stamp();
	bool		hit = false;

	rbac_cache_make_key(&key, kind, id);
	hashcode = get_hash_value(rbac_htab, &key);
	lock = rbac_partition_lock(hashcode);

	LWLockAcquire(lock, LW_SHARED);
	entry = hash_search_with_hash_value(rbac_htab, &key, hashcode, HASH_FIND, NULL);
	if (entry != NULL && entry_is_current(entry, &now))
	{
		*result = reader(dsa_get_address(rbac_dsa, entry->blob), arg);
		hit = true;
	}
	LWLockRelease(lock);
	return hit;
}

/* Cache reader: copy the blob out of shared memory into *(void **) arg. */
bool
rbac_cache_copy_reader(const void *blob, void *arg)
{
	uint32		size = *(const uint32 *) blob;	/* every blob starts with its size */
	void	   *copy = palloc(size);

	memcpy(copy, blob, size);
	*(void **) arg = copy;
	return true;
}

/* Free an entry's blob; caller holds the entry's partition lock exclusively. */
static void
rbac_cache_free_blob(RbacCacheEntry *entry)
{
	if (DsaPointerIsValid(entry->blob))
	{
		dsa_free(rbac_dsa, entry->blob);
		pg_atomic_fetch_sub_u64(&rbac_shared->bytes_used, entry->size);
		entry->blob = InvalidDsaPointer;
	}
}

/*
 * Drop entries to make room: stale ones first, everything when that is not
 * enough (or when everything is true). Takes all partition locks.
 */
static void
rbac_cache_evict(bool everything)
{
	HASH_SEQ_STATUS status;
	RbacCacheEntry *entry;
	RbacStamp	now = rbac_cache_stamp();
	long		remaining = 0;
	int			i;

	for (i = 0; i < RBAC_CACHE_PARTITIONS; i++)
		LWLockAcquire(&rbac_locks[i].lock, LW_EXCLUSIVE);

	hash_seq_init(&status, rbac_htab);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (everything || !entry_is_current(entry, &now))
		{
			rbac_cache_free_blob(entry);
			hash_search(rbac_htab, &entry->key, HASH_REMOVE, NULL);
		}
		else
			remaining++;
	}

	if (!everything &&
		(remaining > rbac_max_entries() * 3 / 4 ||
		 pg_atomic_read_u64(&rbac_shared->bytes_used) > rbac_shared->dsa_size * 3 / 4))
	{
		hash_seq_init(&status, rbac_htab);
		while ((entry = hash_seq_search(&status)) != NULL)
		{
			rbac_cache_free_blob(entry);
			hash_search(rbac_htab, &entry->key, HASH_REMOVE, NULL);
		}
	}

	for (i = RBAC_CACHE_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(&rbac_locks[i].lock);

	pg_atomic_fetch_add_u64(&rbac_shared->evictions, 1);
}

/* Copy a blob into the area; evicts once if the area is full. */
static dsa_pointer
rbac_cache_copy_blob(const void *blob, Size size)
{
	dsa_pointer dp;
	int			attempt;

	for (attempt = 0; attempt < 2; attempt++)
	{
		dp = dsa_allocate_extended(rbac_dsa, size, DSA_ALLOC_NO_OOM);
		if (DsaPointerIsValid(dp))
		{
			memcpy(dsa_get_address(rbac_dsa, dp), blob, size);
			pg_atomic_fetch_add_u64(&rbac_shared->bytes_used, size);
			return dp;
		}
		rbac_cache_evict(false);
	}
	return InvalidDsaPointer;
}

/*
 * Store a compiled blob computed under the given counters (negative: it
 * records an unknown id). Does nothing if the counters are already stale or
 * there is no room even after eviction (the caller has its answer either way).
 */
void
rbac_cache_store(RbacCacheKind kind, const pg_uuid_t *id, const RbacStamp *stamp,
				 bool negative, const void *blob, Size size)
{
	RbacCacheKey key;
	RbacCacheEntry *entry;
	uint32		hashcode;
	LWLock	   *lock;
	dsa_pointer dp;
	bool		found;
	int			attempt;
	RbacStamp	now = rbac_cache_stamp();

	if (stamp->generation != now.generation || (negative && stamp->inserts != now.inserts))
		return;

	dp = rbac_cache_copy_blob(blob, size);
	if (!DsaPointerIsValid(dp))
		return;

	rbac_cache_make_key(&key, kind, id);
	hashcode = get_hash_value(rbac_htab, &key);
	lock = rbac_partition_lock(hashcode);

	for (attempt = 0; attempt < 2; attempt++)
	{
		LWLockAcquire(lock, LW_EXCLUSIVE);
		entry = hash_search_with_hash_value(rbac_htab, &key, hashcode, HASH_ENTER_NULL, &found);
		if (entry != NULL)
		{
			if (found && (entry->stamp.generation > stamp->generation ||
						  (entry->stamp.generation == stamp->generation &&
						   entry->stamp.inserts > stamp->inserts)))
			{
				/* someone stored a fresher answer meanwhile: keep it */
				LWLockRelease(lock);
				break;
			}
			if (found)
				rbac_cache_free_blob(entry);
			entry->stamp = *stamp;
			entry->negative = negative;
			entry->blob = dp;
			entry->size = (uint32) size;
			LWLockRelease(lock);
			return;
		}
		LWLockRelease(lock);
		rbac_cache_evict(false);
	}

	dsa_free(rbac_dsa, dp);
	pg_atomic_fetch_sub_u64(&rbac_shared->bytes_used, size);
}

/* Drop every entry (donatello.permission_cache_reset()). */
void
rbac_cache_reset(void)
{
	if (!rbac_cache_usable())
		return;
	rbac_cache_evict(true);
}

/* Sizes and counters for donatello.permission_cache_stats(). */
void
rbac_cache_get_stats(RbacCacheStats *stats)
{
	memset(stats, 0, sizeof(*stats));
	if (!rbac_cache_usable())
		return;
	stats->entries = hash_get_num_entries(rbac_htab);
	stats->capacity = rbac_max_entries();
	stats->bytes_used = (int64) pg_atomic_read_u64(&rbac_shared->bytes_used);
	stats->bytes_total = (int64) rbac_shared->dsa_size;
	stats->generation = (int64) pg_atomic_read_u64(&rbac_shared->generation);
	stats->evictions = (int64) pg_atomic_read_u64(&rbac_shared->evictions);
}
