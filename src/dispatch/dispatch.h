/*
 * dispatch.h
 *	  SQL-callable entry points that put work in donatello.outbox: webhook
 *	  endpoints and events (webhooks.c), queued HTTP requests (http_enqueue.c),
 *	  and the helpers they share (dispatch_common.c).
 */
#ifndef DONATELLO_DISPATCH_H
#define DONATELLO_DISPATCH_H

#include "postgres.h"

#include "utils/uuid.h"

/* dispatch_common.c */
extern void dispatch_random_uuid(pg_uuid_t *uuid);
extern bytea *dispatch_seal(const char *purpose, const pg_uuid_t *row_id, const void *data, int len);
extern void dispatch_check_organization(const pg_uuid_t *org_id);
extern void dispatch_check_url(const char *what, const char *url, char **host);
extern char *dispatch_uuid_text(const pg_uuid_t *uuid);
extern void dispatch_spi_exec(const char *sql, int nargs, Oid *types, Datum *values,
							  const char *nulls, int expected);

#endif							/* DONATELLO_DISPATCH_H */
