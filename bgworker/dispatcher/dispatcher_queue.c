/*
 * dispatcher_queue.c
 *	  The dispatcher's side of donatello.outbox, through SPI. Each function
 *	  here is the body of one unit of work (donatello_worker_run_unit): it
 *	  runs in its own transaction, SPI connected, snapshot pushed.
 *
 *	  recover	at start: every row left 'sending' by a previous run (a crash,
 *				an immediate shutdown) goes back to 'pending', due now. This is
 *				the at-least-once guarantee: a row is only ever 'succeeded'
 *				after its response was recorded.
 *	  claim		due 'pending' rows -> 'sending' (FOR UPDATE SKIP LOCKED),
 *				committed before anything is sent; webhook keys are opened,
 *				and so is the API key of a provider request (outbox.provider_id,
 *				donatello.provider_auth_header: the only place a provider key
 *				is opened).
 *				A webhook row whose endpoint is disabled by then (emit_event
 *				committed after disable_webhook_endpoint cancelled what it
 *				could see) becomes 'cancelled' instead.
 *	  record	a batch of finished attempts: outcomes decided in C
 *				(dispatcher_retry.c), written by donatello.dispatcher_record.
 *	  hooks		completion hooks of http requests, each in its own
 *				transaction, marked done in the same transaction (so a hook's
 *				effects commit exactly once), as the role that enqueued it.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "bgworker/dispatcher/dispatcher.h"

/* the claim statement: due rows to 'sending', with what sending them needs */
static const char *const claim_sql =
"WITH due AS ("
"  SELECT o.org_id, o.id, o.endpoint_id FROM donatello.outbox o"
"   WHERE o.state = 'pending' AND o.next_attempt_at <= pg_catalog.clock_timestamp()"
"   ORDER BY o.next_attempt_at LIMIT $1"
"   FOR UPDATE OF o SKIP LOCKED) "
"UPDATE donatello.outbox o"
"   SET state = CASE WHEN e.active IS FALSE THEN 'cancelled' ELSE 'sending' END,"
"       claimed_at = pg_catalog.now(),"
"       completed_at = CASE WHEN e.active IS FALSE THEN pg_catalog.now() END,"
"       last_error = CASE WHEN e.active IS FALSE THEN 'endpoint disabled: ' || e.disabled_reason ELSE o.last_error END,"
"       attempt_count = o.attempt_count + CASE WHEN e.active IS FALSE THEN 0 ELSE 1 END,"
"       round_attempts = o.round_attempts + CASE WHEN e.active IS FALSE THEN 0 ELSE 1 END"
"  FROM due LEFT JOIN donatello.webhook_endpoints e ON e.org_id = due.org_id AND e.id = due.endpoint_id"
" WHERE o.org_id = due.org_id AND o.id = due.id "
"RETURNING o.org_id, o.id, o.kind, o.endpoint_id, o.method, o.url,"
"  CASE WHEN o.headers_sealed IS NOT NULL OR o.provider_id IS NOT NULL THEN ARRAY("
"    SELECT h.key || ': ' || h.value FROM pg_catalog.jsonb_each_text(pg_catalog.convert_from("
"      donatello.secret_open('outbox_headers', o.id, o.headers_sealed), 'UTF8')::jsonb) h"
"     WHERE o.headers_sealed IS NOT NULL"
"    UNION ALL"
"    SELECT a FROM donatello.provider_auth_header(o.provider_id, o.url) a WHERE a IS NOT NULL) END,"
"  o.body, o.attempt_count, o.round_attempts, o.max_attempts, o.schedule_ms, o.retry_on, o.timeout_ms,"
"  e.secret_sealed,"
"  CASE WHEN e.previous_secret_expires_at > pg_catalog.now() THEN e.previous_secret_sealed END,"
"  o.state";

/* how long until the next pending row is due (NULL: none) */
static const char *const next_due_sql =
"SELECT GREATEST(0, CEIL(EXTRACT(EPOCH FROM (min(o.next_attempt_at) - pg_catalog.clock_timestamp())) * 1000))::bigint"
"  FROM donatello.outbox o WHERE o.state = 'pending'";

static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;
static SPIPlanPtr record_plan = NULL;

/* Prepare and keep a plan once per worker. */
static SPIPlanPtr
keep_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *types)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare dispatcher statement: %s", SPI_result_code_string(SPI_result));
		*slot = plan;
	}
	return *slot;
}

/* Unit: put rows left 'sending' by an earlier run back in the queue. */
void
dispatcher_queue_recover(void)
{
	int			rc = SPI_execute("UPDATE donatello.outbox SET state = 'pending', next_attempt_at = pg_catalog.now()"
								 " WHERE state = 'sending'", false, 0);

	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "could not requeue in-flight deliveries: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("donatello dispatcher: %llu requests in flight at the last shutdown queued again",
						(unsigned long long) SPI_processed)));
}

/* Value of column col of the current SPI row, or NULL. */
static Datum
column(HeapTuple tuple, int col, bool *isnull)
{
	return SPI_getbinval(tuple, SPI_tuptable->tupdesc, col, isnull);
}

/* Copy a text column into the current memory context ("" if NULL). */
static char *
column_text(HeapTuple tuple, int col)
{
	bool		isnull;
	Datum		d = column(tuple, col, &isnull);

	return isnull ? pstrdup("") : TextDatumGetCString(d);
}

/* Build a DispatchRequest from one claimed row, in its own memory context. */
static DispatchRequest *
request_from_row(HeapTuple tuple, MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "dispatch request", ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	DispatchRequest *req = palloc0(sizeof(DispatchRequest));
	bool		isnull;
	Datum		d;
	char	   *kind;

	req->cxt = cxt;
	req->org_id = *DatumGetUUIDP(column(tuple, 1, &isnull));
	req->id = *DatumGetUUIDP(column(tuple, 2, &isnull));
	kind = column_text(tuple, 3);
	req->kind = strcmp(kind, "webhook") == 0 ? DISPATCH_WEBHOOK : DISPATCH_HTTP;
	d = column(tuple, 4, &isnull);
	if (!isnull)
		req->endpoint_id = *DatumGetUUIDP(d);
	req->method = column_text(tuple, 5);
	req->url = column_text(tuple, 6);
	(void) ssrf_check_url(req->url, &req->host, false);

	d = column(tuple, 7, &isnull);
	if (!isnull)
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
		for (int i = 0; i < n; i++)
			if (!nulls[i])
				req->header_lines = lappend(req->header_lines, TextDatumGetCString(elems[i]));
	}
	d = column(tuple, 8, &isnull);
	if (!isnull)
	{
		bytea	   *body = DatumGetByteaPP(d);

		req->body_len = VARSIZE_ANY_EXHDR(body);
		req->body = palloc(req->body_len + 1);
		memcpy(req->body, VARDATA_ANY(body), req->body_len);
		req->body[req->body_len] = '\0';
	}
	req->attempt_no = DatumGetInt32(column(tuple, 9, &isnull));
	req->round_attempts = DatumGetInt32(column(tuple, 10, &isnull));
	d = column(tuple, 11, &isnull);
	req->max_attempts = isnull ? 1 : DatumGetInt32(d);
	d = column(tuple, 12, &isnull);
	if (!isnull)
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(d), INT4OID, 4, true, TYPALIGN_INT, &elems, &nulls, &n);
		for (int i = 0; i < n && i < DISPATCH_MAX_SCHEDULE; i++)
			req->schedule.delay_ms[req->schedule.nsteps++] = nulls[i] ? 0 : DatumGetInt32(elems[i]);
	}
	d = column(tuple, 13, &isnull);
	if (!isnull)
	{
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
		for (int i = 0; i < n; i++)
			if (!nulls[i])
				req->retry_on |= retry_on_parse_token(TextDatumGetCString(elems[i]));
	}
	d = column(tuple, 14, &isnull);
	req->timeout_ms = isnull ? 0 : DatumGetInt32(d);

	if (req->kind == DISPATCH_WEBHOOK)
	{
		Datum		previous;
		bool		previous_null;

		d = column(tuple, 15, &isnull);
		previous = column(tuple, 16, &previous_null);
		if (isnull)
			elog(ERROR, "webhook delivery has no endpoint secret");
		webhook_keys_open(&req->keys, &req->endpoint_id, DatumGetByteaPP(d),
						  previous_null ? NULL : DatumGetByteaPP(previous));
	}
	MemoryContextSwitchTo(old);
	return req;
}

/*
 * Unit: claim up to max_requests due rows. Returns the requests, each in its
 * own context under parent (which outlives the transaction).
 */
List *
dispatcher_queue_claim(int max_requests, MemoryContext parent)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(max_requests)};
	List	   *claimed = NIL;
	int			rc;

	rc = SPI_execute_plan(keep_plan(&claim_plan, claim_sql, 1, types), values, NULL, false, 0);
	if (rc != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not claim outbox rows: %s", SPI_result_code_string(rc));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		MemoryContext old;
		bool		isnull;

		/* a delivery queued while its endpoint was being disabled: cancelled, not sent */
		if (strcmp(TextDatumGetCString(column(SPI_tuptable->vals[i], 17, &isnull)), "cancelled") == 0)
			continue;
		old = MemoryContextSwitchTo(parent);

		claimed = lappend(claimed, NULL);
		MemoryContextSwitchTo(old);
		llast(claimed) = request_from_row(SPI_tuptable->vals[i], parent);
	}
	return claimed;
}

/* Unit: milliseconds until the next pending row is due, -1 if none. */
long
dispatcher_queue_next_due_ms(void)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute_plan(keep_plan(&next_due_plan, next_due_sql, 0, NULL), NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the next due time of the outbox");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return -1;
	return (long) Min(DatumGetInt64(d), (int64) 24 * 3600 * 1000);
}

/* A bounded, valid-text excerpt of a response body. */
static char *
response_excerpt(const StringInfoData *response)
{
	int			len = Min(response->len, dispatcher_response_excerpt_size);
	char	   *out = palloc(len + 1);
	int			o = 0;
	int			i = 0;
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;

	while (i < len)
	{
		unsigned char c = (unsigned char) response->data[i];

		if (c >= 0x80 && utf8)
		{
			int			l = pg_utf_mblen((const unsigned char *) &response->data[i]);

			if (i + l <= len && pg_utf8_islegal((const unsigned char *) &response->data[i], l))
			{
				memcpy(out + o, &response->data[i], l);
				o += l;
				i += l;
				continue;
			}
		}
		out[o++] = (c == 0 || c >= 0x80) ? '?' : (char) c;
		i++;
	}
	out[o] = '\0';
	return out;
}

/* The response header block of an http request as a jsonb object. */
static Datum
response_headers_jsonb(const StringInfoData *raw)
{
	StringInfoData json;
	char	   *copy = pnstrdup(raw->data, raw->len);
	char	   *line;
	char	   *saveptr = NULL;
	bool		first = true;

	initStringInfo(&json);
	appendStringInfoChar(&json, '{');
	for (line = strtok_r(copy, "\r\n", &saveptr); line; line = strtok_r(NULL, "\r\n", &saveptr))
	{
		char	   *colon = strchr(line, ':');
		char	   *value;

		if (colon == NULL || strncmp(line, "HTTP/", 5) == 0)
			continue;
		*colon = '\0';
		for (char *c = line; *c; c++)
			*c = pg_ascii_tolower((unsigned char) *c);
		for (value = colon + 1; *value == ' ' || *value == '\t'; value++)
			;
		if (pg_verifymbstr(line, strlen(line), true) == false ||
			pg_verifymbstr(value, strlen(value), true) == false)
			continue;
		if (!first)
			appendStringInfoChar(&json, ',');
		escape_json(&json, line);
		appendStringInfoChar(&json, ':');
		escape_json(&json, value);
		first = false;
	}
	appendStringInfoChar(&json, '}');
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(json.data));
}

/* A one-dimensional array of n datums of a type (nulls allowed). */
static Datum
make_array(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, elemtype, typlen, typbyval, typalign));
}

/*
 * Unit: decide and record the outcome of every finished request. Returns true
 * if a webhook delivery gave up (a webhook.delivery_failed event was queued).
 */
bool
dispatcher_queue_record(List *finished)
{
	enum
	{
		ORG, ID, STATE, NEXT, ATTEMPT, STARTED, LATENCY, STATUS, ERROR_TEXT, EXCERPT,
		HEADERS, BODY, GONE, NCOLS
	};
	static const Oid elem_types[NCOLS] = {
		UUIDOID, UUIDOID, TEXTOID, TIMESTAMPTZOID, INT4OID, TIMESTAMPTZOID, FLOAT8OID, INT4OID,
		TEXTOID, TEXTOID, JSONBOID, BYTEAOID, BOOLOID
	};
	Oid			arg_types[NCOLS + 1];
	Datum		args[NCOLS + 1];
	int			n = list_length(finished);
	Datum	   *values[NCOLS];
	bool	   *nulls[NCOLS];
	ListCell   *lc;
	int			i = 0;
	int			rc;
	bool		gave_up = false;

	for (int c = 0; c < NCOLS; c++)
	{
		values[c] = palloc0(sizeof(Datum) * n);
		nulls[c] = palloc0(sizeof(bool) * n);
		arg_types[c] = get_array_type(elem_types[c]);
	}
	arg_types[NCOLS] = INTERVALOID;

	foreach(lc, finished)
	{
		DispatchRequest *req = lfirst(lc);
		DispatchOutcome outcome;

		dispatch_decide(req, &outcome);
		gave_up |= (req->kind == DISPATCH_WEBHOOK && strcmp(outcome.state, "failed") == 0 && !outcome.gone);
		values[ORG][i] = UUIDPGetDatum(&req->org_id);
		values[ID][i] = UUIDPGetDatum(&req->id);
		values[STATE][i] = CStringGetTextDatum(outcome.state);
		values[NEXT][i] = TimestampTzGetDatum(outcome.next_attempt_at);
		nulls[NEXT][i] = strcmp(outcome.state, "pending") != 0;
		values[ATTEMPT][i] = Int32GetDatum(req->attempt_no);
		values[STARTED][i] = TimestampTzGetDatum(req->started_at);
		values[LATENCY][i] = Float8GetDatum(req->latency_ms);
		values[STATUS][i] = Int32GetDatum((int32) req->status);
		nulls[STATUS][i] = req->status == 0;
		nulls[ERROR_TEXT][i] = outcome.error == NULL;
		if (outcome.error)
			values[ERROR_TEXT][i] = CStringGetTextDatum(outcome.error);
		values[EXCERPT][i] = CStringGetTextDatum(response_excerpt(&req->response));
		nulls[EXCERPT][i] = req->status == 0;
		nulls[HEADERS][i] = nulls[BODY][i] = (req->kind != DISPATCH_HTTP || req->status == 0);
		if (!nulls[HEADERS][i])
		{
			bytea	   *body = palloc(VARHDRSZ + req->response.len);

			SET_VARSIZE(body, VARHDRSZ + req->response.len);
			memcpy(VARDATA(body), req->response.data, req->response.len);
			values[HEADERS][i] = response_headers_jsonb(&req->response_headers);
			values[BODY][i] = PointerGetDatum(body);
		}
		values[GONE][i] = BoolGetDatum(outcome.gone);
		i++;
	}

	for (int c = 0; c < NCOLS; c++)
		args[c] = make_array(values[c], nulls[c], n, elem_types[c]);
	args[NCOLS] = DirectFunctionCall3(interval_in, CStringGetDatum(psprintf("%d seconds", webhook_disable_after_s)),
									  ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));

	rc = SPI_execute_plan(keep_plan(&record_plan,
									"SELECT donatello.dispatcher_record($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
									NCOLS + 1, arg_types),
						  args, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not record dispatcher outcomes: %s", SPI_result_code_string(rc));
	return gave_up;
}

/* Call one completion hook as its role; false (with *error) if it raised. */
static bool
call_hook(Oid hook, Oid role, HeapTuple tuple, char **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Oid			saved_user;
	int			saved_context;
	volatile bool ok = true;

	GetUserIdAndSecContext(&saved_user, &saved_context);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		FmgrInfo	flinfo;
		LOCAL_FCINFO(fcinfo, 5);

		SetUserIdAndSecContext(role, saved_context | SECURITY_LOCAL_USERID_CHANGE);
		if (pg_proc_aclcheck(hook, role, ACL_EXECUTE) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("role %s may no longer execute completion hook %s",
							GetUserNameFromId(role, false), format_procedure(hook))));
		fmgr_info(hook, &flinfo);
		InitFunctionCallInfoData(*fcinfo, &flinfo, 5, InvalidOid, NULL, NULL);
		for (int a = 0; a < 5; a++)
			fcinfo->args[a].value = SPI_getbinval(tuple, SPI_tuptable->tupdesc, 3 + a, &fcinfo->args[a].isnull);
		(void) FunctionCallInvoke(fcinfo);
		SetUserIdAndSecContext(saved_user, saved_context);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		SetUserIdAndSecContext(saved_user, saved_context);
		*error = edata->message ? pstrdup(edata->message) : pstrdup("unknown error");
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return ok;
}

/*
 * Unit: run the completion hook of up to max_hooks finished http requests,
 * each in a subtransaction, marking each done or failed. Returns how many
 * ran; the caller runs the unit again while that equals max_hooks.
 */
int
dispatcher_queue_run_hooks(int max_hooks)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(max_hooks)};
	static SPIPlanPtr pending_plan = NULL;
	static SPIPlanPtr done_plan = NULL;
	Oid			done_types[4] = {UUIDOID, UUIDOID, TEXTOID, TEXTOID};
	SPITupleTable *pending;
	uint64		count;
	int			rc;

	rc = SPI_execute_plan(keep_plan(&pending_plan,
									"SELECT o.org_id, o.id, o.id, o.response_status, o.response_headers, o.response_body,"
									"       o.last_error, pg_catalog.to_regprocedure(o.hook)::oid, pg_catalog.to_regrole(o.hook_role)::oid,"
									"       o.hook, o.hook_role"
									"  FROM donatello.outbox o WHERE o.hook_state = 'pending'"
									" ORDER BY o.completed_at LIMIT $1 FOR UPDATE SKIP LOCKED", 1, types),
						  values, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read pending completion hooks: %s", SPI_result_code_string(rc));
	pending = SPI_tuptable;
	count = SPI_processed;

	for (uint64 i = 0; i < count; i++)
	{
		HeapTuple	tuple = pending->vals[i];
		bool		isnull;
		bool		hook_null;
		bool		role_null;
		Datum		hook_datum = SPI_getbinval(tuple, pending->tupdesc, 8, &hook_null);
		Datum		role_datum = SPI_getbinval(tuple, pending->tupdesc, 9, &role_null);
		char	   *hook_name = SPI_getvalue(tuple, pending->tupdesc, 10);
		char	   *role_name = SPI_getvalue(tuple, pending->tupdesc, 11);
		char	   *error = NULL;
		Datum		done_values[4];
		char		done_nulls[4] = {' ', ' ', ' ', 'n'};

		SPI_tuptable = pending;
		if (hook_null)
			error = psprintf("completion hook %s does not exist any more", hook_name);
		else if (role_null)
			error = psprintf("role %s that queued the request does not exist any more", role_name);
		else
			(void) call_hook(DatumGetObjectId(hook_datum), DatumGetObjectId(role_datum), tuple, &error);
		if (error != NULL)
		{
			ereport(WARNING,
					(errmsg("donatello dispatcher: completion hook %s failed: %s", hook_name, error)));
			done_nulls[3] = ' ';
			done_values[3] = CStringGetTextDatum(error);
		}
		done_values[0] = SPI_getbinval(tuple, pending->tupdesc, 1, &isnull);
		done_values[1] = SPI_getbinval(tuple, pending->tupdesc, 2, &isnull);
		done_values[2] = CStringGetTextDatum(error ? "failed" : "done");
		rc = SPI_execute_plan(keep_plan(&done_plan,
										"UPDATE donatello.outbox SET hook_state = $3, hook_error = $4"
										" WHERE org_id = $1 AND id = $2", 4, done_types),
							  done_values, done_nulls, false, 0);
		if (rc != SPI_OK_UPDATE)
			elog(ERROR, "could not mark a completion hook done: %s", SPI_result_code_string(rc));
	}
	return (int) count;
}
