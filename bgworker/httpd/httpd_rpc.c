/*
 * httpd_rpc.c
 *	  /rpc/{function}: finding the function by name and named arguments
 *	  (PostgREST's overload rule), calling it with arguments typed from the
 *	  catalog, and shaping its result (void, scalar, set, composite).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_index.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/catcache.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "donatello.h"
#include "bgworker/httpd/httpd.h"
#include "bgworker/httpd/httpd_query.h"

/* A candidate function and how the request's arguments bind to it. */
typedef struct FunctionMatch
{
	Oid			oid;
	List	   *arg_names;		/* the arguments the request provides, in the function's order */
	List	   *arg_types;		/* their type OIDs (as a List of Oid) */
} FunctionMatch;

/* Does the function take these named arguments (and need no others)? */
static bool
function_binds(HeapTuple tup, List *provided, bool get, HttpRequest *req, FunctionMatch *m)
{
	Form_pg_proc proc = (Form_pg_proc) GETSTRUCT(tup);
	Oid		   *types;
	char	  **names;
	char	   *modes;
	int			nargs = get_func_arg_info(tup, &types, &names, &modes);
	int			ninputs = 0,
				i,
				input_index = 0;
	ListCell   *lc;

	if (proc->prokind != PROKIND_FUNCTION)
		return false;
	m->arg_names = NIL;
	m->arg_types = NIL;
	for (i = 0; i < nargs; i++)
		if (modes == NULL || modes[i] == PROARGMODE_IN || modes[i] == PROARGMODE_INOUT ||
			modes[i] == PROARGMODE_VARIADIC)
			ninputs++;
	for (i = 0; i < nargs; i++)
	{
		bool		is_input = modes == NULL || modes[i] == PROARGMODE_IN ||
			modes[i] == PROARGMODE_INOUT || modes[i] == PROARGMODE_VARIADIC;
		bool		has_default;
		bool		given = false;

		if (!is_input)
			continue;
		has_default = input_index >= ninputs - proc->pronargdefaults;
		input_index++;
		if (names == NULL || names[i] == NULL || names[i][0] == '\0')
			return false;		/* unnamed arguments cannot be passed by name */
		if (get)
			given = httpd_query_param(req, names[i]) != NULL;
		else
			foreach(lc, provided)
				if (strcmp(lfirst(lc), names[i]) == 0)
					given = true;
		if (given)
		{
			m->arg_names = lappend(m->arg_names, pstrdup(names[i]));
			m->arg_types = lappend_oid(m->arg_types, types[i]);
		}
		else if (!has_default)
			return false;
	}
	/* a POST body key that is no argument means another function was meant */
	if (!get && list_length(provided) != list_length(m->arg_names))
		return false;
	m->oid = proc->oid;
	return true;
}

/* Find the function by name in the request's schema; 404 PGRST202 if none binds. */
static FunctionMatch
find_function(HttpRequest *req, const char *name, List *provided, bool get)
{
	CatCList   *list = SearchSysCacheList1(PROCNAMEARGSNSP, CStringGetDatum(name));
	FunctionMatch best = {InvalidOid, NIL, NIL};
	int			i;

	for (i = 0; i < list->n_members; i++)
	{
		HeapTuple	tup = &list->members[i]->tuple;
		FunctionMatch m;

		if (((Form_pg_proc) GETSTRUCT(tup))->pronamespace != req->schema)
			continue;
		if (function_binds(tup, provided, get, req, &m) &&
			(!OidIsValid(best.oid) || list_length(m.arg_names) > list_length(best.arg_names)))
			best = m;
	}
	ReleaseSysCacheList(list);
	if (!OidIsValid(best.oid))
	{
		StringInfoData args;
		ListCell   *lc;

		initStringInfo(&args);
		if (get)
		{
			for (i = 0; i < req->nparams; i++)
				if (!hq_reserved_key(req->params[i].key))
					appendStringInfo(&args, "%s%s", args.len ? ", " : "", req->params[i].key);
		}
		else
			foreach(lc, provided)
				appendStringInfo(&args, "%s%s", args.len ? ", " : "", (char *) lfirst(lc));
		httpd_fail(404, "PGRST202",
				   psprintf("Could not find the function %s.%s(%s) in the schema cache",
							req->schema_name, name, args.data),
				   psprintf("Searched for the function %s.%s with parameters %s, but no matches were found in the schema cache.",
							req->schema_name, name, args.len ? args.data : "(none)"),
				   "GET / lists the exposed functions and their parameters.");
	}
	return best;
}

/* Route: /rpc/{function} */
void
httpd_route_rpc(HttpRequest *req, HttpResponse *resp, const char *fname)
{
	bool		get = req->method != HTTP_POST;
	List	   *provided = NIL;
	FunctionMatch fn;
	HeapTuple	tup;
	Form_pg_proc proc;
	Oid			rettype;
	bool		retset;
	char		volatility;
	TupleDesc	tupdesc = NULL;
	TypeFuncClass cls;
	StringInfoData args,
				call,
				sql;
	Params		p = {0};
	ListCell   *ln,
			   *lt;
	Source		src;
	char	   *qualified;

	httpd_resolve_schema(req, !get);
	if (!get)
	{
		if (req->body.len > 0)
		{
			Jsonb	   *jb = hq_body_jsonb(req);
			bool		is_array;

			if (!JB_ROOT_IS_OBJECT(jb))
				httpd_fail(400, "PGRST102", "Empty or invalid json",
						   "The body of a function call is a JSON object of named arguments.", NULL);
			provided = hq_body_keys(jb, &is_array);
		}
	}
	else
		(void) set_config_option("transaction_read_only", "on", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	fn = find_function(req, fname, provided, get);

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn.oid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fn.oid);
	proc = (Form_pg_proc) GETSTRUCT(tup);
	rettype = proc->prorettype;
	retset = proc->proretset;
	volatility = proc->provolatile;
	ReleaseSysCache(tup);
	if (get && volatility == PROVOLATILE_VOLATILE)
		httpd_fail(405, "PGRST101", "GET and HEAD call only STABLE or IMMUTABLE functions",
				   psprintf("%s.%s is VOLATILE.", req->schema_name, fname), "Call it with POST.");
	cls = get_func_result_type(fn.oid, NULL, &tupdesc);

	/* arguments: a record read from one JSON parameter, typed from the catalog */
	initStringInfo(&args);
	initStringInfo(&call);
	qualified = psprintf("%s.%s", quote_identifier(req->schema_name), quote_identifier(fname));
	appendStringInfo(&call, "%s(", qualified);
	if (fn.arg_names != NIL)
	{
		StringInfoData json;
		int			json_param;

		initStringInfo(&json);
		if (get)
		{
			appendStringInfoChar(&json, '{');
			foreach(ln, fn.arg_names)
			{
				if (foreach_current_index(ln) > 0)
					appendStringInfoChar(&json, ',');
				httpd_json_string(&json, lfirst(ln));
				appendStringInfoChar(&json, ':');
				httpd_json_string(&json, httpd_query_param(req, lfirst(ln)));
			}
			appendStringInfoChar(&json, '}');
		}
		else
			appendStringInfoString(&json, req->body.data);
		json_param = hq_param_text(&p, json.data);
		appendStringInfo(&args, "pg_catalog.json_to_record($%d::json) AS \"_a\"(", json_param);
		forboth(ln, fn.arg_names, lt, fn.arg_types)
		{
			int			idx = foreach_current_index(ln);

			appendStringInfo(&args, "%s%s %s", idx ? ", " : "", quote_identifier(lfirst(ln)),
							 format_type_be(lfirst_oid(lt)));
			appendStringInfo(&call, "%s%s := \"_a\".%s", idx ? ", " : "", quote_identifier(lfirst(ln)),
							 quote_identifier(lfirst(ln)));
		}
		appendStringInfoChar(&args, ')');
	}
	appendStringInfoChar(&call, ')');

	initStringInfo(&sql);
	if (rettype == VOIDOID)
	{
		appendStringInfo(&sql, "SELECT %s%s%s", call.data, args.len ? " FROM " : "", args.data);
		hq_run_sql(sql.data, &p);
		resp->status = 204;
		resp->empty = true;
		return;
	}
	if (cls == TYPEFUNC_COMPOSITE && tupdesc != NULL)
	{
		memset(&src, 0, sizeof(src));
		src.tupdesc = tupdesc;
		src.display = psprintf("%s.%s", req->schema_name, fname);
		src.from = psprintf("%s%s%s AS \"_t\"", args.data, args.len ? " CROSS JOIN LATERAL " : "", call.data);
		if (!retset)
			req->accept_object = true;	/* one composite value: an object, as PostgREST answers */
		hq_read_source(req, resp, &src, &p, fn.arg_names);
		if (!retset)
			resp->status = 200;
		return;
	}
	if (retset)
		appendStringInfo(&sql, "SELECT coalesce(pg_catalog.json_agg(\"_t\".\"_v\"), '[]')::text FROM %s%s%s AS \"_t\"(\"_v\")",
						 args.data, args.len ? " CROSS JOIN LATERAL " : "", call.data);
	else
		appendStringInfo(&sql, "SELECT coalesce(pg_catalog.to_json(%s)::text, 'null')%s%s", call.data,
						 args.len ? " FROM " : "", args.data);
	hq_run_sql(sql.data, &p);
	appendStringInfoString(&resp->body, hq_result_text(1));
	resp->status = 200;
}

