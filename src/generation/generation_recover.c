/*
 * generation_recover.c
 *	  The maintenance task that finishes generation jobs whose provider
 *	  request can no longer finish them: its completion hook failed (the
 *	  dispatcher marked it hook_state 'failed'), or its outbox row is gone.
 *	  Such a job is failed, its reservation released and generation.failed
 *	  emitted, by donatello.generation_finish_stuck() (85-pipeline.sql).
 */
#include "postgres.h"

#include "executor/spi.h"

#include "donatello.h"
#include "bgworker/worker.h"
#include "generation/generation.h"

/* how often the maintenance worker looks for stuck jobs */
static int	generation_recover_interval_ms = 60 * 1000;

/* Unit of the maintenance worker: finish stuck jobs. */
static void
generation_recover_unit(void *arg pg_attribute_unused())
{
	int			rc = SPI_execute("SELECT donatello.generation_finish_stuck()", false, 0);

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not finish stuck generation jobs: %s", SPI_result_code_string(rc));
}

/* Register the task (from generation_init, during _PG_init). */
void
generation_recover_init(void)
{
	maintenance_register_task("finish stuck generation jobs", &generation_recover_interval_ms,
							  generation_recover_unit);
}
