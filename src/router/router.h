/*
 * router.h
 *	  Providers, models and the model router: request settings, prompt
 *	  complexity, scoring and ranking of eligible models, and the circuit
 *	  breaker that keeps failing models out of the ranking for a cool-down.
 *
 * The scoring (model_score.c) and the circuit state machine (circuit.c) are
 * pure functions of their inputs and the time, tested directly from SQL
 * through donatello.score_models() and the circuit functions; docs/generation.md
 * states the formulas.
 */
#ifndef DONATELLO_ROUTER_H
#define DONATELLO_ROUTER_H

#include "postgres.h"

#include "datatype/timestamp.h"

/* a department's routing preference */
typedef enum RouterPreference
{
	ROUTER_BALANCED = 0,
	ROUTER_QUALITY,
	ROUTER_COST
} RouterPreference;

/* weights of the four criteria; they sum to 1 */
typedef struct RouterWeights
{
	double		quality;
	double		cost;
	double		reliability;
	double		speed;
} RouterWeights;

/* a model's circuit as the router sees it now */
typedef enum CircuitState
{
	CIRCUIT_CLOSED = 0,			/* healthy */
	CIRCUIT_OPEN,				/* failing: skipped until its cool-down ends */
	CIRCUIT_HALF_OPEN,			/* cool-down over: one trial request may go */
	CIRCUIT_TRIAL				/* half-open with its trial request in flight */
} CircuitState;

extern const char *const circuit_state_names[];

/* one model offered to the router, and what the router made of it */
typedef struct RouterCandidate
{
	char	   *model_id;
	char	   *provider;
	char	   *model;
	int64		cost_micros;	/* per image, in micro-units of the currency */
	int			quality;		/* 1..10, higher is better */
	int			speed;
	int			reliability;
	bool		commercial_use;
	char	  **sizes;
	int			nsizes;
	CircuitState circuit;
	int			input_order;	/* position in the input, for stable ties */

	/* results */
	const char *excluded;		/* why the model is not eligible, or NULL */
	double		score_quality;
	double		score_cost;
	double		score_reliability;
	double		score_speed;
	double		score;
} RouterCandidate;

/* what the request asks for */
typedef struct RouterRequest
{
	const char *size;
	int			n;
	bool		commercial;
	RouterPreference preference;
	double		complexity;		/* 0..1 */
} RouterRequest;

/* model_score.c: pure scoring */
extern const char *const router_preference_names[];
extern bool router_parse_preference(const char *s, RouterPreference *out);
extern double router_prompt_complexity(const char *prompt, int len);
extern void router_weights(RouterPreference preference, double complexity, RouterWeights *w);
extern int	router_rank(RouterCandidate *candidates, int n, const RouterRequest *req,
						const RouterWeights *w);

/* circuit.c: the circuit breaker */
typedef struct CircuitSettings
{
	int			failure_threshold;	/* failures within the window that open it */
	int64		window_us;
	int64		cooldown_us;
} CircuitSettings;

/* the stored state of one model's circuit (a row of donatello.model_circuits) */
typedef struct CircuitRecord
{
	CircuitState state;			/* CLOSED, OPEN or HALF_OPEN as stored */
	int			failures;		/* in the current window */
	TimestampTz window_started_at;	/* 0 when no window */
	TimestampTz opened_at;
	TimestampTz retry_at;		/* end of the cool-down, while open */
	TimestampTz trial_started_at;	/* while half-open: when the trial began */
	int			times_opened;
} CircuitRecord;

extern void circuit_settings_current(CircuitSettings *cs);
extern CircuitState circuit_effective(const CircuitRecord *r, TimestampTz now,
									  const CircuitSettings *cs);
extern bool circuit_acquire(CircuitRecord *r, TimestampTz now, const CircuitSettings *cs);
extern void circuit_record_success(CircuitRecord *r, TimestampTz now);
extern void circuit_record_failure(CircuitRecord *r, TimestampTz now, const CircuitSettings *cs);
extern bool circuit_parse_state(const char *s, CircuitState *out);
extern void circuit_init(void);

/* init: settings of the router and the request limits */
extern void router_init(void);
extern int	router_max_prompt_length;
extern int	router_max_images;

#endif							/* DONATELLO_ROUTER_H */
