/*
 * httpd_relation.c
 *	  /{relation}: GET and HEAD read (httpd_query.c), POST inserts and
 *	  upserts, PATCH updates, DELETE deletes (never without a filter). Writes
 *	  run as one statement, the DML in a CTE whose RETURNING rows are shaped
 *	  like a read; every column named is checked against the catalog.
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

/* Find a relation of the request's schema; 404 PGRST205 if none. */
static void
open_relation(HttpRequest *req, const char *name, Source *src)
{
	Oid			relid = get_relname_relid(name, req->schema);
	char		kind = OidIsValid(relid) ? get_rel_relkind(relid) : '\0';

	memset(src, 0, sizeof(*src));
	if (!OidIsValid(relid) || (kind != RELKIND_RELATION && kind != RELKIND_VIEW &&
							   kind != RELKIND_MATVIEW && kind != RELKIND_FOREIGN_TABLE &&
							   kind != RELKIND_PARTITIONED_TABLE))
		httpd_fail(404, "PGRST205",
				   psprintf("Could not find the table '%s.%s' in the schema cache", req->schema_name, name),
				   NULL, "GET / lists the exposed relations and functions.");
	src->relid = relid;
	src->relkind = kind;
	src->qualified = psprintf("%s.%s", quote_identifier(req->schema_name), quote_identifier(name));
	src->display = psprintf("%s.%s", req->schema_name, name);
	src->from = psprintf("%s AS \"_t\"", src->qualified);
}

/* Columns named by columns= (checked), or the body's keys. */
static List *
write_columns(HttpRequest *req, Source *src, List *keys)
{
	const char *cols = httpd_query_param(req, "columns");
	List	   *result = NIL;
	ListCell   *lc;

	if (cols != NULL)
	{
		char	  **names;
		int			n,
					i;
		const char *err = NULL;

		if (!hp_parse_column_list(cols, &names, &n, &err))
			hq_parse_failure("columns", err);
		for (i = 0; i < n; i++)
			result = lappend(result, names[i]);
	}
	else
		result = keys;
	foreach(lc, result)
		(void) hq_column_type(src, lfirst(lc));
	return result;
}

/* Primary-key columns of a table (default conflict target of an upsert). */
static List *
primary_key_columns(Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	Oid			pk = RelationGetPrimaryKeyIndex(rel);
	List	   *cols = NIL;

	if (OidIsValid(pk))
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(pk));
		Form_pg_index idx = (Form_pg_index) GETSTRUCT(tup);
		int			i;

		for (i = 0; i < idx->indnkeyatts; i++)
			cols = lappend(cols, get_attname(relid, idx->indkey.values[i], false));
		ReleaseSysCache(tup);
	}
	table_close(rel, AccessShareLock);
	return cols;
}

/* Comma-separated quoted names, each prefixed. */
static char *
name_list(List *names, const char *prefix)
{
	StringInfoData out;
	ListCell   *lc;

	initStringInfo(&out);
	foreach(lc, names)
		appendStringInfo(&out, "%s%s%s", out.len ? ", " : "", prefix, quote_identifier(lfirst(lc)));
	return out.data;
}

/* Run a CTE-wrapped write and shape its answer. */
static void
finish_write(HttpRequest *req, HttpResponse *resp, Source *src, const char *dml, Params *p,
			 int success_status)
{
	StringInfoData sql;
	Source		written = *src;
	int64		rows;
	bool		body = req->return_representation;

	written.from = "\"_w\" AS \"_t\"";
	initStringInfo(&sql);
	appendStringInfo(&sql, "WITH \"_w\" AS (%s RETURNING \"_t\".*) SELECT %s, pg_catalog.count(*) FROM (SELECT %s FROM %s) \"_j\"",
					 dml, body ? hq_aggregate_sql(req) : "NULL::text",
					 body ? hq_select_sql(req, &written) : "1", written.from);
	hq_run_sql(sql.data, p);
	rows = hq_result_int8(2);
	if (body)
		hq_check_singular(req, rows);
	httpd_add_header(req, resp, "Content-Range",
					 req->count_exact ? psprintf("*/" INT64_FORMAT, rows) : "*/*");
	if (body)
	{
		appendStringInfoString(&resp->body, hq_result_text(1));
		resp->status = success_status;
	}
	else
	{
		resp->status = success_status == 201 ? 201 : 204;
		resp->empty = true;
	}
}

/* POST /{table}: insert (or upsert with on_conflict / resolution). */
static void
insert_rows(HttpRequest *req, HttpResponse *resp, Source *src)
{
	Jsonb	   *jb = hq_body_jsonb(req);
	bool		is_array;
	List	   *keys = hq_body_keys(jb, &is_array);
	List	   *cols = write_columns(req, src, keys);
	Params		p = {0};
	StringInfoData dml;
	int			body_param;

	body_param = hq_param_text(&p, req->body.data);
	initStringInfo(&dml);
	if (cols == NIL)
		appendStringInfo(&dml, "INSERT INTO %s AS \"_t\" DEFAULT VALUES", src->qualified);
	else
		appendStringInfo(&dml, "INSERT INTO %s AS \"_t\" (%s) SELECT %s FROM pg_catalog.json_populate_recordset(NULL::%s, "
						 "CASE WHEN pg_catalog.json_typeof($%d::json) = 'array' THEN $%d::json ELSE pg_catalog.json_build_array($%d::json) END)",
						 src->qualified, name_list(cols, ""), name_list(cols, ""), src->qualified,
						 body_param, body_param, body_param);
	if (req->merge_duplicates || req->ignore_duplicates)
	{
		const char *oc = httpd_query_param(req, "on_conflict");
		List	   *target = NIL;
		ListCell   *lc;

		if (oc != NULL)
		{
			char	  **names;
			int			n,
						i;
			const char *err = NULL;

			if (!hp_parse_column_list(oc, &names, &n, &err))
				hq_parse_failure("on_conflict", err);
			for (i = 0; i < n; i++)
			{
				(void) hq_column_type(src, names[i]);
				target = lappend(target, names[i]);
			}
		}
		else if (src->relkind == RELKIND_RELATION || src->relkind == RELKIND_PARTITIONED_TABLE)
			target = primary_key_columns(src->relid);
		if (target == NIL)
			httpd_fail(400, "PGRST100", "an upsert needs a conflict target",
					   "The relation has no primary key and on_conflict= is missing.",
					   "Add on_conflict=column,... to the query string.");
		appendStringInfo(&dml, " ON CONFLICT (%s) ", name_list(target, ""));
		if (req->ignore_duplicates || cols == NIL)
			appendStringInfoString(&dml, "DO NOTHING");
		else
		{
			appendStringInfoString(&dml, "DO UPDATE SET ");
			foreach(lc, cols)
				appendStringInfo(&dml, "%s%s = EXCLUDED.%s", foreach_current_index(lc) ? ", " : "",
								 quote_identifier(lfirst(lc)), quote_identifier(lfirst(lc)));
		}
	}
	finish_write(req, resp, src, dml.data, &p, 201);
}

/* PATCH /{table}?filters */
static void
update_rows(HttpRequest *req, HttpResponse *resp, Source *src)
{
	Jsonb	   *jb = hq_body_jsonb(req);
	bool		is_array;
	List	   *keys = hq_body_keys(jb, &is_array);
	List	   *cols;
	Params		p = {0};
	StringInfoData dml;
	ListCell   *lc;
	int			body_param;
	char	   *where;

	if (is_array)
		httpd_fail(400, "PGRST102", "Empty or invalid json", "PATCH takes one JSON object.", NULL);
	cols = write_columns(req, src, keys);
	body_param = hq_param_text(&p, req->body.data);
	where = hq_where_sql(req, src, &p, NIL);
	initStringInfo(&dml);
	if (cols == NIL)
	{
		/* nothing to set: no row changes */
		httpd_add_header(req, resp, "Content-Range", "*/0");
		if (req->return_representation)
			appendStringInfoString(&resp->body, req->accept_object ? "null" : "[]");
		resp->status = req->return_representation ? 200 : 204;
		resp->empty = !req->return_representation;
		return;
	}
	appendStringInfo(&dml, "UPDATE %s AS \"_t\" SET ", src->qualified);
	foreach(lc, cols)
		appendStringInfo(&dml, "%s%s = \"_b\".%s", foreach_current_index(lc) ? ", " : "",
						 quote_identifier(lfirst(lc)), quote_identifier(lfirst(lc)));
	appendStringInfo(&dml, " FROM pg_catalog.json_populate_record(NULL::%s, $%d::json) AS \"_b\"%s",
					 src->qualified, body_param, where);
	finish_write(req, resp, src, dml.data, &p, 200);
}

/* DELETE /{table}?filters (refused without a filter). */
static void
delete_rows(HttpRequest *req, HttpResponse *resp, Source *src)
{
	Params		p = {0};
	char	   *where = hq_where_sql(req, src, &p, NIL);

	if (where[0] == '\0')
		httpd_fail(400, "21000", "DELETE requires a WHERE clause",
				   "A DELETE without a filter would delete every row.",
				   "Add a filter such as ?id=eq.1; to empty a table, filter on a column that is never null.");
	finish_write(req, resp, src, psprintf("DELETE FROM %s AS \"_t\"%s", src->qualified, where), &p, 200);
}

/* Route: /{relation} */
void
httpd_route_relation(HttpRequest *req, HttpResponse *resp, const char *tail)
{
	Source		src;
	bool		write = req->method != HTTP_GET && req->method != HTTP_HEAD;
	Params		p = {0};

	httpd_resolve_schema(req, write);
	if (!write)
		(void) set_config_option("transaction_read_only", "on", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	open_relation(req, tail, &src);
	switch (req->method)
	{
		case HTTP_GET:
		case HTTP_HEAD:
			hq_read_source(req, resp, &src, &p, NIL);
			break;
		case HTTP_POST:
			insert_rows(req, resp, &src);
			break;
		case HTTP_PATCH:
			update_rows(req, resp, &src);
			break;
		case HTTP_DELETE:
			delete_rows(req, resp, &src);
			break;
	}
}

