/*
 * shmem.c
 *	  Shared memory registry: each part of donatello registers how much shared
 *	  memory and how many LWLocks it needs while _PG_init runs, and a startup
 *	  callback that attaches (and, in the postmaster, initializes) its struct.
 *
 * Parts register only while shared_preload_libraries is being processed; a
 * feature that needs shared memory calls donatello_require_preload() first so
 * that a library loaded later (CREATE EXTENSION without preloading) fails with
 * a clear error instead of touching memory that does not exist.
 *
 * Locking: the callbacks run under AddinShmemInitLock; each part documents the
 * locking rules of its own struct where it declares it.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "donatello.h"

#define MAX_SHMEM_PARTS 16

typedef struct ShmemPart
{
	Size		size;
	int			nlwlocks;
	const char *tranche;
	donatello_shmem_startup_fn startup;
} ShmemPart;

/* true when the library was loaded through shared_preload_libraries */
bool		donatello_preloaded = false;

static ShmemPart shmem_parts[MAX_SHMEM_PARTS];
static int	shmem_nparts = 0;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/*
 * Register a part's shared memory. Does nothing unless the library is being
 * preloaded; callers check donatello_preloaded before using the memory.
 */
void
donatello_shmem_register(Size size, int nlwlocks, const char *tranche,
						 donatello_shmem_startup_fn startup)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	if (shmem_nparts >= MAX_SHMEM_PARTS)
		elog(ERROR, "too many donatello shared memory parts");
	shmem_parts[shmem_nparts].size = size;
	shmem_parts[shmem_nparts].nlwlocks = nlwlocks;
	shmem_parts[shmem_nparts].tranche = tranche;
	shmem_parts[shmem_nparts].startup = startup;
	shmem_nparts++;
}

/* shmem_request_hook: reserve the space and LWLocks every part asked for. */
static void
donatello_shmem_request(void)
{
	int			i;

	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	for (i = 0; i < shmem_nparts; i++)
	{
		RequestAddinShmemSpace(shmem_parts[i].size);
		if (shmem_parts[i].nlwlocks > 0)
			RequestNamedLWLockTranche(shmem_parts[i].tranche, shmem_parts[i].nlwlocks);
	}
}

/* shmem_startup_hook: let every part attach to (or create) its struct. */
static void
donatello_shmem_startup(void)
{
	int			i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	for (i = 0; i < shmem_nparts; i++)
		shmem_parts[i].startup();
	LWLockRelease(AddinShmemInitLock);
}

/* Chain the shared memory hooks; called last in _PG_init. */
void
donatello_shmem_install_hooks(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;

	donatello_preloaded = true;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = donatello_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = donatello_shmem_startup;
}

/*
 * Fail with a hint when a feature that needs shared memory or background
 * workers is used while the library was not preloaded.
 */
void
donatello_require_preload(const char *feature)
{
	if (likely(donatello_preloaded))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("donatello %s requires the library to be preloaded", feature),
			 errdetail("The donatello library was loaded on demand, so its shared memory and background workers do not exist."),
			 errhint("Add 'donatello' to shared_preload_libraries in postgresql.conf and restart the server.")));
}
