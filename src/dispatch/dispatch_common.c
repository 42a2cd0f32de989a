/*
 * dispatch_common.c
 *	  Helpers shared by the functions that queue outbound work: fresh ids,
 *	  sealing secrets (src/secrets/), checking
 *	  an organization and an outbound URL, running one SPI statement.
 *
 * Callers are connected to SPI.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "donatello.h"
#include "bgworker/dispatcher/dispatcher.h"
#include "dispatch/dispatch.h"
#include "secrets/secrets.h"

/* A random (version 4) uuid, as gen_random_uuid() makes. */
void
dispatch_random_uuid(pg_uuid_t *uuid)
{
	if (!pg_strong_random(uuid->data, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));
	uuid->data[6] = (uuid->data[6] & 0x0f) | 0x40;
	uuid->data[8] = (uuid->data[8] & 0x3f) | 0x80;
}

/* The text form of a uuid (palloc'd). */
char *
dispatch_uuid_text(const pg_uuid_t *uuid)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(uuid)));
}

/* Run one statement through SPI; error unless it returns the expected code. */
void
dispatch_spi_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls, int expected)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (rc != expected)
		elog(ERROR, "SPI statement failed (%s): %s", SPI_result_code_string(rc), sql);
}

/* Seal a secret for a row (secrets at rest, src/secrets/). */
bytea *
dispatch_seal(const char *purpose, const pg_uuid_t *row_id, const void *data, int len)
{
	return secrets_seal(purpose, row_id, data, len);
}

/* DNV02 unless the organization exists. */
void
dispatch_check_organization(const pg_uuid_t *org_id)
{
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {UUIDPGetDatum(org_id)};

	dispatch_spi_exec("SELECT donatello.check_organization($1)", 1, types, values, NULL, SPI_OK_SELECT);
}

/* DNV01 unless the URL may be stored for the dispatcher (SSRF guard, syntax). */
void
dispatch_check_url(const char *what, const char *url, char **host)
{
	const char *refusal;

	if (strlen(url) > 2048)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("%s URL is longer than 2048 characters", what)));
	refusal = ssrf_check_url(url, host, false);
	if (refusal != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("%s URL \"%s\" is refused: %s", what, url, refusal),
				 errhint("Use an absolute http or https URL of a public host; loopback and private "
						 "addresses need the host in donatello.allowed_hosts.")));
}
