/*
 * budget.h
 *	  Department budgets: what the files of src/budget/ share.
 *
 * Files:
 *	  budget_common.c	  money conversion, saved SPI plans, subtransactions, lookups
 *	  budget_exact.c	  the exact path: budget row and every slot locked
 *	  budget_alerts.c	  threshold and over-limit events (one per alert per period)
 *	  budget_api.c		  set_budget, reserve, settle, release, budget_status
 *	  budget_maintenance.c  expiry, period rollover, settings, the maintenance task
 *
 * Locking order (docs/budget.md has the proof that it cannot deadlock and
 * that a hard-mode budget is never overspent):
 *	  idempotency key (advisory) -> reservation row -> budgets row -> slot rows
 *	  (ascending slot_no). A transaction that holds a slot never waits for the
 *	  budgets row or a reservation row: fast paths that may give up run in a
 *	  subtransaction, whose rollback drops the slot lock before the slow path.
 * Every locking statement names org_id.
 */
#ifndef DONATELLO_BUDGET_H
#define DONATELLO_BUDGET_H

#include "postgres.h"

#include "executor/spi.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#define BUDGET_MAX_SLOTS 256

/* budget modes */
typedef enum BudgetMode
{
	BUDGET_HARD,
	BUDGET_SOFT,
	BUDGET_WARN
} BudgetMode;

/* A budgets row, as read under its row lock. */
typedef struct Budget
{
	pg_uuid_t	org_id;
	pg_uuid_t	department_id;
	int64		limit;
	int64		pool;
	int64		overrun;
	bool		has_next_watch;
	int64		next_watch;
	BudgetMode	mode;
	char		period[8];
	bool		locked;
	TimestampTz period_start;
	TimestampTz period_end;
	int			slot_count;
} Budget;

/* A budget_slots row. */
typedef struct BudgetSlot
{
	int			slot_no;
	TimestampTz period_start;
	TimestampTz period_end;
	int64		allowance;
	int64		reserved;
	int64		spent;
	bool		locked;
	bool		watch;
	bool		dirty;
} BudgetSlot;

/* Every slot of a budget, locked by the exact path. */
typedef struct BudgetState
{
	Budget		b;
	int			nslots;
	BudgetSlot	slots[BUDGET_MAX_SLOTS];
} BudgetState;

/* Saved SPI plans, by statement. */
typedef enum BudgetPlanId
{
	PLAN_DEPARTMENT_ORG,
	PLAN_DEPARTMENT_MANAGER,
	PLAN_DEPARTMENT_BUDGET,
	PLAN_BUDGET_LOCK,
	PLAN_BUDGET_READ,
	PLAN_BUDGET_INSERT,
	PLAN_BUDGET_SETTINGS,
	PLAN_BUDGET_WRITE,
	PLAN_BUDGET_POOL,
	PLAN_SLOTS_INSERT,
	PLAN_SLOTS_LOCK,
	PLAN_SLOT_LOCK,
	PLAN_SLOT_WRITE,
	PLAN_SLOT_ADD,
	PLAN_SLOT_RESERVE_ANY,
	PLAN_SLOT_RESERVE_ONE,
	PLAN_SLOT_SETTLE,
	PLAN_RESERVATION_INSERT,
	PLAN_RESERVATION_BY_KEY,
	PLAN_RESERVATION_ORG,
	PLAN_RESERVATION_LOCK,
	PLAN_RESERVATION_LOCK_EXPIRED,
	PLAN_RESERVATION_RESOLVE,
	PLAN_LEDGER_INSERT,
	PLAN_PERIOD_BOUNDS,
	PLAN_PERIOD_CLOSE,
	PLAN_THRESHOLDS,
	PLAN_ALERT_INSERT,
	PLAN_ALERT_EVENT,
	PLAN_EMIT_EVENT,
	PLAN_AUDIT_EVENT,
	PLAN_EXPIRED_OF_DEPARTMENT,
	PLAN_EXPIRED_ANY,
	PLAN_DUE_BUDGETS,
	PLAN_STATUS,
	PLAN_COUNT
} BudgetPlanId;

/* settings (budget_maintenance.c) */
extern int	budget_slot_count;
extern int	budget_maintenance_interval_ms;

/* budget_common.c */
extern int64 budget_numeric_to_micros(Datum num, const char *what, bool allow_zero);
extern Datum budget_micros_to_numeric(int64 micros);
extern char *budget_micros_to_cstring(int64 micros);
extern SPIPlanPtr budget_plan(BudgetPlanId id);
extern int	budget_exec(BudgetPlanId id, Datum *values, const char *nulls, bool read_only, long count);
extern bool budget_get_bool(int row, int col);
extern int64 budget_get_int64(int row, int col, bool *isnull);
extern int32 budget_get_int32(int row, int col);
extern TimestampTz budget_get_timestamptz(int row, int col);
extern char *budget_get_text(int row, int col);
extern pg_uuid_t budget_get_uuid(int row, int col);
extern Datum budget_uuid_datum(const pg_uuid_t *uuid);
extern const char *budget_uuid_string(const pg_uuid_t *uuid);
extern bool budget_in_subtransaction(bool (*fn) (void *arg), void *arg);
extern pg_uuid_t budget_department_org(const pg_uuid_t *department_id);
extern bool budget_read(const pg_uuid_t *org_id, const pg_uuid_t *department_id, Budget *b, bool lock);
extern void budget_require(const pg_uuid_t *org_id, const pg_uuid_t *department_id, Budget *b, bool lock);
extern const char *budget_mode_name(BudgetMode mode);
extern void budget_ledger_insert(const Budget *b, TimestampTz period_start, const char *kind,
								 int slot_no, const pg_uuid_t *reservation_id, int64 amount,
								 int64 reserved_delta, int64 spent_delta);

/* budget_exact.c */
extern void budget_exact_begin(BudgetState *st, const pg_uuid_t *org_id, const pg_uuid_t *department_id);
extern void budget_exact_begin_at(BudgetState *st, const pg_uuid_t *org_id,
								  const pg_uuid_t *department_id, TimestampTz as_of);
extern void budget_exact_finish(BudgetState *st);
extern void budget_collect_free(BudgetState *st);
extern int64 budget_total_spent(const BudgetState *st);
extern int64 budget_total_reserved(const BudgetState *st);
extern BudgetSlot *budget_slot(BudgetState *st, int slot_no);
extern int	budget_expire_locked(BudgetState *st, TimestampTz as_of);
extern void budget_rollover(BudgetState *st, TimestampTz now);
extern void budget_period_bounds(const char *period, TimestampTz at, TimestampTz *start, TimestampTz *end);

/* budget_alerts.c */
extern void budget_check_thresholds(BudgetState *st, int64 spent);
extern void budget_emit_threshold(const Budget *b, const char *threshold, int64 at_micros, int64 spent);
extern void budget_emit_over_limit(const Budget *b, int64 spent, int64 reserved);

/* budget_api.c */
extern void budget_give_back(const pg_uuid_t *org_id, const pg_uuid_t *department_id, int slot_no,
							 int64 amount, TimestampTz *period_start);

/* budget_maintenance.c */
extern int	budget_expire_reservations(TimestampTz as_of);
extern int	budget_roll_periods(TimestampTz as_of);
extern void budget_init(void);

#endif							/* DONATELLO_BUDGET_H */
