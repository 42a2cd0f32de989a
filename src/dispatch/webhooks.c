/*
 * webhooks.c
 *	  Webhook endpoints and events, SQL-callable:
 *
 *	  create_webhook_endpoint(org_id, url, events, description) -> {"id", "secret"}
 *	  rotate_webhook_secret(endpoint_id) -> {"id", "secret", "previous_secret_expires_at"}
 *	  emit_event(org_id, event_type, payload) -> event id
 *
 * A secret is "whsec_" + base64 of 32 random bytes (Standard Webhooks); only
 * the bytes are stored, sealed with donatello.secret_seal under the purpose
 * 'webhook_secret' and the endpoint's id, and the text is returned once.
 *
 * emit_event records the event and queues one outbox row per active endpoint
 * subscribed to its type, in the caller's transaction, and wakes the
 * dispatcher at commit (a rollback emits nothing and wakes nobody).
 *
 * These functions are SECURITY DEFINER in SQL: their SPI statements run as
 * the extension's owner, with a pinned search_path.
 */
#include "postgres.h"

#include <sodium.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "donatello.h"
#include "bgworker/worker.h"
#include "bgworker/dispatcher/dispatcher.h"
#include "dispatch/dispatch.h"

#define WEBHOOK_KEY_BYTES 32
#define MAX_EVENT_TYPE_LEN 100
#define MAX_DESCRIPTION_LEN 500

PG_FUNCTION_INFO_V1(donatello_create_webhook_endpoint);
PG_FUNCTION_INFO_V1(donatello_rotate_webhook_secret);
PG_FUNCTION_INFO_V1(donatello_emit_event);

/* the fan-out: the event, then one delivery per subscribed active endpoint */
static const char *const emit_sql =
"WITH ev AS ("
"  INSERT INTO donatello.events (org_id, type, payload) VALUES ($1, $2, $3)"
"  RETURNING id, org_id, type, payload, created_at), "
"d AS ("
"  INSERT INTO donatello.outbox (org_id, kind, endpoint_id, event_id, event_type, method, url, body)"
"  SELECT ev.org_id, 'webhook', e.id, ev.id, ev.type, 'POST', e.url,"
"         pg_catalog.convert_to(pg_catalog.jsonb_build_object("
"           'type', ev.type,"
"           'timestamp', pg_catalog.to_char(ev.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
"           'data', ev.payload)::text, 'UTF8')"
"    FROM ev JOIN donatello.webhook_endpoints e ON e.org_id = ev.org_id AND e.active"
"   WHERE ev.type = ANY (e.events) OR '*' = ANY (e.events)"
"      OR EXISTS (SELECT FROM pg_catalog.unnest(e.events) p"
"                  WHERE p LIKE '%.*' AND pg_catalog.starts_with(ev.type, pg_catalog.left(p, -1)))"
"  RETURNING 1) "
"SELECT ev.id, (SELECT pg_catalog.count(*) FROM d) FROM ev";

static SPIPlanPtr emit_plan = NULL;

/*
 * true when s is an event type ("budget.threshold_reached": lower-case words
 * of letters, digits and underscores joined by dots) or, with patterns, also
 * "*" or a type prefix ending in ".*".
 */
static bool
valid_event_type(const char *s, bool patterns)
{
	size_t		len = strlen(s);
	bool		word_start = true;

	if (len == 0 || len > MAX_EVENT_TYPE_LEN)
		return false;
	if (patterns && strcmp(s, "*") == 0)
		return true;
	if (patterns && len > 2 && strcmp(s + len - 2, ".*") == 0)
		len -= 2;
	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if (c == '.')
		{
			if (word_start)
				return false;
			word_start = true;
		}
		else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')
			word_start = false;
		else
			return false;
	}
	return !word_start;
}

/* Error unless an argument is non-NULL. */
static void
require_argument(FunctionCallInfo fcinfo, int n, const char *name)
{
	if (PG_ARGISNULL(n))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", name)));
}

/* Validate the events array of an endpoint; returns it. */
static ArrayType *
check_event_patterns(ArrayType *events)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (ARR_NDIM(events) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("events must be a one-dimensional array")));
	deconstruct_array(events, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("a webhook endpoint must subscribe to at least one event type"),
				 errhint("Name event types such as \"budget.threshold_reached\", prefixes such as \"generation.*\", or \"*\".")));
	for (int i = 0; i < n; i++)
	{
		char	   *pattern = nulls[i] ? NULL : TextDatumGetCString(elems[i]);

		if (pattern == NULL || !valid_event_type(pattern, true))
			ereport(ERROR,
					(errcode(ERRCODE_DN_INVALID_ARGUMENT),
					 errmsg("invalid event type pattern \"%s\"", pattern ? pattern : "NULL"),
					 errhint("Name event types such as \"budget.threshold_reached\", prefixes such as \"generation.*\", or \"*\".")));
	}
	return events;
}

/* The JSON answer {"id", "secret"[, "previous_secret_expires_at"]} as jsonb. */
static Datum
secret_answer(const pg_uuid_t *id, const uint8 *key, const char *previous_expiry)
{
	StringInfoData json;
	char	   *secret = webhook_secret_string(key, WEBHOOK_KEY_BYTES);
	Datum		result;

	initStringInfo(&json);
	appendStringInfo(&json, "{\"id\": \"%s\", \"secret\": ", dispatch_uuid_text(id));
	escape_json(&json, secret);
	if (previous_expiry != NULL)
	{
		appendStringInfoString(&json, ", \"previous_secret_expires_at\": ");
		escape_json(&json, previous_expiry);
	}
	appendStringInfoChar(&json, '}');
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(json.data));
	memset(json.data, 0, json.len);
	memset(secret, 0, strlen(secret));
	return result;
}

/* Fill key with fresh random bytes. */
static void
new_webhook_key(uint8 *key)
{
	if (sodium_init() < 0)
		elog(ERROR, "could not initialize libsodium");
	randombytes_buf(key, WEBHOOK_KEY_BYTES);
}

/* donatello.create_webhook_endpoint(org_id, url, events, description) */
Datum
donatello_create_webhook_endpoint(PG_FUNCTION_ARGS)
{
	pg_uuid_t	id;
	pg_uuid_t  *org_id;
	char	   *url;
	char	   *description = NULL;
	uint8		key[WEBHOOK_KEY_BYTES];
	Oid			types[6] = {UUIDOID, UUIDOID, TEXTOID, TEXTARRAYOID, TEXTOID, BYTEAOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	Datum		result;

	require_argument(fcinfo, 0, "org_id");
	require_argument(fcinfo, 1, "url");
	require_argument(fcinfo, 2, "events");
	org_id = PG_GETARG_UUID_P(0);
	url = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!PG_ARGISNULL(3))
	{
		description = text_to_cstring(PG_GETARG_TEXT_PP(3));
		if (strlen(description) > MAX_DESCRIPTION_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_DN_INVALID_ARGUMENT),
					 errmsg("webhook endpoint description is longer than %d bytes", MAX_DESCRIPTION_LEN)));
	}
	dispatch_check_url("webhook", url, NULL);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	dispatch_check_organization(org_id);
	values[3] = PointerGetDatum(check_event_patterns(PG_GETARG_ARRAYTYPE_P(2)));

	dispatch_random_uuid(&id);
	new_webhook_key(key);
	values[0] = UUIDPGetDatum(&id);
	values[1] = UUIDPGetDatum(org_id);
	values[2] = CStringGetTextDatum(url);
	values[4] = description ? CStringGetTextDatum(description) : (Datum) 0;
	nulls[4] = description ? ' ' : 'n';
	values[5] = PointerGetDatum(dispatch_seal("webhook_secret", &id, key, WEBHOOK_KEY_BYTES));
	dispatch_spi_exec("INSERT INTO donatello.webhook_endpoints (id, org_id, url, events, description, secret_sealed)"
					  " VALUES ($1, $2, $3, $4, $5, $6)", 6, types, values, nulls, SPI_OK_INSERT);
	SPI_finish();

	result = secret_answer(&id, key, NULL);
	sodium_memzero(key, sizeof(key));
	PG_RETURN_DATUM(result);
}

/* donatello.rotate_webhook_secret(endpoint_id) */
Datum
donatello_rotate_webhook_secret(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *id;
	uint8		key[WEBHOOK_KEY_BYTES];
	Oid			types[3] = {UUIDOID, BYTEAOID, INT4OID};
	Datum		values[3];
	char	   *expiry = NULL;
	bool		isnull;
	Datum		result;

	require_argument(fcinfo, 0, "endpoint_id");
	id = PG_GETARG_UUID_P(0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	values[0] = UUIDPGetDatum(id);
	dispatch_spi_exec("SELECT 1 FROM donatello.webhook_endpoints WHERE id = $1 FOR UPDATE",
					  1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("webhook endpoint %s does not exist", dispatch_uuid_text(id))));

	new_webhook_key(key);
	values[1] = PointerGetDatum(dispatch_seal("webhook_secret", id, key, WEBHOOK_KEY_BYTES));
	values[2] = Int32GetDatum(webhook_secret_overlap_s);
	dispatch_spi_exec("UPDATE donatello.webhook_endpoints"
					  "   SET previous_secret_sealed = CASE WHEN $3 > 0 THEN secret_sealed END,"
					  "       previous_secret_expires_at = CASE WHEN $3 > 0"
					  "           THEN pg_catalog.now() + pg_catalog.make_interval(secs => $3) END,"
					  "       secret_sealed = $2, rotated_at = pg_catalog.now()"
					  " WHERE id = $1"
					  " RETURNING pg_catalog.to_json(previous_secret_expires_at) #>> '{}'",
					  3, types, values, NULL, SPI_OK_UPDATE_RETURNING);
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
	{
		char	   *text = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		/* into the caller's memory, which outlives SPI_finish */
		expiry = strcpy(SPI_palloc(strlen(text) + 1), text);
	}
	SPI_finish();
	result = secret_answer(id, key, expiry);
	sodium_memzero(key, sizeof(key));
	PG_RETURN_DATUM(result);
}

/* donatello.emit_event(org_id, event_type, payload) */
Datum
donatello_emit_event(PG_FUNCTION_ARGS)
{
	Oid			types[3] = {UUIDOID, TEXTOID, JSONBOID};
	Datum		values[3];
	char	   *event_type;
	bool		isnull;
	pg_uuid_t  *event_id;
	int64		deliveries;
	int			rc;

	require_argument(fcinfo, 0, "org_id");
	require_argument(fcinfo, 1, "event_type");
	require_argument(fcinfo, 2, "payload");
	event_type = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!valid_event_type(event_type, false))
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("invalid event type \"%s\"", event_type),
				 errhint("Use lower-case words of letters, digits and underscores joined by dots, at most %d characters, such as \"budget.threshold_reached\".",
						 MAX_EVENT_TYPE_LEN)));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	dispatch_check_organization(PG_GETARG_UUID_P(0));
	if (emit_plan == NULL)
	{
		emit_plan = SPI_prepare(emit_sql, 3, types);
		if (emit_plan == NULL || SPI_keepplan(emit_plan) != 0)
			elog(ERROR, "could not prepare emit_event: %s", SPI_result_code_string(SPI_result));
	}
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_GETARG_DATUM(2);
	rc = SPI_execute_plan(emit_plan, values, NULL, false, 0);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "emit_event failed: %s", SPI_result_code_string(rc));
	event_id = DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	deliveries = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	/* copy out of SPI memory before SPI_finish */
	event_id = memcpy(SPI_palloc(sizeof(pg_uuid_t)), event_id, sizeof(pg_uuid_t));
	SPI_finish();

	if (deliveries > 0)
		donatello_worker_wake_at_commit(WORKER_DISPATCHER);
	PG_RETURN_UUID_P(event_id);
}
