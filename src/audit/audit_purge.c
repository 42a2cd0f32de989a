/*
 * audit_purge.c
 *	  donatello.audit_purge(): retention. Drops whole monthly partitions of
 *	  audit_log whose month ended more than donatello.audit_retention ago,
 *	  after sealing what is committed; records each drop in audit_purges and
 *	  as an "audit.purge" event in the trail of every organization that had
 *	  records there.
 *
 * Blocks never span two months (audit_seal.c), so a dropped month takes
 * whole blocks with it; audit_verify does not recompute blocks older than
 * the latest purge but still follows their stored hashes, so what remains
 * verifies. The append-only guard lets only this function drop partitions
 * (DROP TABLE fires no row trigger; a partition dropped by hand shows up in
 * audit_verify as deleted records).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "donatello.h"
#include "audit/audit.h"

PG_FUNCTION_INFO_V1(donatello_audit_purge);

/* Write one "audit.purge" event per organization that had records in the partition. */
static void
record_purge_events(const char *part, TimestampTz purged_before)
{
	uint64		i;
	uint64		n;
	SPITupleTable *tt;

	if (SPI_execute(psprintf("SELECT org_id, count(*) FROM donatello.%s GROUP BY org_id ORDER BY org_id",
							 quote_identifier(part)), true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not count the records of %s", part);
	tt = SPI_tuptable;
	n = SPI_processed;
	for (i = 0; i < n; i++)
	{
		AuditRecord rec;
		bool		isnull;
		int64		count = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));

		audit_record_init(&rec);
		audit_record_set_actor(&rec, false);
		memcpy(&rec.org_id, DatumGetUUIDP(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull)),
			   sizeof(pg_uuid_t));
		rec.action = "audit.purge";
		rec.resource_type = "audit_partition";
		rec.resource_id = part;
		rec.details = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(
																				   psprintf("{\"partition\": \"%s\", \"purged_before\": \"%s\", \"records\": " INT64_FORMAT "}",
																							part, timestamptz_to_str(purged_before), count))));
		audit_record_insert(&rec);
	}
}

/* donatello.audit_purge() returns integer: partitions dropped. */
Datum
donatello_audit_purge(PG_FUNCTION_ARGS)
{
	DonatelloSavedUser saved;
	TimestampTz cutoff = TimestampTzPlusMilliseconds(GetCurrentTransactionStartTimestamp(),
													 -(int64) audit_retention_minutes * 60 * 1000);
	Datum		arg = TimestampTzGetDatum(cutoff);
	Oid			type = TIMESTAMPTZOID;
	SPITupleTable *tt;
	uint64		n,
				i;
	int			dropped = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in audit_purge");
	donatello_begin_as_owner(&saved);

	/* what is committed gets sealed first, so no purged record was never sealed */
	audit_seal_pass();

	if (SPI_execute_with_args("SELECT c.relname::text, p.upper"
							  "  FROM pg_catalog.pg_inherits i"
							  "  JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid,"
							  "  LATERAL (SELECT (pg_catalog.to_date(pg_catalog.right(c.relname, 6), 'YYYYMM')"
							  "                   + interval '1 month') AT TIME ZONE 'UTC' AS upper) p"
							  " WHERE i.inhparent = 'donatello.audit_log'::pg_catalog.regclass"
							  "   AND c.relname ~ '^audit_log_[0-9]{6}$' AND p.upper <= $1"
							  " ORDER BY p.upper",
							  1, &type, &arg, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list the audit partitions");
	tt = SPI_tuptable;
	n = SPI_processed;
	for (i = 0; i < n; i++)
	{
		bool		isnull;
		char	   *part = TextDatumGetCString(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		TimestampTz upper = DatumGetTimestampTz(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
		int64		records;
		Datum		args[3];
		Oid			types[3] = {TEXTOID, TIMESTAMPTZOID, INT8OID};
		int			rc;

		if (SPI_execute(psprintf("SELECT count(*) FROM donatello.%s", quote_identifier(part)), true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not count the records of %s", part);
		records = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		record_purge_events(part, upper);

		audit_internal_write = AUDIT_WRITE_PURGE;
		PG_TRY();
		{
			/* partitions made by CREATE EXTENSION belong to it: release them first */
			if (SPI_execute(psprintf("SELECT FROM pg_catalog.pg_depend WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass"
									 " AND objid = 'donatello.%s'::pg_catalog.regclass AND deptype = 'e'",
									 quote_identifier(part)), true, 0) != SPI_OK_SELECT)
				elog(ERROR, "could not read the dependencies of %s", part);
			if (SPI_processed > 0 &&
				SPI_execute(psprintf("ALTER EXTENSION donatello DROP TABLE donatello.%s", quote_identifier(part)),
							false, 0) != SPI_OK_UTILITY)
				elog(ERROR, "could not release %s from the extension", part);
			if (SPI_execute(psprintf("DROP TABLE donatello.%s", quote_identifier(part)), false, 0) != SPI_OK_UTILITY)
				elog(ERROR, "could not drop %s", part);
			args[0] = CStringGetTextDatum(part);
			args[1] = TimestampTzGetDatum(upper);
			args[2] = Int64GetDatum(records);
			rc = SPI_execute_with_args("INSERT INTO donatello.audit_purges (partition_name, purged_before, records)"
									   " VALUES ($1, $2, $3)", 3, types, args, NULL, false, 0);
		}
		PG_FINALLY();
		{
			audit_internal_write = AUDIT_WRITE_NONE;
		}
		PG_END_TRY();
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "could not record the purge of %s", part);
		dropped++;
	}

	donatello_end_as_owner(&saved);
	SPI_finish();
	PG_RETURN_INT32(dropped);
}
