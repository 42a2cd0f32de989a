/*
 * secrets.h
 *	  Secrets at rest: values sealed with XChaCha20-Poly1305 under a key
 *	  derived per purpose from the root key, with the owning row's id as
 *	  associated data, so a sealed value cannot be read under another purpose
 *	  or moved to another row.
 *
 * C callers:
 *	  bytea *sealed = secrets_seal("webhook", &row_id, plain, len);
 *	  char  *plain  = secrets_open("webhook", &row_id, sealed, &len);	-- wipe after use
 */
#ifndef DONATELLO_SECRETS_H
#define DONATELLO_SECRETS_H

#include "postgres.h"

#include "utils/uuid.h"

#define SECRETS_KEY_BYTES 32
#define SECRETS_KEY_ID_BYTES 8

extern void secrets_init(void);
extern bytea *secrets_seal(const char *purpose, const pg_uuid_t *row_id,
						   const void *plain, size_t len);
extern char *secrets_open(const char *purpose, const pg_uuid_t *row_id,
						  const bytea *sealed, size_t *len);
extern void secrets_derive_key(const char *purpose, unsigned char out[SECRETS_KEY_BYTES]);

#endif							/* DONATELLO_SECRETS_H */
