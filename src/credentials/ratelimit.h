/*
 * ratelimit.h
 *	  Token buckets in shared memory, shared by every backend of the cluster.
 *
 * C entry point for other parts (the HTTP layer):
 *
 *	bool rate_limit_take_ex(const char *bucket, int capacity, double per_seconds,
 *							int *remaining, double *reset_seconds)
 *		Take one token from the bucket named bucket, which holds at most
 *		capacity tokens and refills capacity tokens per per_seconds
 *		(continuously). Returns true when a token was taken. *remaining is
 *		the whole tokens left afterwards (X-RateLimit-Remaining);
 *		*reset_seconds is, after a refusal, the seconds until one token is
 *		back (Retry-After, round up), and after a success the seconds until
 *		the bucket is full again (X-RateLimit-Reset). Raises DNV01 for a
 *		capacity < 1 or a period <= 0, and needs the library preloaded.
 */
#ifndef DONATELLO_RATELIMIT_H
#define DONATELLO_RATELIMIT_H

#include "postgres.h"

extern bool rate_limit_take_ex(const char *bucket, int capacity, double per_seconds,
							   int *remaining, double *reset_seconds);
extern void rate_limit_shmem_init(void);

#endif							/* DONATELLO_RATELIMIT_H */
