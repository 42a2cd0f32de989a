/*
 * budget_maintenance.c
 *	  Budget settings, and the work the maintenance worker does for budgets:
 *	  release reservations past their expiry, and start the new period of
 *	  budgets whose period has ended (both also happen lazily, when an
 *	  operation needs them). The same work is callable from SQL
 *	  (budget_expire_reservations, budget_roll_periods).
 *
 * Expiry locks each reservation with SKIP LOCKED (a settle or release in
 * progress wins; the reservation is looked at again next time), then its slot.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "donatello.h"
#include "bgworker/worker.h"
#include "budget/budget.h"

PG_FUNCTION_INFO_V1(donatello_budget_expire_reservations);
PG_FUNCTION_INFO_V1(donatello_budget_roll_periods);

/* donatello.budget_slots: slots of a new budget */
int			budget_slot_count = 32;

/* donatello.budget_maintenance_interval (ms) */
int			budget_maintenance_interval_ms = 10000;

/*
 * Release every reservation that expired at or before as_of and that nobody
 * holds locked. Returns how many. SPI connected by the caller.
 */
int
budget_expire_reservations(TimestampTz as_of)
{
	Datum		values[3];
	int			n;
	int			i;
	int			expired = 0;
	pg_uuid_t  *orgs;
	pg_uuid_t  *ids;

	values[0] = TimestampTzGetDatum(as_of);
	n = budget_exec(PLAN_EXPIRED_ANY, values, NULL, true, 0);
	orgs = palloc(sizeof(pg_uuid_t) * Max(n, 1));
	ids = palloc(sizeof(pg_uuid_t) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		orgs[i] = budget_get_uuid(i, 1);
		ids[i] = budget_get_uuid(i, 2);
	}
	for (i = 0; i < n; i++)
	{
		pg_uuid_t	department_id;
		int			slot_no;
		int64		amount;
		TimestampTz period_start;
		Datum		rvalues[6];
		char		rnulls[6] = {' ', ' ', ' ', 'n', ' ', ' '};

		values[0] = budget_uuid_datum(&orgs[i]);
		values[1] = budget_uuid_datum(&ids[i]);
		values[2] = TimestampTzGetDatum(as_of);
		if (budget_exec(PLAN_RESERVATION_LOCK_EXPIRED, values, NULL, false, 1) != 1)
			continue;
		department_id = budget_get_uuid(0, 1);
		slot_no = budget_get_int32(0, 2);
		amount = budget_get_int64(0, 3, NULL);
		budget_give_back(&orgs[i], &department_id, slot_no, amount, &period_start);
		rvalues[0] = budget_uuid_datum(&orgs[i]);
		rvalues[1] = budget_uuid_datum(&ids[i]);
		rvalues[2] = CStringGetTextDatum("expired");
		rvalues[3] = (Datum) 0;
		rvalues[4] = TimestampTzGetDatum(period_start);
		rvalues[5] = CStringGetTextDatum("expire");
		if (budget_exec(PLAN_RESERVATION_RESOLVE, rvalues, rnulls, false, 0) != 1)
			elog(ERROR, "could not expire reservation %s", budget_uuid_string(&ids[i]));
		expired++;
	}
	return expired;
}

/* Start the period containing as_of for every budget whose period ended by then. */
int
budget_roll_periods(TimestampTz as_of)
{
	Datum		values[1];
	int			n;
	int			i;
	pg_uuid_t  *orgs;
	pg_uuid_t  *departments;

	values[0] = TimestampTzGetDatum(as_of);
	n = budget_exec(PLAN_DUE_BUDGETS, values, NULL, true, 0);
	orgs = palloc(sizeof(pg_uuid_t) * Max(n, 1));
	departments = palloc(sizeof(pg_uuid_t) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		orgs[i] = budget_get_uuid(i, 1);
		departments[i] = budget_get_uuid(i, 2);
	}
	for (i = 0; i < n; i++)
	{
		BudgetState *st = palloc(sizeof(BudgetState));

		/* begin rolls the period over (if nobody did meanwhile) */
		budget_exact_begin_at(st, &orgs[i], &departments[i], as_of);
		budget_exact_finish(st);
		pfree(st);
	}
	return n;
}

/* donatello.budget_expire_reservations(as_of): expire what is due. */
Datum
donatello_budget_expire_reservations(PG_FUNCTION_ARGS)
{
	TimestampTz as_of = PG_ARGISNULL(0) ? GetCurrentTransactionStartTimestamp() : PG_GETARG_TIMESTAMPTZ(0);
	int			n;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	n = budget_expire_reservations(as_of);
	SPI_finish();
	PG_RETURN_INT32(n);
}

/* donatello.budget_roll_periods(as_of): roll over every budget whose period ended. */
Datum
donatello_budget_roll_periods(PG_FUNCTION_ARGS)
{
	TimestampTz as_of = PG_ARGISNULL(0) ? GetCurrentTransactionStartTimestamp() : PG_GETARG_TIMESTAMPTZ(0);
	int			n;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	n = budget_roll_periods(as_of);
	SPI_finish();
	PG_RETURN_INT32(n);
}

/* The maintenance task: expire reservations, then roll periods (SPI connected). */
static void
budget_maintenance_task(void *arg pg_attribute_unused())
{
	budget_expire_reservations(GetCurrentTransactionStartTimestamp());
	budget_roll_periods(GetCurrentTransactionStartTimestamp());
}

/* Define the budget settings and register the maintenance task (from _PG_init). */
void
budget_init(void)
{
	DefineCustomIntVariable("donatello.budget_slots",
							"Number of slots a new department budget is split into.",
							"More slots let more reservations of one department run at once; "
							"the count is fixed when the budget is created.",
							&budget_slot_count, 32, 1, BUDGET_MAX_SLOTS,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.budget_maintenance_interval",
							"How often the maintenance worker releases expired budget reservations and rolls budget periods over.",
							NULL,
							&budget_maintenance_interval_ms, 10000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	maintenance_register_task("expire budget reservations and roll periods",
							  &budget_maintenance_interval_ms, budget_maintenance_task);
}
