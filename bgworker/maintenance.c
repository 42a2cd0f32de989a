/*
 * maintenance.c
 *	  The maintenance background worker: runs the periodic tasks other parts
 *	  register (expiring budget reservations, rolling budget periods, sealing
 *	  the audit trail, ...), each in its own transaction, each on its own
 *	  interval setting.
 *
 * Parts call maintenance_register_task() from their init function during
 * _PG_init; maintenance_init() (called after every part) registers the worker
 * only when at least one task exists. A backend can wake the worker early
 * with donatello_worker_wake_at_commit(WORKER_MAINTENANCE): every task whose
 * interval has not elapsed still waits, except that a wake-up makes all tasks
 * due (they are cheap when there is nothing to do).
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "bgworker/worker.h"

#define MAX_MAINTENANCE_TASKS 16

static MaintenanceTask tasks[MAX_MAINTENANCE_TASKS];
static int	ntasks = 0;

PGDLLEXPORT void donatello_maintenance_main(Datum arg);

/* Register a periodic task; call from a part's init during _PG_init. */
void
maintenance_register_task(const char *name, int *interval_ms, donatello_unit_fn run)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	if (ntasks >= MAX_MAINTENANCE_TASKS)
		elog(ERROR, "too many donatello maintenance tasks");
	tasks[ntasks].name = name;
	tasks[ntasks].interval_ms = interval_ms;
	tasks[ntasks].run = run;
	ntasks++;
}

/* Register the maintenance worker if any part registered a task. */
void
maintenance_init(void)
{
	if (ntasks > 0)
		donatello_worker_register("donatello maintenance", "donatello_maintenance_main", 10, (Datum) 0);
}

/* Main loop: run due tasks, sleep until the next one is due or we are woken. */
void
donatello_maintenance_main(Datum arg pg_attribute_unused())
{
	TimestampTz next_run[MAX_MAINTENANCE_TASKS];
	int			i;

	donatello_worker_start(WORKER_MAINTENANCE);
	for (i = 0; i < ntasks; i++)
		next_run[i] = 0;

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		long		sleep_ms = 60 * 1000;

		for (i = 0; i < ntasks; i++)
		{
			if (now >= next_run[i])
			{
				donatello_worker_run_unit(tasks[i].name, tasks[i].run, NULL);
				now = GetCurrentTimestamp();
				next_run[i] = TimestampTzPlusMilliseconds(now, *tasks[i].interval_ms);
			}
			sleep_ms = Min(sleep_ms, Max(0, (long) ((next_run[i] - now) / 1000)));
		}

		if (donatello_worker_wait(sleep_ms, PG_WAIT_EXTENSION))
			for (i = 0; i < ntasks; i++)
				next_run[i] = 0;
	}
}
