/*
 * httpd_query.c
 *	  From query string to checked SQL and back, for relations and functions
 *	  alike: the exposed schema, columns, filters, select=, order=, ranges,
 *	  running a statement with a saved plan, and shaping the rows as JSON.
 *	  Writes are in httpd_relation.c, function calls in httpd_rpc.c.
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

#include "bgworker/httpd/httpd_query.h"


/* Add a text parameter; returns its number. */
int
hq_param_text(Params *p, const char *value)
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
hq_param_text_array(Params *p, char **items, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	int			i;
	int			num;

	for (i = 0; i < n; i++)
		elems[i] = CStringGetTextDatum(items[i]);
	num = hq_param_text(p, "");
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
Oid
hq_column_type(Source *src, const char *name)
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
hq_qualified_column(Source *src, const char *name, Oid *type)
{
	Oid			t = hq_column_type(src, name);

	if (type)
		*type = t;
	return psprintf("\"_t\".%s", quote_identifier(name));
}

/* SQL for one condition tree, values as parameters. */
static void
hq_condition_sql(Source *src, HpCond *c, Params *p, StringInfo out)
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
			hq_condition_sql(src, c->children[i], p, out);
		}
	}
	else
	{
		Oid			type;
		char	   *col = hq_qualified_column(src, c->column, &type);
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
				appendStringInfo(out, "%s %s $%d::%s", col, cmp[c->op], hq_param_text(p, c->value), tname);
				break;
			case HP_LIKE:
				appendStringInfo(out, "%s::text LIKE $%d", col, hq_param_text(p, c->value));
				break;
			case HP_ILIKE:
				appendStringInfo(out, "%s::text ILIKE $%d", col, hq_param_text(p, c->value));
				break;
			case HP_MATCH:
				appendStringInfo(out, "%s::text ~ $%d", col, hq_param_text(p, c->value));
				break;
			case HP_IMATCH:
				appendStringInfo(out, "%s::text ~* $%d", col, hq_param_text(p, c->value));
				break;
			case HP_IN:
				appendStringInfo(out, "%s = ANY($%d::%s[])", col,
								 hq_param_text_array(p, c->list, c->nlist), tname);
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
				appendStringInfo(out, "%s @> $%d::%s", col, hq_param_text(p, c->value), tname);
				break;
			case HP_CD:
				appendStringInfo(out, "%s <@ $%d::%s", col, hq_param_text(p, c->value), tname);
				break;
			case HP_OV:
				appendStringInfo(out, "%s && $%d::%s", col, hq_param_text(p, c->value), tname);
				break;
		}
	}
	appendStringInfoChar(out, ')');
}

/* Is this query-string key one of PostgREST's reserved words? */
bool
hq_reserved_key(const char *key)
{
	return strcmp(key, "select") == 0 || strcmp(key, "order") == 0 || strcmp(key, "limit") == 0 ||
		strcmp(key, "offset") == 0 || strcmp(key, "columns") == 0 || strcmp(key, "on_conflict") == 0;
}

/* Fail with PostgREST's parse error. */
void
hq_parse_failure(const char *what, const char *err)
{
	httpd_fail(400, "PGRST100", psprintf("\"failed to parse %s parameter\"", what), err,
			   "See docs/http.md for the grammar of select=, order= and filters.");
}

/*
 * The WHERE clause from the query string's filters (skipping reserved keys
 * and, for functions, the arguments in skip[]). Empty string: no filter.
 */
char *
hq_where_sql(HttpRequest *req, Source *src, Params *p, List *skip)
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

		if (hq_reserved_key(key))
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
			hq_parse_failure("filter", err);
		appendStringInfoString(&out, out.len ? " AND " : " WHERE ");
		hq_condition_sql(src, cond, p, &out);
	}
	return out.data;
}

/* The select list ("_t".* by default). */
char *
hq_select_sql(HttpRequest *req, Source *src)
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
		hq_parse_failure("select", err);
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
		appendStringInfoString(&out, hq_qualified_column(src, items[i].column, NULL));
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
hq_order_sql(HttpRequest *req, Source *src)
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
		hq_parse_failure("order", err);
	initStringInfo(&out);
	appendStringInfoString(&out, " ORDER BY ");
	for (i = 0; i < n; i++)
		appendStringInfo(&out, "%s%s%s%s", i ? ", " : "", hq_qualified_column(src, items[i].column, NULL),
						 items[i].descending ? " DESC" : " ASC",
						 items[i].nulls == 1 ? " NULLS FIRST" : items[i].nulls == 2 ? " NULLS LAST" : "");
	return out.data;
}

/* limit= and offset= (or a Range: a-b header); -1 limit: none. */
static void
hq_read_range(HttpRequest *req, long *limit, long *offset)
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
		hq_parse_failure("limit", "limit must be a non-negative integer");
	if (o != NULL && !hp_parse_nonnegative(o, offset))
		hq_parse_failure("offset", "offset must be a non-negative integer");
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
uint64
hq_run_sql(const char *sql, Params *p)
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
char *
hq_result_text(int col)
{
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col);
}

/* int8 of column col of the first result row. */
int64
hq_result_int8(int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? 0 : DatumGetInt64(d);
}

/* The JSON aggregate of "_j" rows: the array, or its one element for vnd.pgrst.object. */
const char *
hq_aggregate_sql(HttpRequest *req)
{
	return req->accept_object ? "coalesce(pg_catalog.json_agg(\"_j\")->0, 'null')::text"
		: "coalesce(pg_catalog.json_agg(\"_j\"), '[]')::text";
}

/* 406 PGRST116 unless exactly one row (vnd.pgrst.object). */
void
hq_check_singular(HttpRequest *req, int64 rows)
{
	if (req->accept_object && rows != 1)
		httpd_fail(406, "PGRST116", "JSON object requested, multiple (or no) rows returned",
				   psprintf("The result contains " INT64_FORMAT " rows", rows), NULL);
}

/* Content-Range: first-last/total, or star-slash-total when empty. */
static void
hq_content_range(HttpRequest *req, HttpResponse *resp, long offset, int64 rows, int64 total)
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
void
hq_read_source(HttpRequest *req, HttpResponse *resp, Source *src, Params *p, List *skip)
{
	long		limit,
				offset;
	char	   *where = hq_where_sql(req, src, p, skip);
	char	   *sel = hq_select_sql(req, src);
	char	   *order = hq_order_sql(req, src);
	StringInfoData sql;
	int64		rows,
				total = -1;

	hq_read_range(req, &limit, &offset);
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT %s, pg_catalog.count(*)", hq_aggregate_sql(req));
	if (req->count_exact)
		appendStringInfo(&sql, ", (SELECT pg_catalog.count(*) FROM %s%s)", src->from, where);
	appendStringInfo(&sql, " FROM (SELECT %s FROM %s%s%s", sel, src->from, where, order);
	if (limit >= 0)
		appendStringInfo(&sql, " LIMIT $%d::bigint", hq_param_text(p, psprintf("%ld", limit)));
	if (offset > 0)
		appendStringInfo(&sql, " OFFSET $%d::bigint", hq_param_text(p, psprintf("%ld", offset)));
	appendStringInfoString(&sql, ") \"_j\"");

	hq_run_sql(sql.data, p);
	rows = hq_result_int8(2);
	if (req->count_exact)
		total = hq_result_int8(3);
	hq_check_singular(req, rows);
	appendStringInfoString(&resp->body, hq_result_text(1));
	hq_content_range(req, resp, offset, rows, total);
	resp->status = (total >= 0 && rows < total && !req->accept_object) ? 206 : 200;
}

/* Keys of a JSON object, or the union of the keys of an array's objects, in order. */
List *
hq_body_keys(Jsonb *jb, bool *is_array)
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
Jsonb *
hq_body_jsonb(HttpRequest *req)
{
	if (req->body.len == 0 || memchr(req->body.data, '\0', req->body.len) != NULL)
		httpd_fail(400, "PGRST102", "Empty or invalid json", "The request body is empty or holds a NUL byte.", NULL);
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(req->body.data)));
}

