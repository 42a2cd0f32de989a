/*
 * apikey.h
 *	  API keys: "dnk_" + 30 base62 characters of CSPRNG output (178 bits) + a
 *	  6-character base62 CRC-32C checksum of what precedes it.
 *
 * C entry points for other parts (the HTTP layer):
 *
 *	Jsonb *apikey_verify_cstring(const char *key, const char *required_scope)
 *		{"key_id", "user_id", "org_id", "scopes"} of a valid key, palloc'd.
 *		Raises DNA01 (ERRCODE_DN_INVALID_CREDENTIALS) for a malformed,
 *		mistyped (checksum), unknown, revoked or expired key or a deactivated
 *		owner, and DNP01 when required_scope (may be NULL) is not among the
 *		key's scopes ("*" and "resource:*" match as wildcards). Counts one use
 *		of the key (flushed to api_keys.usage_count/last_used_at later).
 *		Must run inside a transaction.
 *
 *	bool apikey_rate_limit_take(const char *key_id, int *remaining, double *reset_seconds)
 *		Take one request from the key's bucket ("apikey:<key_id>",
 *		donatello.api_key_rate_limit requests per
 *		donatello.api_key_rate_limit_period); see ratelimit.h for the outputs.
 */
#ifndef DONATELLO_APIKEY_H
#define DONATELLO_APIKEY_H

#include "postgres.h"

#include "utils/jsonb.h"
#include "utils/uuid.h"

extern Jsonb *apikey_verify_cstring(const char *key, const char *required_scope);
extern bool apikey_rate_limit_take(const char *key_id, int *remaining, double *reset_seconds);
extern void apikey_init(void);

/* apikey_usage.c: usage counted per backend, aggregated in shared memory */
extern void apikey_usage_count(const pg_uuid_t *key_id);
extern void apikey_usage_shmem_init(void);
extern int	apikey_usage_flush(void);

#endif							/* DONATELLO_APIKEY_H */
