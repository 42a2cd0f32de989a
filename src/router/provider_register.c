/*
 * provider_register.c
 *	  donatello.register_provider(): a C shell around the checks and the
 *	  upsert (donatello.register_provider_checked, PL/pgSQL) that keeps the
 *	  provider's API key out of the server log.
 *
 * The call carries the key (and maybe a password in a URL) as literals. With
 * log_min_error_statement at its default, any error raised while registering
 * would log the whole statement, key included. Errors are therefore caught
 * and re-thrown with the statement hidden (errhidestmt), which is the one
 * thing here that needs PG_TRY: an ErrorData can only be changed between
 * catching and re-throwing it. The messages themselves never quote a key.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "donatello.h"

PG_FUNCTION_INFO_V1(donatello_register_provider);

/* donatello.register_provider(name, kind, base_url, api_key) returns uuid */
Datum
donatello_register_provider(PG_FUNCTION_ARGS)
{
	Oid			types[4] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[4];
	char		nulls[4];
	MemoryContext caller = CurrentMemoryContext;
	Datum		result = (Datum) 0;
	bool		isnull = true;
	int			i;

	for (i = 0; i < 4; i++)
	{
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PG_TRY();
	{
		if (SPI_execute_with_args("SELECT donatello.register_provider_checked($1, $2, $3, $4)",
								  4, types, values, nulls, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "registering a provider returned no row");
		result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			result = SPI_datumTransfer(result, false, UUID_LEN);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		edata->hide_stmt = true;
		ReThrowError(edata);
	}
	PG_END_TRY();
	SPI_finish();

	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}
