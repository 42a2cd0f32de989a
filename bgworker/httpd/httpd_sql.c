/*
 * httpd_sql.c
 *	  Relations (GET/HEAD/POST/PATCH/DELETE /{name}) and functions
 *	  (GET/HEAD/POST /rpc/{name}) with PostgREST semantics.
 *
 * Safety rule: nothing from the request is concatenated into SQL unchecked.
 * Relation, function and column names are looked up in the catalog of the
 * exposed schema and written with quote_identifier(); type names come from
 * the catalog (format_type_be) or are parsed by PostgreSQL's own type-name
 * parser; every value is a parameter ($n, text, cast to the column's type).
 *
 * Shapes. A read is one statement:
 *	 SELECT coalesce(json_agg(_j), '[]'), count(*) [, total]
 *	   FROM (SELECT <select> FROM <source> AS "_t" WHERE ... ORDER BY ... LIMIT/OFFSET) _j
 * A write wraps the DML in a CTE and reads its RETURNING rows the same way.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "parser/parse_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/catcache.h"
#include "utils/syscache.h"
#include "utils/varlena.h"
#include "access/table.h"
#include "catalog/pg_index.h"
#include "utils/rel.h"
#include "utils/relcache.h"

#include "donatello.h"
#include "bgworker/httpd/httpd.h"

/* The thing a request reads from or writes to. */
typedef struct Source
{
	Oid			relid;			/* a relation, or InvalidOid for a function's result */
	char		relkind;
	TupleDesc	tupdesc;		/* a function's result columns */
	char	   *qualified;		/* "schema"."name" */
	char	   *display;		/* schema.name, for messages */
	char	   *from;			/* the FROM item, aliased "_t" */
} Source;

/* Statement parameters, all text (or text[]). */
typedef struct Params
{
	Datum	   *values;
	Oid		   *types;
	int			n;
	int			cap;
} Params;

/* Add a text parameter; returns its number. */
static int
param_text(Params *p, const char *value)
{
	if (p->n == p->cap)
	{
		p->cap = p->cap ? p->cap * 2 : 8;
		p->values = p->values ? repalloc(p->values, sizeof(Datum) * p->cap) : palloc(sizeof(Datum) * p->cap);
		p->types = p->types ? repalloc(p->types, sizeof(Oid) * p->cap) : palloc(sizeof(Oid) * p->cap);
	}
	p->values[p->n] = CStringGetTextDatum(value);
	p->types[p->n] = TEXTOID;
	return ++p->n;
}

/* Add a text[] parameter; returns its number. */
static int
param_text_array(Params *p, char **items, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	int			i;
	int			num;

	for (i = 0; i < n; i++)
		elems[i] = CStringGetTextDatum(items[i]);
	num = param_text(p, "");
	p->values[num - 1] = PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
	p->types[num - 1] = TEXTARRAYOID;
	return num;
}

/* The exposed schemas, in order (donatello.http_schemas). */
List *
httpd_exposed_schemas(void)
{
	List	   *names = NIL;

	if (!SplitIdentifierString(pstrdup(http_schemas), ',', &names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("donatello.http_schemas is not a list of schema names")));
	return names;
}

/* Pick the schema from Accept-Profile (reads) or Content-Profile (writes). */
void
httpd_resolve_schema(HttpRequest *req, bool for_write)
{
	const char *asked = httpd_header(req, for_write ? "Content-Profile" : "Accept-Profile");
	List	   *schemas = httpd_exposed_schemas();
	ListCell   *lc;
	char	   *name = NULL;

	if (schemas == NIL)
		httpd_fail(406, "PGRST106", "No schema is exposed", NULL, "Set donatello.http_schemas.");
	if (asked == NULL)
		name = linitial(schemas);
	else
		foreach(lc, schemas)
			if (strcmp(lfirst(lc), asked) == 0)
				name = lfirst(lc);
	if (name == NULL || !OidIsValid(get_namespace_oid(name, true)))
	{
		StringInfoData list;

		initStringInfo(&list);
		foreach(lc, schemas)
			appendStringInfo(&list, "%s%s", list.len ? ", " : "", (char *) lfirst(lc));
		httpd_fail(406, "PGRST106", psprintf("Invalid schema: %s", name ? name : asked), NULL,
				   psprintf("Only the following schemas are exposed: %s", list.data));
	}
	req->schema = get_namespace_oid(name, false);
	req->schema_name = pstrdup(name);
}

/* The catalog type of a column of the source; 400 (42703) if there is none. */
static Oid
column_type(Source *src, const char *name)
{
	if (OidIsValid(src->relid))
	{
		AttrNumber	att = get_attnum(src->relid, name);

		if (att > 0)
			return get_atttype(src->relid, att);
	}
	else if (src->tupdesc != NULL)
	{
		int			i;

		for (i = 0; i < src->tupdesc->natts; i++)
		{
			Form_pg_attribute a = TupleDescAttr(src->tupdesc, i);

			if (!a->attisdropped && strcmp(NameStr(a->attname), name) == 0)
				return a->atttypid;
		}
	}
	httpd_fail(400, "42703", psprintf("column %s.%s does not exist", src->display, name), NULL,
			   "Check the column name against GET / (the OpenAPI document).");
	return InvalidOid;
}

/* "_t"."column", after checking that the column exists. */
static char *
qualified_column(Source *src, const char *name, Oid *type)
{
	Oid			t = column_type(src, name);

	if (type)
		*type = t;
	return psprintf("\"_t\".%s", quote_identifier(name));
}

/* SQL for one condition tree, values as parameters. */
static void
condition_sql(Source *src, HpCond *c, Params *p, StringInfo out)
{
	if (c->negate)
		appendStringInfoString(out, "NOT ");
	appendStringInfoChar(out, '(');
	if (c->kind != HP_LEAF)
	{
		int			i;

		for (i = 0; i < c->nchildren; i++)
		{
			if (i > 0)
				appendStringInfoString(out, c->kind == HP_AND ? " AND " : " OR ");
			condition_sql(src, c->children[i], p, out);
		}
	}
	else
	{
		Oid			type;
		char	   *col = qualified_column(src, c->column, &type);
		char	   *tname = format_type_be(type);
		static const char *const cmp[] = {"=", "<>", ">", ">=", "<", "<="};

		switch (c->op)
		{
			case HP_EQ:
			case HP_NEQ:
			case HP_GT:
			case HP_GTE:
			case HP_LT:
			case HP_LTE:
				appendStringInfo(out, "%s %s $%d::%s", col, cmp[c->op], param_text(p, c->value), tname);
				break;
			case HP_LIKE:
				appendStringInfo(out, "%s::text LIKE $%d", col, param_text(p, c->value));
				break;
			case HP_ILIKE:
				appendStringInfo(out, "%s::text ILIKE $%d", col, param_text(p, c->value));
				break;
			case HP_MATCH:
				appendStringInfo(out, "%s::text ~ $%d", col, param_text(p, c->value));
				break;
			case HP_IMATCH:
				appendStringInfo(out, "%s::text ~* $%d", col, param_text(p, c->value));
				break;
			case HP_IN:
				appendStringInfo(out, "%s = ANY($%d::%s[])", col,
								 param_text_array(p, c->list, c->nlist), tname);
				break;
			case HP_IS:
				if (strcmp(c->value, "null") == 0)
					appendStringInfo(out, "%s IS NULL", col);
				else if (strcmp(c->value, "not_null") == 0)
					appendStringInfo(out, "%s IS NOT NULL", col);
				else if (strcmp(c->value, "true") == 0)
					appendStringInfo(out, "%s IS TRUE", col);
				else if (strcmp(c->value, "false") == 0)
					appendStringInfo(out, "%s IS FALSE", col);
				else
					appendStringInfo(out, "%s IS UNKNOWN", col);
				break;
			case HP_CS:
				appendStringInfo(out, "%s @> $%d::%s", col, param_text(p, c->value), tname);
				break;
			case HP_CD:
				appendStringInfo(out, "%s <@ $%d::%s", col, param_text(p, c->value), tname);
				break;
			case HP_OV:
				appendStringInfo(out, "%s && $%d::%s", col, param_text(p, c->value), tname);
				break;
		}
	}
	appendStringInfoChar(out, ')');
}

/* Is this query-string key one of PostgREST's reserved words? */
static bool
reserved_key(const char *key)
{
	return strcmp(key, "select") == 0 || strcmp(key, "order") == 0 || strcmp(key, "limit") == 0 ||
		strcmp(key, "offset") == 0 || strcmp(key, "columns") == 0 || strcmp(key, "on_conflict") == 0;
}

/* Fail with PostgREST's parse error. */
static void
parse_failure(const char *what, const char *err)
{
	httpd_fail(400, "PGRST100", psprintf("\"failed to parse %s parameter\"", what), err,
			   "See docs/http.md for the grammar of select=, order= and filters.");
}

/*
 * The WHERE clause from the query string's filters (skipping reserved keys
 * and, for functions, the arguments in skip[]). Empty string: no filter.
 */
static char *
where_sql(HttpRequest *req, Source *src, Params *p, List *skip)
{
	StringInfoData out;
	int			i;

	initStringInfo(&out);
	for (i = 0; i < req->nparams; i++)
	{
		const char *key = req->params[i].key;
		const char *err = NULL;
		HpCond	   *cond;
		ListCell   *lc;
		bool		skipped = false;

		if (reserved_key(key))
			continue;
		foreach(lc, skip)
			if (strcmp(lfirst(lc), key) == 0)
				skipped = true;
		if (skipped)
			continue;
		if (hp_is_logic_key(key))
			cond = hp_parse_logic(key, req->params[i].value, &err);
		else
			cond = hp_parse_filter(key, req->params[i].value, &err);
		if (cond == NULL)
			parse_failure("filter", err);
		appendStringInfoString(&out, out.len ? " AND " : " WHERE ");
		condition_sql(src, cond, p, &out);
	}
	return out.data;
}

/* The select list ("_t".* by default). */
static char *
select_sql(HttpRequest *req, Source *src)
{
	const char *sel = httpd_query_param(req, "select");
	HpSelectItem *items;
	int			n,
				i;
	const char *err = NULL;
	StringInfoData out;

	if (sel == NULL || sel[0] == '\0')
		return "\"_t\".*";
	if (!hp_parse_select(sel, &items, &n, &err))
		parse_failure("select", err);
	initStringInfo(&out);
	for (i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoString(&out, ", ");
		if (items[i].column == NULL)
		{
			appendStringInfoString(&out, "\"_t\".*");
			continue;
		}
		appendStringInfoString(&out, qualified_column(src, items[i].column, NULL));
		if (items[i].cast)
		{
			Oid			typid;
			int32		typmod;

			parseTypeString(items[i].cast, &typid, &typmod, true);
			if (!OidIsValid(typid))
				httpd_fail(400, "42704", psprintf("type \"%s\" does not exist", items[i].cast), NULL, NULL);
			appendStringInfo(&out, "::%s", format_type_with_typemod(typid, typmod));
		}
		appendStringInfo(&out, " AS %s", quote_identifier(items[i].alias ? items[i].alias : items[i].column));
	}
	return out.data;
}

/* ORDER BY, or empty. */
static char *
order_sql(HttpRequest *req, Source *src)
{
	const char *ord = httpd_query_param(req, "order");
	HpOrderItem *items;
	int			n,
				i;
	const char *err = NULL;
	StringInfoData out;

	if (ord == NULL || ord[0] == '\0')
		return "";
	if (!hp_parse_order(ord, &items, &n, &err))
		parse_failure("order", err);
	initStringInfo(&out);
	appendStringInfoString(&out, " ORDER BY ");
	for (i = 0; i < n; i++)
		appendStringInfo(&out, "%s%s%s%s", i ? ", " : "", qualified_column(src, items[i].column, NULL),
						 items[i].descending ? " DESC" : " ASC",
						 items[i].nulls == 1 ? " NULLS FIRST" : items[i].nulls == 2 ? " NULLS LAST" : "");
	return out.data;
}

/* limit= and offset= (or a Range: a-b header); -1 limit: none. */
static void
read_range(HttpRequest *req, long *limit, long *offset)
{
	const char *l = httpd_query_param(req, "limit");
	const char *o = httpd_query_param(req, "offset");
	const char *range = httpd_header(req, "Range");

	*limit = -1;
	*offset = 0;
	if (range != NULL)
	{
		long		from,
					to;
		char		tail;

		if (sscanf(range, "%ld-%ld%c", &from, &to, &tail) == 2 && from >= 0 && to >= from)
		{
			*offset = from;
			*limit = to - from + 1;
		}
		else if (sscanf(range, "%ld-%c", &from, &tail) == 1 && from >= 0)
			*offset = from;
	}
	if (l != NULL && !hp_parse_nonnegative(l, limit))
		parse_failure("limit", "limit must be a non-negative integer");
	if (o != NULL && !hp_parse_nonnegative(o, offset))
		parse_failure("offset", "offset must be a non-negative integer");
}

/*
 * Saved plans of the statements this worker ran, keyed by parameter types and
 * SQL text. The SQL holds only catalog-checked names, so the number of
 * distinct statements is bounded by the schema and the request shapes; the
 * cache stops growing at PLAN_CACHE_SIZE entries. The plan cache revalidates
 * a saved plan after DDL and when the role (row-level security) differs.
 */
#define PLAN_CACHE_SIZE 1024
#define PLAN_KEY_SIZE 2048

typedef struct PlanEntry
{
	char		key[PLAN_KEY_SIZE];
	SPIPlanPtr	plan;
} PlanEntry;

static HTAB *plan_cache = NULL;

/* Run a statement (with a saved plan when possible); returns the rows; raises on error. */
static uint64
run_sql(const char *sql, Params *p)
{
	char		key[PLAN_KEY_SIZE];
	int			i,
				rc;
	PlanEntry  *entry = NULL;
	bool		found = false;

	if (plan_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = PLAN_KEY_SIZE;
		ctl.entrysize = sizeof(PlanEntry);
		plan_cache = hash_create("donatello httpd plans", 64, &ctl, HASH_ELEM | HASH_STRINGS);
	}
	if (p->n < 64 && strlen(sql) + p->n + 2 < PLAN_KEY_SIZE)
	{
		for (i = 0; i < p->n; i++)
			key[i] = p->types[i] == TEXTOID ? 't' : 'a';
		key[p->n] = '|';
		strcpy(key + p->n + 1, sql);
		entry = hash_search(plan_cache, key, hash_get_num_entries(plan_cache) < PLAN_CACHE_SIZE ? HASH_ENTER : HASH_FIND, &found);
	}
	if (entry != NULL && (!found || entry->plan == NULL))
	{
		/* a statement that fails to prepare leaves a NULL plan, tried again next time */
		SPIPlanPtr	plan;

		entry->plan = NULL;
		plan = SPI_prepare(sql, p->n, p->types);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		entry->plan = plan;
	}
	if (entry != NULL)
		rc = SPI_execute_plan(entry->plan, p->values, NULL, false, 0);
	else
		rc = SPI_execute_with_args(sql, p->n, p->types, p->values, NULL, false, 0);
	if (rc < 0)
		elog(ERROR, "SPI execution failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

/* Text of column col of the first result row (NULL if null). */
static char *
result_text(int col)
{
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col);
}

/* int8 of column col of the first result row. */
static int64
result_int8(int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? 0 : DatumGetInt64(d);
}

/* The JSON aggregate of "_j" rows: the array, or its one element for vnd.pgrst.object. */
static const char *
aggregate_sql(HttpRequest *req)
{
	return req->accept_object ? "coalesce(json_agg(\"_j\")->0, 'null')::text"
		: "coalesce(json_agg(\"_j\"), '[]')::text";
}

/* 406 PGRST116 unless exactly one row (vnd.pgrst.object). */
static void
check_singular(HttpRequest *req, int64 rows)
{
	if (req->accept_object && rows != 1)
		httpd_fail(406, "PGRST116", "JSON object requested, multiple (or no) rows returned",
				   psprintf("The result contains " INT64_FORMAT " rows", rows), NULL);
}

/* Content-Range: first-last/total, or star-slash-total when empty. */
static void
content_range(HttpRequest *req, HttpResponse *resp, long offset, int64 rows, int64 total)
{
	char	   *t = total >= 0 ? psprintf(INT64_FORMAT, total) : "*";

	if (rows > 0)
		httpd_add_header(req, resp, "Content-Range",
						 psprintf("%ld-" INT64_FORMAT "/%s", offset, offset + rows - 1, t));
	else
		httpd_add_header(req, resp, "Content-Range", psprintf("*/%s", t));
}

/*
 * A read: select, filters, order, range over the source; body, status and
 * Content-Range set on resp. skip: query keys that are function arguments.
 */
static void
read_source(HttpRequest *req, HttpResponse *resp, Source *src, Params *p, List *skip)
{
	long		limit,
				offset;
	char	   *where = where_sql(req, src, p, skip);
	char	   *sel = select_sql(req, src);
	char	   *order = order_sql(req, src);
	StringInfoData sql;
	int64		rows,
				total = -1;

	read_range(req, &limit, &offset);
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT %s, count(*)", aggregate_sql(req));
	if (req->count_exact)
		appendStringInfo(&sql, ", (SELECT count(*) FROM %s%s)", src->from, where);
	appendStringInfo(&sql, " FROM (SELECT %s FROM %s%s%s", sel, src->from, where, order);
	if (limit >= 0)
		appendStringInfo(&sql, " LIMIT $%d::bigint", param_text(p, psprintf("%ld", limit)));
	if (offset > 0)
		appendStringInfo(&sql, " OFFSET $%d::bigint", param_text(p, psprintf("%ld", offset)));
	appendStringInfoString(&sql, ") \"_j\"");

	run_sql(sql.data, p);
	rows = result_int8(2);
	if (req->count_exact)
		total = result_int8(3);
	check_singular(req, rows);
	appendStringInfoString(&resp->body, result_text(1));
	content_range(req, resp, offset, rows, total);
	resp->status = (total >= 0 && rows < total && !req->accept_object) ? 206 : 200;
}

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

/* Keys of a JSON object, or the union of the keys of an array's objects, in order. */
static List *
body_keys(Jsonb *jb, bool *is_array)
{
	JsonbIterator *it = JsonbIteratorInit(&jb->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			level = 0;
	List	   *keys = NIL;

	*is_array = JB_ROOT_IS_ARRAY(jb) && !JB_ROOT_IS_SCALAR(jb);
	if (JB_ROOT_IS_SCALAR(jb))
		httpd_fail(400, "PGRST102", "Empty or invalid json", "The body must be a JSON object or an array of objects.", NULL);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if (tok == WJB_BEGIN_OBJECT || tok == WJB_BEGIN_ARRAY)
			level++;
		else if (tok == WJB_END_OBJECT || tok == WJB_END_ARRAY)
			level--;
		else if (tok == WJB_KEY && level == (*is_array ? 2 : 1))
		{
			char	   *k = pnstrdup(v.val.string.val, v.val.string.len);
			ListCell   *lc;
			bool		seen = false;

			foreach(lc, keys)
				if (strcmp(lfirst(lc), k) == 0)
					seen = true;
			if (!seen)
				keys = lappend(keys, k);
		}
		else if (tok == WJB_ELEM && level == 1 && *is_array)
			httpd_fail(400, "PGRST102", "Empty or invalid json", "Every element of the array must be an object.", NULL);
	}
	return keys;
}

/* The request body as jsonb; 400 PGRST102 if it is not JSON. */
static Jsonb *
body_jsonb(HttpRequest *req)
{
	if (req->body.len == 0 || memchr(req->body.data, '\0', req->body.len) != NULL)
		httpd_fail(400, "PGRST102", "Empty or invalid json", "The request body is empty or holds a NUL byte.", NULL);
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(req->body.data)));
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
			parse_failure("columns", err);
		for (i = 0; i < n; i++)
			result = lappend(result, names[i]);
	}
	else
		result = keys;
	foreach(lc, result)
		(void) column_type(src, lfirst(lc));
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
	appendStringInfo(&sql, "WITH \"_w\" AS (%s RETURNING \"_t\".*) SELECT %s, count(*) FROM (SELECT %s FROM %s) \"_j\"",
					 dml, body ? aggregate_sql(req) : "NULL::text",
					 body ? select_sql(req, &written) : "1", written.from);
	run_sql(sql.data, p);
	rows = result_int8(2);
	if (body)
		check_singular(req, rows);
	httpd_add_header(req, resp, "Content-Range",
					 req->count_exact ? psprintf("*/" INT64_FORMAT, rows) : "*/*");
	if (body)
	{
		appendStringInfoString(&resp->body, result_text(1));
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
	Jsonb	   *jb = body_jsonb(req);
	bool		is_array;
	List	   *keys = body_keys(jb, &is_array);
	List	   *cols = write_columns(req, src, keys);
	Params		p = {0};
	StringInfoData dml;
	int			body_param;

	body_param = param_text(&p, req->body.data);
	initStringInfo(&dml);
	if (cols == NIL)
		appendStringInfo(&dml, "INSERT INTO %s AS \"_t\" DEFAULT VALUES", src->qualified);
	else
		appendStringInfo(&dml, "INSERT INTO %s AS \"_t\" (%s) SELECT %s FROM json_populate_recordset(NULL::%s, "
						 "CASE WHEN json_typeof($%d::json) = 'array' THEN $%d::json ELSE json_build_array($%d::json) END)",
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
				parse_failure("on_conflict", err);
			for (i = 0; i < n; i++)
			{
				(void) column_type(src, names[i]);
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
	Jsonb	   *jb = body_jsonb(req);
	bool		is_array;
	List	   *keys = body_keys(jb, &is_array);
	List	   *cols;
	Params		p = {0};
	StringInfoData dml;
	ListCell   *lc;
	int			body_param;
	char	   *where;

	if (is_array)
		httpd_fail(400, "PGRST102", "Empty or invalid json", "PATCH takes one JSON object.", NULL);
	cols = write_columns(req, src, keys);
	body_param = param_text(&p, req->body.data);
	where = where_sql(req, src, &p, NIL);
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
	appendStringInfo(&dml, " FROM json_populate_record(NULL::%s, $%d::json) AS \"_b\"%s",
					 src->qualified, body_param, where);
	finish_write(req, resp, src, dml.data, &p, 200);
}

/* DELETE /{table}?filters (refused without a filter). */
static void
delete_rows(HttpRequest *req, HttpResponse *resp, Source *src)
{
	Params		p = {0};
	char	   *where = where_sql(req, src, &p, NIL);

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
			read_source(req, resp, &src, &p, NIL);
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
				if (!reserved_key(req->params[i].key))
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
			Jsonb	   *jb = body_jsonb(req);
			bool		is_array;

			if (!JB_ROOT_IS_OBJECT(jb))
				httpd_fail(400, "PGRST102", "Empty or invalid json",
						   "The body of a function call is a JSON object of named arguments.", NULL);
			provided = body_keys(jb, &is_array);
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
		json_param = param_text(&p, json.data);
		appendStringInfo(&args, "json_to_record($%d::json) AS \"_a\"(", json_param);
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
		run_sql(sql.data, &p);
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
		read_source(req, resp, &src, &p, fn.arg_names);
		if (!retset)
			resp->status = 200;
		return;
	}
	if (retset)
		appendStringInfo(&sql, "SELECT coalesce(json_agg(\"_t\".\"_v\"), '[]')::text FROM %s%s%s AS \"_t\"(\"_v\")",
						 args.data, args.len ? " CROSS JOIN LATERAL " : "", call.data);
	else
		appendStringInfo(&sql, "SELECT coalesce(to_json(%s)::text, 'null')%s%s", call.data,
						 args.len ? " FROM " : "", args.data);
	run_sql(sql.data, &p);
	appendStringInfoString(&resp->body, result_text(1));
	resp->status = 200;
}
