/*
 * dispatcher_retry.c
 *	  The retry policy: what one finished attempt means for its outbox row.
 *
 *	  - 2xx is success.
 *	  - Webhooks retry everything else (3xx, 4xx, 5xx, timeouts, connection
 *		errors) on donatello.webhook_retry_schedule, with
 *		donatello.webhook_retry_jitter; 410 Gone fails the delivery at once
 *		and disables the endpoint.
 *	  - Queued HTTP requests retry what their policy's retry_on names, on the
 *		policy's backoff, up to its max_attempts.
 *	  - 429 and 503 with a Retry-After header wait that long instead of the
 *		scheduled delay (capped at the schedule's longest step, at least 1 s).
 *
 * Schedules are written as in postgresql.conf, "1min, 5min, 15min, 1h, 6h,
 * 24h" (also "500ms", "10s", "2d"); they are parsed with PostgreSQL's own
 * unit parser.
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "bgworker/dispatcher/dispatcher.h"

/* the parsed donatello.webhook_retry_schedule, kept by its assign hook */
static RetrySchedule webhook_schedule_parsed;

/* Parse "1min, 5min, ..." into schedule; on failure set *error. */
bool
retry_schedule_parse(const char *text, RetrySchedule *schedule, char **error)
{
	char	   *copy = pstrdup(text ? text : "");
	char	   *token;
	char	   *saveptr = NULL;

	schedule->nsteps = 0;
	*error = NULL;
	for (token = strtok_r(copy, ",", &saveptr); token != NULL; token = strtok_r(NULL, ",", &saveptr))
	{
		const char *hint = NULL;
		int			ms;

		while (*token == ' ' || *token == '\t')
			token++;
		if (*token == '\0')
			continue;
		if (schedule->nsteps >= DISPATCH_MAX_SCHEDULE)
		{
			*error = psprintf("a retry schedule has at most %d steps", DISPATCH_MAX_SCHEDULE);
			return false;
		}
		if (!parse_int(token, &ms, GUC_UNIT_MS, &hint) || ms < 0)
		{
			*error = psprintf("invalid retry delay \"%s\"", token);
			return false;
		}
		schedule->delay_ms[schedule->nsteps++] = ms;
	}
	pfree(copy);
	return true;
}

/* GUC check hook of donatello.webhook_retry_schedule. */
bool
retry_schedule_check(char **newval, void **extra pg_attribute_unused(), GucSource source pg_attribute_unused())
{
	RetrySchedule schedule;
	char	   *error;

	if (!retry_schedule_parse(*newval, &schedule, &error))
	{
		GUC_check_errmsg("%s", error);
		GUC_check_errhint("Write delays separated by commas, with units: \"1min, 5min, 15min, 1h, 6h, 24h\".");
		return false;
	}
	return true;
}

/* GUC assign hook of donatello.webhook_retry_schedule. */
void
retry_schedule_assign(const char *newval, void *extra pg_attribute_unused())
{
	char	   *error;

	/* the check hook accepted it: cannot fail (no allocation survives) */
	if (!retry_schedule_parse(newval, &webhook_schedule_parsed, &error))
		webhook_schedule_parsed.nsteps = 0;
}

/* The webhook retry schedule currently in force. */
const RetrySchedule *
webhook_schedule(void)
{
	return &webhook_schedule_parsed;
}

/* The RETRY_ON_* bit for a retry_on policy word, or 0 if unknown. */
int
retry_on_parse_token(const char *token)
{
	if (strcmp(token, "3xx") == 0)
		return RETRY_ON_3XX;
	if (strcmp(token, "4xx") == 0)
		return RETRY_ON_4XX;
	if (strcmp(token, "429") == 0)
		return RETRY_ON_429;
	if (strcmp(token, "5xx") == 0)
		return RETRY_ON_5XX;
	if (strcmp(token, "timeout") == 0)
		return RETRY_ON_TIMEOUT;
	if (strcmp(token, "network") == 0)
		return RETRY_ON_NETWORK;
	return 0;
}

/* The RETRY_ON_* class of a finished attempt that did not succeed. */
static int
failure_class(const DispatchRequest *req)
{
	if (req->status == 0)
		return (req->result == CURLE_OPERATION_TIMEDOUT) ? RETRY_ON_TIMEOUT : RETRY_ON_NETWORK;
	if (req->status == 429)
		return RETRY_ON_429;
	if (req->status >= 500)
		return RETRY_ON_5XX;
	if (req->status >= 400)
		return RETRY_ON_4XX;
	return RETRY_ON_3XX;
}

/* The delay before the next attempt, jitter and Retry-After applied. */
static int64
next_delay_ms(const DispatchRequest *req, const RetrySchedule *schedule, int step)
{
	int64		delay = schedule->delay_ms[Min(step, schedule->nsteps - 1)];
	int64		longest = 0;
	int			i;

	if (req->kind == DISPATCH_WEBHOOK && webhook_retry_jitter > 0 && delay > 0)
	{
		double		spread = webhook_retry_jitter / 100.0;
		double		factor = 1.0 + spread * (2.0 * pg_prng_double(&pg_global_prng_state) - 1.0);

		delay = (int64) (delay * factor);
	}

	if ((req->status == 429 || req->status == 503) && req->retry_after_s >= 0)
	{
		for (i = 0; i < schedule->nsteps; i++)
			longest = Max(longest, schedule->delay_ms[i]);
		delay = Min(Max((int64) req->retry_after_s * 1000, 1000), Max(longest, 1000));
	}
	return delay;
}

/* A short description of why an attempt failed, for the attempt log. */
static char *
failure_text(const DispatchRequest *req)
{
	if (req->ssrf_refusal[0] != '\0')
		return pstrdup(req->ssrf_refusal);
	if (req->status != 0)
		return psprintf("HTTP %ld", req->status);
	if (req->curl_error[0] != '\0')
		return psprintf("%s: %s", curl_easy_strerror(req->result), req->curl_error);
	return pstrdup(curl_easy_strerror(req->result));
}

/* Decide what a finished attempt means: success, another try, or failure. */
void
dispatch_decide(DispatchRequest *req, DispatchOutcome *outcome)
{
	const RetrySchedule *schedule;
	int			max_attempts;
	int			retry_on;

	memset(outcome, 0, sizeof(*outcome));
	if (req->result == CURLE_OK && req->status >= 200 && req->status < 300)
	{
		outcome->state = "succeeded";
		return;
	}
	outcome->error = failure_text(req);

	if (req->kind == DISPATCH_WEBHOOK)
	{
		schedule = webhook_schedule();
		max_attempts = schedule->nsteps + 1;
		retry_on = RETRY_ON_EVERYTHING;
		if (req->status == 410)
		{
			outcome->state = "failed";
			outcome->gone = true;
			return;
		}
	}
	else
	{
		schedule = &req->schedule;
		max_attempts = req->max_attempts;
		retry_on = req->retry_on;
	}

	/* the SSRF guard's refusal is final: retrying cannot change the address class */
	if (req->ssrf_refusal[0] != '\0' || req->round_attempts >= max_attempts ||
		schedule->nsteps == 0 || (retry_on & failure_class(req)) == 0)
	{
		outcome->state = "failed";
		return;
	}
	outcome->state = "pending";
	outcome->next_attempt_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														   next_delay_ms(req, schedule, req->round_attempts - 1));
}
