/*
 * image_fetch.c
 *	  donatello.image_fetch(image_id, exp, sig): what GET /images/{id}?exp=&sig=
 *	  serves: content type, ETag and bytes of an image, for a holder of a
 *	  signed, unexpired URL (donatello.image_url).
 *
 * The signature is checked first, in constant time (image_url_verify), so an
 * unsigned request learns nothing, not even whether an image exists: a bad
 * or expired signature is DNP01 (403); a valid signature for an image that
 * does not exist (deleted since) is DNV02 (404). The function is SECURITY
 * DEFINER: the signed URL is the credential, there is no principal.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "donatello.h"
#include "generation/generation.h"
#include "images/images.h"

PG_FUNCTION_INFO_V1(donatello_image_fetch);

/* Now in Unix seconds. */
static int64
unix_now(void)
{
	return (int64) (GetCurrentTimestamp() / USECS_PER_SEC) +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

/* donatello.image_fetch(image_id uuid, exp bigint, sig text) returns table(content_type, etag, body) */
Datum
donatello_image_fetch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	pg_uuid_t  *image_id;
	Oid			type = UUIDOID;
	Datum		arg;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	bool		isnull;
	char	   *id_text;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) ||
		!image_url_verify(PG_GETARG_UUID_P(0), PG_GETARG_INT64(1),
						  VARDATA_ANY(PG_GETARG_TEXT_PP(2)), VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(2)),
						  unix_now()))
		ereport(ERROR,
				(errcode(ERRCODE_DN_PERMISSION_DENIED),
				 errmsg("permission denied: invalid or expired image URL"),
				 errhint("Ask for a fresh URL: donatello_api.generation_status() signs new ones.")));
	image_id = PG_GETARG_UUID_P(0);

	InitMaterializedSRF(fcinfo, 0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	arg = UUIDPGetDatum(image_id);
	if (SPI_execute_with_args("SELECT i.mime_type, '\"' || pg_catalog.encode(i.content_hash, 'hex') || '\"', i.data"
							  "  FROM donatello.images i WHERE i.id OPERATOR(pg_catalog.=) $1",
							  1, &type, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read an image");
	if (SPI_processed != 1)
	{
		id_text = DatumGetCString(DirectFunctionCall1(uuid_out, arg));
		ereport(ERROR,
				(errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("image %s does not exist", id_text)));
	}
	for (int i = 0; i < 3; i++)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &isnull);

		/* the bytes are stored out of line: fetch them before SPI lets go */
		nulls[i] = isnull;
		values[i] = isnull ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
	}
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	SPI_finish();
	return (Datum) 0;
}
