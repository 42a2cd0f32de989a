/*
 * worker.h
 *	  What every donatello background worker shares: registration, the
 *	  connect-and-wait-for-the-extension start, one transaction per unit of
 *	  work, and waking a worker at commit through its latch.
 */
#ifndef DONATELLO_WORKER_H
#define DONATELLO_WORKER_H

#include "postgres.h"

/* The kinds of workers that can be woken by name. */
typedef enum DonatelloWorkerKind
{
	WORKER_MAINTENANCE = 0,
	WORKER_DISPATCHER,
	WORKER_HTTPD,
	WORKER_KIND_COUNT
} DonatelloWorkerKind;

/* A unit of work: runs inside a transaction, SPI connected, snapshot pushed. */
typedef void (*donatello_unit_fn) (void *arg);

/* worker.c */
extern void donatello_worker_register(const char *name, const char *function,
									  int restart_seconds, Datum arg);
extern void donatello_worker_start(DonatelloWorkerKind kind);
extern bool donatello_worker_wait(long timeout_ms, uint32 wait_event_info);
extern bool donatello_worker_run_unit(const char *activity, donatello_unit_fn fn, void *arg);
extern void donatello_worker_wake(DonatelloWorkerKind kind);
extern void donatello_worker_wake_at_commit(DonatelloWorkerKind kind);
extern void worker_shmem_init(void);

/* maintenance.c: periodic tasks run by the maintenance worker */
typedef struct MaintenanceTask
{
	const char *name;
	int		   *interval_ms;	/* points at the task's own setting */
	donatello_unit_fn run;
} MaintenanceTask;

extern void maintenance_register_task(const char *name, int *interval_ms, donatello_unit_fn run);
extern void maintenance_init(void);

#endif							/* DONATELLO_WORKER_H */
