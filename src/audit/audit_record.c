/*
 * audit_record.c
 *	  One audit record: who (request.jwt.claims and the database role), from
 *	  where (request.* settings and the request.headers JSON, as PostgREST
 *	  sets them), its SHA-256 content hash, and its insert into
 *	  donatello.audit_log.
 *
 * The content hash covers every column except id (the block chain fixes the
 * order) in a fixed, length-prefixed encoding: audit_verify recomputes it with
 * the same function. jsonb columns are hashed in their binary form, which is
 * canonical (keys sorted, no duplicates).
 *
 * The insert runs as the extension owner, straight into the month's
 * partition (heap insert and index entries, no executor plan); only when that
 * partition is missing does it go through a saved SPI plan on audit_log, which
 * the append-only guard lets through because audit_internal_write is set for
 * exactly that statement. Parsed claims and headers are kept with a copy of
 * the raw setting and parsed again only when it changes.
 */
#include "postgres.h"

#include <sodium.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "access/table.h"
#include "access/tableam.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "catalog/namespace.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "donatello.h"
#include "audit/audit.h"
#include "tenancy/claims.h"

AuditWriteKind audit_internal_write = AUDIT_WRITE_NONE;

/* The parts of request.jwt.claims and request.headers that records carry. */
typedef struct RequestContext
{
	char	   *claims_raw;		/* copies of the settings, TopMemoryContext */
	char	   *headers_raw;
	bool		has_api_key;
	pg_uuid_t	api_key_id;
	char	   *header_request_id;
	char	   *header_client_ip;
	char	   *header_user_agent;
} RequestContext;

static RequestContext request_context = {0};
static SPIPlanPtr insert_plan = NULL;
static int	insert_plan_month = 0;
static Oid	insert_plan_relid = InvalidOid;
static Oid	cached_role = InvalidOid;
static char *cached_role_name = NULL;

/* A record with nothing set but the time and the transaction. */
void
audit_record_init(AuditRecord *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->logged_at = GetCurrentStatementStartTimestamp();
	rec->txid = U64FromFullTransactionId(GetTopFullTransactionId());
}

/* A string of a JSON object as a TopMemoryContext C string, or NULL. */
static char *
json_string_member(Jsonb *jb, const char *key, int max_len)
{
	JsonbValue	v;
	int			len;

	if (!getKeyJsonValueFromContainer(&jb->root, key, strlen(key), &v) || v.type != jbvString)
		return NULL;
	len = Min(v.val.string.len, max_len);
	return MemoryContextStrdup(TopMemoryContext, pnstrdup(v.val.string.val, len));
}

/* Parse a setting holding a JSON object; NULL when unset, empty or not an object. */
static Jsonb *
parse_json_setting(const char *raw)
{
	Jsonb	   *jb;

	if (raw == NULL || raw[0] == '\0')
		return NULL;
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(raw)));
	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		return NULL;
	return jb;
}

/* Refresh the key_id claim and the headers when their settings changed. */
static void
request_context_refresh(void)
{
	const char *claims = GetConfigOption("request.jwt.claims", true, false);
	const char *headers = GetConfigOption("request.headers", true, false);

	if (claims == NULL)
		claims = "";
	if (headers == NULL)
		headers = "";

	if (request_context.claims_raw == NULL || strcmp(claims, request_context.claims_raw) != 0)
	{
		Jsonb	   *jb = parse_json_setting(claims);
		char	   *key = NULL;

		request_context.has_api_key = false;
		if (jb != NULL)
			key = json_string_member(jb, "key_id", 64);
		if (key != NULL)
		{
			/* a key id that is not a uuid is not recorded rather than refused */
			if (donatello_looks_like_uuid(key, strlen(key)))
			{
				memcpy(&request_context.api_key_id,
					   DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(key))),
					   sizeof(pg_uuid_t));
				request_context.has_api_key = true;
			}
			pfree(key);
		}
		if (request_context.claims_raw)
			pfree(request_context.claims_raw);
		request_context.claims_raw = MemoryContextStrdup(TopMemoryContext, claims);
	}

	if (request_context.headers_raw == NULL || strcmp(headers, request_context.headers_raw) != 0)
	{
		Jsonb	   *jb = parse_json_setting(headers);

		if (request_context.header_request_id)
			pfree(request_context.header_request_id);
		if (request_context.header_client_ip)
			pfree(request_context.header_client_ip);
		if (request_context.header_user_agent)
			pfree(request_context.header_user_agent);
		request_context.header_request_id = jb ? json_string_member(jb, "x-request-id", 200) : NULL;
		request_context.header_client_ip = NULL;
		if (jb)
		{
			char	   *xff = json_string_member(jb, "x-forwarded-for", 200);

			if (xff != NULL)
			{
				/* the first address is the client's */
				char	   *comma = strchr(xff, ',');

				if (comma)
					*comma = '\0';
				request_context.header_client_ip = MemoryContextStrdup(TopMemoryContext,
																	   pchomp(xff));
				pfree(xff);
			}
			else
				request_context.header_client_ip = json_string_member(jb, "x-real-ip", 200);
		}
		request_context.header_user_agent = jb ? json_string_member(jb, "user-agent", 512) : NULL;
		if (request_context.headers_raw)
			pfree(request_context.headers_raw);
		request_context.headers_raw = MemoryContextStrdup(TopMemoryContext, headers);
	}
}

/* A setting's value, or NULL when unset or empty. */
static const char *
nonempty_setting(const char *name)
{
	const char *v = GetConfigOption(name, true, false);

	return (v == NULL || v[0] == '\0') ? NULL : v;
}

/* The current principal's organization (the "org" claim); false if none. */
bool
audit_principal_org(pg_uuid_t *out)
{
	return donatello_claims_org_id(out);
}

/*
 * Fill in the actor and the request context: user id and API key id from
 * the claims, the role outside any SECURITY DEFINER function, request id and
 * client address from request.id / request.ip or the headers. With
 * org_from_principal the organization is the principal's (else left as set).
 */
void
audit_record_set_actor(AuditRecord *rec, bool org_from_principal)
{
	Oid			role = GetOuterUserId();
	const char *v;

	rec->has_user = donatello_claims_user_id(&rec->user_id);
	if (org_from_principal && !donatello_claims_org_id(&rec->org_id))
		memset(&rec->org_id, 0, sizeof(pg_uuid_t));

	request_context_refresh();
	rec->has_api_key = request_context.has_api_key;
	if (rec->has_api_key)
		rec->api_key_id = request_context.api_key_id;

	if (role != cached_role || cached_role_name == NULL)
	{
		char	   *name = GetUserNameFromId(role, false);

		if (cached_role_name)
			pfree(cached_role_name);
		cached_role_name = MemoryContextStrdup(TopMemoryContext, name);
		cached_role = role;
	}
	rec->db_role = cached_role_name;

	v = nonempty_setting("request.id");
	rec->request_id = v ? v : request_context.header_request_id;
	v = nonempty_setting("request.ip");
	rec->client_ip = v ? v : request_context.header_client_ip;
	rec->user_agent = request_context.header_user_agent;
}

/* Hash one field: a tag byte, then -1 for NULL or a 4-byte length and the bytes. */
static void
hash_field(crypto_hash_sha256_state *st, uint8 tag, const void *data, int32 len)
{
	uint8		head[5];

	head[0] = tag;
	head[1] = (uint8) ((uint32) len >> 24);
	head[2] = (uint8) ((uint32) len >> 16);
	head[3] = (uint8) ((uint32) len >> 8);
	head[4] = (uint8) len;
	crypto_hash_sha256_update(st, head, sizeof(head));
	if (data != NULL && len > 0)
		crypto_hash_sha256_update(st, data, len);
}

/* Hash a C string field (NULL allowed). */
static void
hash_text(crypto_hash_sha256_state *st, uint8 tag, const char *s)
{
	hash_field(st, tag, s, s ? (int32) strlen(s) : -1);
}

/* Hash a 64-bit value big-endian. */
static void
hash_u64(crypto_hash_sha256_state *st, uint8 tag, uint64 v)
{
	uint8		b[8];
	int			i;

	for (i = 0; i < 8; i++)
		b[i] = (uint8) (v >> (56 - 8 * i));
	hash_field(st, tag, b, 8);
}

/* Hash a jsonb field in its binary form (NULL allowed). */
static void
hash_jsonb(crypto_hash_sha256_state *st, uint8 tag, Jsonb *jb)
{
	if (jb == NULL)
		hash_field(st, tag, NULL, -1);
	else
		hash_field(st, tag, VARDATA_ANY(jb), VARSIZE_ANY_EXHDR(jb));
}

/* The content hash of a record: SHA-256 over every field but the id. */
void
audit_record_hash(const AuditRecord *rec, uint8 *out)
{
	crypto_hash_sha256_state st;

	crypto_hash_sha256_init(&st);
	crypto_hash_sha256_update(&st, (const uint8 *) "donatello-audit-v1", 18);
	hash_u64(&st, 1, (uint64) rec->logged_at);
	hash_field(&st, 2, rec->org_id.data, UUID_LEN);
	hash_field(&st, 3, rec->has_department ? rec->department_id.data : NULL,
			   rec->has_department ? UUID_LEN : -1);
	hash_field(&st, 4, rec->has_user ? rec->user_id.data : NULL, rec->has_user ? UUID_LEN : -1);
	hash_field(&st, 5, rec->has_api_key ? rec->api_key_id.data : NULL,
			   rec->has_api_key ? UUID_LEN : -1);
	hash_text(&st, 6, rec->db_role);
	hash_text(&st, 7, rec->request_id);
	hash_text(&st, 8, rec->client_ip);
	hash_text(&st, 9, rec->user_agent);
	hash_text(&st, 10, rec->action);
	hash_text(&st, 11, rec->table_name);
	hash_text(&st, 12, rec->resource_type);
	hash_text(&st, 13, rec->resource_id);
	hash_u64(&st, 14, rec->txid);
	hash_jsonb(&st, 15, rec->old_data);
	hash_jsonb(&st, 16, rec->new_data);
	hash_jsonb(&st, 17, rec->details);
	crypto_hash_sha256_final(&st, out);
}

#define INSERT_NARGS 19

/*
 * The saved plan of the insert for the record's time. Inserting into the
 * month's partition directly spares the executor the partition routing it
 * would otherwise set up for every statement; the plan is kept per backend
 * for the current month. Without that month's partition (the maintenance
 * worker creates them ahead), the plan targets audit_log and the record goes
 * to the default partition.
 */
static SPIPlanPtr
audit_insert_plan(TimestampTz logged_at)
{
	static const Oid types[INSERT_NARGS] = {
		TIMESTAMPTZOID, UUIDOID, UUIDOID, UUIDOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, JSONBOID, JSONBOID, JSONBOID, BYTEAOID, INT8OID
	};
	struct pg_tm tm;
	fsec_t		fsec;
	int			month = 0;
	char		target[NAMEDATALEN];
	Oid			nsp;
	Oid			partition;
	SPIPlanPtr	plan;

	if (timestamp2tm(logged_at, NULL, &tm, &fsec, NULL, NULL) == 0)
		month = tm.tm_year * 12 + tm.tm_mon;

	/* the cached plan, while its partition still exists */
	nsp = get_namespace_oid("donatello", false);
	snprintf(target, sizeof(target), "audit_log_%04d%02d", tm.tm_year, tm.tm_mon);
	partition = month ? get_relname_relid(target, nsp) : InvalidOid;
	if (insert_plan != NULL && insert_plan_month == month && insert_plan_relid == partition)
		return insert_plan;

	if (insert_plan != NULL)
	{
		SPI_freeplan(insert_plan);
		insert_plan = NULL;
	}
	plan = SPI_prepare(psprintf("INSERT INTO donatello.%s (logged_at, org_id, department_id, user_id,"
								" api_key_id, db_role, request_id, client_ip, user_agent, action, table_name,"
								" resource_type, resource_id, txid, old_data, new_data, details, record_hash, id)"
								" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,"
								" $16, $17, $18, $19)",
								OidIsValid(partition) ? target : "audit_log"),
					   INSERT_NARGS, (Oid *) types);
	if (plan == NULL)
		elog(ERROR, "could not prepare the audit insert: %s", SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	insert_plan = plan;
	insert_plan_month = month;
	insert_plan_relid = partition;
	return insert_plan;
}

/* Set a text argument (NULL allowed). */
static void
set_text_arg(Datum *values, char *nulls, int i, const char *s)
{
	values[i] = s ? CStringGetTextDatum(s) : (Datum) 0;
	nulls[i] = s ? ' ' : 'n';
}

/* Set a uuid argument, or NULL when absent. */
static void
set_uuid_arg(Datum *values, char *nulls, int i, bool present, pg_uuid_t *u)
{
	values[i] = present ? UUIDPGetDatum(u) : (Datum) 0;
	nulls[i] = present ? ' ' : 'n';
}

/* Set a jsonb argument (NULL allowed). */
static void
set_jsonb_arg(Datum *values, char *nulls, int i, Jsonb *jb)
{
	values[i] = jb ? JsonbPGetDatum(jb) : (Datum) 0;
	nulls[i] = jb ? ' ' : 'n';
}

/* audit_log's columns, in the order of the insert's arguments */
static const char *const insert_columns[INSERT_NARGS] = {
	"logged_at", "org_id", "department_id", "user_id", "api_key_id", "db_role", "request_id",
	"client_ip", "user_agent", "action", "table_name", "resource_type", "resource_id", "txid",
	"old_data", "new_data", "details", "record_hash", "id"
};

/*
 * Insert straight into the month's partition: heap insert and index entries,
 * without an executor plan (no plan start-up, no partition-constraint check:
 * the partition is chosen by the record's own time). The append-only guard
 * trigger does not fire; this is the writer it lets through. False when the
 * partition's columns are not audit_log's (the caller then uses the plan).
 */
static bool
direct_insert(Oid partition, Datum *values, char *nulls)
{
	Relation	rel = table_open(partition, RowExclusiveLock);
	TupleDesc	desc = RelationGetDescr(rel);
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	int			i,
				j;

	if (desc->natts != INSERT_NARGS)
	{
		table_close(rel, NoLock);
		return false;
	}
	estate = CreateExecutorState();
	slot = ExecInitExtraTupleSlot(estate, desc, &TTSOpsVirtual);
	ExecClearTuple(slot);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		for (j = 0; j < INSERT_NARGS; j++)
			if (!att->attisdropped && strcmp(NameStr(att->attname), insert_columns[j]) == 0)
				break;
		if (j == INSERT_NARGS)
		{
			ExecResetTupleTable(estate->es_tupleTable, false);
			FreeExecutorState(estate);
			table_close(rel, NoLock);
			return false;
		}
		slot->tts_values[i] = values[j];
		slot->tts_isnull[i] = nulls[j] == 'n';
	}
	ExecStoreVirtualTuple(slot);

	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	simple_table_tuple_insert(rel, slot);
	if (rri->ri_NumIndices > 0)
		ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL);
	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	return true;
}

/* The month's partition of audit_log for a time, or InvalidOid if there is none. */
static Oid
partition_for(TimestampTz logged_at, Oid nsp)
{
	struct pg_tm tm;
	fsec_t		fsec;
	char		name[NAMEDATALEN];

	if (timestamp2tm(logged_at, NULL, &tm, &fsec, NULL, NULL) != 0)
		return InvalidOid;
	snprintf(name, sizeof(name), "audit_log_%04d%02d", tm.tm_year, tm.tm_mon);
	return get_relname_relid(name, nsp);
}

/*
 * Hash the record and insert it, as the owner; returns its id. Normally a
 * direct insert into the month's partition; through the cached SPI plan when
 * that partition does not exist (the record then goes to the default
 * partition).
 */
int64
audit_record_insert(AuditRecord *rec)
{
	Datum		values[INSERT_NARGS];
	char		nulls[INSERT_NARGS];
	uint8		hash[AUDIT_HASH_LEN];
	bytea	   *hash_bytes;
	DonatelloSavedUser saved;
	Oid			nsp = get_namespace_oid("donatello", false);
	Oid			sequence = get_relname_relid("audit_log_id_seq", nsp);
	Oid			partition;
	int64		id;
	int			rc;

	if (!OidIsValid(sequence))
		elog(ERROR, "sequence donatello.audit_log_id_seq does not exist");
	audit_record_hash(rec, hash);
	hash_bytes = palloc(VARHDRSZ + AUDIT_HASH_LEN);
	SET_VARSIZE(hash_bytes, VARHDRSZ + AUDIT_HASH_LEN);
	memcpy(VARDATA(hash_bytes), hash, AUDIT_HASH_LEN);

	memset(nulls, ' ', sizeof(nulls));
	values[0] = TimestampTzGetDatum(rec->logged_at);
	values[1] = UUIDPGetDatum(&rec->org_id);
	set_uuid_arg(values, nulls, 2, rec->has_department, &rec->department_id);
	set_uuid_arg(values, nulls, 3, rec->has_user, &rec->user_id);
	set_uuid_arg(values, nulls, 4, rec->has_api_key, &rec->api_key_id);
	set_text_arg(values, nulls, 5, rec->db_role);
	set_text_arg(values, nulls, 6, rec->request_id);
	set_text_arg(values, nulls, 7, rec->client_ip);
	set_text_arg(values, nulls, 8, rec->user_agent);
	set_text_arg(values, nulls, 9, rec->action);
	set_text_arg(values, nulls, 10, rec->table_name);
	set_text_arg(values, nulls, 11, rec->resource_type);
	set_text_arg(values, nulls, 12, rec->resource_id);
	values[13] = Int64GetDatum((int64) rec->txid);
	set_jsonb_arg(values, nulls, 14, rec->old_data);
	set_jsonb_arg(values, nulls, 15, rec->new_data);
	set_jsonb_arg(values, nulls, 16, rec->details);
	values[17] = PointerGetDatum(hash_bytes);

	/* errors unwind through transaction abort, which restores the user */
	donatello_begin_as_owner(&saved);
	id = nextval_internal(sequence, false);
	values[18] = Int64GetDatum(id);
	partition = partition_for(rec->logged_at, nsp);
	if (OidIsValid(partition) && direct_insert(partition, values, nulls))
	{
		donatello_end_as_owner(&saved);
		return id;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in the audit writer");
	audit_internal_write = AUDIT_WRITE_RECORD;
	PG_TRY();
	{
		rc = SPI_execute_plan(audit_insert_plan(rec->logged_at), values, nulls, false, 1);
		if (rc != SPI_OK_INSERT || SPI_processed != 1)
			elog(ERROR, "audit insert failed: %s", SPI_result_code_string(rc));
	}
	PG_FINALLY();
	{
		audit_internal_write = AUDIT_WRITE_NONE;
	}
	PG_END_TRY();
	SPI_finish();
	donatello_end_as_owner(&saved);
	return id;
}
