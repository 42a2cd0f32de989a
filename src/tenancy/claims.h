/*
 * claims.h
 *	  The current principal, read from request.jwt.claims.
 */
#ifndef DONATELLO_CLAIMS_H
#define DONATELLO_CLAIMS_H

#include "utils/uuid.h"

extern bool donatello_claims_user_id(pg_uuid_t *out);
extern bool donatello_claims_org_id(pg_uuid_t *out);
extern bool donatello_looks_like_uuid(const char *s, int len);

#endif							/* DONATELLO_CLAIMS_H */
