/*
 * generation.h
 *	  The generation pipeline's C side: the request, generate(), and the
 *	  sending of a job to a model (generate.c), its settings and the retry policy of a
 *	  provider request (generation_settings.c), decoding a provider's response
 *	  into images (generation_images.c), serving an image by its signed URL
 *	  (image_fetch.c), and the maintenance task that finishes stuck jobs
 *	  (generation_recover.c). The completion hook of provider requests and
 *	  the status are SQL (sql/install/85-pipeline.sql).
 */
#ifndef DONATELLO_GENERATION_H
#define DONATELLO_GENERATION_H

#include "postgres.h"

/* generation_settings.c */
extern int	generation_attempts_per_model;
extern char *generation_retry_backoff;
extern int	generation_request_timeout_ms;
extern int	generation_max_fallbacks;
extern int	generation_reservation_ttl_s;
extern void generation_init(void);

/* generation_recover.c */
extern void generation_recover_init(void);

#endif							/* DONATELLO_GENERATION_H */
