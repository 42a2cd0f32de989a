/*
 * generate.c
 *	  donatello.generate(prompt, settings): the request, for the current
 *	  principal, in the order docs/generation.md states:
 *		1. the prompt and settings (check_generation_request: DNV01, 22004);
 *		2. an active user of the claimed organization holding
 *		   generation:create in its department (DNP01); a department (DNV01);
 *		3. scan_pii (DNS01, DETAIL: the kinds), check_content (DNS02,
 *		   DETAIL: the categories);
 *		4. rank_models: no eligible model is DNM01;
 *		5. the budget reservation of the dearest model the job may use
 *		   (donatello.reserve: DNB01/DNB02);
 *		6. the job row, its first provider request (generation_send), and
 *		   NOTIFY donatello_generation.
 *	  donatello.generation_send(job_id, first_candidate): queue the job's
 *	  provider request to the first usable candidate from a ranking position
 *	  on; also called by the completion hook for a fallback.
 *
 * Everything runs in the caller's transaction through SPI, with plans kept
 * for the life of the backend; an error anywhere rolls back the whole
 * request, the reservation included.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "donatello.h"
#include "dispatch/dispatch.h"
#include "generation/generation.h"
#include "tenancy/claims.h"

PG_FUNCTION_INFO_V1(donatello_generate);
PG_FUNCTION_INFO_V1(donatello_generation_send);

/* the statements, prepared once per backend */
enum
{
	STMT_CHECK_REQUEST,
	STMT_USER,
	STMT_REQUIRE_PERMISSION,
	STMT_SCAN_PII,
	STMT_CHECK_CONTENT,
	STMT_RANK,
	STMT_RESERVE,
	STMT_INSERT_JOB,
	STMT_NOTIFY,
	STMT_JOB,
	STMT_CANDIDATES,
	STMT_ACQUIRE,
	STMT_ENQUEUE,
	STMT_INSERT_CALL,
	STMT_COUNT
};

typedef struct Statement
{
	const char *sql;
	int			nargs;
	Oid			types[10];
} Statement;

static const Statement statements[STMT_COUNT] = {
	[STMT_CHECK_REQUEST] = {"SELECT donatello.check_generation_request($1, $2)", 2, {TEXTOID, JSONBOID}},
	[STMT_USER] = {"SELECT u.department_id FROM donatello.users u"
		" WHERE u.id OPERATOR(pg_catalog.=) $1 AND u.org_id OPERATOR(pg_catalog.=) $2 AND u.active",
	2, {UUIDOID, UUIDOID}},
	[STMT_REQUIRE_PERMISSION] = {"SELECT donatello.require_permission('generation:create', $1)", 1, {UUIDOID}},
	[STMT_SCAN_PII] = {"SELECT (s OPERATOR(pg_catalog.->>) 'clean')::boolean,"
		" (SELECT pg_catalog.string_agg(k, ', ') FROM pg_catalog.jsonb_array_elements_text(s OPERATOR(pg_catalog.->) 'kinds') k)"
		" FROM donatello.scan_pii($1) s", 1, {TEXTOID}},
	[STMT_CHECK_CONTENT] = {"SELECT (s OPERATOR(pg_catalog.->>) 'clean')::boolean,"
		" (SELECT pg_catalog.string_agg(k, ', ') FROM pg_catalog.jsonb_array_elements_text(s OPERATOR(pg_catalog.->) 'categories') k)"
		" FROM donatello.check_content($1, $2) s", 2, {TEXTOID, UUIDOID}},
	[STMT_RANK] = {"SELECT r, pg_catalog.jsonb_array_length(r OPERATOR(pg_catalog.->) 'candidates'),"
		" (SELECT pg_catalog.string_agg(pg_catalog.format('%s/%s (%s)', x OPERATOR(pg_catalog.->>) 'provider',"
		"         x OPERATOR(pg_catalog.->>) 'model', x OPERATOR(pg_catalog.->>) 'reason'), '; ')"
		"    FROM pg_catalog.jsonb_array_elements(r OPERATOR(pg_catalog.->) 'excluded') x),"
		" (SELECT pg_catalog.max(((x OPERATOR(pg_catalog.->>) 'estimated_cost')::numeric OPERATOR(pg_catalog.*) 1000000)::bigint)"
		"    FROM pg_catalog.jsonb_array_elements(r OPERATOR(pg_catalog.->) 'candidates') WITH ORDINALITY t(x, n)"
		"   WHERE t.n OPERATOR(pg_catalog.<=) $4)"
		" FROM donatello.rank_models($1, $2, $3) r", 4, {TEXTOID, JSONBOID, UUIDOID, INT4OID}},
	[STMT_RESERVE] = {"SELECT donatello.reserve($1, $2::numeric OPERATOR(pg_catalog./) 1000000, $3,"
		" pg_catalog.make_interval(secs => $4))", 4, {UUIDOID, INT8OID, TEXTOID, FLOAT8OID}},
	[STMT_INSERT_JOB] = {"INSERT INTO donatello.generation_jobs (id, org_id, user_id, department_id, prompt, prompt_hash,"
		"   settings, ranking, policy, max_candidates, estimated_cost_micros, reservation_id)"
		" VALUES ($1, $2, $3, $4, $5, pg_catalog.sha256(pg_catalog.convert_to($5, 'UTF8')), $6, $7,"
		"   donatello.generation_request_policy(), $8, $9, $10)",
	10, {UUIDOID, UUIDOID, UUIDOID, UUIDOID, TEXTOID, JSONBOID, JSONBOID, INT4OID, INT8OID, UUIDOID}},
	[STMT_NOTIFY] = {"SELECT donatello.generation_notify($1, $2, 'queued')", 2, {UUIDOID, UUIDOID}},
	[STMT_JOB] = {"SELECT g.org_id, g.max_candidates FROM donatello.generation_jobs g"
		" WHERE g.id OPERATOR(pg_catalog.=) $1 FOR UPDATE", 1, {UUIDOID}},
	[STMT_CANDIDATES] = {"SELECT (t.n - 1)::integer, md.id, md.cost_per_image_micros, p.id, p.name, md.name,"
		"   donatello.model_circuit_state(md.id)"
		" FROM donatello.generation_jobs g,"
		"      pg_catalog.jsonb_array_elements(g.ranking OPERATOR(pg_catalog.->) 'candidates') WITH ORDINALITY t(x, n)"
		" JOIN donatello.models md ON md.id OPERATOR(pg_catalog.=) (t.x OPERATOR(pg_catalog.->>) 'model_id')::uuid"
		" JOIN donatello.providers p ON p.id OPERATOR(pg_catalog.=) md.provider_id"
		" WHERE g.id OPERATOR(pg_catalog.=) $1 AND t.n OPERATOR(pg_catalog.>) $2 AND t.n OPERATOR(pg_catalog.<=) g.max_candidates"
		" ORDER BY t.n", 2, {UUIDOID, INT4OID}},
	[STMT_ACQUIRE] = {"SELECT donatello.model_circuit_acquire($1)", 1, {UUIDOID}},
	[STMT_ENQUEUE] = {"SELECT donatello.http_enqueue('POST', p.base_url OPERATOR(pg_catalog.||) '/v1/images/generations',"
		"   '{\"content-type\": \"application/json\"}',"
		"   pg_catalog.convert_to(pg_catalog.jsonb_build_object('model', $3::text, 'prompt', g.prompt,"
		"       'n', (g.settings OPERATOR(pg_catalog.->>) 'n')::integer, 'size', g.settings OPERATOR(pg_catalog.->>) 'size',"
		"       'quality', g.settings OPERATOR(pg_catalog.->>) 'quality', 'response_format', 'b64_json')::text, 'UTF8'),"
		"   g.policy OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('org_id', g.org_id, 'provider_id', p.id,"
		"       'hook', 'donatello.generation_provider_response'))"
		" FROM donatello.generation_jobs g, donatello.providers p"
		" WHERE g.id OPERATOR(pg_catalog.=) $1 AND p.id OPERATOR(pg_catalog.=) $2", 3, {UUIDOID, UUIDOID, TEXTOID}},
	[STMT_INSERT_CALL] = {"WITH c AS (INSERT INTO donatello.generation_calls (org_id, job_id, call_no, request_id, model_id,"
		"     provider, model, rank, cost_per_image_micros)"
		"   SELECT $1, $2, COALESCE(pg_catalog.max(gc.call_no), 0) OPERATOR(pg_catalog.+) 1, $3, $4, $5, $6,"
		"          $7 OPERATOR(pg_catalog.+) 1, $8"
		"     FROM donatello.generation_calls gc WHERE gc.org_id OPERATOR(pg_catalog.=) $1 AND gc.job_id OPERATOR(pg_catalog.=) $2)"
		" UPDATE donatello.generation_jobs g SET candidate = $7, current_request_id = $3, updated_at = pg_catalog.now()"
		" WHERE g.org_id OPERATOR(pg_catalog.=) $1 AND g.id OPERATOR(pg_catalog.=) $2",
	8, {UUIDOID, UUIDOID, UUIDOID, UUIDOID, TEXTOID, TEXTOID, INT4OID, INT8OID}},
};

static SPIPlanPtr plans[STMT_COUNT];

/* Run statement s (prepared once) and check its result code. */
static void
run(int s, Datum *values, const char *nulls, int expected)
{
	int			rc;

	if (plans[s] == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(statements[s].sql, statements[s].nargs,
									   (Oid *) statements[s].types);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare generation statement %d: %s", s, SPI_result_code_string(SPI_result));
		plans[s] = plan;
	}
	rc = SPI_execute_plan(plans[s], values, nulls, false, 0);
	if (rc != expected)
		elog(ERROR, "generation statement %d failed: %s", s, SPI_result_code_string(rc));
}

/* Column col of row 0 of the last result (isnull set). */
static Datum
col(int column, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, column, isnull);
}

/* Column col of row 0 as a C string, or NULL. */
static char *
col_text(int column)
{
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, column);
}

/* A candidate model of a job, copied out of an SPI result. */
typedef struct Candidate
{
	int			index;			/* position in the ranking, from 0 */
	pg_uuid_t	model_id;
	int64		cost_micros;
	pg_uuid_t	provider_id;
	char	   *provider;
	char	   *model;
	char	   *circuit;
} Candidate;

/*
 * Queue the job's provider request to the first usable candidate from
 * ranking position first on (a model still registered whose circuit lets a
 * request go now). false when none is left. SPI connected.
 */
static bool
generation_send(const pg_uuid_t *job_id, int first)
{
	Datum		args[8];
	char		nulls[8];
	bool		isnull;
	pg_uuid_t	org_id;
	Candidate  *candidates;
	int			ncandidates;

	memset(nulls, ' ', sizeof(nulls));
	args[0] = UUIDPGetDatum(job_id);
	run(STMT_JOB, args, NULL, SPI_OK_SELECT);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("generation job %s does not exist", dispatch_uuid_text(job_id))));
	org_id = *DatumGetUUIDP(col(1, &isnull));

	args[1] = Int32GetDatum(first);
	run(STMT_CANDIDATES, args, NULL, SPI_OK_SELECT);
	ncandidates = (int) SPI_processed;
	candidates = palloc0(sizeof(Candidate) * Max(1, ncandidates));
	for (int i = 0; i < ncandidates; i++)
	{
		HeapTuple	row = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		candidates[i].index = DatumGetInt32(SPI_getbinval(row, desc, 1, &isnull));
		candidates[i].model_id = *DatumGetUUIDP(SPI_getbinval(row, desc, 2, &isnull));
		candidates[i].cost_micros = DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull));
		candidates[i].provider_id = *DatumGetUUIDP(SPI_getbinval(row, desc, 4, &isnull));
		candidates[i].provider = SPI_getvalue(row, desc, 5);
		candidates[i].model = SPI_getvalue(row, desc, 6);
		candidates[i].circuit = SPI_getvalue(row, desc, 7);
	}

	for (int i = 0; i < ncandidates; i++)
	{
		Candidate  *c = &candidates[i];
		pg_uuid_t	request_id;

		/* a closed circuit needs no lock; otherwise take the trial, or skip */
		if (strcmp(c->circuit, "closed") != 0)
		{
			args[0] = UUIDPGetDatum(&c->model_id);
			run(STMT_ACQUIRE, args, NULL, SPI_OK_SELECT);
			if (!DatumGetBool(col(1, &isnull)))
				continue;
		}
		args[0] = UUIDPGetDatum(job_id);
		args[1] = UUIDPGetDatum(&c->provider_id);
		args[2] = CStringGetTextDatum(c->model);
		run(STMT_ENQUEUE, args, NULL, SPI_OK_SELECT);
		request_id = *DatumGetUUIDP(col(1, &isnull));

		args[0] = UUIDPGetDatum(&org_id);
		args[1] = UUIDPGetDatum(job_id);
		args[2] = UUIDPGetDatum(&request_id);
		args[3] = UUIDPGetDatum(&c->model_id);
		args[4] = CStringGetTextDatum(c->provider);
		args[5] = CStringGetTextDatum(c->model);
		args[6] = Int32GetDatum(c->index);
		args[7] = Int64GetDatum(c->cost_micros);
		run(STMT_INSERT_CALL, args, nulls, SPI_OK_UPDATE);
		return true;
	}
	return false;
}

/* donatello.generation_send(job_id uuid, first_candidate integer) returns boolean */
Datum
donatello_generation_send(PG_FUNCTION_ARGS)
{
	bool		sent;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("generation_send needs a job and a ranking position")));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	sent = generation_send(PG_GETARG_UUID_P(0), PG_GETARG_INT32(1));
	SPI_finish();
	PG_RETURN_BOOL(sent);
}

/* donatello.generate(prompt text, settings jsonb default '{}') returns uuid */
Datum
donatello_generate(PG_FUNCTION_ARGS)
{
	Datum		args[10];
	char		nulls[10];
	bool		isnull;
	Datum		prompt = PG_ARGISNULL(0) ? (Datum) 0 : PointerGetDatum(PG_GETARG_TEXT_P(0));
	Datum		settings;
	Datum		ranking;
	pg_uuid_t	user_id;
	pg_uuid_t	org_id;
	pg_uuid_t	department_id;
	pg_uuid_t	reservation_id;
	pg_uuid_t  *job_id = palloc(sizeof(pg_uuid_t));
	bool		have_user;
	bool		have_org;
	int			ncandidates;
	int			max_candidates;
	int64		estimate;
	char	   *detail;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	memset(nulls, ' ', sizeof(nulls));

	/* 1. the prompt and the settings */
	args[0] = prompt;
	nulls[0] = PG_ARGISNULL(0) ? 'n' : ' ';
	args[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';
	run(STMT_CHECK_REQUEST, args, nulls, SPI_OK_SELECT);
	settings = SPI_datumTransfer(col(1, &isnull), false, -1);
	memset(nulls, ' ', sizeof(nulls));

	/* 2. an active user of the organization, generation:create, a department */
	have_user = donatello_claims_user_id(&user_id);
	have_org = donatello_claims_org_id(&org_id);
	if (have_user && have_org)
	{
		args[0] = UUIDPGetDatum(&user_id);
		args[1] = UUIDPGetDatum(&org_id);
		run(STMT_USER, args, NULL, SPI_OK_SELECT);
	}
	if (!have_user || !have_org || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DN_PERMISSION_DENIED),
				 errmsg("permission denied: \"generation:create\" requires an active user of the organization"),
				 (!have_user || !have_org)
				 ? errdetail("request.jwt.claims names no user or no organization.")
				 : errdetail("User %s is not an active user of organization %s.",
							 dispatch_uuid_text(&user_id), dispatch_uuid_text(&org_id)),
				 errhint("Authenticate with a JWT or an API key; SQL callers set request.jwt.claims.")));
	args[0] = col(1, &isnull);
	if (!isnull)
		department_id = *DatumGetUUIDP(args[0]);
	nulls[0] = isnull ? 'n' : ' ';
	run(STMT_REQUIRE_PERMISSION, args, nulls, SPI_OK_SELECT);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("user %s belongs to no department", dispatch_uuid_text(&user_id)),
				 errhint("Generations are charged to the budget of the requester's department; give the user a department.")));
	nulls[0] = ' ';

	/* 3. safety: personal data (the kinds only, never a value), then the blocklist */
	args[0] = prompt;
	run(STMT_SCAN_PII, args, NULL, SPI_OK_SELECT);
	if (!DatumGetBool(col(1, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_DN_PII_DETECTED),
				 errmsg("prompt refused: it contains personal data"),
				 errdetail("Found: %s.", col_text(2)),
				 errhint("Remove the personal data (donatello.scan_pii shows where it is) and send the prompt again.")));
	args[1] = UUIDPGetDatum(&org_id);
	run(STMT_CHECK_CONTENT, args, NULL, SPI_OK_SELECT);
	if (!DatumGetBool(col(1, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_DN_CONTENT_POLICY),
				 errmsg("prompt refused: it violates the content policy of the organization"),
				 errdetail("Blocked categories: %s.", col_text(2)),
				 errhint("donatello.check_content shows the blocked terms found.")));

	/* 4. the models, ranked; the job may use the first and up to max_fallbacks more */
	args[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';
	args[2] = UUIDPGetDatum(&department_id);
	args[3] = Int32GetDatum(1 + generation_max_fallbacks);
	run(STMT_RANK, args, nulls, SPI_OK_SELECT);
	nulls[1] = ' ';
	ranking = SPI_datumTransfer(col(1, &isnull), false, -1);
	ncandidates = DatumGetInt32(col(2, &isnull));
	if (ncandidates == 0)
	{
		detail = col_text(3);
		ereport(ERROR,
				(errcode(ERRCODE_DN_NO_MODEL),
				 errmsg("no model available for this request"),
				 detail ? errdetail("Excluded: %s.", detail) : errdetail("No model is registered."),
				 errhint("Try another size, or without \"commercial\"; a model whose circuit is open is tried again after its cool-down.")));
	}
	max_candidates = Min(ncandidates, 1 + generation_max_fallbacks);
	estimate = DatumGetInt64(col(4, &isnull));

	/* 5. the budget: DNB01 / DNB02 come from donatello.reserve */
	dispatch_random_uuid(job_id);
	args[0] = UUIDPGetDatum(&department_id);
	args[1] = Int64GetDatum(estimate);
	args[2] = CStringGetTextDatum(psprintf("generation:%s", dispatch_uuid_text(job_id)));
	args[3] = Float8GetDatum((double) generation_reservation_ttl_s);
	run(STMT_RESERVE, args, NULL, SPI_OK_SELECT);
	reservation_id = *DatumGetUUIDP(col(1, &isnull));
	if (isnull)
		elog(ERROR, "donatello.reserve returned no reservation");

	/* 6. the job, its first provider request, the news */
	args[0] = UUIDPGetDatum(job_id);
	args[1] = UUIDPGetDatum(&org_id);
	args[2] = UUIDPGetDatum(&user_id);
	args[3] = UUIDPGetDatum(&department_id);
	args[4] = prompt;
	args[5] = settings;
	args[6] = ranking;
	args[7] = Int32GetDatum(max_candidates);
	args[8] = Int64GetDatum(estimate);
	args[9] = UUIDPGetDatum(&reservation_id);
	run(STMT_INSERT_JOB, args, NULL, SPI_OK_INSERT);
	if (!generation_send(job_id, 0))
		ereport(ERROR,
				(errcode(ERRCODE_DN_NO_MODEL),
				 errmsg("no model available for this request"),
				 errdetail("Every eligible model is waiting for the result of a trial request."),
				 errhint("Send the request again in a moment.")));
	args[0] = UUIDPGetDatum(&org_id);
	args[1] = UUIDPGetDatum(job_id);
	run(STMT_NOTIFY, args, NULL, SPI_OK_SELECT);

	SPI_finish();
	PG_RETURN_UUID_P(job_id);
}
