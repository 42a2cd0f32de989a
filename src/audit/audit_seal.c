/*
 * audit_seal.c
 *	  Sealing: the maintenance task (and donatello.audit_seal()) that puts
 *	  committed audit records into hash-chained blocks, one chain per
 *	  organization; the part's settings and init.
 *
 * Which records are new. Every record carries the id of the transaction that
 * wrote it. A pass reads the oldest transaction still running (the xmin of
 * its snapshot): a record of an older transaction that the pass can see is
 * committed, and no more of them can appear. So the pass seals every visible
 * record with txid >= low_txid (the previous pass's xmin) not sealed yet,
 * then moves low_txid up to its own xmin; transactions at or above that
 * which it did seal (they finished while an older one still ran) are listed
 * in audit_sealed_xacts until low_txid passes them. Records of rolled-back
 * transactions are never visible, so never sealed. Order: records are sealed
 * in the order their transactions became visible to the sealer (pass by
 * pass), within a pass by transaction id, then record id.
 *
 * A block: SHA-256("donatello-audit-block-v1", org_id, block_no, prev_hash,
 * the records' content hashes in order). A block holds records of one
 * organization and one calendar month (UTC), so retention can drop a month
 * without cutting a block; at most AUDIT_BLOCK_MAX records.
 *
 * Concurrency: writers never wait for the sealer nor for each other; sealers
 * serialize on the single row of audit_seal_state (FOR UPDATE).
 *
 * Also here: the hourly task that creates the coming months' partitions.
 */
#include "postgres.h"

#include <sodium.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "donatello.h"
#include "bgworker/worker.h"
#include "audit/audit.h"

PG_FUNCTION_INFO_V1(donatello_audit_seal);

#define AUDIT_BLOCK_MAX 1000
#define SEAL_FETCH 1000

int			audit_seal_interval_ms = 1000;
int			audit_retention_minutes = 2557 * 24 * 60;	/* 7 years */

/* The open block of one organization during a pass. */
typedef struct OpenBlock
{
	pg_uuid_t	org_id;			/* hash key */
	int64		block_no;		/* number of the block being filled */
	uint8		prev_hash[AUDIT_HASH_LEN];
	crypto_hash_sha256_state st;
	int			month;			/* year * 12 + month of its records */
	int			count;
	Datum		ids[AUDIT_BLOCK_MAX];
	TimestampTz first_logged_at;
	TimestampTz last_logged_at;
} OpenBlock;

/* how often the coming months' partitions are checked (and created if missing) */
static int	partition_check_ms = 3600 * 1000;

/* The month (year * 12 + month, UTC) of a timestamp. */
static int
month_of(TimestampTz t)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (timestamp2tm(t, NULL, &tm, &fsec, NULL, NULL) != 0)
		return 0;
	return tm.tm_year * 12 + tm.tm_mon;
}

/* bytea Datum of a hash. */
static Datum
hash_datum(const uint8 *hash)
{
	bytea	   *b = palloc(VARHDRSZ + AUDIT_HASH_LEN);

	SET_VARSIZE(b, VARHDRSZ + AUDIT_HASH_LEN);
	memcpy(VARDATA(b), hash, AUDIT_HASH_LEN);
	return PointerGetDatum(b);
}

/* Start a block: its number and previous hash come from the chain's last block. */
static void
block_start(OpenBlock *b)
{
	Datum		arg = UUIDPGetDatum(&b->org_id);
	Oid			type = UUIDOID;
	bool		isnull;
	uint64		be;
	int			i;

	if (b->block_no == 0)
	{
		if (SPI_execute_with_args("SELECT block_no, block_hash FROM donatello.audit_blocks"
								  " WHERE org_id = $1 ORDER BY block_no DESC LIMIT 1",
								  1, &type, &arg, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the last audit block");
		if (SPI_processed == 1)
		{
			bytea	   *h;

			b->block_no = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) + 1;
			h = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
			if (VARSIZE_ANY_EXHDR(h) != AUDIT_HASH_LEN)
				elog(ERROR, "audit block hash has the wrong length");
			memcpy(b->prev_hash, VARDATA_ANY(h), AUDIT_HASH_LEN);
		}
		else
		{
			b->block_no = 1;
			memset(b->prev_hash, 0, AUDIT_HASH_LEN);
		}
	}
	crypto_hash_sha256_init(&b->st);
	crypto_hash_sha256_update(&b->st, (const uint8 *) "donatello-audit-block-v1", 24);
	crypto_hash_sha256_update(&b->st, b->org_id.data, UUID_LEN);
	be = 0;
	for (i = 0; i < 8; i++)
		((uint8 *) &be)[i] = (uint8) ((uint64) b->block_no >> (56 - 8 * i));
	crypto_hash_sha256_update(&b->st, (const uint8 *) &be, 8);
	crypto_hash_sha256_update(&b->st, b->prev_hash, AUDIT_HASH_LEN);
	b->count = 0;
}

/* Write the block (if it holds records) and chain the next one to it. */
static void
block_finish(OpenBlock *b)
{
	uint8		hash[AUDIT_HASH_LEN];
	Oid			types[7] = {UUIDOID, INT8OID, BYTEAOID, BYTEAOID, INT8ARRAYOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		args[7];
	int			rc;

	if (b->count == 0)
		return;
	crypto_hash_sha256_final(&b->st, hash);
	args[0] = UUIDPGetDatum(&b->org_id);
	args[1] = Int64GetDatum(b->block_no);
	args[2] = hash_datum(b->prev_hash);
	args[3] = hash_datum(hash);
	args[4] = PointerGetDatum(construct_array(b->ids, b->count, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[5] = TimestampTzGetDatum(b->first_logged_at);
	args[6] = TimestampTzGetDatum(b->last_logged_at);

	audit_internal_write = AUDIT_WRITE_SEAL;
	PG_TRY();
	{
		rc = SPI_execute_with_args("INSERT INTO donatello.audit_blocks (org_id, block_no, prev_hash, block_hash,"
								   " record_ids, first_logged_at, last_logged_at)"
								   " VALUES ($1, $2, $3, $4, $5, $6, $7)",
								   7, types, args, NULL, false, 0);
	}
	PG_FINALLY();
	{
		audit_internal_write = AUDIT_WRITE_NONE;
	}
	PG_END_TRY();
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not write an audit block");
	memcpy(b->prev_hash, hash, AUDIT_HASH_LEN);
	b->block_no++;
	block_start(b);
}

/* Add one record to its organization's open block. */
static void
block_add(OpenBlock *b, int64 id, const uint8 *record_hash, TimestampTz logged_at)
{
	int			month = month_of(logged_at);

	if (b->count > 0 && (b->count >= AUDIT_BLOCK_MAX || b->month != month))
		block_finish(b);
	if (b->count == 0)
	{
		b->month = month;
		b->first_logged_at = logged_at;
	}
	crypto_hash_sha256_update(&b->st, record_hash, AUDIT_HASH_LEN);
	b->ids[b->count++] = Int64GetDatum(id);
	b->last_logged_at = logged_at;
}

/*
 * The partition task: create the coming months' partitions. Its own unit of
 * work, so that it never holds up sealing; creating a partition locks
 * audit_log, so it gives up after a second rather than queue writers behind
 * a long transaction (it tries again at its next run).
 */
static void
audit_partition_task(void *arg pg_attribute_unused())
{
	DonatelloSavedUser saved;

	if (!donatello_extension_exists())
		return;
	donatello_begin_as_owner(&saved);
	if (SPI_execute("SET LOCAL lock_timeout = '1s'", false, 0) != SPI_OK_UTILITY ||
		SPI_execute("SELECT donatello.audit_create_partitions(pg_catalog.now(), 3)", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not create audit partitions");
	donatello_end_as_owner(&saved);
}

/*
 * One sealing pass, SPI connected, as a role that owns the trail. Returns
 * the number of records sealed.
 */
int64
audit_seal_pass(void)
{
	Datum		low;
	Datum		new_low;
	bool		isnull;
	HTAB	   *blocks;
	HASHCTL		ctl;
	Portal		portal;
	Oid			txid_type = INT8OID;
	int64		sealed = 0;
	HASH_SEQ_STATUS status;
	OpenBlock  *b;
	MemoryContext pass_cxt = CurrentMemoryContext;
	int			nabove = 0;
	int			maxabove = 64;
	Datum	   *above = palloc(sizeof(Datum) * maxabove);
	Datum		txid;

	/*
	 * One sealer at a time. Then the watermark, from a snapshot taken
	 * strictly before the cursor's (read_only = false gives the cursor a
	 * snapshot of its own): every transaction older than new_low has
	 * finished before the cursor looks, so the cursor sees all of its
	 * records if it committed.
	 */
	if (SPI_execute("SELECT low_txid FROM donatello.audit_seal_state FOR UPDATE", false, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "donatello.audit_seal_state must hold one row");
	low = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (SPI_execute("SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::bigint", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the snapshot");
	new_low = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(pg_uuid_t);
	ctl.entrysize = sizeof(OpenBlock);
	ctl.hcxt = pass_cxt;
	blocks = hash_create("donatello audit open blocks", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	portal = SPI_cursor_open_with_args(NULL,
									   "SELECT r.id, r.org_id, r.record_hash, r.logged_at, r.txid"
									   "  FROM donatello.audit_log r"
									   " WHERE r.txid >= $1"
									   "   AND NOT EXISTS (SELECT FROM donatello.audit_sealed_xacts x WHERE x.txid = r.txid)"
									   " ORDER BY r.txid, r.id",
									   1, &txid_type, &low, NULL, false, 0);
	for (;;)
	{
		uint64		i;
		uint64		n;
		SPITupleTable *tt;

		SPI_cursor_fetch(portal, true, SEAL_FETCH);
		/* block_start and block_finish run queries: keep this batch's table */
		tt = SPI_tuptable;
		n = SPI_processed;
		if (n == 0)
			break;
		for (i = 0; i < n; i++)
		{
			HeapTuple	tup = tt->vals[i];
			TupleDesc	desc = tt->tupdesc;
			int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			pg_uuid_t  *org = DatumGetUUIDP(SPI_getbinval(tup, desc, 2, &isnull));
			bytea	   *h = DatumGetByteaPP(SPI_getbinval(tup, desc, 3, &isnull));
			TimestampTz t = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
			bool		found;

			if (VARSIZE_ANY_EXHDR(h) != AUDIT_HASH_LEN)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("audit record %lld has a content hash of the wrong length", (long long) id),
						 errhint("Run donatello.audit_verify() to see what was altered.")));
			b = hash_search(blocks, org, HASH_ENTER, &found);
			if (!found)
			{
				b->block_no = 0;
				block_start(b);
			}
			block_add(b, id, (const uint8 *) VARDATA_ANY(h), t);
			sealed++;
			txid = SPI_getbinval(tup, desc, 5, &isnull);
			if (DatumGetInt64(txid) >= DatumGetInt64(new_low) &&
				(nabove == 0 || above[nabove - 1] != txid))
			{
				if (nabove == maxabove)
				{
					MemoryContext old = MemoryContextSwitchTo(pass_cxt);

					maxabove *= 2;
					above = repalloc(above, sizeof(Datum) * maxabove);
					MemoryContextSwitchTo(old);
				}
				above[nabove++] = txid;
			}
		}
		SPI_freetuptable(tt);
	}
	SPI_cursor_close(portal);

	hash_seq_init(&status, blocks);
	while ((b = hash_seq_search(&status)) != NULL)
		block_finish(b);
	hash_destroy(blocks);

	/* remember which transactions at or above the new watermark are sealed */
	if (nabove > 0)
	{
		Datum		arg = PointerGetDatum(construct_array(above, nabove, INT8OID, 8, FLOAT8PASSBYVAL,
														  TYPALIGN_DOUBLE));
		Oid			type = INT8ARRAYOID;

		if (SPI_execute_with_args("INSERT INTO donatello.audit_sealed_xacts (txid)"
								  " SELECT pg_catalog.unnest($1) ON CONFLICT DO NOTHING",
								  1, &type, &arg, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record sealed transactions");
	}
	{
		Datum		arg = new_low;
		Oid			type = INT8OID;

		if (SPI_execute_with_args("DELETE FROM donatello.audit_sealed_xacts WHERE txid < $1",
								  1, &type, &arg, NULL, false, 0) != SPI_OK_DELETE ||
			SPI_execute_with_args("UPDATE donatello.audit_seal_state SET low_txid = $1 WHERE low_txid < $1",
								  1, &type, &arg, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not move the audit sealing watermark");
	}
	return sealed;
}

/* The maintenance task: one pass, as the extension owner. */
static void
audit_seal_task(void *arg pg_attribute_unused())
{
	DonatelloSavedUser saved;

	/* the extension may have been dropped (and not yet recreated) since the worker started */
	if (!donatello_extension_exists())
		return;
	donatello_begin_as_owner(&saved);
	audit_seal_pass();
	donatello_end_as_owner(&saved);
}

/* donatello.audit_seal() returns integer: seal the committed records now. */
Datum
donatello_audit_seal(PG_FUNCTION_ARGS)
{
	DonatelloSavedUser saved;
	int64		sealed;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in audit_seal");
	donatello_begin_as_owner(&saved);
	sealed = audit_seal_pass();
	donatello_end_as_owner(&saved);
	SPI_finish();
	PG_RETURN_INT32((int32) Min(sealed, PG_INT32_MAX));
}

/* The part's init (from _PG_init): settings and the sealing task. */
void
audit_init(void)
{
	DefineCustomIntVariable("donatello.audit_seal_interval",
							"How often the maintenance worker seals committed audit records into blocks.",
							"The longest a committed record stays unsealed while the worker runs.",
							&audit_seal_interval_ms, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.audit_retention",
							"How long audit records are kept before audit_purge may drop their month.",
							"Whole months are dropped, once all of a month is older than this.",
							&audit_retention_minutes, 2557 * 24 * 60, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_MIN, NULL, NULL, NULL);
	maintenance_register_task("seal the audit trail", &audit_seal_interval_ms, audit_seal_task);
	maintenance_register_task("create audit partitions", &partition_check_ms, audit_partition_task);
}
