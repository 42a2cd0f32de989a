/*
 * circuit.c
 *	  The circuit breaker of each model: recent failures open it, an open
 *	  circuit keeps the model out of the ranking for a cool-down, then it is
 *	  half-open and one trial request may go; the trial's success closes it,
 *	  its failure opens it again.
 *
 *	  closed --(threshold failures within the window)--> open
 *	  open --(cool-down over)--> half_open --(acquire)--> trial
 *	  trial --(success)--> closed      trial --(failure)--> open
 *	  trial --(no report within a cool-down: presumed lost)--> half_open
 *
 * The state is stored in donatello.model_circuits, one row per model, and
 * every change happens under that row's lock (SELECT ... FOR UPDATE) in the
 * caller's transaction: two sessions can never both take the one trial of a
 * half-open circuit (test/isolation/specs/circuit_trial.spec). "Open" and
 * "half-open" as stored may be out of date; circuit_effective() computes the
 * state at a given time, so nothing has to wake up when a cool-down ends.
 * The transitions below are pure functions of the record, the time and the
 * settings.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "donatello.h"
#include "router/router.h"

PG_FUNCTION_INFO_V1(donatello_model_circuit_acquire);
PG_FUNCTION_INFO_V1(donatello_model_circuit_report);
PG_FUNCTION_INFO_V1(donatello_circuit_effective_state);

/* "no time" in a record: NULL in the table */
#define NO_TIME DT_NOBEGIN

static int	circuit_failure_threshold = 3;
static int	circuit_failure_window_s = 60;
static int	circuit_cooldown_s = 30;

/* Define the circuit breaker settings. */
void
circuit_init(void)
{
	DefineCustomIntVariable("donatello.circuit_failure_threshold",
							"Failures of a model within the failure window that open its circuit.",
							NULL,
							&circuit_failure_threshold,
							3, 1, 1000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.circuit_failure_window",
							"Window in which a model's failures are counted towards opening its circuit.",
							NULL,
							&circuit_failure_window_s,
							60, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.circuit_cooldown",
							"How long an open circuit keeps a model out before one trial request may go.",
							"Also how long a trial request may take before it is presumed lost.",
							&circuit_cooldown_s,
							30, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
}

/* The settings in force. */
void
circuit_settings_current(CircuitSettings *cs)
{
	cs->failure_threshold = circuit_failure_threshold;
	cs->window_us = (int64) circuit_failure_window_s * USECS_PER_SEC;
	cs->cooldown_us = (int64) circuit_cooldown_s * USECS_PER_SEC;
}

/* The state of a circuit at time now. */
CircuitState
circuit_effective(const CircuitRecord *r, TimestampTz now, const CircuitSettings *cs)
{
	switch (r->state)
	{
		case CIRCUIT_OPEN:
			return now < r->retry_at ? CIRCUIT_OPEN : CIRCUIT_HALF_OPEN;
		case CIRCUIT_HALF_OPEN:
			if (r->trial_started_at != NO_TIME && now < r->trial_started_at + cs->cooldown_us)
				return CIRCUIT_TRIAL;
			return CIRCUIT_HALF_OPEN;
		default:
			return CIRCUIT_CLOSED;
	}
}

/* Open the circuit now. */
static void
circuit_open(CircuitRecord *r, TimestampTz now, const CircuitSettings *cs)
{
	r->state = CIRCUIT_OPEN;
	r->opened_at = now;
	r->retry_at = now + cs->cooldown_us;
	r->trial_started_at = NO_TIME;
	r->failures = 0;
	r->window_started_at = NO_TIME;
	r->times_opened++;
}

/*
 * May a request go to the model now? A closed circuit says yes; a half-open
 * one says yes once, taking its trial; an open one, or one whose trial is in
 * flight, says no.
 */
bool
circuit_acquire(CircuitRecord *r, TimestampTz now, const CircuitSettings *cs)
{
	switch (circuit_effective(r, now, cs))
	{
		case CIRCUIT_CLOSED:
			return true;
		case CIRCUIT_HALF_OPEN:
			r->state = CIRCUIT_HALF_OPEN;
			r->trial_started_at = now;
			return true;
		default:
			return false;
	}
}

/* A request succeeded: close the circuit, unless it is open and cooling down. */
void
circuit_record_success(CircuitRecord *r, TimestampTz now)
{
	if (r->state == CIRCUIT_OPEN && now < r->retry_at)
		return;
	r->state = CIRCUIT_CLOSED;
	r->failures = 0;
	r->window_started_at = NO_TIME;
	r->retry_at = NO_TIME;
	r->trial_started_at = NO_TIME;
}

/* A request failed: count it; open the circuit at the threshold, or after a failed trial. */
void
circuit_record_failure(CircuitRecord *r, TimestampTz now, const CircuitSettings *cs)
{
	if (r->state == CIRCUIT_CLOSED)
	{
		if (r->window_started_at == NO_TIME || now - r->window_started_at >= cs->window_us)
		{
			r->window_started_at = now;
			r->failures = 0;
		}
		if (++r->failures >= cs->failure_threshold)
			circuit_open(r, now, cs);
	}
	else if (circuit_effective(r, now, cs) != CIRCUIT_OPEN)
		circuit_open(r, now, cs);	/* the trial (or a late report after the cool-down) failed */
}

/* ---- the stored state: donatello.model_circuits ---- */

static SPIPlanPtr select_plan = NULL;
static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr update_plan = NULL;

/* Prepare and keep a plan. */
static SPIPlanPtr
keep_plan(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL || SPI_keepplan(plan) != 0)
		elog(ERROR, "could not prepare circuit query: %s", SPI_result_code_string(SPI_result));
	return plan;
}

/* A timestamptz column, NO_TIME when NULL. */
static TimestampTz
get_time(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NO_TIME : DatumGetTimestampTz(d);
}

/* Lock and read a model's circuit; creates the row if the model has none. DNV02 for an unknown model. */
static void
circuit_load(pg_uuid_t *model_id, CircuitRecord *r)
{
	Oid			uuid_type = UUIDOID;
	Datum		arg = UUIDPGetDatum(model_id);
	int			attempt;

	if (select_plan == NULL)
		select_plan = keep_plan("SELECT state, failures, window_started_at, opened_at, retry_at,"
								" trial_started_at, times_opened FROM donatello.model_circuits"
								" WHERE model_id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
								1, &uuid_type);
	if (insert_plan == NULL)
		insert_plan = keep_plan("INSERT INTO donatello.model_circuits (model_id)"
								" SELECT id FROM donatello.models WHERE id OPERATOR(pg_catalog.=) $1"
								" ON CONFLICT (model_id) DO NOTHING",
								1, &uuid_type);

	for (attempt = 0; attempt < 2; attempt++)
	{
		if (SPI_execute_plan(select_plan, &arg, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the circuit of a model");
		if (SPI_processed == 1)
		{
			HeapTuple	tup = SPI_tuptable->vals[0];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			char	   *state = SPI_getvalue(tup, desc, 1);
			bool		isnull;

			if (!circuit_parse_state(state, &r->state) || r->state == CIRCUIT_TRIAL)
				elog(ERROR, "invalid stored circuit state \"%s\"", state);
			r->failures = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
			r->window_started_at = get_time(tup, desc, 3);
			r->opened_at = get_time(tup, desc, 4);
			r->retry_at = get_time(tup, desc, 5);
			r->trial_started_at = get_time(tup, desc, 6);
			r->times_opened = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
			return;
		}
		if (SPI_execute_plan(insert_plan, &arg, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not create the circuit of a model");
	}
	ereport(ERROR,
			(errcode(ERRCODE_DN_NOT_FOUND),
			 errmsg("model %s does not exist",
					DatumGetCString(DirectFunctionCall1(uuid_out, arg)))));
}

/* Write a circuit back; event is "acquire", "success" or "failure". */
static void
circuit_store(pg_uuid_t *model_id, const CircuitRecord *r, const char *event)
{
	Oid			types[9] = {UUIDOID, TEXTOID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID,
	TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID, TEXTOID};
	Datum		values[9];
	char		nulls[9];
	TimestampTz times[4] = {r->window_started_at, r->opened_at, r->retry_at, r->trial_started_at};
	int			i;

	if (update_plan == NULL)
		update_plan = keep_plan("UPDATE donatello.model_circuits SET state = $2, failures = $3,"
								" window_started_at = $4, opened_at = $5, retry_at = $6,"
								" trial_started_at = $7, times_opened = $8,"
								" last_failure_at = CASE WHEN $9 OPERATOR(pg_catalog.=) 'failure' THEN pg_catalog.now() ELSE last_failure_at END,"
								" last_success_at = CASE WHEN $9 OPERATOR(pg_catalog.=) 'success' THEN pg_catalog.now() ELSE last_success_at END,"
								" updated_at = pg_catalog.now()"
								" WHERE model_id OPERATOR(pg_catalog.=) $1",
								9, types);
	memset(nulls, ' ', sizeof(nulls));
	values[0] = UUIDPGetDatum(model_id);
	values[1] = CStringGetTextDatum(circuit_state_names[r->state]);
	values[2] = Int32GetDatum(r->failures);
	for (i = 0; i < 4; i++)
	{
		values[3 + i] = TimestampTzGetDatum(times[i]);
		if (times[i] == NO_TIME)
			nulls[3 + i] = 'n';
	}
	values[7] = Int32GetDatum(r->times_opened);
	values[8] = CStringGetTextDatum(event);
	if (SPI_execute_plan(update_plan, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update the circuit of a model");
}

/* donatello.model_circuit_acquire(model_id uuid) returns boolean */
Datum
donatello_model_circuit_acquire(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *model_id = PG_GETARG_UUID_P(0);
	CircuitSettings cs;
	CircuitRecord r;
	bool		allowed;

	circuit_settings_current(&cs);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	circuit_load(model_id, &r);
	allowed = circuit_acquire(&r, GetCurrentTransactionStartTimestamp(), &cs);
	if (allowed && r.state == CIRCUIT_HALF_OPEN)
		circuit_store(model_id, &r, "acquire");
	SPI_finish();
	PG_RETURN_BOOL(allowed);
}

/* donatello.model_circuit_report(model_id uuid, success boolean) returns text: the state after it */
Datum
donatello_model_circuit_report(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *model_id = PG_GETARG_UUID_P(0);
	bool		success = PG_GETARG_BOOL(1);
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	CircuitSettings cs;
	CircuitRecord r;
	CircuitState after;

	circuit_settings_current(&cs);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	circuit_load(model_id, &r);
	if (success)
		circuit_record_success(&r, now);
	else
		circuit_record_failure(&r, now, &cs);
	circuit_store(model_id, &r, success ? "success" : "failure");
	after = circuit_effective(&r, now, &cs);
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(circuit_state_names[after]));
}

/*
 * donatello.circuit_effective_state(state text, retry_at timestamptz,
 * trial_started_at timestamptz) returns text: a stored circuit's state now
 */
Datum
donatello_circuit_effective_state(PG_FUNCTION_ARGS)
{
	CircuitSettings cs;
	CircuitRecord r;
	char	   *state;

	if (PG_ARGISNULL(0))
		PG_RETURN_TEXT_P(cstring_to_text(circuit_state_names[CIRCUIT_CLOSED]));
	state = text_to_cstring(PG_GETARG_TEXT_PP(0));
	memset(&r, 0, sizeof(r));
	if (!circuit_parse_state(state, &r.state) || r.state == CIRCUIT_TRIAL)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("invalid circuit state \"%s\"", state),
				 errhint("A stored circuit is \"closed\", \"open\" or \"half_open\".")));
	r.retry_at = PG_ARGISNULL(1) ? NO_TIME : PG_GETARG_TIMESTAMPTZ(1);
	r.trial_started_at = PG_ARGISNULL(2) ? NO_TIME : PG_GETARG_TIMESTAMPTZ(2);
	circuit_settings_current(&cs);
	PG_RETURN_TEXT_P(cstring_to_text(circuit_state_names[circuit_effective(&r, GetCurrentTransactionStartTimestamp(), &cs)]));
}
