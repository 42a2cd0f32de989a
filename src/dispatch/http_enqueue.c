/*
 * http_enqueue.c
 *	  donatello.http_enqueue(method, url, headers, body, policy) -> request id
 *
 * Queues a generic outbound HTTP request (a provider call) in
 * donatello.outbox, in the caller's transaction, and wakes the dispatcher at
 * commit. The policy (jsonb) says how it is retried and what happens after:
 *
 *	  max_attempts	1..100 (default 3)
 *	  backoff		delays before attempts 2, 3, ...: ["2s", "4s"] (default);
 *					numbers are milliseconds; the last delay repeats
 *	  retry_on		any of "5xx", "4xx", "3xx", "429", "timeout", "network"
 *					(default ["5xx", "429", "timeout", "network"])
 *	  timeout_ms	total time allowed for one attempt (default the setting)
 *	  hook			a function hook(request_id uuid, status integer,
 *					headers jsonb, body bytea, error text), called once in a
 *					new transaction when the request succeeded or gave up
 *	  org_id		the organization (default: the current principal's)
 *	  provider_id	an image provider (donatello.providers): the dispatcher
 *					adds its API key as it sends, and only to a URL under the
 *					provider's base URL (generation, docs/generation.md)
 *
 * Headers may carry provider credentials: they are stored sealed
 * (donatello.secret_seal, purpose 'outbox_headers', the request's id) and
 * opened by the dispatcher only.
 *
 * Not SECURITY DEFINER: the hook is checked against, and later run as, the
 * calling role; the insert itself runs as the extension owner.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"

#include "donatello.h"
#include "bgworker/worker.h"
#include "bgworker/dispatcher/dispatcher.h"
#include "dispatch/dispatch.h"
#include "tenancy/claims.h"

PG_FUNCTION_INFO_V1(donatello_http_enqueue);

/* A parsed policy. */
typedef struct HttpPolicy
{
	int			max_attempts;
	RetrySchedule backoff;
	List	   *retry_on;		/* text Datums */
	int			timeout_ms;		/* 0: the setting */
	Oid			hook;
	bool		has_org;
	pg_uuid_t	org_id;
	bool		has_provider;
	pg_uuid_t	provider_id;
} HttpPolicy;

/* DNV01 about the policy, naming the key. */
static void
policy_error(const char *key, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_DN_INVALID_ARGUMENT),
			 errmsg("invalid http_enqueue policy \"%s\": %s", key, detail),
			 errhint("Known keys: max_attempts, backoff, retry_on, timeout_ms, hook, org_id, provider_id (docs/webhooks.md).")));
}

/* The integer value of a numeric policy entry within [min, max]. */
static int
policy_int(const char *key, JsonbValue *v, int min, int max)
{
	int64		n;

	if (v->type != jbvNumeric)
		policy_error(key, "must be a number");
	n = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(v->val.numeric)));
	if (n < min || n > max)
		policy_error(key, psprintf("must be between %d and %d", min, max));
	return (int) n;
}

/* A string policy entry as a C string. */
static char *
policy_string(const char *key, JsonbValue *v)
{
	if (v->type != jbvString)
		policy_error(key, "must be a string");
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* Call fn for every element of an array policy entry. */
static void
policy_array(const char *key, JsonbValue *v, void (*fn) (const char *key, JsonbValue *elem, HttpPolicy *p),
			 HttpPolicy *p)
{
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;

	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		policy_error(key, "must be an array");
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
		if (tok == WJB_ELEM)
			fn(key, &elem, p);
}

/* One backoff delay: "2s" or a number of milliseconds. */
static void
add_backoff(const char *key, JsonbValue *elem, HttpPolicy *p)
{
	int			ms;
	const char *hint = NULL;

	if (p->backoff.nsteps >= DISPATCH_MAX_SCHEDULE)
		policy_error(key, psprintf("has more than %d delays", DISPATCH_MAX_SCHEDULE));
	if (elem->type == jbvNumeric)
		ms = policy_int(key, elem, 0, INT_MAX);
	else if (elem->type == jbvString)
	{
		char	   *text = policy_string(key, elem);

		if (!parse_int(text, &ms, GUC_UNIT_MS, &hint) || ms < 0)
			policy_error(key, psprintf("\"%s\" is not a delay such as \"500ms\", \"2s\" or \"1min\"", text));
	}
	else
		policy_error(key, "must hold delays such as \"2s\" or numbers of milliseconds");
	p->backoff.delay_ms[p->backoff.nsteps++] = ms;
}

/* One retry_on word. */
static void
add_retry_on(const char *key, JsonbValue *elem, HttpPolicy *p)
{
	char	   *word = policy_string(key, elem);

	if (retry_on_parse_token(word) == 0)
		policy_error(key, psprintf("unknown condition \"%s\" (use 5xx, 4xx, 3xx, 429, timeout, network)", word));
	p->retry_on = lappend(p->retry_on, (void *) CStringGetTextDatum(word));
}

/* Resolve and check the completion hook: the caller must be able to run it. */
static Oid
resolve_hook(const char *name)
{
	Oid			argtypes[5] = {UUIDOID, INT4OID, JSONBOID, BYTEAOID, TEXTOID};
	Oid			hook = LookupFuncName(stringToQualifiedNameList(name), 5, argtypes, true);

	if (!OidIsValid(hook))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("completion hook %s(uuid, integer, jsonb, bytea, text) does not exist", name),
				 errhint("Create the function with exactly these argument types (docs/webhooks.md, \"Completion hooks\").")));
	if (get_func_retset(hook))
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("completion hook %s must not return a set", name)));
	if (pg_proc_aclcheck(hook, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for completion hook %s", name),
				 errdetail("The hook runs as the role that queued the request, which must be able to execute it.")));
	return hook;
}

/* Parse and validate a policy object (NULL: all defaults). */
static void
parse_policy(Jsonb *policy, HttpPolicy *p)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;
	bool		has_backoff = false;
	bool		has_retry_on = false;

	memset(p, 0, sizeof(*p));
	p->max_attempts = 3;
	if (policy != NULL)
	{
		if (!JB_ROOT_IS_OBJECT(policy))
			ereport(ERROR,
					(errcode(ERRCODE_DN_INVALID_ARGUMENT),
					 errmsg("http_enqueue policy must be a JSON object")));
		it = JsonbIteratorInit(&policy->root);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
			{
				key = pnstrdup(v.val.string.val, v.val.string.len);
				continue;
			}
			if (tok != WJB_VALUE)
				continue;
			if (strcmp(key, "max_attempts") == 0)
				p->max_attempts = policy_int(key, &v, 1, 100);
			else if (strcmp(key, "backoff") == 0)
			{
				policy_array(key, &v, add_backoff, p);
				has_backoff = true;
			}
			else if (strcmp(key, "retry_on") == 0)
			{
				policy_array(key, &v, add_retry_on, p);
				has_retry_on = true;
			}
			else if (strcmp(key, "timeout_ms") == 0)
				p->timeout_ms = policy_int(key, &v, 1, 3600000);
			else if (strcmp(key, "hook") == 0)
				p->hook = resolve_hook(policy_string(key, &v));
			else if (strcmp(key, "org_id") == 0)
			{
				p->org_id = *DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(policy_string(key, &v))));
				p->has_org = true;
			}
			else if (strcmp(key, "provider_id") == 0)
			{
				p->provider_id = *DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(policy_string(key, &v))));
				p->has_provider = true;
			}
			else
				policy_error(key, "unknown key");
		}
	}
	if (!has_backoff)
	{
		p->backoff.nsteps = 2;
		p->backoff.delay_ms[0] = 2000;
		p->backoff.delay_ms[1] = 4000;
	}
	if (p->max_attempts > 1 && p->backoff.nsteps == 0)
		policy_error("backoff", "must hold at least one delay when max_attempts is more than 1");
	if (!has_retry_on)
	{
		p->retry_on = list_make4((void *) CStringGetTextDatum("5xx"), (void *) CStringGetTextDatum("429"),
								 (void *) CStringGetTextDatum("timeout"), (void *) CStringGetTextDatum("network"));
	}
}

/* true when s is an HTTP token (header name, method). */
static bool
is_http_token(const char *s, int len)
{
	if (len == 0)
		return false;
	for (int i = 0; i < len; i++)
		if (!(isalnum((unsigned char) s[i]) || strchr("!#$%&'*+-.^_`|~", s[i]) != NULL) || s[i] == '\0')
			return false;
	return true;
}

/* Validate the headers object: string values, token names, no line breaks. */
static void
check_headers(Jsonb *headers, bool has_provider)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *name = NULL;

	if (!JB_ROOT_IS_OBJECT(headers))
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("http_enqueue headers must be a JSON object of strings")));
	it = JsonbIteratorInit(&headers->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			name = pnstrdup(v.val.string.val, v.val.string.len);
			if (!is_http_token(v.val.string.val, v.val.string.len))
				ereport(ERROR,
						(errcode(ERRCODE_DN_INVALID_ARGUMENT),
						 errmsg("invalid HTTP header name \"%s\"", name)));
			if (has_provider && pg_strcasecmp(name, "authorization") == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DN_INVALID_ARGUMENT),
						 errmsg("an http_enqueue request with a provider_id must not set the authorization header"),
						 errhint("The dispatcher adds the provider's API key itself.")));
		}
		else if (tok == WJB_VALUE)
		{
			if (v.type != jbvString ||
				memchr(v.val.string.val, '\r', v.val.string.len) ||
				memchr(v.val.string.val, '\n', v.val.string.len))
				ereport(ERROR,
						(errcode(ERRCODE_DN_INVALID_ARGUMENT),
						 errmsg("HTTP header \"%s\" must be a string without line breaks", name)));
		}
	}
}

/*
 * DNV02 for an unknown provider; DNV01 unless url lies under the provider's
 * base URL (its key is never sent anywhere else). SPI connected.
 */
static void
check_provider_url(const pg_uuid_t *provider_id, const char *url)
{
	Oid			type = UUIDOID;
	Datum		arg = UUIDPGetDatum(provider_id);
	char	   *base_url;
	size_t		len;

	if (SPI_execute_with_args("SELECT p.base_url FROM donatello.providers p WHERE p.id = $1",
							  1, &type, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the provider of a request");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("provider %s does not exist", dispatch_uuid_text(provider_id))));
	base_url = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	len = strlen(base_url);
	if (strncmp(url, base_url, len) != 0 || url[len] != '/')
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("request URL is not under the base URL of provider %s", dispatch_uuid_text(provider_id)),
				 errdetail("The provider's API key is only ever sent to URLs that start with its base URL and \"/\".")));
}

/* Upper-cased method, if it is one the dispatcher sends. */
static char *
check_method(const char *method)
{
	static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
	char	   *upper = pstrdup(method);

	for (char *c = upper; *c; c++)
		*c = pg_ascii_toupper((unsigned char) *c);
	for (int i = 0; i < (int) lengthof(methods); i++)
		if (strcmp(upper, methods[i]) == 0)
			return upper;
	ereport(ERROR,
			(errcode(ERRCODE_DN_INVALID_ARGUMENT),
			 errmsg("unsupported HTTP method \"%s\"", method),
			 errhint("Use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS.")));
	return NULL;				/* not reached */
}

/* A text[] of the list's text Datums. */
static Datum
text_array(List *items)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(1, list_length(items)));
	ListCell   *lc;
	int			n = 0;

	foreach(lc, items)
		elems[n++] = PointerGetDatum(lfirst(lc));
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* donatello.http_enqueue(method, url, headers, body, policy) */
Datum
donatello_http_enqueue(PG_FUNCTION_ARGS)
{
	enum
	{
		ID, ORG, METHOD, URL, HEADERS, BODY, MAX_ATTEMPTS, SCHEDULE, RETRY_ON, TIMEOUT, HOOK, ROLE, PROVIDER,
		NARGS
	};
	Oid			types[NARGS] = {UUIDOID, UUIDOID, TEXTOID, TEXTOID, BYTEAOID, BYTEAOID, INT4OID,
	INT4ARRAYOID, TEXTARRAYOID, INT4OID, TEXTOID, TEXTOID, UUIDOID};
	Datum		values[NARGS];
	char		nulls[NARGS];
	HttpPolicy	policy;
	pg_uuid_t	id;
	char	   *method;
	char	   *url;
	Jsonb	   *headers = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	Datum	   *delays;
	DonatelloSavedUser saved;
	pg_uuid_t  *result;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("http_enqueue method and url must not be NULL")));
	method = check_method(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	url = text_to_cstring(PG_GETARG_TEXT_PP(1));
	dispatch_check_url("request", url, NULL);
	parse_policy(PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P(4), &policy);
	if (headers != NULL)
		check_headers(headers, policy.has_provider);
	if (!policy.has_org && !donatello_claims_org_id(&policy.org_id))
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("http_enqueue needs an organization"),
				 errhint("Pass {\"org_id\": \"...\"} in the policy, or call it with request.jwt.claims naming an organization.")));

	memset(nulls, ' ', sizeof(nulls));
	dispatch_random_uuid(&id);
	values[ID] = UUIDPGetDatum(&id);
	values[ORG] = UUIDPGetDatum(&policy.org_id);
	values[METHOD] = CStringGetTextDatum(method);
	values[URL] = CStringGetTextDatum(url);
	values[BODY] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[BODY] = PG_ARGISNULL(3) ? 'n' : ' ';
	values[MAX_ATTEMPTS] = Int32GetDatum(policy.max_attempts);
	delays = palloc(sizeof(Datum) * Max(1, policy.backoff.nsteps));
	for (int i = 0; i < policy.backoff.nsteps; i++)
		delays[i] = Int32GetDatum(policy.backoff.delay_ms[i]);
	values[SCHEDULE] = PointerGetDatum(construct_array(delays, policy.backoff.nsteps, INT4OID, 4, true, TYPALIGN_INT));
	values[RETRY_ON] = text_array(policy.retry_on);
	values[TIMEOUT] = Int32GetDatum(policy.timeout_ms);
	nulls[TIMEOUT] = policy.timeout_ms > 0 ? ' ' : 'n';
	/* by name, not oid: a pending hook must survive a dump and restore */
	if (OidIsValid(policy.hook))
	{
		values[HOOK] = CStringGetTextDatum(format_procedure_qualified(policy.hook));
		values[ROLE] = CStringGetTextDatum(GetUserNameFromId(GetUserId(), false));
	}
	nulls[HOOK] = nulls[ROLE] = OidIsValid(policy.hook) ? ' ' : 'n';
	values[PROVIDER] = UUIDPGetDatum(&policy.provider_id);
	nulls[PROVIDER] = policy.has_provider ? ' ' : 'n';

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	donatello_begin_as_owner(&saved);
	dispatch_check_organization(&policy.org_id);
	if (policy.has_provider)
		check_provider_url(&policy.provider_id, url);
	nulls[HEADERS] = 'n';
	if (headers != NULL && JB_ROOT_COUNT(headers) > 0)
	{
		char	   *text = JsonbToCString(NULL, &headers->root, VARSIZE(headers));

		values[HEADERS] = PointerGetDatum(dispatch_seal("outbox_headers", &id, text, strlen(text)));
		nulls[HEADERS] = ' ';
		memset(text, 0, strlen(text));
	}
	dispatch_spi_exec("INSERT INTO donatello.outbox (id, org_id, kind, method, url, headers_sealed, body,"
					  "  max_attempts, schedule_ms, retry_on, timeout_ms, hook, hook_role, provider_id)"
					  " VALUES ($1, $2, 'http', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
					  NARGS, types, values, nulls, SPI_OK_INSERT);
	donatello_end_as_owner(&saved);
	SPI_finish();

	donatello_worker_wake_at_commit(WORKER_DISPATCHER);
	result = palloc(sizeof(pg_uuid_t));
	*result = id;
	PG_RETURN_UUID_P(result);
}
