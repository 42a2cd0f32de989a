/*
 * generation_settings.c
 *	  Settings of the generation pipeline, and the http_enqueue policy a
 *	  provider request is queued with (donatello.generation_request_policy()).
 *
 * generate() stores the policy in the job, so that every request of the job
 * (the fallbacks, queued later by the dispatcher's completion hook) is sent
 * with the settings that were in force for the request.
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"

#include "donatello.h"
#include "bgworker/dispatcher/dispatcher.h"
#include "generation/generation.h"

int			generation_attempts_per_model = 3;
char	   *generation_retry_backoff = NULL;
int			generation_request_timeout_ms = 60000;
int			generation_max_fallbacks = 2;
int			generation_reservation_ttl_s = 3600;

PG_FUNCTION_INFO_V1(donatello_generation_request_policy);

/* check hook of donatello.generation_retry_backoff: a list of delays. */
static bool
check_retry_backoff(char **newval, void **extra pg_attribute_unused(), GucSource source pg_attribute_unused())
{
	RetrySchedule schedule;
	char	   *error = NULL;

	if (!retry_schedule_parse(*newval, &schedule, &error))
	{
		GUC_check_errdetail("%s", error ? error : "not a list of delays");
		return false;
	}
	if (schedule.nsteps == 0)
	{
		GUC_check_errdetail("give at least one delay, such as \"2s, 4s\"");
		return false;
	}
	return true;
}

/* Define the settings (from _PG_init). */
void
generation_init(void)
{
	DefineCustomIntVariable("donatello.generation_attempts_per_model",
							"Attempts of a provider request to one model before falling back to the next.",
							"Failures retried: 5xx, 429, timeouts and network errors.",
							&generation_attempts_per_model, 3, 1, 10, PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomStringVariable("donatello.generation_retry_backoff",
							   "Delays before the second, third, ... attempt of a provider request.",
							   "Comma-separated delays with units; the last one repeats.",
							   &generation_retry_backoff, "2s, 4s", PGC_SUSET, 0,
							   check_retry_backoff, NULL, NULL);
	DefineCustomIntVariable("donatello.generation_request_timeout",
							"Time allowed for one attempt of a provider request.",
							NULL, &generation_request_timeout_ms, 60000, 100, 600000, PGC_SUSET,
							GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.generation_max_fallbacks",
							"Most next-ranked models a generation falls back to after the first fails.",
							"The budget reservation covers the dearest of the models a job may use.",
							&generation_max_fallbacks, 2, 0, 20, PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.generation_reservation_ttl",
							"Lifetime of a generation's budget reservation.",
							"Longer than the slowest job: attempts x timeout plus backoff, for each model.",
							&generation_reservation_ttl_s, 3600, 60, 7 * 24 * 3600, PGC_SUSET,
							GUC_UNIT_S, NULL, NULL, NULL);
	generation_recover_init();
}

/*
 * donatello.generation_request_policy() returns jsonb:
 * {"max_attempts", "backoff": [ms, ...], "retry_on", "timeout_ms"}.
 */
Datum
donatello_generation_request_policy(PG_FUNCTION_ARGS pg_attribute_unused())
{
	RetrySchedule schedule;
	char	   *error = NULL;
	StringInfoData json;

	if (generation_retry_backoff == NULL)
		donatello_require_preload("generation");
	if (!retry_schedule_parse(generation_retry_backoff, &schedule, &error))
		elog(ERROR, "donatello.generation_retry_backoff became invalid: %s", error ? error : "?");

	initStringInfo(&json);
	appendStringInfo(&json, "{\"max_attempts\": %d, \"backoff\": [", generation_attempts_per_model);
	for (int i = 0; i < schedule.nsteps; i++)
		appendStringInfo(&json, "%s%d", i ? ", " : "", schedule.delay_ms[i]);
	appendStringInfo(&json, "], \"retry_on\": [\"5xx\", \"429\", \"timeout\", \"network\"], \"timeout_ms\": %d}",
					 generation_request_timeout_ms);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json.data)));
}
