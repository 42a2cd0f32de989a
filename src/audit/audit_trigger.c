/*
 * audit_trigger.c
 *	  donatello.audit_trigger(): the C trigger that turns row changes into
 *	  audit records; enable_audit / disable_audit, which attach and remove it;
 *	  and donatello.audit_guard(), the append-only guard of the trail's own
 *	  tables.
 *
 * A record holds the whole row for INSERT and DELETE, and for UPDATE only the
 * columns whose value changed (old and new); an UPDATE that changes no
 * audited column writes nothing. Trigger arguments (set by enable_audit) name
 * the excluded ("exclude=col") and masked ("mask=col") columns; a column
 * whose name looks like a secret (see column_looks_secret) is always masked.
 *
 * Per trigger, the column rules, output functions, the primary key and the
 * organization and department columns are computed once and kept in a
 * backend-local hash keyed by trigger oid; an entry is rebuilt when the
 * relation's tuple descriptor changes (relcache invalidation).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/formatting.h"
#include "utils/json.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/relcache.h"

#include "donatello.h"
#include "audit/audit.h"

PG_FUNCTION_INFO_V1(donatello_audit_trigger);
PG_FUNCTION_INFO_V1(donatello_audit_guard);
PG_FUNCTION_INFO_V1(donatello_enable_audit);
PG_FUNCTION_INFO_V1(donatello_disable_audit);

#define ROW_TRIGGER_NAME "donatello_audit"
#define TRUNCATE_TRIGGER_NAME "donatello_audit_truncate"

/* How a column is recorded. */
typedef enum ColumnRule
{
	COLUMN_RECORDED,
	COLUMN_MASKED,
	COLUMN_EXCLUDED
} ColumnRule;

/* How a recorded column's value becomes JSON. */
typedef enum ColumnJson
{
	JSON_STRING,				/* the output function's text */
	JSON_BOOL,
	JSON_INTEGER,
	JSON_NUMERIC,
	JSON_FLOAT,
	JSON_JSONB,
	JSON_JSON
} ColumnJson;

typedef struct AuditColumn
{
	ColumnRule	rule;
	ColumnJson	json;
	FmgrInfo	output;
	int16		typlen;
	bool		typbyval;
} AuditColumn;

/* What audit_trigger needs to know about one trigger on one relation. */
typedef struct AuditTriggerInfo
{
	Oid			tgoid;			/* hash key */
	Oid			relid;
	TupleDesc	tupdesc;		/* the relation's descriptor it was built for */
	bool		valid;
	char	   *table_name;		/* schema-qualified */
	int			natts;
	AuditColumn *columns;
	AttrNumber	org_attnum;		/* 0: none */
	AttrNumber	department_attnum;
	int			npk;
	AttrNumber	pk_attnums[INDEX_MAX_KEYS];
	MemoryContext cxt;
} AuditTriggerInfo;

static HTAB *trigger_infos = NULL;

/* Relcache invalidation: entries of that relation (or all) are rebuilt on next use. */
static void
audit_relcache_callback(Datum arg pg_attribute_unused(), Oid relid)
{
	HASH_SEQ_STATUS status;
	AuditTriggerInfo *info;

	if (trigger_infos == NULL)
		return;
	hash_seq_init(&status, trigger_infos);
	while ((info = hash_seq_search(&status)) != NULL)
		if (relid == InvalidOid || info->relid == relid)
			info->valid = false;
}

/*
 * Does the column name look like it holds a secret (masked by default)? Any
 * name containing "secret", "token", "hash", "sealed" or "private_key", and
 * "password" itself or a name ending in "_password" (not password_changed_at).
 */
static bool
column_looks_secret(const char *name)
{
	static const char *const patterns[] = {"secret", "token", "hash", "sealed", "private_key"};
	char	   *lower = asc_tolower(name, strlen(name));
	size_t		len = strlen(lower);
	bool		found = false;
	size_t		i;

	for (i = 0; i < lengthof(patterns) && !found; i++)
		found = strstr(lower, patterns[i]) != NULL;
	if (!found)
		found = strcmp(lower, "password") == 0 ||
			(len > 9 && strcmp(lower + len - 9, "_password") == 0);
	pfree(lower);
	return found;
}

/* Is name listed in the trigger's arguments under prefix ("exclude=" / "mask=")? */
static bool
trigger_lists_column(Trigger *tg, const char *prefix, const char *name)
{
	size_t		plen = strlen(prefix);
	int			i;

	for (i = 0; i < tg->tgnargs; i++)
		if (strncmp(tg->tgargs[i], prefix, plen) == 0 && strcmp(tg->tgargs[i] + plen, name) == 0)
			return true;
	return false;
}

/* How a value of type typid becomes JSON. */
static ColumnJson
column_json_kind(Oid typid)
{
	switch (getBaseType(typid))
	{
		case BOOLOID:
			return JSON_BOOL;
		case INT2OID:
		case INT4OID:
		case INT8OID:
			return JSON_INTEGER;
		case NUMERICOID:
			return JSON_NUMERIC;
		case FLOAT4OID:
		case FLOAT8OID:
			return JSON_FLOAT;
		case JSONBOID:
			return JSON_JSONB;
		case JSONOID:
			return JSON_JSON;
		default:
			return JSON_STRING;
	}
}

/* Find a uuid column by name; 0 when there is none. */
static AttrNumber
uuid_column(TupleDesc desc, const char *name)
{
	int			i;

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && att->atttypid == UUIDOID && strcmp(NameStr(att->attname), name) == 0)
			return att->attnum;
	}
	return 0;
}

/* Build (or rebuild) the cached facts about a trigger and its relation. */
static AuditTriggerInfo *
trigger_info(TriggerData *td)
{
	Relation	rel = td->tg_relation;
	TupleDesc	desc = RelationGetDescr(rel);
	Oid			tgoid = td->tg_trigger->tgoid;
	AuditTriggerInfo *info;
	bool		found;
	MemoryContext old;
	Oid			pkoid;
	int			i;

	if (trigger_infos == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(AuditTriggerInfo);
		trigger_infos = hash_create("donatello audit triggers", 64, &ctl, HASH_ELEM | HASH_BLOBS);
		CacheRegisterRelcacheCallback(audit_relcache_callback, (Datum) 0);
	}
	info = hash_search(trigger_infos, &tgoid, HASH_ENTER, &found);
	if (found && info->valid && info->tupdesc == desc && info->natts == desc->natts)
		return info;
	if (found && info->cxt)
		MemoryContextDelete(info->cxt);

	info->cxt = AllocSetContextCreate(TopMemoryContext, "donatello audit trigger", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(info->cxt);
	info->relid = RelationGetRelid(rel);
	info->tupdesc = desc;
	info->natts = desc->natts;
	info->table_name = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												  RelationGetRelationName(rel));
	info->columns = palloc0(sizeof(AuditColumn) * Max(desc->natts, 1));
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		AuditColumn *col = &info->columns[i];
		const char *name = NameStr(att->attname);
		Oid			outfn;
		bool		varlena;

		if (att->attisdropped || trigger_lists_column(td->tg_trigger, "exclude=", name))
		{
			col->rule = COLUMN_EXCLUDED;
			continue;
		}
		col->rule = (trigger_lists_column(td->tg_trigger, "mask=", name) || column_looks_secret(name))
			? COLUMN_MASKED : COLUMN_RECORDED;
		col->json = column_json_kind(att->atttypid);
		col->typlen = att->attlen;
		col->typbyval = att->attbyval;
		getTypeOutputInfo(att->atttypid, &outfn, &varlena);
		fmgr_info_cxt(outfn, &col->output, info->cxt);
	}

	/* organizations and departments are their own org / department */
	info->org_attnum = uuid_column(desc, "org_id");
	info->department_attnum = uuid_column(desc, "department_id");
	if (strcmp(info->table_name, "donatello.organizations") == 0)
		info->org_attnum = uuid_column(desc, "id");
	if (strcmp(info->table_name, "donatello.departments") == 0)
		info->department_attnum = uuid_column(desc, "id");

	info->npk = 0;
	pkoid = RelationGetPrimaryKeyIndex(rel);
	if (OidIsValid(pkoid))
	{
		Relation	idx = relation_open(pkoid, AccessShareLock);

		info->npk = idx->rd_index->indnkeyatts;
		for (i = 0; i < info->npk; i++)
			info->pk_attnums[i] = idx->rd_index->indkey.values[i];
		relation_close(idx, AccessShareLock);
	}
	MemoryContextSwitchTo(old);
	info->valid = true;
	return info;
}

/* Push one column value as a JSON value. */
static void
push_column_value(JsonbParseState **state, AuditColumn *col, Datum value, bool isnull)
{
	JsonbValue	v;

	if (isnull)
	{
		v.type = jbvNull;
		pushJsonbValue(state, WJB_VALUE, &v);
		return;
	}
	if (col->rule == COLUMN_MASKED)
	{
		v.type = jbvString;
		v.val.string.val = AUDIT_MASK_MARKER;
		v.val.string.len = strlen(AUDIT_MASK_MARKER);
		pushJsonbValue(state, WJB_VALUE, &v);
		return;
	}
	switch (col->json)
	{
		case JSON_BOOL:
			v.type = jbvBool;
			v.val.boolean = DatumGetBool(value);
			pushJsonbValue(state, WJB_VALUE, &v);
			return;
		case JSON_JSONB:
			{
				Jsonb	   *jb = DatumGetJsonbP(value);

				v.type = jbvBinary;
				v.val.binary.data = &jb->root;
				v.val.binary.len = VARSIZE(jb) - VARHDRSZ;
				pushJsonbValue(state, WJB_VALUE, &v);
				return;
			}
		case JSON_JSON:
			{
				char	   *text = OutputFunctionCall(&col->output, value);
				Jsonb	   *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));

				v.type = jbvBinary;
				v.val.binary.data = &jb->root;
				v.val.binary.len = VARSIZE(jb) - VARHDRSZ;
				pushJsonbValue(state, WJB_VALUE, &v);
				return;
			}
		case JSON_INTEGER:
		case JSON_NUMERIC:
		case JSON_FLOAT:
			{
				char	   *text = OutputFunctionCall(&col->output, value);

				/* NaN and infinities are not JSON numbers: keep them as text */
				if (col->json == JSON_INTEGER || (strchr(text, 'N') == NULL && strchr(text, 'n') == NULL))
				{
					v.type = jbvNumeric;
					v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(text),
																		ObjectIdGetDatum(InvalidOid),
																		Int32GetDatum(-1)));
					pushJsonbValue(state, WJB_VALUE, &v);
					return;
				}
				v.type = jbvString;
				v.val.string.val = text;
				v.val.string.len = strlen(text);
				pushJsonbValue(state, WJB_VALUE, &v);
				return;
			}
		case JSON_STRING:
			{
				char	   *text = OutputFunctionCall(&col->output, value);

				v.type = jbvString;
				v.val.string.val = text;
				v.val.string.len = strlen(text);
				pushJsonbValue(state, WJB_VALUE, &v);
				return;
			}
	}
}

/* Push the column's name as an object key. */
static void
push_column_key(JsonbParseState **state, TupleDesc desc, int i)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = NameStr(TupleDescAttr(desc, i)->attname);
	k.val.string.len = strlen(k.val.string.val);
	pushJsonbValue(state, WJB_KEY, &k);
}

/* The whole row (minus excluded columns, masked ones replaced) as jsonb. */
static Jsonb *
row_to_jsonb(AuditTriggerInfo *info, TupleDesc desc, HeapTuple tuple)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;
	int			i;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (i = 0; i < desc->natts; i++)
	{
		bool		isnull;
		Datum		value;

		if (info->columns[i].rule == COLUMN_EXCLUDED)
			continue;
		value = heap_getattr(tuple, i + 1, desc, &isnull);
		push_column_key(&state, desc, i);
		push_column_value(&state, &info->columns[i], value, isnull);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/*
 * The changed columns of an UPDATE as two objects (old and new values);
 * false when no audited column changed.
 */
static bool
changed_columns(AuditTriggerInfo *info, TupleDesc desc, HeapTuple oldtup, HeapTuple newtup,
				Jsonb **old_out, Jsonb **new_out)
{
	JsonbParseState *old_state = NULL;
	JsonbParseState *new_state = NULL;
	int			changed = 0;
	int			i;

	pushJsonbValue(&old_state, WJB_BEGIN_OBJECT, NULL);
	pushJsonbValue(&new_state, WJB_BEGIN_OBJECT, NULL);
	for (i = 0; i < desc->natts; i++)
	{
		AuditColumn *col = &info->columns[i];
		bool		oldnull,
					newnull;
		Datum		oldval,
					newval;

		if (col->rule == COLUMN_EXCLUDED)
			continue;
		oldval = heap_getattr(oldtup, i + 1, desc, &oldnull);
		newval = heap_getattr(newtup, i + 1, desc, &newnull);
		if (oldnull && newnull)
			continue;
		if (!oldnull && !newnull && datum_image_eq(oldval, newval, col->typbyval, col->typlen))
			continue;
		changed++;
		push_column_key(&old_state, desc, i);
		push_column_value(&old_state, col, oldval, oldnull);
		push_column_key(&new_state, desc, i);
		push_column_value(&new_state, col, newval, newnull);
	}
	if (changed == 0)
		return false;
	*old_out = JsonbValueToJsonb(pushJsonbValue(&old_state, WJB_END_OBJECT, NULL));
	*new_out = JsonbValueToJsonb(pushJsonbValue(&new_state, WJB_END_OBJECT, NULL));
	return true;
}

/* The primary key as text: the value of a one-column key, else a JSON array. */
static char *
primary_key_text(AuditTriggerInfo *info, TupleDesc desc, HeapTuple tuple)
{
	StringInfoData buf;
	int			i;

	if (info->npk == 0)
		return NULL;
	initStringInfo(&buf);
	for (i = 0; i < info->npk; i++)
	{
		AttrNumber	attnum = info->pk_attnums[i];
		AuditColumn *col = &info->columns[attnum - 1];
		bool		isnull;
		Datum		value = heap_getattr(tuple, attnum, desc, &isnull);
		const char *text;

		if (isnull)
			text = NULL;
		else if (col->rule != COLUMN_RECORDED)
			text = AUDIT_MASK_MARKER;
		else
			text = OutputFunctionCall(&col->output, value);
		if (info->npk == 1)
			return text ? pstrdup(text) : NULL;
		appendStringInfoChar(&buf, i == 0 ? '[' : ',');
		if (text)
			escape_json(&buf, text);
		else
			appendStringInfoString(&buf, "null");
	}
	appendStringInfoChar(&buf, ']');
	return buf.data;
}

/* Read a uuid column of the row into out; false when absent or NULL. */
static bool
row_uuid(HeapTuple tuple, TupleDesc desc, AttrNumber attnum, pg_uuid_t *out)
{
	bool		isnull;
	Datum		value;

	if (attnum == 0)
		return false;
	value = heap_getattr(tuple, attnum, desc, &isnull);
	if (isnull)
		return false;
	memcpy(out, DatumGetUUIDP(value), sizeof(pg_uuid_t));
	return true;
}

/* donatello.audit_trigger(): AFTER row trigger (INSERT/UPDATE/DELETE) or AFTER TRUNCATE. */
Datum
donatello_audit_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	AuditTriggerInfo *info;
	TupleDesc	desc;
	AuditRecord rec;
	HeapTuple	row;
	HeapTuple	result;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("donatello.audit_trigger() must be fired AFTER a change"),
				 errhint("Attach it with donatello.enable_audit(table).")));

	info = trigger_info(td);
	desc = RelationGetDescr(td->tg_relation);
	audit_record_init(&rec);
	rec.table_name = info->table_name;
	rec.resource_type = info->table_name;

	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
	{
		rec.action = "truncate";
		audit_record_set_actor(&rec, true);
		audit_record_insert(&rec);
		return PointerGetDatum(NULL);
	}
	if (!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("donatello.audit_trigger() must be a row trigger, or a statement trigger for TRUNCATE")));

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
	{
		row = result = td->tg_trigtuple;
		rec.action = "insert";
		rec.new_data = row_to_jsonb(info, desc, row);
	}
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
	{
		row = result = td->tg_trigtuple;
		rec.action = "delete";
		rec.old_data = row_to_jsonb(info, desc, row);
	}
	else
	{
		row = result = td->tg_newtuple;
		rec.action = "update";
		if (!changed_columns(info, desc, td->tg_trigtuple, td->tg_newtuple, &rec.old_data, &rec.new_data))
			return PointerGetDatum(result);
	}

	if (row_uuid(row, desc, info->org_attnum, &rec.org_id))
		audit_record_set_actor(&rec, false);
	else
		audit_record_set_actor(&rec, true);
	rec.has_department = row_uuid(row, desc, info->department_attnum, &rec.department_id);
	rec.resource_id = primary_key_text(info, desc, row);
	audit_record_insert(&rec);
	return PointerGetDatum(result);
}

/*
 * donatello.audit_guard(): BEFORE trigger on the trail's own tables. Only
 * the writer (audit_log) and the sealer (audit_blocks) insert; nobody
 * updates, deletes or truncates; audit_purge drops whole partitions.
 */
Datum
donatello_audit_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	const char *table;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "donatello.audit_guard() must be called as a trigger");
	table = RelationGetRelationName(td->tg_relation);

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event) && audit_internal_write != AUDIT_WRITE_NONE)
		return PointerGetDatum(td->tg_trigtuple);

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("the audit trail is append-only: %s on %s is not allowed",
					TRIGGER_FIRED_BY_INSERT(td->tg_event) ? "INSERT" :
					TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? "UPDATE" :
					TRIGGER_FIRED_BY_DELETE(td->tg_event) ? "DELETE" : "TRUNCATE",
					table),
			 errdetail("Audit records are written only by donatello's audit writer and sealer, and removed only by donatello.audit_purge()."),
			 errhint("Use donatello.audit_event() to add an event; retention is donatello.audit_retention.")));
	PG_RETURN_NULL();
}

/* Raise unless the relation may be audited (an ordinary or partitioned table, not the trail). */
static void
check_auditable(Oid relid)
{
	char		kind = get_rel_relkind(relid);
	char	   *name = get_rel_name(relid);
	char	   *nsp = get_namespace_name(get_rel_namespace(relid));

	if (kind != RELKIND_RELATION && kind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", name),
				 errhint("Only tables can be audited.")));
	if (nsp && strcmp(nsp, "donatello") == 0 && strncmp(name, "audit_", 6) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("the audit trail's own table \"%s\" cannot be audited", name),
				 errhint("audit_verify checks the trail itself.")));
}

/* Raise unless every name in the array is a column of the relation. */
static void
append_column_args(StringInfo args, Oid relid, ArrayType *columns, const char *prefix)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i;

	deconstruct_array(columns, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (i = 0; i < n; i++)
	{
		char	   *col;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("column lists of enable_audit must not contain NULL")));
		col = TextDatumGetCString(elems[i]);
		if (get_attnum(relid, col) == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of relation \"%s\" does not exist", col, get_rel_name(relid)),
					 errhint("Name the columns to exclude or mask as they are spelled in the table.")));
		appendStringInfo(args, "%s%s", args->len > 0 ? ", " : "",
						 quote_literal_cstr(psprintf("%s%s", prefix, col)));
	}
}

static void run_ddl(const char *sql);

/* Drop donatello's audit triggers of a table, if it has them. */
static void
drop_audit_triggers(Oid relid, const char *qualified)
{
	if (OidIsValid(get_trigger_oid(relid, ROW_TRIGGER_NAME, true)))
		run_ddl(psprintf("DROP TRIGGER %s ON %s", ROW_TRIGGER_NAME, qualified));
	if (OidIsValid(get_trigger_oid(relid, TRUNCATE_TRIGGER_NAME, true)))
		run_ddl(psprintf("DROP TRIGGER %s ON %s", TRUNCATE_TRIGGER_NAME, qualified));
}

/* Run one utility statement through SPI. */
static void
run_ddl(const char *sql)
{
	if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not run \"%s\"", sql);
}

/* donatello.enable_audit(tbl regclass, exclude_columns text[], mask_columns text[]) */
Datum
donatello_enable_audit(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *qualified;
	StringInfoData args;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("enable_audit needs a table")));
	relid = PG_GETARG_OID(0);
	check_auditable(relid);
	qualified = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
										   get_rel_name(relid));
	initStringInfo(&args);
	if (!PG_ARGISNULL(1))
		append_column_args(&args, relid, PG_GETARG_ARRAYTYPE_P(1), "exclude=");
	if (!PG_ARGISNULL(2))
		append_column_args(&args, relid, PG_GETARG_ARRAYTYPE_P(2), "mask=");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in enable_audit");
	drop_audit_triggers(relid, qualified);
	run_ddl(psprintf("CREATE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW "
					 "EXECUTE FUNCTION donatello.audit_trigger(%s)", ROW_TRIGGER_NAME, qualified, args.data));
	run_ddl(psprintf("CREATE TRIGGER %s AFTER TRUNCATE ON %s FOR EACH STATEMENT "
					 "EXECUTE FUNCTION donatello.audit_trigger(%s)", TRUNCATE_TRIGGER_NAME, qualified, args.data));
	SPI_finish();
	PG_RETURN_VOID();
}

/* donatello.disable_audit(tbl regclass) */
Datum
donatello_disable_audit(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *qualified;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("disable_audit needs a table")));
	relid = PG_GETARG_OID(0);
	qualified = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
										   get_rel_name(relid));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in disable_audit");
	drop_audit_triggers(relid, qualified);
	SPI_finish();
	PG_RETURN_VOID();
}
