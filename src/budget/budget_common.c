/*
 * budget_common.c
 *	  What every budget file uses: money conversion (numeric at the API,
 *	  bigint micro-units inside), the saved SPI plans of every budget
 *	  statement, SPI result accessors, running a step in a subtransaction, and
 *	  reading a budgets row.
 *
 * Callers are connected to SPI. Plans are prepared on first use and kept for
 * the life of the backend.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/resowner.h"

#include "donatello.h"
#include "budget/budget.h"

/* largest amount accepted at the API: 9e12 currency units */
#define BUDGET_MAX_MICROS INT64CONST(9000000000000000000)

typedef struct BudgetPlanDef
{
	const char *sql;
	int			nargs;
	Oid			types[10];
} BudgetPlanDef;

#define BUDGET_COLUMNS \
	"limit_micros, pool_micros, overrun_micros, next_watch_micros, mode, period, locked," \
	" period_start, period_end, slot_count"
#define SLOT_COLUMNS \
	"slot_no, period_start, period_end, allowance_micros, reserved_micros, spent_micros, locked, watch"

static const BudgetPlanDef plan_defs[PLAN_COUNT] = {
	[PLAN_DEPARTMENT_ORG] = {
		"SELECT org_id FROM donatello.departments WHERE id = $1",
		1, {UUIDOID}
	},
	[PLAN_DEPARTMENT_MANAGER] = {
		"SELECT d.manager_id, d.name FROM donatello.departments d WHERE d.org_id = $1 AND d.id = $2",
		2, {UUIDOID, UUIDOID}
	},
	[PLAN_DEPARTMENT_BUDGET] = {
		"SELECT d.org_id, b.slot_count FROM donatello.departments d"
		" LEFT JOIN donatello.budgets b ON b.org_id = d.org_id AND b.department_id = d.id"
		" WHERE d.id = $1",
		1, {UUIDOID}
	},
	[PLAN_BUDGET_LOCK] = {
		"SELECT " BUDGET_COLUMNS " FROM donatello.budgets"
		" WHERE org_id = $1 AND department_id = $2 FOR NO KEY UPDATE",
		2, {UUIDOID, UUIDOID}
	},
	[PLAN_BUDGET_READ] = {
		"SELECT " BUDGET_COLUMNS " FROM donatello.budgets WHERE org_id = $1 AND department_id = $2",
		2, {UUIDOID, UUIDOID}
	},
	[PLAN_BUDGET_INSERT] = {
		"INSERT INTO donatello.budgets (org_id, department_id, limit_micros, mode, period, thresholds,"
		" pool_micros, period_start, period_end, slot_count)"
		" VALUES ($1, $2, $3, $4, $5, $6, $3, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING 1",
		9, {UUIDOID, UUIDOID, INT8OID, TEXTOID, TEXTOID, NUMERICARRAYOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID}
	},
	[PLAN_BUDGET_SETTINGS] = {
		"UPDATE donatello.budgets SET limit_micros = $3, mode = $4, period = $5, thresholds = $6"
		" WHERE org_id = $1 AND department_id = $2",
		6, {UUIDOID, UUIDOID, INT8OID, TEXTOID, TEXTOID, NUMERICARRAYOID}
	},
	[PLAN_BUDGET_WRITE] = {
		"UPDATE donatello.budgets SET pool_micros = $3, overrun_micros = $4, next_watch_micros = $5,"
		" locked = $6, locked_at = CASE WHEN $6 THEN coalesce(locked_at, pg_catalog.now()) END,"
		" period_start = $7, period_end = $8, updated_at = pg_catalog.now()"
		" WHERE org_id = $1 AND department_id = $2",
		8, {UUIDOID, UUIDOID, INT8OID, INT8OID, INT8OID, BOOLOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
	},
	[PLAN_BUDGET_POOL] = {
		"UPDATE donatello.budgets SET pool_micros = $3 WHERE org_id = $1 AND department_id = $2",
		3, {UUIDOID, UUIDOID, INT8OID}
	},
	[PLAN_SLOTS_INSERT] = {
		"INSERT INTO donatello.budget_slots (org_id, department_id, slot_no, period_start, period_end, allowance_micros)"
		" SELECT $1, $2, g, $3, $4, 0 FROM pg_catalog.generate_series(0, $5 - 1) g",
		5, {UUIDOID, UUIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID}
	},
	[PLAN_SLOTS_LOCK] = {
		"SELECT " SLOT_COLUMNS " FROM donatello.budget_slots"
		" WHERE org_id = $1 AND department_id = $2 ORDER BY slot_no FOR NO KEY UPDATE",
		2, {UUIDOID, UUIDOID}
	},
	[PLAN_SLOT_LOCK] = {
		"SELECT " SLOT_COLUMNS " FROM donatello.budget_slots"
		" WHERE org_id = $1 AND department_id = $2 AND slot_no = $3 FOR NO KEY UPDATE",
		3, {UUIDOID, UUIDOID, INT4OID}
	},
	[PLAN_SLOT_WRITE] = {
		"UPDATE donatello.budget_slots SET period_start = $4, period_end = $5, allowance_micros = $6,"
		" reserved_micros = $7, spent_micros = $8, locked = $9, watch = $10"
		" WHERE org_id = $1 AND department_id = $2 AND slot_no = $3",
		10, {UUIDOID, UUIDOID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID, INT8OID, INT8OID, BOOLOID, BOOLOID}
	},
	[PLAN_SLOT_ADD] = {
		"UPDATE donatello.budget_slots SET reserved_micros = reserved_micros + $4, spent_micros = spent_micros + $5"
		" WHERE org_id = $1 AND department_id = $2 AND slot_no = $3 RETURNING period_start",
		5, {UUIDOID, UUIDOID, INT4OID, INT8OID, INT8OID}
	},
	/*
	 * fast reserve, stage 1: the first unlocked slot with room from slot $5 on
	 * (in index order: one probe when the preferred slot is free); the same
	 * with $5 = 0 and $6 = the preferred slot wraps around
	 */
	[PLAN_SLOT_RESERVE_ANY] = {
		"UPDATE donatello.budget_slots s SET reserved_micros = s.reserved_micros + $3"
		" WHERE s.org_id = $1 AND s.department_id = $2 AND s.slot_no = ("
		"  SELECT c.slot_no FROM donatello.budget_slots c"
		"   WHERE c.org_id = $1 AND c.department_id = $2 AND c.slot_no >= $5 AND c.slot_no < $6"
		"     AND NOT c.locked AND c.period_end > $4"
		"     AND c.allowance_micros - c.spent_micros - c.reserved_micros >= $3"
		"   ORDER BY c.slot_no"
		"   FOR NO KEY UPDATE SKIP LOCKED LIMIT 1)"
		" RETURNING s.slot_no, s.period_start",
		6, {UUIDOID, UUIDOID, INT8OID, TIMESTAMPTZOID, INT4OID, INT4OID}
	},
	/* fast reserve, stage 2: wait for the preferred slot */
	[PLAN_SLOT_RESERVE_ONE] = {
		"UPDATE donatello.budget_slots SET reserved_micros = reserved_micros + $4"
		" WHERE org_id = $1 AND department_id = $2 AND slot_no = $3 AND NOT locked AND period_end > $5"
		"   AND allowance_micros - spent_micros - reserved_micros >= $4"
		" RETURNING period_start",
		5, {UUIDOID, UUIDOID, INT4OID, INT8OID, TIMESTAMPTZOID}
	},
	/* fast settle: only while no threshold is within reach ($4 estimate, $5 actual) */
	[PLAN_SLOT_SETTLE] = {
		"UPDATE donatello.budget_slots SET reserved_micros = reserved_micros - $4, spent_micros = spent_micros + $5"
		" WHERE org_id = $1 AND department_id = $2 AND slot_no = $3 AND NOT watch AND period_end > $6"
		"   AND allowance_micros - spent_micros - reserved_micros + $4 >= $5"
		" RETURNING period_start",
		6, {UUIDOID, UUIDOID, INT4OID, INT8OID, INT8OID, TIMESTAMPTZOID}
	},
	[PLAN_RESERVATION_INSERT] = {
		"WITH r AS (INSERT INTO donatello.budget_reservations"
		"   (org_id, department_id, slot_no, amount_micros, idempotency_key, expires_at)"
		"   VALUES ($1, $2, $3, $4, $5, $6) RETURNING id)"
		" INSERT INTO donatello.budget_ledger (org_id, department_id, period_start, kind, slot_no,"
		"   reservation_id, amount_micros, reserved_delta)"
		" SELECT $1, $2, $7, 'reserve', $3, r.id, $4, $4 FROM r RETURNING reservation_id",
		7, {UUIDOID, UUIDOID, INT4OID, INT8OID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
	},
	[PLAN_RESERVATION_BY_KEY] = {
		"SELECT id, amount_micros FROM donatello.budget_reservations"
		" WHERE org_id = $1 AND department_id = $2 AND idempotency_key = $3",
		3, {UUIDOID, UUIDOID, TEXTOID}
	},
	[PLAN_RESERVATION_ORG] = {
		"SELECT org_id FROM donatello.budget_reservations WHERE id = $1",
		1, {UUIDOID}
	},
	[PLAN_RESERVATION_LOCK] = {
		"SELECT department_id, slot_no, amount_micros, status, expires_at, resolved_at"
		" FROM donatello.budget_reservations WHERE org_id = $1 AND id = $2 FOR NO KEY UPDATE",
		2, {UUIDOID, UUIDOID}
	},
	[PLAN_RESERVATION_LOCK_EXPIRED] = {
		"SELECT department_id, slot_no, amount_micros FROM donatello.budget_reservations"
		" WHERE org_id = $1 AND id = $2 AND status = 'active' AND expires_at <= $3"
		" FOR NO KEY UPDATE SKIP LOCKED",
		3, {UUIDOID, UUIDOID, TIMESTAMPTZOID}
	},
	/* $3 status, $4 actual (NULL unless settled), $5 period, $6 ledger kind */
	[PLAN_RESERVATION_RESOLVE] = {
		"WITH r AS (UPDATE donatello.budget_reservations"
		"   SET status = $3, actual_micros = $4, resolved_at = pg_catalog.now()"
		"   WHERE org_id = $1 AND id = $2 AND status = 'active'"
		"   RETURNING department_id, slot_no, amount_micros)"
		" INSERT INTO donatello.budget_ledger (org_id, department_id, period_start, kind, slot_no,"
		"   reservation_id, amount_micros, reserved_delta, spent_delta)"
		" SELECT $1, r.department_id, $5, $6, r.slot_no, $2, coalesce($4, r.amount_micros),"
		"   -r.amount_micros, coalesce($4, 0) FROM r",
		6, {UUIDOID, UUIDOID, TEXTOID, INT8OID, TIMESTAMPTZOID, TEXTOID}
	},
	[PLAN_LEDGER_INSERT] = {
		"INSERT INTO donatello.budget_ledger (org_id, department_id, period_start, kind, slot_no,"
		"   reservation_id, amount_micros, reserved_delta, spent_delta)"
		" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
		9, {UUIDOID, UUIDOID, TIMESTAMPTZOID, TEXTOID, INT4OID, UUIDOID, INT8OID, INT8OID, INT8OID}
	},
	/* the period (day, week, month; UTC) that contains $2 */
	[PLAN_PERIOD_BOUNDS] = {
		"SELECT x.t AT TIME ZONE 'UTC', (x.t + ('1 ' || $1)::interval) AT TIME ZONE 'UTC'"
		" FROM (SELECT pg_catalog.date_trunc($1, $2 AT TIME ZONE 'UTC') AS t) x",
		2, {TEXTOID, TIMESTAMPTZOID}
	},
	[PLAN_PERIOD_CLOSE] = {
		"INSERT INTO donatello.budget_periods (org_id, department_id, period_start, period_end,"
		"   limit_micros, spent_micros, overrun_micros, mode, locked)"
		" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
		9, {UUIDOID, UUIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID, INT8OID, INT8OID, TEXTOID, BOOLOID}
	},
	/* thresholds with the spend that reaches each, and whether its alert is out this period */
	[PLAN_THRESHOLDS] = {
		"SELECT t::text, pg_catalog.ceil(t * $3)::bigint,"
		"  EXISTS (SELECT FROM donatello.budget_alerts a WHERE a.org_id = $1 AND a.department_id = $2"
		"          AND a.period_start = $4 AND a.alert = 'threshold:' || t::text)"
		" FROM donatello.budgets b, pg_catalog.unnest(b.thresholds) t"
		" WHERE b.org_id = $1 AND b.department_id = $2 ORDER BY t",
		4, {UUIDOID, UUIDOID, INT8OID, TIMESTAMPTZOID}
	},
	[PLAN_ALERT_INSERT] = {
		"INSERT INTO donatello.budget_alerts (org_id, department_id, period_start, alert)"
		" VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
		4, {UUIDOID, UUIDOID, TIMESTAMPTZOID, TEXTOID}
	},
	[PLAN_ALERT_EVENT] = {
		"UPDATE donatello.budget_alerts SET event_id = $5"
		" WHERE org_id = $1 AND department_id = $2 AND period_start = $3 AND alert = $4",
		5, {UUIDOID, UUIDOID, TIMESTAMPTZOID, TEXTOID, UUIDOID}
	},
	[PLAN_EMIT_EVENT] = {
		"SELECT donatello.emit_event($1, $2, $3)",
		3, {UUIDOID, TEXTOID, JSONBOID}
	},
	[PLAN_AUDIT_EVENT] = {
		"SELECT donatello.audit_system_event($1, $2, 'department', $3, $4)",
		4, {UUIDOID, TEXTOID, TEXTOID, JSONBOID}
	},
	[PLAN_EXPIRED_OF_DEPARTMENT] = {
		"SELECT id, slot_no, amount_micros FROM donatello.budget_reservations"
		" WHERE org_id = $1 AND department_id = $2 AND status = 'active' AND expires_at <= $3"
		" ORDER BY expires_at FOR NO KEY UPDATE SKIP LOCKED",
		3, {UUIDOID, UUIDOID, TIMESTAMPTZOID}
	},
	[PLAN_EXPIRED_ANY] = {
		"SELECT org_id, id FROM donatello.budget_reservations"
		" WHERE status = 'active' AND expires_at <= $1 ORDER BY expires_at LIMIT 1000",
		1, {TIMESTAMPTZOID}
	},
	[PLAN_DUE_BUDGETS] = {
		"SELECT org_id, department_id FROM donatello.budgets WHERE period_end <= $1 LIMIT 1000",
		1, {TIMESTAMPTZOID}
	},
	[PLAN_STATUS] = {
		"SELECT b.limit_micros, sum(s.spent_micros)::bigint, sum(s.reserved_micros)::bigint,"
		"  b.mode, b.period_start, b.period_end, b.locked"
		" FROM donatello.budgets b JOIN donatello.budget_slots s"
		"   ON s.org_id = b.org_id AND s.department_id = b.department_id"
		" WHERE b.org_id = $1 AND b.department_id = $2"
		" GROUP BY b.org_id, b.department_id",
		2, {UUIDOID, UUIDOID}
	},
};

static SPIPlanPtr plans[PLAN_COUNT];

/*
 * An API amount (numeric) in micro-units. DNV01 when NULL, negative (or zero
 * unless allowed), finer than a micro-unit, or too large.
 */
int64
budget_numeric_to_micros(Datum num, const char *what, bool allow_zero)
{
	Datum		scaled;
	Datum		back;
	int64		micros;
	char	   *text = DatumGetCString(DirectFunctionCall1(numeric_out, num));

	if (numeric_is_nan(DatumGetNumeric(num)) || numeric_is_inf(DatumGetNumeric(num)))
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("%s must be a finite amount, not %s", what, text)));
	scaled = DirectFunctionCall2(numeric_mul, num, DirectFunctionCall1(int8_numeric, Int64GetDatum(1000000)));
	if (DatumGetInt32(DirectFunctionCall2(numeric_cmp, scaled,
										  DirectFunctionCall1(int8_numeric, Int64GetDatum(BUDGET_MAX_MICROS)))) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("%s %s is too large", what, text),
				 errhint("Amounts are at most 9000000000000 currency units.")));
	micros = DatumGetInt64(DirectFunctionCall1(numeric_int8, scaled));
	back = DirectFunctionCall1(int8_numeric, Int64GetDatum(micros));
	if (DatumGetInt32(DirectFunctionCall2(numeric_cmp, back, scaled)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("%s %s has more than 6 decimal places", what, text),
				 errhint("Amounts are kept exactly in millionths of the currency unit.")));
	if (micros < 0 || (micros == 0 && !allow_zero))
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("%s must be %s, not %s", what, allow_zero ? "zero or more" : "more than zero", text)));
	return micros;
}

/* Micro-units as text without trailing zeros ("12.5", "100", "-0.000001"). */
char *
budget_micros_to_cstring(int64 micros)
{
	uint64		abs = micros < 0 ? (uint64) (-(micros + 1)) + 1 : (uint64) micros;
	char		frac[8];
	int			len;

	snprintf(frac, sizeof(frac), "%06llu", (unsigned long long) (abs % 1000000));
	len = 6;
	while (len > 0 && frac[len - 1] == '0')
		frac[--len] = '\0';
	return psprintf("%s%llu%s%s", micros < 0 ? "-" : "", (unsigned long long) (abs / 1000000),
					len > 0 ? "." : "", frac);
}

/* Micro-units as an exact numeric. */
Datum
budget_micros_to_numeric(int64 micros)
{
	return DirectFunctionCall3(numeric_in, CStringGetDatum(budget_micros_to_cstring(micros)),
							   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
}

/* The saved plan of a statement, prepared on first use. */
SPIPlanPtr
budget_plan(BudgetPlanId id)
{
	if (plans[id] == NULL)
	{
		const BudgetPlanDef *def = &plan_defs[id];
		SPIPlanPtr	plan = SPI_prepare(def->sql, def->nargs, (Oid *) def->types);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare budget statement %d: %s", (int) id,
				 SPI_result_code_string(SPI_result));
		plans[id] = plan;
	}
	return plans[id];
}

/*
 * Run a saved statement; errors on an SPI failure. Returns SPI_processed.
 * Reads too run as read-write statements (new snapshot after a command
 * counter increment), so that they see what the calling statement wrote
 * before, as in settle(reserve(...), ...). read_only is kept for the reader.
 */
int
budget_exec(BudgetPlanId id, Datum *values, const char *nulls, bool read_only pg_attribute_unused(),
			long count)
{
	int			rc = SPI_execute_plan(budget_plan(id), values, nulls, false, count);

	if (rc < 0)
		elog(ERROR, "budget statement %d failed: %s", (int) id, SPI_result_code_string(rc));
	return (int) SPI_processed;
}

/* Column col (1-based) of result row as a bool (NULL is false). */
bool
budget_get_bool(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return !isnull && DatumGetBool(d);
}

/* Column col of result row as an int8 (0 and *isnull when NULL). */
int64
budget_get_int64(int row, int col, bool *isnull)
{
	bool		null;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &null);

	if (isnull)
		*isnull = null;
	return null ? 0 : DatumGetInt64(d);
}

/* Column col of result row as an int4 (0 when NULL). */
int32
budget_get_int32(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? 0 : DatumGetInt32(d);
}

/* Column col of result row as a timestamptz (0 when NULL). */
TimestampTz
budget_get_timestamptz(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? 0 : DatumGetTimestampTz(d);
}

/* Column col of result row as text in the current memory context (NULL when NULL). */
char *
budget_get_text(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* Column col of result row as a uuid (all zero when NULL). */
pg_uuid_t
budget_get_uuid(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
	pg_uuid_t	result;

	if (isnull)
		memset(&result, 0, sizeof(result));
	else
		memcpy(&result, DatumGetUUIDP(d), sizeof(result));
	return result;
}

/* A palloc'd copy of a uuid as a Datum. */
Datum
budget_uuid_datum(const pg_uuid_t *uuid)
{
	pg_uuid_t  *copy = palloc(sizeof(pg_uuid_t));

	memcpy(copy, uuid, sizeof(pg_uuid_t));
	return UUIDPGetDatum(copy);
}

/* A uuid in canonical text form. */
const char *
budget_uuid_string(const pg_uuid_t *uuid)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, budget_uuid_datum(uuid)));
}

/*
 * Run fn in a subtransaction: kept when it returns true, rolled back (with
 * every row lock it took) when it returns false or raises an error, which is
 * then re-thrown. This is how a fast path that waited for a slot lets go of
 * the slot before the slow path locks the budgets row.
 */
bool
budget_in_subtransaction(bool (*fn) (void *arg), void *arg)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	bool		ok;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		ok = fn(arg);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		ReThrowError(edata);
	}
	PG_END_TRY();

	if (ok)
		ReleaseCurrentSubTransaction();
	else
		RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(oldcontext);
	CurrentResourceOwner = oldowner;
	return ok;
}

/* The organization of a department; DNV02 if there is no such department. */
pg_uuid_t
budget_department_org(const pg_uuid_t *department_id)
{
	Datum		values[1] = {budget_uuid_datum(department_id)};

	if (budget_exec(PLAN_DEPARTMENT_ORG, values, NULL, true, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("department %s does not exist", budget_uuid_string(department_id))));
	return budget_get_uuid(0, 1);
}

/* The name of a mode. */
const char *
budget_mode_name(BudgetMode mode)
{
	switch (mode)
	{
		case BUDGET_HARD:
			return "hard";
		case BUDGET_SOFT:
			return "soft";
		case BUDGET_WARN:
			return "warn";
	}
	return "hard";
}

/* Read a budgets row (under its row lock if lock); false if there is none. */
bool
budget_read(const pg_uuid_t *org_id, const pg_uuid_t *department_id, Budget *b, bool lock)
{
	Datum		values[2] = {budget_uuid_datum(org_id), budget_uuid_datum(department_id)};
	char	   *mode;
	char	   *period;
	bool		isnull;

	if (budget_exec(lock ? PLAN_BUDGET_LOCK : PLAN_BUDGET_READ, values, NULL, !lock, 1) != 1)
		return false;
	memset(b, 0, sizeof(Budget));
	b->org_id = *org_id;
	b->department_id = *department_id;
	b->limit = budget_get_int64(0, 1, NULL);
	b->pool = budget_get_int64(0, 2, NULL);
	b->overrun = budget_get_int64(0, 3, NULL);
	b->next_watch = budget_get_int64(0, 4, &isnull);
	b->has_next_watch = !isnull;
	mode = budget_get_text(0, 5);
	b->mode = strcmp(mode, "soft") == 0 ? BUDGET_SOFT : strcmp(mode, "warn") == 0 ? BUDGET_WARN : BUDGET_HARD;
	period = budget_get_text(0, 6);
	strlcpy(b->period, period, sizeof(b->period));
	b->locked = budget_get_bool(0, 7);
	b->period_start = budget_get_timestamptz(0, 8);
	b->period_end = budget_get_timestamptz(0, 9);
	b->slot_count = budget_get_int32(0, 10);
	return true;
}

/* Read a budgets row; DNV02 if the department has no budget. */
void
budget_require(const pg_uuid_t *org_id, const pg_uuid_t *department_id, Budget *b, bool lock)
{
	if (!budget_read(org_id, department_id, b, lock))
		ereport(ERROR,
				(errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("department %s has no budget", budget_uuid_string(department_id)),
				 errhint("Set one with donatello.set_budget().")));
}

/* Append a ledger entry (slot_no < 0 and reservation_id NULL for none). */
void
budget_ledger_insert(const Budget *b, TimestampTz period_start, const char *kind,
					 int slot_no, const pg_uuid_t *reservation_id, int64 amount,
					 int64 reserved_delta, int64 spent_delta)
{
	Datum		values[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = budget_uuid_datum(&b->org_id);
	values[1] = budget_uuid_datum(&b->department_id);
	values[2] = TimestampTzGetDatum(period_start);
	values[3] = CStringGetTextDatum(kind);
	values[4] = Int32GetDatum(slot_no);
	nulls[4] = slot_no < 0 ? 'n' : ' ';
	values[5] = reservation_id ? budget_uuid_datum(reservation_id) : (Datum) 0;
	nulls[5] = reservation_id ? ' ' : 'n';
	values[6] = Int64GetDatum(amount);
	values[7] = Int64GetDatum(reserved_delta);
	values[8] = Int64GetDatum(spent_delta);
	budget_exec(PLAN_LEDGER_INSERT, values, nulls, false, 0);
}
