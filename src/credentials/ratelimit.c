/*
 * ratelimit.c
 *	  donatello.rate_limit_take(bucket, capacity, per): token buckets in
 *	  shared memory (see ratelimit.h for the C entry point).
 *
 * A bucket is identified by a 128-bit BLAKE2b digest of the database oid
 * and its name, so names of any length fit a fixed-size key. A bucket
 * refills continuously at capacity/per tokens per second up to capacity;
 * capacity and period are those of the latest call (changing them applies
 * from then on). Buckets live only in memory: a restart refills them.
 *
 * Locking: the shared hash table is split into RATE_LIMIT_PARTITIONS
 * partitions, each guarded by one LWLock of the "donatello_rate_limit"
 * tranche, chosen by the key's hash code; a take holds one partition lock
 * for a few arithmetic operations. When the table is full, every partition
 * lock is taken in order and the buckets that are full again (they carry no
 * state) are dropped.
 */
#include "postgres.h"

#include <math.h>
#include <sodium.h>

#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "credentials/ratelimit.h"

PG_FUNCTION_INFO_V1(donatello_rate_limit_take);

#define RATE_LIMIT_PARTITIONS 16
#define RATE_LIMIT_TRANCHE "donatello_rate_limit"
#define RATE_LIMIT_KEY_BYTES 16

typedef struct BucketKey
{
	uint8		digest[RATE_LIMIT_KEY_BYTES];
} BucketKey;

typedef struct Bucket
{
	BucketKey	key;			/* hash key; must be first */
	double		tokens;
	TimestampTz updated;
	int			capacity;
	double		per_seconds;
} Bucket;

/* donatello.rate_limit_buckets */
static int	max_buckets = 100000;

static HTAB *bucket_htab = NULL;
static LWLockPadded *bucket_locks = NULL;

/* shmem startup: create or attach the bucket table. */
static void
rate_limit_shmem_startup(void)
{
	HASHCTL		info;

	info.keysize = sizeof(BucketKey);
	info.entrysize = sizeof(Bucket);
	info.num_partitions = RATE_LIMIT_PARTITIONS;
	bucket_htab = ShmemInitHash("donatello rate limit buckets", max_buckets, max_buckets, &info,
								HASH_ELEM | HASH_BLOBS | HASH_PARTITION | HASH_FIXED_SIZE);
	bucket_locks = GetNamedLWLockTranche(RATE_LIMIT_TRANCHE);
}

/* Define the size setting and register the table (from _PG_init). */
void
rate_limit_shmem_init(void)
{
	DefineCustomIntVariable("donatello.rate_limit_buckets",
							"Token buckets kept in shared memory for rate_limit_take().",
							"Buckets that are full again are dropped when the table is full.",
							&max_buckets, 100000, 1000, 100000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	donatello_shmem_register(hash_estimate_size(max_buckets, sizeof(Bucket)), RATE_LIMIT_PARTITIONS,
							 RATE_LIMIT_TRANCHE, rate_limit_shmem_startup);
}

/* Tokens a bucket holds at now, refilled since its last update. */
static double
bucket_level(const Bucket *b, TimestampTz now)
{
	double		elapsed = (double) (now - b->updated) / USECS_PER_SEC;

	if (elapsed < 0)
		elapsed = 0;
	return Min((double) b->capacity, b->tokens + elapsed * b->capacity / b->per_seconds);
}

/* Drop every bucket that is full again; returns how many. Takes every lock. */
static int
rate_limit_evict_full(TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	Bucket	   *b;
	int			i,
				dropped = 0;

	for (i = 0; i < RATE_LIMIT_PARTITIONS; i++)
		LWLockAcquire(&bucket_locks[i].lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, bucket_htab);
	while ((b = hash_seq_search(&seq)) != NULL)
	{
		if (bucket_level(b, now) >= b->capacity)
		{
			hash_search(bucket_htab, &b->key, HASH_REMOVE, NULL);
			dropped++;
		}
	}
	for (i = RATE_LIMIT_PARTITIONS - 1; i >= 0; i--)
		LWLockRelease(&bucket_locks[i].lock);
	return dropped;
}

/* Take one token; see ratelimit.h. */
bool
rate_limit_take_ex(const char *bucket, int capacity, double per_seconds, int *remaining,
				   double *reset_seconds)
{
	BucketKey	key;
	crypto_generichash_state state;
	uint32		hashcode;
	LWLock	   *lock;
	Bucket	   *b;
	bool		found;
	bool		taken;
	double		level;
	TimestampTz now = GetCurrentTimestamp();
	int			attempt;

	if (capacity < 1)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("rate limit capacity must be at least 1, not %d", capacity)));
	if (!(per_seconds > 0) || isinf(per_seconds))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("rate limit period must be a positive, finite interval")));
	donatello_require_preload("rate limiting");

	crypto_generichash_init(&state, NULL, 0, RATE_LIMIT_KEY_BYTES);
	crypto_generichash_update(&state, (const uint8 *) &MyDatabaseId, sizeof(Oid));
	crypto_generichash_update(&state, (const uint8 *) bucket, strlen(bucket));
	crypto_generichash_final(&state, key.digest, RATE_LIMIT_KEY_BYTES);
	hashcode = get_hash_value(bucket_htab, &key);
	lock = &bucket_locks[hashcode % RATE_LIMIT_PARTITIONS].lock;

	for (attempt = 0;; attempt++)
	{
		LWLockAcquire(lock, LW_EXCLUSIVE);
		b = hash_search_with_hash_value(bucket_htab, &key, hashcode, HASH_ENTER_NULL, &found);
		if (b != NULL)
			break;
		LWLockRelease(lock);
		if (attempt > 0 || rate_limit_evict_full(now) == 0)
			ereport(ERROR,
					(errhidestmt(true),
					 errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("no room for rate limit bucket \"%s\"", bucket),
					 errdetail("All %d buckets are in use.", max_buckets),
					 errhint("Raise donatello.rate_limit_buckets.")));
	}
	if (!found)
	{
		b->tokens = capacity;
		b->updated = now;
	}
	b->capacity = capacity;
	b->per_seconds = per_seconds;
	level = bucket_level(b, now);
	taken = level >= 1.0;
	if (taken)
		level -= 1.0;
	b->tokens = level;
	b->updated = now;
	LWLockRelease(lock);

	if (remaining)
		*remaining = (int) floor(level);
	if (reset_seconds)
		*reset_seconds = taken ? (capacity - level) * per_seconds / capacity
			: (1.0 - level) * per_seconds / capacity;
	return taken;
}

/* donatello.rate_limit_take(bucket text, capacity int, per interval) returns boolean */
Datum
donatello_rate_limit_take(PG_FUNCTION_ARGS)
{
	char	   *bucket = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int			capacity = PG_GETARG_INT32(1);
	Interval   *per = PG_GETARG_INTERVAL_P(2);
	double		per_seconds;

	per_seconds = (double) per->time / USECS_PER_SEC + (double) per->day * SECS_PER_DAY +
		(double) per->month * DAYS_PER_MONTH * SECS_PER_DAY;
	PG_RETURN_BOOL(rate_limit_take_ex(bucket, capacity, per_seconds, NULL, NULL));
}
