/*
 * guard.c
 *	  The login guard: consecutive password and MFA failures per user and the
 *	  lockouts they cause, in shared memory.
 *
 * Why shared memory. A failed login raises DNA01, which rolls back the
 * caller's transaction, so a failure counter kept only in a table would never
 * count. The guard is the authority while the server runs; its entries are
 * written to donatello.user_credentials (failed_logins, locked_until,
 * mfa_failures, mfa_locked_until) by the flush in deferred.c, so the
 * counters survive a restart: an entry missing from shared memory is seeded
 * from the values the caller read from that table.
 *
 * Exactly-once lockout: guard_record_failure() increments and decides under
 * the guard lock, and reports "locked now" only to the failure that reached
 * the threshold, so concurrent 5th failures lock once (and record one
 * lockout event). login additionally locks the user's row in
 * user_credentials, so attempts on one account run one at a time.
 *
 * Locking: one LWLock of the "donatello_credentials" tranche (index 0) guards
 * the hash table and every entry; it is held only for a lookup or an update
 * of a few fields, never across anything that can ereport, except
 * dynahash's own "out of shared memory", which HASH_FIXED_SIZE avoids by
 * returning NULL.
 *
 * Eviction: when the table is full, a clean entry (already written to the
 * table) that is not locked is dropped, least recently touched first; such
 * an entry is re-seeded exactly from the table later.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "credentials/credentials.h"

#define GUARD_TRANCHE "donatello_login_guard"

typedef struct GuardEntry
{
	pg_uuid_t	user_id;		/* hash key; must be first */
	pg_uuid_t	org_id;
	Oid			dboid;			/* database of the user */
	int			failures[2];
	TimestampTz locked_until[2];
	TimestampTz touched;
	bool		dirty;			/* changed since the last flush */
} GuardEntry;

/* donatello.login_guard_size: entries in the shared table */
static int	guard_size = 10000;

static HTAB *guard_htab = NULL;
static LWLock *guard_lock = NULL;

/* shmem startup: create or attach the table. */
static void
guard_shmem_startup(void)
{
	HASHCTL		info;

	info.keysize = sizeof(pg_uuid_t);
	info.entrysize = sizeof(GuardEntry);
	guard_htab = ShmemInitHash("donatello login guard", guard_size, guard_size, &info,
							   HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	guard_lock = &(GetNamedLWLockTranche(GUARD_TRANCHE))[0].lock;
}

/* Define the size setting and register the shared table (from _PG_init). */
void
guard_shmem_init(void)
{
	DefineCustomIntVariable("donatello.login_guard_size",
							"Users whose login failure counters are kept in shared memory.",
							"Counters are also written to donatello.user_credentials; clean entries are evicted when the table is full.",
							&guard_size, 10000, 100, 10000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	donatello_shmem_register(hash_estimate_size(guard_size, sizeof(GuardEntry)), 1,
							 GUARD_TRANCHE, guard_shmem_startup);
}

/* Drop the least recently touched clean, unlocked entry; false if none. Lock held. */
static bool
guard_evict_one(TimestampTz now)
{
	HASH_SEQ_STATUS seq;
	GuardEntry *e,
			   *victim = NULL;

	hash_seq_init(&seq, guard_htab);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->dirty || e->locked_until[0] > now || e->locked_until[1] > now)
			continue;
		if (victim == NULL || e->touched < victim->touched)
			victim = e;
	}
	if (victim == NULL)
		return false;
	hash_search(guard_htab, &victim->user_id, HASH_REMOVE, NULL);
	return true;
}

/*
 * The entry of a user, created from seed (the table's values) when missing.
 * Returns NULL only when the table is full of unflushed entries. Lock held
 * exclusively.
 */
static GuardEntry *
guard_entry(const pg_uuid_t *user_id, const pg_uuid_t *org_id, const GuardState *seed,
			TimestampTz now)
{
	GuardEntry *e;
	bool		found;

	e = hash_search(guard_htab, user_id, HASH_ENTER_NULL, &found);
	if (e == NULL && guard_evict_one(now))
		e = hash_search(guard_htab, user_id, HASH_ENTER_NULL, &found);
	if (e == NULL)
		return NULL;
	if (!found)
	{
		memcpy(&e->org_id, org_id, sizeof(pg_uuid_t));
		e->dboid = MyDatabaseId;
		e->failures[0] = seed ? seed->failures[0] : 0;
		e->failures[1] = seed ? seed->failures[1] : 0;
		e->locked_until[0] = seed ? seed->locked_until[0] : 0;
		e->locked_until[1] = seed ? seed->locked_until[1] : 0;
		e->dirty = false;
	}
	e->touched = now;
	return e;
}

/* Raise an error when the table is full (only with a stalled flush). */
static void
guard_full_error(void)
{
	ereport(ERROR,
			(errhidestmt(true),
			 errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
			 errmsg("the login guard is full"),
			 errdetail("All %d entries hold counters not yet written to donatello.user_credentials.", guard_size),
			 errhint("Check that the donatello maintenance worker runs, or raise donatello.login_guard_size.")));
}

/*
 * Is the user locked for this kind? Sets *until to the end of the lock.
 * An expired lock is cleared here, which restarts the count.
 */
bool
guard_is_locked(const pg_uuid_t *user_id, const pg_uuid_t *org_id, GuardKind kind,
				const GuardState *seed, TimestampTz now, TimestampTz *until)
{
	GuardEntry *e;
	bool		locked = false;

	donatello_require_preload("login lockout");
	LWLockAcquire(guard_lock, LW_EXCLUSIVE);
	e = guard_entry(user_id, org_id, seed, now);
	if (e == NULL)
	{
		LWLockRelease(guard_lock);
		guard_full_error();
	}
	if (e->locked_until[kind] != 0 && e->locked_until[kind] <= now)
	{
		e->locked_until[kind] = 0;
		e->failures[kind] = 0;
		e->dirty = true;
	}
	if (e->locked_until[kind] > now)
	{
		locked = true;
		*until = e->locked_until[kind];
	}
	LWLockRelease(guard_lock);
	return locked;
}

/*
 * Count one failure. Returns true when this failure reached the threshold and
 * locked the user (only one caller ever sees that for one lockout); sets the
 * new count and, when locked, the end of the lock.
 */
bool
guard_record_failure(const pg_uuid_t *user_id, const pg_uuid_t *org_id, GuardKind kind,
					 const GuardState *seed, TimestampTz now, int *failures,
					 TimestampTz *until)
{
	GuardEntry *e;
	bool		locked_now = false;
	int			max_failures = kind == GUARD_PASSWORD ? login_max_failures : mfa_max_failures;
	int			lockout_s = kind == GUARD_PASSWORD ? login_lockout_seconds : mfa_lockout_seconds;

	donatello_require_preload("login lockout");
	LWLockAcquire(guard_lock, LW_EXCLUSIVE);
	e = guard_entry(user_id, org_id, seed, now);
	if (e == NULL)
	{
		LWLockRelease(guard_lock);
		guard_full_error();
	}
	if (e->locked_until[kind] != 0 && e->locked_until[kind] <= now)
	{
		e->locked_until[kind] = 0;
		e->failures[kind] = 0;
	}
	if (e->locked_until[kind] == 0)
	{
		e->failures[kind]++;
		if (e->failures[kind] >= max_failures)
		{
			e->locked_until[kind] = TimestampTzPlusMilliseconds(now, (int64) lockout_s * 1000);
			locked_now = true;
		}
	}
	e->dirty = true;
	*failures = e->failures[kind];
	*until = e->locked_until[kind];
	LWLockRelease(guard_lock);
	return locked_now;
}

/* A success clears the count of this kind. */
void
guard_record_success(const pg_uuid_t *user_id, const pg_uuid_t *org_id, GuardKind kind,
					 const GuardState *seed)
{
	GuardEntry *e;

	donatello_require_preload("login lockout");
	LWLockAcquire(guard_lock, LW_EXCLUSIVE);
	e = guard_entry(user_id, org_id, seed, GetCurrentTimestamp());
	if (e != NULL && (e->failures[kind] != 0 || e->locked_until[kind] != 0))
	{
		e->failures[kind] = 0;
		e->locked_until[kind] = 0;
		e->dirty = true;
	}
	LWLockRelease(guard_lock);
}

/* Clear both kinds of lock (unlock_user); the caller also updates the table. */
void
guard_unlock(const pg_uuid_t *user_id)
{
	donatello_require_preload("login lockout");
	LWLockAcquire(guard_lock, LW_EXCLUSIVE);
	hash_search(guard_htab, user_id, HASH_REMOVE, NULL);
	LWLockRelease(guard_lock);
}

/*
 * Write every dirty entry of this database to donatello.user_credentials (SPI
 * connected by the caller, as the extension owner), and forget the entries of
 * databases that no longer exist. Returns the number of rows written.
 */
int
guard_flush(void)
{
	HASH_SEQ_STATUS seq;
	GuardEntry *e;
	GuardEntry *copies;
	int			n = 0,
				i,
				written = 0;

	if (guard_htab == NULL)
		return 0;
	copies = palloc(sizeof(GuardEntry) * guard_size);
	LWLockAcquire(guard_lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, guard_htab);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (!e->dirty)
			continue;
		copies[n++] = *e;
		if (e->dboid == MyDatabaseId)
			e->dirty = false;
	}
	LWLockRelease(guard_lock);

	/* entries of dropped databases: drop them (they were copied above) */
	for (i = 0; i < n; i++)
		if (copies[i].dboid != MyDatabaseId && !cred_database_exists(copies[i].dboid))
			guard_unlock(&copies[i].user_id);

	for (i = 0; i < n; i++)
	{
		Oid			types[6] = {UUIDOID, UUIDOID, INT4OID, TIMESTAMPTZOID, INT4OID, TIMESTAMPTZOID};
		Datum		args[6];
		char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

		if (copies[i].dboid != MyDatabaseId)
			continue;
		args[0] = cred_uuid_datum(&copies[i].user_id);
		args[1] = cred_uuid_datum(&copies[i].org_id);
		args[2] = Int32GetDatum(copies[i].failures[GUARD_PASSWORD]);
		args[3] = TimestampTzGetDatum(copies[i].locked_until[GUARD_PASSWORD]);
		nulls[3] = copies[i].locked_until[GUARD_PASSWORD] == 0 ? 'n' : ' ';
		args[4] = Int32GetDatum(copies[i].failures[GUARD_MFA]);
		args[5] = TimestampTzGetDatum(copies[i].locked_until[GUARD_MFA]);
		nulls[5] = copies[i].locked_until[GUARD_MFA] == 0 ? 'n' : ' ';
		cred_spi_exec("UPDATE donatello.user_credentials SET failed_logins = $3, locked_until = $4,"
					  " mfa_failures = $5, mfa_locked_until = $6"
					  " WHERE user_id OPERATOR(pg_catalog.=) $1 AND org_id OPERATOR(pg_catalog.=) $2",
					  6, types, args, nulls, SPI_OK_UPDATE);
		written += (int) SPI_processed;
	}
	pfree(copies);
	return written;
}
