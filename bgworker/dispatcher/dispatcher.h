/*
 * dispatcher.h
 *	  The outbound dispatcher: one background worker that drains
 *	  donatello.outbox with libcurl's multi interface, single-threaded, its
 *	  sockets in the worker's WaitEventSet beside the latch.
 *
 *	  dispatcher_main.c		the worker: registration, settings, main loop
 *	  dispatcher_queue.c	SPI: recover, claim, record outcomes, run hooks
 *	  dispatcher_curl.c		the curl multi driver and one request's transfer
 *	  dispatcher_ssrf.c		the SSRF guard (address classes, allow-list)
 *	  dispatcher_sign.c		Standard Webhooks signatures, the secret cache
 *	  dispatcher_retry.c	retry policy: schedules, jitter, Retry-After
 *
 * A DispatchRequest lives in its own memory context from the claim until its
 * outcome is recorded; nothing in it is touched by more than one thread
 * (libcurl's threaded resolver never sees it).
 */
#ifndef DONATELLO_DISPATCHER_H
#define DONATELLO_DISPATCHER_H

#include "postgres.h"

#include <sys/socket.h>
#include <curl/curl.h>

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/guc.h"
#include "utils/uuid.h"

#define DISPATCH_MAX_SCHEDULE 32
#define DISPATCH_HMAC_KEY_MAX 64

/* What a request is. */
typedef enum DispatchKind
{
	DISPATCH_WEBHOOK,
	DISPATCH_HTTP
} DispatchKind;

/* When a failed attempt is retried (bit set). */
#define RETRY_ON_3XX		(1 << 0)
#define RETRY_ON_4XX		(1 << 1)
#define RETRY_ON_429		(1 << 2)
#define RETRY_ON_5XX		(1 << 3)
#define RETRY_ON_TIMEOUT	(1 << 4)
#define RETRY_ON_NETWORK	(1 << 5)
#define RETRY_ON_EVERYTHING (RETRY_ON_3XX | RETRY_ON_4XX | RETRY_ON_429 | RETRY_ON_5XX | \
							 RETRY_ON_TIMEOUT | RETRY_ON_NETWORK)

/* A retry schedule: the delays before attempt 2, 3, ... */
typedef struct RetrySchedule
{
	int			nsteps;
	int			delay_ms[DISPATCH_MAX_SCHEDULE];
} RetrySchedule;

/* Decryped signing keys of one webhook endpoint. */
typedef struct WebhookKeys
{
	int			key_len;
	uint8		key[DISPATCH_HMAC_KEY_MAX];
	int			previous_len;	/* 0: no previous key in its overlap period */
	uint8		previous[DISPATCH_HMAC_KEY_MAX];
} WebhookKeys;

/* One outbound request, from its claim to the recording of its outcome. */
typedef struct DispatchRequest
{
	MemoryContext cxt;			/* owns this struct and everything below */

	/* from the outbox row */
	pg_uuid_t	org_id;
	pg_uuid_t	id;
	DispatchKind kind;
	pg_uuid_t	endpoint_id;
	char	   *method;
	char	   *url;
	char	   *host;			/* lower-cased host of url, for the allow-list */
	List	   *header_lines;	/* "Name: value" strings (http kind) */
	char	   *body;
	int			body_len;
	int			attempt_no;		/* attempt number over the row's life */
	int			round_attempts; /* attempts since it was (re)queued */
	int			max_attempts;
	RetrySchedule schedule;
	int			retry_on;
	int			timeout_ms;
	WebhookKeys keys;

	/* the transfer */
	CURL	   *easy;
	struct curl_slist *curl_headers;
	TimestampTz started_at;
	StringInfoData response;	/* bounded body */
	bool		response_truncated;
	StringInfoData response_headers;	/* raw header block (http kind) */
	char		curl_error[CURL_ERROR_SIZE];
	char		ssrf_refusal[256];	/* set when the guard refused an address */

	/* the outcome */
	long		status;			/* 0: no HTTP response */
	CURLcode	result;
	double		latency_ms;
	long		retry_after_s;	/* -1: none */
} DispatchRequest;

/* What the worker decided about one finished attempt. */
typedef struct DispatchOutcome
{
	const char *state;			/* succeeded | pending | failed */
	TimestampTz next_attempt_at;	/* when pending */
	bool		gone;			/* 410 to a webhook: disable its endpoint */
	char	   *error;			/* NULL on success */
} DispatchOutcome;

/* dispatcher_main.c: settings */
extern int	dispatcher_max_in_flight;
extern int	dispatcher_max_host_connections;
extern int	dispatcher_connect_timeout_ms;
extern int	dispatcher_timeout_ms;
extern int	dispatcher_max_response_size;
extern int	dispatcher_response_excerpt_size;
extern char *dispatcher_allowed_hosts;
extern char *webhook_retry_schedule;
extern int	webhook_retry_jitter;
extern int	webhook_disable_after_s;
extern int	webhook_secret_overlap_s;
extern void dispatcher_init(void);
extern const char *dispatcher_user_agent(void);

/* dispatcher_queue.c */
extern void dispatcher_queue_recover(void);
extern List *dispatcher_queue_claim(int max_requests, MemoryContext parent);
extern bool dispatcher_queue_record(List *finished);
extern int	dispatcher_queue_run_hooks(int max_hooks);
extern long dispatcher_queue_next_due_ms(void);

/* dispatcher_curl.c */
extern void dispatch_curl_start(void);
extern void dispatch_curl_configure(void);
extern void dispatch_curl_add(DispatchRequest *req);
extern int	dispatch_curl_in_flight(void);
extern long dispatch_curl_wait(long timeout_ms);
extern List *dispatch_curl_take_finished(void);

/* dispatcher_ssrf.c */
extern bool ssrf_host_allowed(const char *host);
extern const char *ssrf_address_refusal(const struct sockaddr *addr);
extern const char *ssrf_check_url(const char *url, char **host_out, bool resolve);
extern bool ssrf_allowed_hosts_check(char **newval, void **extra, GucSource source);
extern void ssrf_allowed_hosts_assign(const char *newval, void *extra);

/* dispatcher_sign.c */
extern char *webhook_signature_header(const WebhookKeys *keys, const char *msg_id,
									  int64 timestamp, const char *body, int body_len);
extern void webhook_keys_open(WebhookKeys *keys, const pg_uuid_t *endpoint_id,
							  bytea *sealed, bytea *previous_sealed);
extern char *webhook_secret_string(const uint8 *key, int key_len);

/* dispatcher_retry.c */
extern bool retry_schedule_parse(const char *text, RetrySchedule *schedule, char **error);
extern bool retry_schedule_check(char **newval, void **extra, GucSource source);
extern void retry_schedule_assign(const char *newval, void *extra);
extern const RetrySchedule *webhook_schedule(void);
extern int	retry_on_parse_token(const char *token);
extern void dispatch_decide(DispatchRequest *req, DispatchOutcome *outcome);

#endif							/* DONATELLO_DISPATCHER_H */
