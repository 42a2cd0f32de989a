/*
 * credcache.c
 *	  What keeps verify_api_key and jwt_verify fast and still exact: a
 *	  cluster-wide "credentials generation" counter, bumped after every commit
 *	  that changed API keys, sessions or users' active flag, and per-backend
 *	  caches whose entries are valid only for the generation they were read in.
 *
 * Visibility contract (proved by test/isolation/specs/apikey_revoke.spec):
 *	- a statement trigger on donatello.api_keys, donatello.sessions and
 *	  donatello.users marks the transaction; a marked transaction bypasses
 *	  the caches, so it sees its own change at once;
 *	- the transaction callback bumps the generation at XACT_EVENT_COMMIT,
 *	  which follows the moment the commit became visible, and a backend reads
 *	  the generation *before* the snapshot it reads the tables with, so an
 *	  entry read before a commit carries an older generation and is never
 *	  used after that commit's bump.
 * A prepared transaction could commit from another backend, out of reach of
 * the callback, so PREPARE TRANSACTION of a marked transaction is refused.
 *
 * This file holds the session cache; apikey.c holds the API key cache.
 *
 * Locking: the generation is an atomic in shared memory and needs no lock.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "donatello.h"
#include "credentials/credentials.h"

PG_FUNCTION_INFO_V1(donatello_credentials_invalidate);

typedef struct CredcacheShared
{
	pg_atomic_uint64 generation;
} CredcacheShared;

typedef struct SessionCacheEntry
{
	pg_uuid_t	session_id;		/* hash key; must be first */
	uint64		generation;
	SessionValidity validity;
} SessionCacheEntry;

#define SESSION_CACHE_MAX 4096

static CredcacheShared *credcache_shared = NULL;
static bool xact_changed = false;
static bool callback_registered = false;
static HTAB *session_cache = NULL;
static SPIPlanPtr session_plan = NULL;

/* shmem startup: create or attach the generation counter. */
static void
credcache_shmem_startup(void)
{
	bool		found;

	credcache_shared = ShmemInitStruct("donatello credentials generation", sizeof(CredcacheShared), &found);
	if (!found)
		pg_atomic_init_u64(&credcache_shared->generation, 1);
}

/* At commit, bump the generation when this transaction changed credentials. */
static void
credcache_xact_callback(XactEvent event, void *arg pg_attribute_unused())
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (xact_changed)
				ereport(ERROR,
						(errhidestmt(true),
						 errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that changed donatello API keys or sessions"),
						 errhint("Commit credential changes in an ordinary transaction.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (xact_changed && credcache_shared != NULL)
				pg_atomic_fetch_add_u64(&credcache_shared->generation, 1);
			xact_changed = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			xact_changed = false;
			break;
		default:
			break;
	}
}

/* Register the counter and the transaction callback (from _PG_init). */
void
credcache_shmem_init(void)
{
	donatello_shmem_register(MAXALIGN(sizeof(CredcacheShared)), 0, NULL, credcache_shmem_startup);
	if (!callback_registered)
	{
		RegisterXactCallback(credcache_xact_callback, NULL);
		callback_registered = true;
	}
}

/* The current generation (0 when there is no shared memory: never cache). */
uint64
credcache_generation(void)
{
	return credcache_shared ? pg_atomic_read_u64(&credcache_shared->generation) : 0;
}

/* May this backend use its caches now? */
bool
credcache_usable(void)
{
	return credcache_shared != NULL && !xact_changed;
}

/* Statement trigger: remember that this transaction changed credentials. */
Datum
donatello_credentials_invalidate(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("donatello.credentials_invalidate() must be called as a trigger")));
	xact_changed = true;
	return PointerGetDatum(NULL);
}

/* Read a session's validity from the tables with the latest snapshot. */
static void
session_read(const pg_uuid_t *session_id, SessionValidity *out)
{
	DonatelloSavedUser saved;
	Datum		arg = cred_uuid_datum(session_id);
	int			rc;

	memset(out, 0, sizeof(*out));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in jwt_verify");
	donatello_begin_as_owner(&saved);
	if (session_plan == NULL)
	{
		Oid			type = UUIDOID;
		SPIPlanPtr	plan = SPI_prepare("SELECT s.user_id, s.expires_at,"
									   " s.revoked_at IS NULL AND u.active"
									   " FROM donatello.sessions s JOIN donatello.users u"
									   " ON u.id OPERATOR(pg_catalog.=) s.user_id"
									   " AND u.org_id OPERATOR(pg_catalog.=) s.org_id"
									   " WHERE s.id OPERATOR(pg_catalog.=) $1",
									   1, &type);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare the session query");
		session_plan = plan;
	}
	PushActiveSnapshot(GetLatestSnapshot());
	rc = SPI_execute_plan(session_plan, &arg, NULL, true, 1);
	PopActiveSnapshot();
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "session query failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		out->found = true;
		cred_spi_uuid(0, 1, &out->user_id);
		out->expires_at = cred_spi_timestamp(0, 2, 0);
		out->valid = cred_spi_bool(0, 3, false);
	}
	donatello_end_as_owner(&saved);
	SPI_finish();
}

/* A session's validity, from this backend's cache when still current. */
void
credcache_session(const pg_uuid_t *session_id, SessionValidity *out)
{
	uint64		generation = credcache_generation();
	SessionCacheEntry *e;
	bool		found;

	if (!credcache_usable())
	{
		session_read(session_id, out);
		return;
	}
	if (session_cache == NULL)
	{
		HASHCTL		info;

		info.keysize = sizeof(pg_uuid_t);
		info.entrysize = sizeof(SessionCacheEntry);
		info.hcxt = TopMemoryContext;
		session_cache = hash_create("donatello session cache", 256, &info,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	e = hash_search(session_cache, session_id, HASH_FIND, NULL);
	if (e != NULL && e->generation == generation)
	{
		*out = e->validity;
		return;
	}
	session_read(session_id, out);
	if (hash_get_num_entries(session_cache) >= SESSION_CACHE_MAX)
	{
		hash_destroy(session_cache);
		session_cache = NULL;
		return;
	}
	e = hash_search(session_cache, session_id, HASH_ENTER, &found);
	e->generation = generation;
	e->validity = *out;
}
