/*
 * donatello.c
 *	  Module entry point: _PG_init defines the settings, reserves the
 *	  "donatello." prefix and lets every part register its shared memory and
 *	  background workers.
 *
 * Each part owns its settings and its shared memory; this file only calls
 * their init functions in a fixed order. Nothing here runs during a binary
 * upgrade, when pg_upgrade loads the library only to check it.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "donatello.h"
#include "bgworker/worker.h"
#include "secrets/secrets.h"
#include "safety/safety.h"
#include "router/router.h"
#include "images/images.h"
#include "generation/generation.h"
#include "audit/audit.h"

PG_MODULE_MAGIC;

/* donatello.database: the database the background workers connect to */
char	   *donatello_database = NULL;

void		_PG_init(void);

PG_FUNCTION_INFO_V1(donatello_version);

/* Define the settings that belong to no single part. */
static void
define_core_settings(void)
{
	DefineCustomStringVariable("donatello.database",
							   "Database the donatello background workers connect to.",
							   "The workers wait until the donatello extension exists in it.",
							   &donatello_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);
}

/*
 * Library load: settings first, then shared memory and workers of each part.
 *
 * Only when preloading: most settings can only be defined then (a
 * PGC_POSTMASTER setting defined later is a FATAL error), and without shared
 * memory the features have nothing to run on. A library loaded on demand (by
 * CREATE EXTENSION or a function call) defines nothing; every feature that
 * needs preloading says so through donatello_require_preload().
 */
void
_PG_init(void)
{
	if (IsBinaryUpgrade || !process_shared_preload_libraries_in_progress)
		return;

	define_core_settings();
	worker_shmem_init();
	secrets_init();
	rbac_cache_init();
	rbac_invalidate_init();
	credentials_init();
	blocklist_cache_init();
	blocklist_invalidate_init();
	router_init();
	image_url_init();
	dispatcher_init();
	budget_init();
	generation_init();
	httpd_init();				/* bgworker/httpd/httpd_main.c */
	audit_init();

	/* after every part: registers the worker only if a part added a task */
	maintenance_init();

	MarkGUCPrefixReserved("donatello");

	donatello_shmem_install_hooks();
}

/* donatello.version(): the version of the loaded library. */
Datum
donatello_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(DONATELLO_VERSION));
}
