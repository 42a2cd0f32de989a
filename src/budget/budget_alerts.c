/*
 * budget_alerts.c
 *	  Budget events into the dispatcher's outbox (donatello.emit_event):
 *	  budget.threshold_reached once per threshold per period, and the
 *	  over-limit alert of soft and warn budgets once per period; each also
 *	  recorded in the organization's audit trail (donatello.audit_system_event).
 *
 * "Once" is the primary key of budget_alerts: an alert row is inserted with
 * ON CONFLICT DO NOTHING and the event is emitted only by the transaction
 * whose insert went in. The callers hold the budgets row lock (exact path),
 * so two sessions never decide about the same threshold at the same time
 * anyway; the key makes it hold across crashes, rollovers and replays too.
 *
 * budget_emit() is the one place an alert is emitted and audited.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"

#include "donatello.h"
#include "budget/budget.h"

/* Insert the alert row; true if this transaction is the one that did. */
static bool
budget_claim_alert(const Budget *b, const char *alert)
{
	Datum		values[4];

	values[0] = budget_uuid_datum(&b->org_id);
	values[1] = budget_uuid_datum(&b->department_id);
	values[2] = TimestampTzGetDatum(b->period_start);
	values[3] = CStringGetTextDatum(alert);
	return budget_exec(PLAN_ALERT_INSERT, values, NULL, false, 0) == 1;
}

/*
 * Emit an event, remember its id on the alert row, and record the alert in
 * the organization's audit trail (action = the event type).
 */
static void
budget_emit(const Budget *b, const char *alert, const char *event_type, const char *payload)
{
	Datum		values[5];
	bool		isnull;
	pg_uuid_t	event_id;
	Datum		details = DirectFunctionCall1(jsonb_in, CStringGetDatum(payload));

	values[0] = budget_uuid_datum(&b->org_id);
	values[1] = CStringGetTextDatum(event_type);
	values[2] = CStringGetTextDatum(budget_uuid_string(&b->department_id));
	values[3] = details;
	budget_exec(PLAN_AUDIT_EVENT, values, NULL, false, 1);

	values[0] = budget_uuid_datum(&b->org_id);
	values[1] = CStringGetTextDatum(event_type);
	values[2] = details;
	if (budget_exec(PLAN_EMIT_EVENT, values, NULL, false, 1) != 1)
		elog(ERROR, "emit_event returned no event");
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	event_id = budget_get_uuid(0, 1);

	values[0] = budget_uuid_datum(&b->org_id);
	values[1] = budget_uuid_datum(&b->department_id);
	values[2] = TimestampTzGetDatum(b->period_start);
	values[3] = CStringGetTextDatum(alert);
	values[4] = budget_uuid_datum(&event_id);
	budget_exec(PLAN_ALERT_EVENT, values, NULL, false, 0);
}

/* The JSON fields every budget event carries. */
static void
budget_event_fields(StringInfo buf, const Budget *b)
{
	appendStringInfo(buf, "\"department_id\": \"%s\", \"mode\": \"%s\", \"limit\": %s",
					 budget_uuid_string(&b->department_id), budget_mode_name(b->mode),
					 budget_micros_to_cstring(b->limit));
	appendStringInfoString(buf, ", \"period_start\": ");
	escape_json(buf, timestamptz_to_str(b->period_start));
	appendStringInfoString(buf, ", \"period_end\": ");
	escape_json(buf, timestamptz_to_str(b->period_end));
}

/*
 * budget.threshold_reached for one threshold, unless it was emitted already
 * this period. The one place a threshold alert happens.
 */
void
budget_emit_threshold(const Budget *b, const char *threshold, int64 at_micros, int64 spent)
{
	char	   *alert = psprintf("threshold:%s", threshold);
	StringInfoData buf;

	if (!budget_claim_alert(b, alert))
		return;
	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"threshold\": %s, \"reached_at\": %s, \"spent\": %s, ",
					 threshold, budget_micros_to_cstring(at_micros), budget_micros_to_cstring(spent));
	budget_event_fields(&buf, b);
	appendStringInfo(&buf, ", \"locks\": %s}",
					 b->mode == BUDGET_HARD && at_micros >= b->limit ? "true" : "false");
	budget_emit(b, alert, "budget.threshold_reached", buf.data);
}

/*
 * Check every threshold against the spend (exact path, budgets row locked):
 * emit the ones reached, and set b->next_watch to the spend of the smallest
 * one not reached yet (none: has_next_watch false).
 */
void
budget_check_thresholds(BudgetState *st, int64 spent)
{
	Budget	   *b = &st->b;
	Datum		values[4];
	int			n;
	int			i;
	char	  **names;
	int64	   *at;
	bool	   *done;

	b->has_next_watch = false;
	b->next_watch = 0;
	if (b->limit <= 0)
		return;
	values[0] = budget_uuid_datum(&b->org_id);
	values[1] = budget_uuid_datum(&b->department_id);
	values[2] = Int64GetDatum(b->limit);
	values[3] = TimestampTzGetDatum(b->period_start);
	n = budget_exec(PLAN_THRESHOLDS, values, NULL, true, 0);
	names = palloc(sizeof(char *) * Max(n, 1));
	at = palloc(sizeof(int64) * Max(n, 1));
	done = palloc(sizeof(bool) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		names[i] = budget_get_text(i, 1);
		at[i] = budget_get_int64(i, 2, NULL);
		done[i] = budget_get_bool(i, 3);
	}
	for (i = 0; i < n; i++)
	{
		if (done[i])
			continue;
		if (spent >= at[i])
			budget_emit_threshold(b, names[i], at[i], spent);
		else if (!b->has_next_watch || at[i] < b->next_watch)
		{
			b->has_next_watch = true;
			b->next_watch = at[i];
		}
	}
}

/*
 * Soft and warn budgets: spending past the limit is allowed and alerted once
 * per period (soft: budget.limit_exceeded; warn: budget.manager_alert, which
 * names the department's manager).
 */
void
budget_emit_over_limit(const Budget *b, int64 spent, int64 reserved)
{
	StringInfoData buf;

	if (b->mode == BUDGET_HARD || !budget_claim_alert(b, "over_limit"))
		return;
	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"spent\": %s, \"reserved\": %s, ",
					 budget_micros_to_cstring(spent), budget_micros_to_cstring(reserved));
	budget_event_fields(&buf, b);
	if (b->mode == BUDGET_WARN)
	{
		Datum		values[2] = {budget_uuid_datum(&b->org_id), budget_uuid_datum(&b->department_id)};
		bool		isnull = true;

		if (budget_exec(PLAN_DEPARTMENT_MANAGER, values, NULL, true, 1) == 1)
		{
			char	   *name = budget_get_text(0, 2);
			pg_uuid_t	manager;

			(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			manager = budget_get_uuid(0, 1);
			appendStringInfoString(&buf, ", \"department\": ");
			escape_json(&buf, name);
			if (!isnull)
				appendStringInfo(&buf, ", \"manager_id\": \"%s\"", budget_uuid_string(&manager));
		}
		if (isnull)
			appendStringInfoString(&buf, ", \"manager_id\": null");
		appendStringInfoChar(&buf, '}');
		budget_emit(b, "over_limit", "budget.manager_alert", buf.data);
	}
	else
	{
		appendStringInfoChar(&buf, '}');
		budget_emit(b, "over_limit", "budget.limit_exceeded", buf.data);
	}
}
