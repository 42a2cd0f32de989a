/*
 * audit_verify.c
 *	  donatello.audit_verify(org_id, since): recompute every record's content
 *	  hash and every block's chained hash, and report the first problem.
 *
 * Per organization, two walks:
 *	  1. the chain: blocks in order; each must follow the previous one (no
 *		 number missing, prev_hash equal to the previous block_hash); each of
 *		 its records must exist (else: deleted), appear once (else: a copy
 *		 inserted out of band), and hash to its stored hash (else: modified);
 *		 the stored hashes in the block's order must give the block hash
 *		 (else: reordered, or the block altered). Blocks of months dropped by
 *		 audit_purge are not recomputed; their stored hash still links the
 *		 chain.
 *	  2. the records in no block: a record of a transaction the sealer has
 *		 already passed was not written by the writer (inserted out of band);
 *		 a record still waiting for the sealer must match its own hash.
 *
 * Runs as the extension owner; STABLE: it reads, never writes.
 */
#include "postgres.h"

#include <sodium.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "donatello.h"
#include "audit/audit.h"

PG_FUNCTION_INFO_V1(donatello_audit_verify);

#define VERIFY_FETCH 1000

/* The outcome so far. */
typedef struct VerifyResult
{
	bool		intact;
	int64		records;
	int64		blocks;
	int64		bad_record;		/* 0: none */
	char	   *reason;
} VerifyResult;

/* The record columns, in the order record_from_row reads them. */
#define RECORD_COLUMNS \
	"r.logged_at, r.org_id, r.department_id, r.user_id, r.api_key_id, r.db_role, r.request_id," \
	" r.client_ip, r.user_agent, r.action, r.table_name, r.resource_type, r.resource_id, r.txid," \
	" r.old_data, r.new_data, r.details, r.record_hash"

/* A nullable text column as a C string. */
static const char *
text_col(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* A nullable uuid column; false when NULL. */
static bool
uuid_col(HeapTuple tup, TupleDesc desc, int col, pg_uuid_t *out)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	if (!isnull)
		memcpy(out, DatumGetUUIDP(d), sizeof(pg_uuid_t));
	return !isnull;
}

/* A nullable jsonb column. */
static Jsonb *
jsonb_col(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : DatumGetJsonbP(d);
}

/*
 * Read a record from RECORD_COLUMNS starting at column first; recompute its
 * hash and compare it with the stored one.
 */
static bool
record_hash_matches(HeapTuple tup, TupleDesc desc, int first, uint8 *stored)
{
	AuditRecord rec;
	uint8		hash[AUDIT_HASH_LEN];
	bool		isnull;
	bytea	   *h;

	memset(&rec, 0, sizeof(rec));
	rec.logged_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, first, &isnull));
	uuid_col(tup, desc, first + 1, &rec.org_id);
	rec.has_department = uuid_col(tup, desc, first + 2, &rec.department_id);
	rec.has_user = uuid_col(tup, desc, first + 3, &rec.user_id);
	rec.has_api_key = uuid_col(tup, desc, first + 4, &rec.api_key_id);
	rec.db_role = text_col(tup, desc, first + 5);
	rec.request_id = text_col(tup, desc, first + 6);
	rec.client_ip = text_col(tup, desc, first + 7);
	rec.user_agent = text_col(tup, desc, first + 8);
	rec.action = text_col(tup, desc, first + 9);
	rec.table_name = text_col(tup, desc, first + 10);
	rec.resource_type = text_col(tup, desc, first + 11);
	rec.resource_id = text_col(tup, desc, first + 12);
	rec.txid = (uint64) DatumGetInt64(SPI_getbinval(tup, desc, first + 13, &isnull));
	rec.old_data = jsonb_col(tup, desc, first + 14);
	rec.new_data = jsonb_col(tup, desc, first + 15);
	rec.details = jsonb_col(tup, desc, first + 16);
	h = DatumGetByteaPP(SPI_getbinval(tup, desc, first + 17, &isnull));
	if (isnull || VARSIZE_ANY_EXHDR(h) != AUDIT_HASH_LEN)
	{
		memset(stored, 0, AUDIT_HASH_LEN);
		return false;
	}
	memcpy(stored, VARDATA_ANY(h), AUDIT_HASH_LEN);
	audit_record_hash(&rec, hash);
	return sodium_memcmp(hash, stored, AUDIT_HASH_LEN) == 0;
}

/* Record the first problem. */
static void
verify_fail(VerifyResult *res, int64 record_id, const char *reason)
{
	if (!res->intact)
		return;
	res->intact = false;
	res->bad_record = record_id;
	res->reason = pstrdup(reason);
}

/* The block hash's fixed prefix: tag, organization, number, previous hash. */
static void
block_hash_start(crypto_hash_sha256_state *st, const pg_uuid_t *org, int64 block_no, const uint8 *prev)
{
	uint8		be[8];
	int			i;

	for (i = 0; i < 8; i++)
		be[i] = (uint8) ((uint64) block_no >> (56 - 8 * i));
	crypto_hash_sha256_init(st);
	crypto_hash_sha256_update(st, (const uint8 *) "donatello-audit-block-v1", 24);
	crypto_hash_sha256_update(st, org->data, UUID_LEN);
	crypto_hash_sha256_update(st, be, 8);
	crypto_hash_sha256_update(st, prev, AUDIT_HASH_LEN);
}

/* A 32-byte bytea column into out; false when NULL or of another length. */
static bool
hash_col(HeapTuple tup, TupleDesc desc, int col, uint8 *out)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	bytea	   *b;

	if (isnull)
		return false;
	b = DatumGetByteaPP(d);
	if (VARSIZE_ANY_EXHDR(b) != AUDIT_HASH_LEN)
		return false;
	memcpy(out, VARDATA_ANY(b), AUDIT_HASH_LEN);
	return true;
}

/* The state of the chain walk. */
typedef struct ChainWalk
{
	int64		block_no;		/* current block, 0 before the first */
	int64		first_id;		/* first record of the current block */
	bool		purged;
	int64		last_ord;
	uint8		stored_hash[AUDIT_HASH_LEN];
	crypto_hash_sha256_state st;
	bool		have_prev;
	uint8		prev_hash[AUDIT_HASH_LEN];	/* hash the next block must chain to */
} ChainWalk;

/* End of a block: its recomputed hash must equal the stored one. */
static void
chain_finish_block(ChainWalk *w, VerifyResult *res)
{
	uint8		hash[AUDIT_HASH_LEN];

	if (w->block_no == 0 || !res->intact)
		return;
	if (!w->purged)
	{
		crypto_hash_sha256_final(&w->st, hash);
		if (sodium_memcmp(hash, w->stored_hash, AUDIT_HASH_LEN) != 0)
			verify_fail(res, w->first_id,
						psprintf("block %lld: its records' hashes in order do not give the stored block hash "
								 "(records reordered, or the block altered)", (long long) w->block_no));
	}
	memcpy(w->prev_hash, w->stored_hash, AUDIT_HASH_LEN);
	w->have_prev = true;
	res->blocks++;
}

/* Walk 1: the chain of one organization. */
static void
verify_chain(const pg_uuid_t *org, bool has_since, TimestampTz since, TimestampTz purged_before,
			 VerifyResult *res)
{
	Oid			types[2] = {UUIDOID, TIMESTAMPTZOID};
	Datum		args[2];
	char		nulls[2] = {' ', has_since ? ' ' : 'n'};
	Portal		portal;
	ChainWalk	w;

	memset(&w, 0, sizeof(w));
	/* the chain starts at zeros, unless we start in its middle */
	w.have_prev = !has_since;
	args[0] = UUIDPGetDatum(org);
	args[1] = TimestampTzGetDatum(since);
	portal = SPI_cursor_open_with_args(NULL,
									   "SELECT b.block_no, b.prev_hash, b.block_hash, b.last_logged_at, u.ord, u.id,"
									   " r.id IS NOT NULL, " RECORD_COLUMNS
									   "  FROM donatello.audit_blocks b"
									   " CROSS JOIN LATERAL pg_catalog.unnest(b.record_ids) WITH ORDINALITY AS u(id, ord)"
									   "  LEFT JOIN donatello.audit_log r ON r.id = u.id"
									   " WHERE b.org_id = $1 AND ($2 IS NULL OR b.last_logged_at >= $2)"
									   " ORDER BY b.block_no, u.ord",
									   2, types, args, nulls, true, 0);
	while (res->intact)
	{
		uint64		i;

		SPI_cursor_fetch(portal, true, VERIFY_FETCH);
		if (SPI_processed == 0)
			break;
		for (i = 0; i < SPI_processed && res->intact; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int64		block_no = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			int64		ord = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
			int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));
			bool		present = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
			uint8		stored[AUDIT_HASH_LEN];

			if (block_no != w.block_no)
			{
				uint8		prev[AUDIT_HASH_LEN];
				int64		expected = w.block_no + 1;

				chain_finish_block(&w, res);
				if (!res->intact)
					break;
				if ((w.block_no != 0 || !has_since) && block_no != expected)
				{
					verify_fail(res, id, psprintf("block %lld is missing from the chain (the next block is %lld)",
												  (long long) expected, (long long) block_no));
					break;
				}
				if (!hash_col(tup, desc, 2, prev) || !hash_col(tup, desc, 3, w.stored_hash))
				{
					verify_fail(res, id, psprintf("block %lld has a malformed hash", (long long) block_no));
					break;
				}
				if (w.have_prev && sodium_memcmp(prev, w.prev_hash, AUDIT_HASH_LEN) != 0)
				{
					verify_fail(res, id, psprintf("block %lld does not chain to block %lld (prev_hash differs)",
												  (long long) block_no, (long long) w.block_no));
					break;
				}
				w.block_no = block_no;
				w.first_id = id;
				w.last_ord = 0;
				w.purged = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull)) < purged_before;
				block_hash_start(&w.st, org, block_no, prev);
			}
			if (w.purged)
				continue;
			if (ord == w.last_ord)
			{
				verify_fail(res, id, psprintf("record %lld appears twice (a copy was inserted out of band)",
											  (long long) id));
				break;
			}
			w.last_ord = ord;
			if (!present)
			{
				verify_fail(res, id, psprintf("record %lld of block %lld is missing (deleted)",
											  (long long) id, (long long) block_no));
				break;
			}
			res->records++;
			if (!record_hash_matches(tup, desc, 8, stored))
			{
				verify_fail(res, id, psprintf("record %lld was modified (its content does not match its hash)",
											  (long long) id));
				break;
			}
			crypto_hash_sha256_update(&w.st, stored, AUDIT_HASH_LEN);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	if (res->intact)
		chain_finish_block(&w, res);
}

/* Walk 2: records of one organization in no block. */
static void
verify_unsealed(const pg_uuid_t *org, bool has_since, TimestampTz since, VerifyResult *res)
{
	Oid			types[2] = {UUIDOID, TIMESTAMPTZOID};
	Datum		args[2];
	char		nulls[2] = {' ', has_since ? ' ' : 'n'};
	Portal		portal;

	args[0] = UUIDPGetDatum(org);
	args[1] = TimestampTzGetDatum(since);
	portal = SPI_cursor_open_with_args(NULL,
									   "SELECT r.id, r.txid >= s.low_txid AND NOT EXISTS"
									   "        (SELECT FROM donatello.audit_sealed_xacts x WHERE x.txid = r.txid), "
									   RECORD_COLUMNS
									   "  FROM donatello.audit_log r"
									   " CROSS JOIN donatello.audit_seal_state s"
									   "  LEFT JOIN (SELECT u.id FROM donatello.audit_blocks b,"
									   "             pg_catalog.unnest(b.record_ids) AS u(id) WHERE b.org_id = $1) sealed"
									   "         ON sealed.id = r.id"
									   " WHERE r.org_id = $1 AND ($2 IS NULL OR r.logged_at >= $2) AND sealed.id IS NULL"
									   " ORDER BY r.id",
									   2, types, args, nulls, true, 0);
	while (res->intact)
	{
		uint64		i;

		SPI_cursor_fetch(portal, true, VERIFY_FETCH);
		if (SPI_processed == 0)
			break;
		for (i = 0; i < SPI_processed && res->intact; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			bool		pending = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
			uint8		stored[AUDIT_HASH_LEN];

			res->records++;
			if (!pending)
				verify_fail(res, id,
							psprintf("record %lld is in no sealed block although its transaction was sealed "
									 "(inserted out of band)", (long long) id));
			else if (!record_hash_matches(tup, desc, 3, stored))
				verify_fail(res, id, psprintf("record %lld (not sealed yet) was modified (its content does not "
											  "match its hash)", (long long) id));
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
}

/* donatello.audit_verify(org_id uuid, since timestamptz) */
Datum
donatello_audit_verify(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	VerifyResult res = {true, 0, 0, 0, NULL};
	bool		has_since = !PG_ARGISNULL(1);
	TimestampTz since = has_since ? PG_GETARG_TIMESTAMPTZ(1) : 0;
	TimestampTz purged_before = DT_NOBEGIN;
	DonatelloSavedUser saved;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	pg_uuid_t  *orgs;
	int			norgs,
				i;
	bool		isnull;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "audit_verify must return a record");
	tupdesc = BlessTupleDesc(tupdesc);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in audit_verify");
	donatello_begin_as_owner(&saved);

	if (SPI_execute("SELECT max(purged_before) FROM donatello.audit_purges", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read audit purges");
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			purged_before = DatumGetTimestampTz(d);
	}

	if (!PG_ARGISNULL(0))
	{
		orgs = palloc(sizeof(pg_uuid_t));
		memcpy(orgs, PG_GETARG_UUID_P(0), sizeof(pg_uuid_t));
		norgs = 1;
	}
	else
	{
		if (SPI_execute("SELECT org_id FROM donatello.audit_blocks UNION"
						" SELECT DISTINCT org_id FROM donatello.audit_log ORDER BY 1", true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not list the audited organizations");
		norgs = (int) SPI_processed;
		orgs = palloc(sizeof(pg_uuid_t) * Max(norgs, 1));
		for (i = 0; i < norgs; i++)
			memcpy(&orgs[i], DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)),
				   sizeof(pg_uuid_t));
	}

	for (i = 0; i < norgs && res.intact; i++)
	{
		verify_chain(&orgs[i], has_since, since, purged_before, &res);
		if (res.intact)
			verify_unsealed(&orgs[i], has_since, since, &res);
	}

	donatello_end_as_owner(&saved);

	values[0] = BoolGetDatum(res.intact);
	values[1] = Int64GetDatum(res.records);
	values[2] = Int64GetDatum(res.blocks);
	values[3] = Int64GetDatum(res.bad_record);
	nulls[3] = res.intact;
	nulls[4] = res.intact;
	values[4] = res.intact ? (Datum) 0 : CStringGetTextDatum(res.reason);
	/* SPI_copytuple puts the result outside SPI's memory, which SPI_finish frees */
	{
		HeapTuple	tuple = SPI_copytuple(heap_form_tuple(tupdesc, values, nulls));

		SPI_finish();
		PG_RETURN_DATUM(HeapTupleGetDatum(tuple));
	}
}
