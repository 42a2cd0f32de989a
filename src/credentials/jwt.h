/*
 * jwt.h
 *	  JSON Web Tokens (RFC 7519): signing and verification with OpenSSL.
 *
 * C entry points for other parts (the HTTP layer):
 *
 *	Jsonb *jwt_verify_cstring(const char *token)
 *		The claims of a valid token, palloc'd in the current memory context.
 *		Raises DNA03 (ERRCODE_DN_INVALID_TOKEN) with a precise message on any
 *		failure: malformed token, "alg" other than donatello.jwt_algorithm
 *		(including "none"), bad signature, "exp"/"nbf" outside the leeway,
 *		wrong "aud"/"iss" when configured, or a "sid" whose session is
 *		revoked or expired or whose user is deactivated. Must be called inside
 *		a transaction (the session check may read donatello.sessions).
 *
 *	char *jwt_sign_jsonb(Jsonb *claims)
 *		A compact JWS of the claims with the configured algorithm and key.
 */
#ifndef DONATELLO_JWT_H
#define DONATELLO_JWT_H

#include "postgres.h"

#include "utils/jsonb.h"

extern Jsonb *jwt_verify_cstring(const char *token);
extern char *jwt_sign_jsonb(Jsonb *claims);
extern const char *jwt_configured_audience(void);
extern const char *jwt_configured_issuer(void);
extern void jwt_init(void);

#endif							/* DONATELLO_JWT_H */
