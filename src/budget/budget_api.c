/*
 * budget_api.c
 *	  The SQL API of budgets: set_budget, reserve, settle, release,
 *	  budget_status.
 *
 * reserve tries, in order:
 *	  1. fast: the first slot with room that nobody holds (FOR NO KEY UPDATE
 *		 SKIP LOCKED), from the backend's preferred slot on; no wait;
 *	  2. fast: wait for the preferred slot, use it if it has room;
 *		 (1 and 2 each in a subtransaction, so that giving up drops every slot
 *		 lock taken);
 *	  3. refill: lock the budgets row and the preferred slot, move room from
 *		 the pool into the slot (never so much that the room handed out
 *		 reaches the next threshold or the limit);
 *	  4. exact: budgets row and every slot locked, free room collected from
 *		 every slot, expired reservations released, then the exact check
 *		 against the limit (DNB01) (budget_exact.c).
 * settle is fast (its slot only) while no threshold is within reach and the
 * actual fits the slot; otherwise exact. release never needs more than its
 * slot. Locking order and proofs: budget.h, docs/budget.md.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/numeric.h"

#include "donatello.h"
#include "budget/budget.h"

PG_FUNCTION_INFO_V1(donatello_set_budget);
PG_FUNCTION_INFO_V1(donatello_reserve);
PG_FUNCTION_INFO_V1(donatello_settle);
PG_FUNCTION_INFO_V1(donatello_release);
PG_FUNCTION_INFO_V1(donatello_budget_status);

/* What a reserve attempt works on. */
typedef struct ReserveContext
{
	pg_uuid_t	org_id;
	pg_uuid_t	department_id;
	int64		amount;
	int			slot_count;
	int			preferred;
	TimestampTz now;
	int			slot_no;		/* out */
	TimestampTz period_start;	/* out */
} ReserveContext;

/* What a settle attempt works on. */
typedef struct SettleContext
{
	pg_uuid_t	org_id;
	pg_uuid_t	department_id;
	int			slot_no;
	int64		estimate;
	int64		actual;
	TimestampTz now;
	TimestampTz period_start;	/* out */
} SettleContext;

/* A locked reservation. */
typedef struct LockedReservation
{
	pg_uuid_t	org_id;
	pg_uuid_t	id;
	pg_uuid_t	department_id;
	int			slot_no;
	int64		amount;
} LockedReservation;

/* 22004 when a required argument is NULL. */
static void
budget_require_argument(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", name)));
}

/* DNB02 for a locked hard-mode department. */
static void
budget_raise_locked(const Budget *b, int64 spent)
{
	ereport(ERROR,
			(errcode(ERRCODE_DN_DEPARTMENT_LOCKED),
			 errmsg("department %s is locked: its budget is exhausted", budget_uuid_string(&b->department_id)),
			 errdetail("Limit %s, spent %s in the period that ends %s.",
					   budget_micros_to_cstring(b->limit), budget_micros_to_cstring(spent),
					   timestamptz_to_str(b->period_end)),
			 errhint("Raise the limit with donatello.set_budget(), or wait for the next period.")));
}

/* ---------------------------------------------------------------------
 * reserve
 * --------------------------------------------------------------------- */

/*
 * Stage 1 (run in a subtransaction by budget_in_subtransaction): the first
 * unlocked slot with room from the preferred slot on, wrapping around. False
 * rolls the subtransaction back, which drops the lock of every row the SKIP
 * LOCKED scan kept although its newest version failed the room check
 * (PostgreSQL's EvalPlanQual locks before it rechecks): stage 2 then waits
 * holding no slot.
 */
static bool
reserve_any_slot(void *arg)
{
	ReserveContext *cx = arg;
	Datum		values[6];

	values[0] = budget_uuid_datum(&cx->org_id);
	values[1] = budget_uuid_datum(&cx->department_id);
	values[2] = Int64GetDatum(cx->amount);
	values[3] = TimestampTzGetDatum(cx->now);
	values[4] = Int32GetDatum(cx->preferred);
	values[5] = Int32GetDatum(BUDGET_MAX_SLOTS);
	if (budget_exec(PLAN_SLOT_RESERVE_ANY, values, NULL, false, 0) != 1 && cx->preferred > 0)
	{
		values[4] = Int32GetDatum(0);
		values[5] = Int32GetDatum(cx->preferred);
		(void) budget_exec(PLAN_SLOT_RESERVE_ANY, values, NULL, false, 0);
	}
	if (SPI_processed != 1)
		return false;
	cx->slot_no = budget_get_int32(0, 1);
	cx->period_start = budget_get_timestamptz(0, 2);
	return true;
}

/*
 * Stage 2 (in a subtransaction): wait for the preferred slot and use it if it
 * has room; false drops its lock before the slow path locks the budgets row.
 */
static bool
reserve_preferred_slot(void *arg)
{
	ReserveContext *cx = arg;
	Datum		values[5];

	values[0] = budget_uuid_datum(&cx->org_id);
	values[1] = budget_uuid_datum(&cx->department_id);
	values[2] = Int32GetDatum(cx->preferred);
	values[3] = Int64GetDatum(cx->amount);
	values[4] = TimestampTzGetDatum(cx->now);
	if (budget_exec(PLAN_SLOT_RESERVE_ONE, values, NULL, false, 0) != 1)
		return false;
	cx->slot_no = cx->preferred;
	cx->period_start = budget_get_timestamptz(0, 1);
	return true;
}

/*
 * The organization and slot count of a department's budget, cached for the
 * backend's life (neither ever changes; a department deleted since is
 * noticed by the slow path). False if the department has no budget; DNV02 if
 * it does not exist.
 */
typedef struct DepartmentCacheEntry
{
	pg_uuid_t	department_id;	/* hash key */
	pg_uuid_t	org_id;
	int			slot_count;
} DepartmentCacheEntry;

static HTAB *department_cache = NULL;

static bool
budget_department_lookup(const pg_uuid_t *department_id, pg_uuid_t *org_id, int *slot_count)
{
	DepartmentCacheEntry *entry;
	Datum		values[1];
	bool		no_budget;
	bool		found;

	if (department_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(pg_uuid_t);
		ctl.entrysize = sizeof(DepartmentCacheEntry);
		department_cache = hash_create("donatello budget departments", 64, &ctl, HASH_ELEM | HASH_BLOBS);
	}
	entry = hash_search(department_cache, department_id, HASH_FIND, NULL);
	if (entry != NULL)
	{
		*org_id = entry->org_id;
		*slot_count = entry->slot_count;
		return true;
	}
	values[0] = budget_uuid_datum(department_id);
	if (budget_exec(PLAN_DEPARTMENT_BUDGET, values, NULL, true, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("department %s does not exist", budget_uuid_string(department_id))));
	*org_id = budget_get_uuid(0, 1);
	*slot_count = budget_get_int32(0, 2);
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &no_budget);
	if (no_budget || *slot_count < 1)
		return false;
	if (hash_get_num_entries(department_cache) >= 10000)
	{
		hash_destroy(department_cache);
		department_cache = NULL;
		return true;
	}
	entry = hash_search(department_cache, department_id, HASH_ENTER, &found);
	entry->org_id = *org_id;
	entry->slot_count = *slot_count;
	return true;
}

/*
 * Stage 3, budgets row locked: refill the preferred slot from the pool. False
 * when only the exact path can decide (period over, locked, pool short, or
 * the refill would reach the next watch point).
 */
static bool
reserve_refill(ReserveContext *cx, const Budget *b)
{
	Datum		values[10];
	BudgetSlot	s;
	int64		need;
	int64		grant;
	int64		handed_out = b->limit - b->pool;

	if (b->period_end <= cx->now || b->locked)
		return false;
	values[0] = budget_uuid_datum(&cx->org_id);
	values[1] = budget_uuid_datum(&cx->department_id);
	values[2] = Int32GetDatum(cx->preferred);
	if (budget_exec(PLAN_SLOT_LOCK, values, NULL, false, 1) != 1)
		return false;
	s.period_start = budget_get_timestamptz(0, 2);
	s.period_end = budget_get_timestamptz(0, 3);
	s.allowance = budget_get_int64(0, 4, NULL);
	s.reserved = budget_get_int64(0, 5, NULL);
	s.spent = budget_get_int64(0, 6, NULL);
	s.locked = budget_get_bool(0, 7);
	s.watch = budget_get_bool(0, 8);
	if (s.locked || s.period_end <= cx->now)
		return false;

	need = cx->amount - Max(0, s.allowance - s.spent - s.reserved);
	if (need > b->pool)
		return false;
	grant = Max(need, Min(b->pool, b->pool / (2 * cx->slot_count)));
	if (b->has_next_watch && handed_out + grant >= b->next_watch)
	{
		if (handed_out + need >= b->next_watch)
			return false;
		grant = Max(need, b->next_watch - 1 - handed_out);
	}

	values[3] = TimestampTzGetDatum(s.period_start);
	values[4] = TimestampTzGetDatum(s.period_end);
	values[5] = Int64GetDatum(s.allowance + grant);
	values[6] = Int64GetDatum(s.reserved + cx->amount);
	values[7] = Int64GetDatum(s.spent);
	values[8] = BoolGetDatum(s.locked);
	values[9] = BoolGetDatum(s.watch);
	if (budget_exec(PLAN_SLOT_WRITE, values, NULL, false, 0) != 1)
		elog(ERROR, "could not write budget slot %d", cx->preferred);
	values[2] = Int64GetDatum(b->pool - grant);
	budget_exec(PLAN_BUDGET_POOL, values, NULL, false, 0);
	cx->slot_no = cx->preferred;
	cx->period_start = s.period_start;
	return true;
}

/* Stage 4: the exact path. DNB02 when locked, DNB01 when it does not fit. */
static void
reserve_exact(ReserveContext *cx)
{
	BudgetState *st = palloc(sizeof(BudgetState));
	Budget	   *b = &st->b;
	BudgetSlot *s;

	budget_exact_begin(st, &cx->org_id, &cx->department_id);
	if (b->mode == BUDGET_HARD && b->locked)
		budget_raise_locked(b, budget_total_spent(st));
	s = budget_slot(st, cx->preferred % st->nslots);
	if (s->allowance - s->spent - s->reserved < cx->amount)
	{
		budget_collect_free(st);
		if (b->pool < cx->amount && budget_expire_locked(st, cx->now) > 0)
			budget_collect_free(st);
		if (b->pool < cx->amount)
		{
			int64		spent = budget_total_spent(st);
			int64		reserved = budget_total_reserved(st);

			if (b->mode == BUDGET_HARD)
				ereport(ERROR,
						(errcode(ERRCODE_DN_BUDGET_EXCEEDED),
						 errmsg("budget of department %s exceeded", budget_uuid_string(&b->department_id)),
						 errdetail("Limit %s, spent %s, reserved %s, requested %s.",
								   budget_micros_to_cstring(b->limit), budget_micros_to_cstring(spent),
								   budget_micros_to_cstring(reserved), budget_micros_to_cstring(cx->amount)),
						 errhint("Wait for running reservations to settle, ask for a smaller amount, or raise the limit with donatello.set_budget().")));
			budget_emit_over_limit(b, spent, reserved + cx->amount);
		}
		s->allowance += cx->amount;
		b->pool -= cx->amount;
	}
	s->reserved += cx->amount;
	s->dirty = true;
	cx->slot_no = s->slot_no;
	cx->period_start = s->period_start;
	budget_exact_finish(st);
}

/* Take the transaction-level lock of an idempotency key. */
static void
budget_lock_idempotency_key(const pg_uuid_t *org_id, const pg_uuid_t *department_id, const char *key)
{
	LOCKTAG		tag;
	uint64		h;

	h = hash_bytes_extended((const unsigned char *) org_id->data, UUID_LEN, 0);
	h = hash_bytes_extended((const unsigned char *) department_id->data, UUID_LEN, h);
	h = hash_bytes_extended((const unsigned char *) key, strlen(key), h);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h, 1);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * donatello.reserve(department_id, amount, idempotency_key, ttl) returns uuid
 */
Datum
donatello_reserve(PG_FUNCTION_ARGS)
{
	ReserveContext cx;
	char	   *key = NULL;
	Interval   *ttl;
	TimestampTz expires_at;
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	pg_uuid_t	result;

	budget_require_argument(fcinfo, 0, "department_id");
	budget_require_argument(fcinfo, 1, "amount");
	budget_require_argument(fcinfo, 3, "ttl");
	memset(&cx, 0, sizeof(cx));
	cx.department_id = *PG_GETARG_UUID_P(0);
	cx.amount = budget_numeric_to_micros(PG_GETARG_DATUM(1), "amount", false);
	cx.now = GetCurrentTransactionStartTimestamp();
	ttl = PG_GETARG_INTERVAL_P(3);
	expires_at = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
														 TimestampTzGetDatum(cx.now), IntervalPGetDatum(ttl)));
	if (expires_at <= cx.now)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("ttl must be positive"),
				 errhint("A reservation lives for ttl, such as '15 minutes', unless settled or released before.")));
	if (!PG_ARGISNULL(2))
	{
		key = text_to_cstring(PG_GETARG_TEXT_PP(2));
		if (strlen(key) < 1 || strlen(key) > 200)
			ereport(ERROR,
					(errcode(ERRCODE_DN_INVALID_ARGUMENT),
					 errmsg("idempotency_key must be 1 to 200 characters")));
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!budget_department_lookup(&cx.department_id, &cx.org_id, &cx.slot_count))
		ereport(ERROR,
				(errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("department %s has no budget", budget_uuid_string(&cx.department_id)),
				 errhint("Set one with donatello.set_budget().")));
	cx.preferred = MyProcPid % cx.slot_count;

	/* a replay returns the reservation its key made; the key lock makes a racing replay wait */
	if (key != NULL)
	{
		budget_lock_idempotency_key(&cx.org_id, &cx.department_id, key);
		values[0] = budget_uuid_datum(&cx.org_id);
		values[1] = budget_uuid_datum(&cx.department_id);
		values[2] = CStringGetTextDatum(key);
		if (budget_exec(PLAN_RESERVATION_BY_KEY, values, NULL, false, 1) == 1)
		{
			int64		amount = budget_get_int64(0, 2, NULL);

			result = budget_get_uuid(0, 1);
			if (amount != cx.amount)
				ereport(ERROR,
						(errcode(ERRCODE_DN_IDEMPOTENCY_CONFLICT),
						 errmsg("idempotency key \"%s\" was used for another amount", key),
						 errdetail("Reservation %s reserved %s; this request asks for %s.",
								   budget_uuid_string(&result), budget_micros_to_cstring(amount),
								   budget_micros_to_cstring(cx.amount)),
						 errhint("Use a new idempotency key for a different request.")));
			SPI_finish();
			PG_RETURN_UUID_P(memcpy(palloc(sizeof(pg_uuid_t)), &result, sizeof(pg_uuid_t)));
		}
	}

	if (!budget_in_subtransaction(reserve_any_slot, &cx) &&
		!budget_in_subtransaction(reserve_preferred_slot, &cx))
	{
		Budget		b;

		budget_require(&cx.org_id, &cx.department_id, &b, true);
		cx.slot_count = b.slot_count;
		cx.preferred = MyProcPid % b.slot_count;
		if (!reserve_refill(&cx, &b))
			reserve_exact(&cx);
	}

	values[0] = budget_uuid_datum(&cx.org_id);
	values[1] = budget_uuid_datum(&cx.department_id);
	values[2] = Int32GetDatum(cx.slot_no);
	values[3] = Int64GetDatum(cx.amount);
	values[4] = key ? CStringGetTextDatum(key) : (Datum) 0;
	nulls[4] = key ? ' ' : 'n';
	values[5] = TimestampTzGetDatum(expires_at);
	values[6] = TimestampTzGetDatum(cx.period_start);
	if (budget_exec(PLAN_RESERVATION_INSERT, values, nulls, false, 0) != 1)
		elog(ERROR, "could not record the reservation");
	result = budget_get_uuid(0, 1);
	SPI_finish();
	PG_RETURN_UUID_P(memcpy(palloc(sizeof(pg_uuid_t)), &result, sizeof(pg_uuid_t)));
}

/* ---------------------------------------------------------------------
 * settle and release
 * --------------------------------------------------------------------- */

/*
 * Find and lock an active, unexpired reservation; DNB03 if there is none,
 * naming why (unknown, already settled/released, expired).
 */
static void
budget_lock_reservation(const pg_uuid_t *id, const char *action, LockedReservation *r)
{
	Datum		values[2];
	char	   *status;
	TimestampTz expires_at;

	values[0] = budget_uuid_datum(id);
	if (budget_exec(PLAN_RESERVATION_ORG, values, NULL, true, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DN_RESERVATION_INVALID),
				 errmsg("reservation %s does not exist", budget_uuid_string(id)),
				 errhint("Use the id donatello.reserve() returned.")));
	r->org_id = budget_get_uuid(0, 1);
	r->id = *id;
	values[0] = budget_uuid_datum(&r->org_id);
	values[1] = budget_uuid_datum(id);
	if (budget_exec(PLAN_RESERVATION_LOCK, values, NULL, false, 1) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DN_RESERVATION_INVALID),
				 errmsg("reservation %s does not exist", budget_uuid_string(id))));
	r->department_id = budget_get_uuid(0, 1);
	r->slot_no = budget_get_int32(0, 2);
	r->amount = budget_get_int64(0, 3, NULL);
	status = budget_get_text(0, 4);
	expires_at = budget_get_timestamptz(0, 5);
	if (strcmp(status, "active") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DN_RESERVATION_INVALID),
				 errmsg("cannot %s reservation %s: it is already %s", action, budget_uuid_string(id), status),
				 errdetail("It was %s at %s.", status, timestamptz_to_str(budget_get_timestamptz(0, 6))),
				 errhint("A reservation is settled, released or expires exactly once.")));
	if (expires_at <= GetCurrentTransactionStartTimestamp())
		ereport(ERROR,
				(errcode(ERRCODE_DN_RESERVATION_INVALID),
				 errmsg("cannot %s reservation %s: it expired at %s", action, budget_uuid_string(id),
						timestamptz_to_str(expires_at)),
				 errhint("Reserve again with a ttl long enough for the work; its room has been or will be released.")));
}

/* Mark the reservation resolved and append the ledger entry. */
static void
budget_resolve(const LockedReservation *r, const char *status, const char *kind, bool settled,
			   int64 actual, TimestampTz period_start)
{
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = budget_uuid_datum(&r->org_id);
	values[1] = budget_uuid_datum(&r->id);
	values[2] = CStringGetTextDatum(status);
	values[3] = Int64GetDatum(actual);
	nulls[3] = settled ? ' ' : 'n';
	values[4] = TimestampTzGetDatum(period_start);
	values[5] = CStringGetTextDatum(kind);
	if (budget_exec(PLAN_RESERVATION_RESOLVE, values, nulls, false, 0) != 1)
		elog(ERROR, "could not resolve reservation %s", budget_uuid_string(&r->id));
}

/* Fast settle: the reservation's slot only (subtransaction). */
static bool
settle_fast(void *arg)
{
	SettleContext *cx = arg;
	Datum		values[6];

	values[0] = budget_uuid_datum(&cx->org_id);
	values[1] = budget_uuid_datum(&cx->department_id);
	values[2] = Int32GetDatum(cx->slot_no);
	values[3] = Int64GetDatum(cx->estimate);
	values[4] = Int64GetDatum(cx->actual);
	values[5] = TimestampTzGetDatum(cx->now);
	if (budget_exec(PLAN_SLOT_SETTLE, values, NULL, false, 0) != 1)
		return false;
	cx->period_start = budget_get_timestamptz(0, 1);
	return true;
}

/*
 * Exact settle: thresholds, and an actual above the estimate that the slot
 * cannot hold: room from the pool and the other slots, and when there is none
 * left, a recorded overrun (hard mode: the department locks).
 */
static void
settle_exact(SettleContext *cx)
{
	BudgetState *st = palloc(sizeof(BudgetState));
	Budget	   *b = &st->b;
	BudgetSlot *s;
	int64		deficit;

	budget_exact_begin(st, &cx->org_id, &cx->department_id);
	s = budget_slot(st, cx->slot_no);
	s->reserved -= cx->estimate;
	s->spent += cx->actual;
	s->dirty = true;
	deficit = s->spent + s->reserved - s->allowance;
	if (deficit > 0)
	{
		int64		take;

		budget_collect_free(st);
		take = Min(deficit, Max(0, b->pool));
		s->allowance += deficit;
		b->pool -= deficit;
		deficit -= take;
		if (deficit > 0)
		{
			if (b->mode == BUDGET_HARD)
			{
				b->overrun += deficit;
				b->locked = true;
				budget_ledger_insert(b, s->period_start, "overrun", s->slot_no, NULL, deficit, 0, 0);
			}
			else
				budget_emit_over_limit(b, budget_total_spent(st), budget_total_reserved(st));
		}
	}
	cx->period_start = s->period_start;
	budget_exact_finish(st);
}

/*
 * donatello.settle(reservation_id, actual): the reservation becomes spend at
 * the actual cost.
 */
Datum
donatello_settle(PG_FUNCTION_ARGS)
{
	LockedReservation r;
	SettleContext cx;

	budget_require_argument(fcinfo, 0, "reservation_id");
	budget_require_argument(fcinfo, 1, "actual");
	memset(&cx, 0, sizeof(cx));
	cx.actual = budget_numeric_to_micros(PG_GETARG_DATUM(1), "actual", true);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	budget_lock_reservation(PG_GETARG_UUID_P(0), "settle", &r);
	cx.org_id = r.org_id;
	cx.department_id = r.department_id;
	cx.slot_no = r.slot_no;
	cx.estimate = r.amount;
	cx.now = GetCurrentTransactionStartTimestamp();
	if (!budget_in_subtransaction(settle_fast, &cx))
		settle_exact(&cx);
	budget_resolve(&r, "settled", "settle", true, cx.actual, cx.period_start);
	SPI_finish();
	PG_RETURN_VOID();
}

/* Give a locked reservation's room back to its slot (release, expiry). */
void
budget_give_back(const pg_uuid_t *org_id, const pg_uuid_t *department_id, int slot_no,
				 int64 amount, TimestampTz *period_start)
{
	Datum		values[5];

	values[0] = budget_uuid_datum(org_id);
	values[1] = budget_uuid_datum(department_id);
	values[2] = Int32GetDatum(slot_no);
	values[3] = Int64GetDatum(-amount);
	values[4] = Int64GetDatum(0);
	if (budget_exec(PLAN_SLOT_ADD, values, NULL, false, 0) != 1)
		elog(ERROR, "budget slot %d does not exist", slot_no);
	*period_start = budget_get_timestamptz(0, 1);
}

/* donatello.release(reservation_id): give the room back unspent. */
Datum
donatello_release(PG_FUNCTION_ARGS)
{
	LockedReservation r;
	TimestampTz period_start;

	budget_require_argument(fcinfo, 0, "reservation_id");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	budget_lock_reservation(PG_GETARG_UUID_P(0), "release", &r);
	budget_give_back(&r.org_id, &r.department_id, r.slot_no, r.amount, &period_start);
	budget_resolve(&r, "released", "release", false, 0, period_start);
	SPI_finish();
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------------
 * set_budget and budget_status
 * --------------------------------------------------------------------- */

/* DNV01 unless the thresholds are 1 to 10 distinct fractions in (0, 10]. */
static void
budget_check_threshold_array(ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	int			j;
	Datum		zero = DirectFunctionCall1(int4_numeric, Int32GetDatum(0));
	Datum		ten = DirectFunctionCall1(int4_numeric, Int32GetDatum(10));

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("thresholds must be a one-dimensional array")));
	deconstruct_array(arr, NUMERICOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n > 10)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("at most 10 thresholds are allowed, not %d", n)));
	for (i = 0; i < n; i++)
	{
		if (nulls[i] || numeric_is_nan(DatumGetNumeric(elems[i])) ||
			DatumGetInt32(DirectFunctionCall2(numeric_cmp, elems[i], zero)) <= 0 ||
			DatumGetInt32(DirectFunctionCall2(numeric_cmp, elems[i], ten)) > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DN_INVALID_ARGUMENT),
					 errmsg("thresholds must be fractions of the limit above 0 and at most 10"),
					 errhint("The default is '{0.8,0.9,1.0}' (alerts at 80%%, 90%% and 100%%).")));
		for (j = 0; j < i; j++)
			if (DatumGetInt32(DirectFunctionCall2(numeric_cmp, elems[i], elems[j])) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DN_INVALID_ARGUMENT),
						 errmsg("thresholds must be distinct")));
	}
}

/*
 * donatello.set_budget(department_id, amount, mode, period, thresholds):
 * create or change a budget. Lowering a hard limit below what is spent and
 * reserved is refused; raising it unlocks the department.
 */
Datum
donatello_set_budget(PG_FUNCTION_ARGS)
{
	pg_uuid_t	department_id;
	pg_uuid_t	org_id;
	int64		limit;
	char	   *mode;
	char	   *period;
	BudgetMode	new_mode;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	TimestampTz start;
	TimestampTz end;
	Datum		values[9];
	BudgetState *st;
	Budget	   *b;
	bool		created;

	budget_require_argument(fcinfo, 0, "department_id");
	budget_require_argument(fcinfo, 1, "amount");
	budget_require_argument(fcinfo, 2, "mode");
	budget_require_argument(fcinfo, 3, "period");
	budget_require_argument(fcinfo, 4, "thresholds");
	department_id = *PG_GETARG_UUID_P(0);
	limit = budget_numeric_to_micros(PG_GETARG_DATUM(1), "amount", true);
	mode = text_to_cstring(PG_GETARG_TEXT_PP(2));
	period = text_to_cstring(PG_GETARG_TEXT_PP(3));
	if (strcmp(mode, "hard") == 0)
		new_mode = BUDGET_HARD;
	else if (strcmp(mode, "soft") == 0)
		new_mode = BUDGET_SOFT;
	else if (strcmp(mode, "warn") == 0)
		new_mode = BUDGET_WARN;
	else
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("invalid budget mode \"%s\"", mode),
				 errhint("Use \"hard\" (refuse what does not fit), \"soft\" (allow, record an event) or \"warn\" (allow, alert the manager).")));
	if (strcmp(period, "month") != 0 && strcmp(period, "week") != 0 && strcmp(period, "day") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("invalid budget period \"%s\"", period),
				 errhint("Use \"month\", \"week\" or \"day\" (calendar periods in UTC).")));
	budget_check_threshold_array(PG_GETARG_ARRAYTYPE_P(4));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	org_id = budget_department_org(&department_id);
	budget_period_bounds(period, now, &start, &end);
	values[0] = budget_uuid_datum(&org_id);
	values[1] = budget_uuid_datum(&department_id);
	values[2] = Int64GetDatum(limit);
	values[3] = CStringGetTextDatum(mode);
	values[4] = CStringGetTextDatum(period);
	values[5] = PG_GETARG_DATUM(4);
	values[6] = TimestampTzGetDatum(start);
	values[7] = TimestampTzGetDatum(end);
	values[8] = Int32GetDatum(budget_slot_count);
	created = budget_exec(PLAN_BUDGET_INSERT, values, NULL, false, 0) == 1;
	if (created)
	{
		values[2] = TimestampTzGetDatum(start);
		values[3] = TimestampTzGetDatum(end);
		values[4] = Int32GetDatum(budget_slot_count);
		budget_exec(PLAN_SLOTS_INSERT, values, NULL, false, 0);
	}

	st = palloc(sizeof(BudgetState));
	b = &st->b;
	budget_exact_begin(st, &org_id, &department_id);
	if (!created)
	{
		int64		spent = budget_total_spent(st);
		int64		reserved = budget_total_reserved(st);

		if (new_mode == BUDGET_HARD && limit < spent + reserved)
			ereport(ERROR,
					(errcode(ERRCODE_DN_INVALID_ARGUMENT),
					 errmsg("cannot set the hard limit of department %s to %s: %s is spent or reserved",
							budget_uuid_string(&department_id), budget_micros_to_cstring(limit),
							budget_micros_to_cstring(spent + reserved)),
					 errdetail("Spent %s, reserved %s.", budget_micros_to_cstring(spent),
							   budget_micros_to_cstring(reserved)),
					 errhint("Release reservations first, or choose mode \"soft\" or \"warn\".")));
		if (limit > b->limit || new_mode != BUDGET_HARD)
			b->locked = false;
		b->pool += limit - b->limit;
		budget_collect_free(st);
		values[0] = budget_uuid_datum(&org_id);
		values[1] = budget_uuid_datum(&department_id);
		values[2] = Int64GetDatum(limit);
		values[3] = CStringGetTextDatum(mode);
		values[4] = CStringGetTextDatum(period);
		values[5] = PG_GETARG_DATUM(4);
		budget_exec(PLAN_BUDGET_SETTINGS, values, NULL, false, 0);
		b->limit = limit;
		b->mode = new_mode;
		if (strcmp(b->period, period) != 0)
		{
			strlcpy(b->period, period, sizeof(b->period));
			budget_rollover(st, now);
		}
	}
	budget_ledger_insert(b, b->period_start, "adjust", -1, NULL, limit, 0, 0);
	budget_exact_finish(st);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * donatello.budget_status(department_id): limit, spent, reserved, available,
 * utilization, mode, period, locked. Rolls the period over first if it ended.
 */
Datum
donatello_budget_status(PG_FUNCTION_ARGS)
{
	pg_uuid_t	department_id;
	pg_uuid_t	org_id;
	Budget		b;
	TupleDesc	tupdesc;
	Datum		values[9];
	bool		nulls[9] = {false, false, false, false, false, false, false, false, false};
	Datum		args[2];
	int64		limit;
	int64		spent;
	int64		reserved;
	HeapTuple	tuple;

	budget_require_argument(fcinfo, 0, "department_id");
	department_id = *PG_GETARG_UUID_P(0);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "budget_status must return a record");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	org_id = budget_department_org(&department_id);
	budget_require(&org_id, &department_id, &b, false);
	if (b.period_end <= GetCurrentTransactionStartTimestamp())
	{
		BudgetState *st = palloc(sizeof(BudgetState));

		budget_exact_begin(st, &org_id, &department_id);
		budget_exact_finish(st);
	}
	args[0] = budget_uuid_datum(&org_id);
	args[1] = budget_uuid_datum(&department_id);
	if (budget_exec(PLAN_STATUS, args, NULL, false, 1) != 1)
		elog(ERROR, "budget of department %s has no slots", budget_uuid_string(&department_id));
	limit = budget_get_int64(0, 1, NULL);
	spent = budget_get_int64(0, 2, NULL);
	reserved = budget_get_int64(0, 3, NULL);
	values[5] = CStringGetTextDatum(budget_get_text(0, 4));
	values[6] = TimestampTzGetDatum(budget_get_timestamptz(0, 5));
	values[7] = TimestampTzGetDatum(budget_get_timestamptz(0, 6));
	values[8] = BoolGetDatum(budget_get_bool(0, 7));
	SPI_finish();

	values[0] = budget_micros_to_numeric(limit);
	values[1] = budget_micros_to_numeric(spent);
	values[2] = budget_micros_to_numeric(reserved);
	values[3] = budget_micros_to_numeric(limit - spent - reserved);
	if (limit > 0)
		values[4] = DirectFunctionCall2(numeric_round,
										DirectFunctionCall2(numeric_div, values[1], values[0]),
										Int32GetDatum(4));
	else
		nulls[4] = true;
	tupdesc = BlessTupleDesc(tupdesc);
	tuple = heap_form_tuple(tupdesc, values, nulls);
	PG_RETURN_DATUM(HeapTupleGetDatum(tuple));
}
