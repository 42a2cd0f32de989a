/*
 * budget_exact.c
 *	  The exact path: the budgets row and every slot of the department locked
 *	  (in that order, slots by ascending slot_no), the slots read into memory,
 *	  changed there, and written back by budget_exact_finish().
 *
 * Everything that needs the whole budget at once goes through here: a
 * reservation that does not fit its slot nor the pool, a settlement while a
 * threshold is within reach, set_budget, the period rollover. finish() is
 * where thresholds are checked (budget_alerts.c), the hard-mode lock is
 * decided, the next "watch point" (spend at which the next threshold or the
 * limit is reached) is recomputed, spare pool room is spread over the slots
 * without letting the room handed out reach the watch point, and the slots'
 * watch and locked flags are set. Because those flags are only changed here,
 * with every slot locked, a fast path that reads them under its slot's lock
 * sees the current truth (docs/budget.md, "Why the fast settle cannot miss a
 * threshold").
 */
#include "postgres.h"

#include "utils/builtins.h"

#include "donatello.h"
#include "budget/budget.h"

/* The period (of the unit "day", "week" or "month", UTC) that contains at. */
void
budget_period_bounds(const char *period, TimestampTz at, TimestampTz *start, TimestampTz *end)
{
	Datum		values[2] = {CStringGetTextDatum(period), TimestampTzGetDatum(at)};

	if (budget_exec(PLAN_PERIOD_BOUNDS, values, NULL, true, 1) != 1)
		elog(ERROR, "could not compute the budget period");
	*start = budget_get_timestamptz(0, 1);
	*end = budget_get_timestamptz(0, 2);
}

/* Lock the budgets row and every slot; roll the period over if it has ended. */
void
budget_exact_begin(BudgetState *st, const pg_uuid_t *org_id, const pg_uuid_t *department_id)
{
	budget_exact_begin_at(st, org_id, department_id, GetCurrentTransactionStartTimestamp());
}

/* budget_exact_begin, with the period that contains as_of as the current one. */
void
budget_exact_begin_at(BudgetState *st, const pg_uuid_t *org_id, const pg_uuid_t *department_id,
					  TimestampTz as_of)
{
	Datum		values[2];
	int			n;
	int			i;

	budget_require(org_id, department_id, &st->b, true);
	values[0] = budget_uuid_datum(org_id);
	values[1] = budget_uuid_datum(department_id);
	n = budget_exec(PLAN_SLOTS_LOCK, values, NULL, false, 0);
	if (n < 1 || n > BUDGET_MAX_SLOTS)
		elog(ERROR, "budget of department %s has %d slots", budget_uuid_string(department_id), n);
	st->nslots = n;
	for (i = 0; i < n; i++)
	{
		BudgetSlot *s = &st->slots[i];

		s->slot_no = budget_get_int32(i, 1);
		s->period_start = budget_get_timestamptz(i, 2);
		s->period_end = budget_get_timestamptz(i, 3);
		s->allowance = budget_get_int64(i, 4, NULL);
		s->reserved = budget_get_int64(i, 5, NULL);
		s->spent = budget_get_int64(i, 6, NULL);
		s->locked = budget_get_bool(i, 7);
		s->watch = budget_get_bool(i, 8);
		s->dirty = false;
	}
	if (st->b.period_end <= as_of)
		budget_rollover(st, as_of);
}

/* The slot with this number (locked by budget_exact_begin). */
BudgetSlot *
budget_slot(BudgetState *st, int slot_no)
{
	int			i;

	for (i = 0; i < st->nslots; i++)
		if (st->slots[i].slot_no == slot_no)
			return &st->slots[i];
	elog(ERROR, "budget slot %d does not exist", slot_no);
	return NULL;				/* keep the compiler quiet */
}

/* Spend of the current period, over every slot. */
int64
budget_total_spent(const BudgetState *st)
{
	int64		sum = 0;
	int			i;

	for (i = 0; i < st->nslots; i++)
		sum += st->slots[i].spent;
	return sum;
}

/* Reserved room, over every slot. */
int64
budget_total_reserved(const BudgetState *st)
{
	int64		sum = 0;
	int			i;

	for (i = 0; i < st->nslots; i++)
		sum += st->slots[i].reserved;
	return sum;
}

/* Move every slot's unused allowance back to the pool. */
void
budget_collect_free(BudgetState *st)
{
	int			i;

	for (i = 0; i < st->nslots; i++)
	{
		BudgetSlot *s = &st->slots[i];
		int64		free = s->allowance - s->spent - s->reserved;

		if (free > 0)
		{
			s->allowance -= free;
			st->b.pool += free;
			s->dirty = true;
		}
	}
}

/*
 * Expire the department's reservations that are past their expiry and not
 * locked by anyone (a settle or release in progress wins); the lazy half of
 * expiry, run when a reservation needs the room. Returns how many.
 */
int
budget_expire_locked(BudgetState *st, TimestampTz as_of)
{
	Datum		values[3];
	int			n;
	int			i;
	pg_uuid_t  *ids;
	int		   *slot_nos;
	int64	   *amounts;

	values[0] = budget_uuid_datum(&st->b.org_id);
	values[1] = budget_uuid_datum(&st->b.department_id);
	values[2] = TimestampTzGetDatum(as_of);
	n = budget_exec(PLAN_EXPIRED_OF_DEPARTMENT, values, NULL, false, 0);
	if (n == 0)
		return 0;
	ids = palloc(sizeof(pg_uuid_t) * n);
	slot_nos = palloc(sizeof(int) * n);
	amounts = palloc(sizeof(int64) * n);
	for (i = 0; i < n; i++)
	{
		ids[i] = budget_get_uuid(i, 1);
		slot_nos[i] = budget_get_int32(i, 2);
		amounts[i] = budget_get_int64(i, 3, NULL);
	}
	for (i = 0; i < n; i++)
	{
		BudgetSlot *s = budget_slot(st, slot_nos[i]);
		Datum		rvalues[6];
		char		rnulls[6] = {' ', ' ', ' ', 'n', ' ', ' '};

		s->reserved -= amounts[i];
		s->dirty = true;
		rvalues[0] = budget_uuid_datum(&st->b.org_id);
		rvalues[1] = budget_uuid_datum(&ids[i]);
		rvalues[2] = CStringGetTextDatum("expired");
		rvalues[3] = (Datum) 0;
		rvalues[4] = TimestampTzGetDatum(s->period_start);
		rvalues[5] = CStringGetTextDatum("expire");
		if (budget_exec(PLAN_RESERVATION_RESOLVE, rvalues, rnulls, false, 0) != 1)
			elog(ERROR, "could not expire reservation %s", budget_uuid_string(&ids[i]));
	}
	return n;
}

/*
 * Start the period that contains now: close the current one into
 * budget_periods, carry the reservations over (each slot keeps exactly its
 * reserved room), spend back to zero, the rest of the limit in the pool,
 * unlocked, no overrun.
 */
void
budget_rollover(BudgetState *st, TimestampTz now)
{
	Budget	   *b = &st->b;
	TimestampTz start;
	TimestampTz end;
	Datum		values[9];
	int64		reserved = 0;
	int			i;

	budget_period_bounds(b->period, now, &start, &end);
	values[0] = budget_uuid_datum(&b->org_id);
	values[1] = budget_uuid_datum(&b->department_id);
	values[2] = TimestampTzGetDatum(b->period_start);
	values[3] = TimestampTzGetDatum(Min(b->period_end, now));
	values[4] = Int64GetDatum(b->limit);
	values[5] = Int64GetDatum(budget_total_spent(st));
	values[6] = Int64GetDatum(b->overrun);
	values[7] = CStringGetTextDatum(budget_mode_name(b->mode));
	values[8] = BoolGetDatum(b->locked);
	budget_exec(PLAN_PERIOD_CLOSE, values, NULL, false, 0);

	for (i = 0; i < st->nslots; i++)
	{
		BudgetSlot *s = &st->slots[i];

		s->allowance = s->reserved;
		s->spent = 0;
		s->period_start = start;
		s->period_end = end;
		s->dirty = true;
		reserved += s->reserved;
	}
	b->pool = b->limit - reserved;
	b->overrun = 0;
	b->locked = false;
	b->period_start = start;
	b->period_end = end;
	budget_ledger_insert(b, start, "rollover", -1, NULL, b->limit, 0, 0);
}

/*
 * Hand part of the pool to the slots so that reservations find room without
 * the budgets row: half of it, never so much that the room handed out
 * (limit - pool) reaches the next watch point.
 */
static void
budget_spread_pool(BudgetState *st)
{
	Budget	   *b = &st->b;
	int64		hand = b->pool / 2;
	int64		per_slot;
	int			i;

	if (b->locked || b->pool <= 0)
		return;
	if (b->has_next_watch)
		hand = Min(hand, Max(0, b->next_watch - 1 - (b->limit - b->pool)));
	per_slot = hand / st->nslots;
	if (per_slot <= 0)
		return;
	for (i = 0; i < st->nslots; i++)
	{
		st->slots[i].allowance += per_slot;
		st->slots[i].dirty = true;
	}
	b->pool -= per_slot * st->nslots;
}

/* Write the slots that changed and the budgets row. */
static void
budget_exact_write(BudgetState *st)
{
	Budget	   *b = &st->b;
	Datum		values[10];
	char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int			i;

	values[0] = budget_uuid_datum(&b->org_id);
	values[1] = budget_uuid_datum(&b->department_id);
	for (i = 0; i < st->nslots; i++)
	{
		BudgetSlot *s = &st->slots[i];

		if (!s->dirty)
			continue;
		values[2] = Int32GetDatum(s->slot_no);
		values[3] = TimestampTzGetDatum(s->period_start);
		values[4] = TimestampTzGetDatum(s->period_end);
		values[5] = Int64GetDatum(s->allowance);
		values[6] = Int64GetDatum(s->reserved);
		values[7] = Int64GetDatum(s->spent);
		values[8] = BoolGetDatum(s->locked);
		values[9] = BoolGetDatum(s->watch);
		if (budget_exec(PLAN_SLOT_WRITE, values, NULL, false, 0) != 1)
			elog(ERROR, "could not write budget slot %d", s->slot_no);
		s->dirty = false;
	}
	values[2] = Int64GetDatum(b->pool);
	values[3] = Int64GetDatum(b->overrun);
	values[4] = Int64GetDatum(b->next_watch);
	nulls[4] = b->has_next_watch ? ' ' : 'n';
	values[5] = BoolGetDatum(b->locked);
	values[6] = TimestampTzGetDatum(b->period_start);
	values[7] = TimestampTzGetDatum(b->period_end);
	if (budget_exec(PLAN_BUDGET_WRITE, values, nulls, false, 0) != 1)
		elog(ERROR, "could not write budget");
}

/*
 * End of an exact operation: alerts for the thresholds the spend reached, the
 * hard-mode lock at the limit, the next watch point, room spread to the slots,
 * flags, and everything written back.
 */
void
budget_exact_finish(BudgetState *st)
{
	Budget	   *b = &st->b;
	int64		spent = budget_total_spent(st);
	bool		watch;
	int			i;

	/* sets b->next_watch to the smallest threshold spend not reached yet */
	budget_check_thresholds(st, spent);
	if (b->mode == BUDGET_HARD && b->limit > 0 && spent >= b->limit)
		b->locked = true;
	if (b->mode == BUDGET_HARD && !b->locked && b->limit > 0 &&
		(!b->has_next_watch || b->limit < b->next_watch))
	{
		b->has_next_watch = true;
		b->next_watch = b->limit;
	}
	budget_spread_pool(st);

	watch = b->has_next_watch && b->limit - b->pool >= b->next_watch;
	for (i = 0; i < st->nslots; i++)
	{
		BudgetSlot *s = &st->slots[i];

		if (s->watch != watch || s->locked != b->locked)
		{
			s->watch = watch;
			s->locked = b->locked;
			s->dirty = true;
		}
	}
	budget_exact_write(st);
}
