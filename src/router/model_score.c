/*
 * model_score.c
 *	  Model selection as a pure function: which models are eligible for a
 *	  request, how each scores, in what order they are tried.
 *
 * Eligible: the model supports the requested size, is licensed for
 * commercial use when the request says so, and its circuit is closed or
 * half-open with no trial in flight. Each eligible model gets four scores
 * in [0, 1]:
 *	  quality, speed, reliability = the registered value / 10
 *	  cost = cheapest eligible cost / this model's cost (1 for a free model,
 *	         0 for a paid one when a free one is eligible)
 * and a total score = the weighted sum. Weights come from the department's
 * preference (balanced: 1/4 each; quality: 60% quality, the rest split
 * evenly; cost: 50% cost, the rest split evenly), then a prompt complexity c
 * in [0, 1] moves the quality weight halfway towards 1 at most:
 *	  w_quality' = w_quality + c * 0.5 * (1 - w_quality)
 * and the other weights shrink in proportion so the sum stays 1.
 *
 * Order: higher score first; ties (to 1e-9) go to the cheaper model, then by
 * provider and model name, then input order. Nothing here reads tables or
 * the clock.
 */
#include "postgres.h"

#include <math.h>

#include "donatello.h"
#include "router/router.h"

/* how far a fully complex prompt moves the quality weight towards 1 */
#define COMPLEXITY_QUALITY_BOOST 0.5

/* words and separators at which the complexity components saturate */
#define COMPLEXITY_WORDS 60
#define COMPLEXITY_SEPARATORS 8

const char *const router_preference_names[] = {
	[ROUTER_BALANCED] = "balanced",
	[ROUTER_QUALITY] = "quality",
	[ROUTER_COST] = "cost",
};

/* base weights per preference: quality, cost, reliability, speed */
static const RouterWeights preference_weights[] = {
	[ROUTER_BALANCED] = {0.25, 0.25, 0.25, 0.25},
	[ROUTER_QUALITY] = {0.60, 0.40 / 3, 0.40 / 3, 0.40 / 3},
	[ROUTER_COST] = {0.50 / 3, 0.50, 0.50 / 3, 0.50 / 3},
};

/* Parse "balanced", "quality" or "cost". */
bool
router_parse_preference(const char *s, RouterPreference *out)
{
	int			i;

	for (i = 0; i < (int) lengthof(router_preference_names); i++)
		if (strcmp(s, router_preference_names[i]) == 0)
		{
			*out = (RouterPreference) i;
			return true;
		}
	return false;
}

/* Is the word at s (n bytes) "and" or "with", in any case? */
static bool
is_joining_word(const char *s, int n)
{
	return (n == 3 && pg_strncasecmp(s, "and", 3) == 0) ||
		(n == 4 && pg_strncasecmp(s, "with", 4) == 0);
}

/*
 * Prompt complexity in [0, 1], rounded to 3 decimals:
 *	  0.7 * min(words, 60) / 60 + 0.3 * min(separators, 8) / 8
 * where words are runs of letters and digits (any non-ASCII byte counts as a
 * letter) and separators are "," ";" ":" and the words "and" and "with": a
 * long prompt listing many details asks more of a model.
 */
double
router_prompt_complexity(const char *prompt, int len)
{
	int			words = 0,
				separators = 0,
				i = 0;
	double		c;

	while (i < len)
	{
		unsigned char b = (unsigned char) prompt[i];

		if (isalnum(b) || b >= 0x80)
		{
			int			start = i;

			while (i < len && (isalnum((unsigned char) prompt[i]) || (unsigned char) prompt[i] >= 0x80))
				i++;
			words++;
			if (is_joining_word(prompt + start, i - start))
				separators++;
			continue;
		}
		if (b == ',' || b == ';' || b == ':')
			separators++;
		i++;
	}
	c = 0.7 * Min(words, COMPLEXITY_WORDS) / (double) COMPLEXITY_WORDS +
		0.3 * Min(separators, COMPLEXITY_SEPARATORS) / (double) COMPLEXITY_SEPARATORS;
	return round(c * 1000.0) / 1000.0;
}

/* Weights for a preference, with the quality weight raised by complexity. */
void
router_weights(RouterPreference preference, double complexity, RouterWeights *w)
{
	const RouterWeights *base = &preference_weights[preference];
	double		scale;

	complexity = Max(0.0, Min(1.0, complexity));
	w->quality = base->quality + complexity * COMPLEXITY_QUALITY_BOOST * (1.0 - base->quality);
	scale = (1.0 - w->quality) / (1.0 - base->quality);
	w->cost = base->cost * scale;
	w->reliability = base->reliability * scale;
	w->speed = base->speed * scale;
}

/* Does the model offer this size? */
static bool
supports_size(const RouterCandidate *c, const char *size)
{
	int			i;

	for (i = 0; i < c->nsizes; i++)
		if (strcmp(c->sizes[i], size) == 0)
			return true;
	return false;
}

/* Why a candidate cannot serve the request, or NULL when it can. */
static const char *
exclusion_reason(const RouterCandidate *c, const RouterRequest *req)
{
	if (!supports_size(c, req->size))
		return psprintf("size %s not supported", req->size);
	if (req->commercial && !c->commercial_use)
		return "not licensed for commercial use";
	if (c->circuit == CIRCUIT_OPEN)
		return "circuit open";
	if (c->circuit == CIRCUIT_TRIAL)
		return "circuit half-open, trial request in flight";
	return NULL;
}

/* qsort comparator: eligible first, best score, cheaper, by name, input order. */
static int
cmp_candidates(const void *a, const void *b)
{
	const RouterCandidate *x = a,
			   *y = b;
	int64		sx,
				sy;
	int			r;

	if ((x->excluded == NULL) != (y->excluded == NULL))
		return x->excluded == NULL ? -1 : 1;
	if (x->excluded == NULL)
	{
		sx = (int64) llround(x->score * 1e9);
		sy = (int64) llround(y->score * 1e9);
		if (sx != sy)
			return sx > sy ? -1 : 1;
		if (x->cost_micros != y->cost_micros)
			return x->cost_micros < y->cost_micros ? -1 : 1;
	}
	if ((r = strcmp(x->provider, y->provider)) != 0)
		return r;
	if ((r = strcmp(x->model, y->model)) != 0)
		return r;
	return x->input_order - y->input_order;
}

/*
 * Score and order the candidates in place: the eligible ones first, best
 * first, then the excluded ones with their reasons. Returns how many are
 * eligible.
 */
int
router_rank(RouterCandidate *candidates, int n, const RouterRequest *req, const RouterWeights *w)
{
	int64		min_cost = -1;
	int			eligible = 0,
				i;

	for (i = 0; i < n; i++)
	{
		RouterCandidate *c = &candidates[i];

		c->input_order = i;
		c->excluded = exclusion_reason(c, req);
		if (c->excluded == NULL)
		{
			eligible++;
			if (min_cost < 0 || c->cost_micros < min_cost)
				min_cost = c->cost_micros;
		}
	}

	for (i = 0; i < n; i++)
	{
		RouterCandidate *c = &candidates[i];

		if (c->excluded != NULL)
		{
			c->score = c->score_quality = c->score_cost = c->score_reliability = c->score_speed = 0.0;
			continue;
		}
		c->score_quality = c->quality / 10.0;
		c->score_speed = c->speed / 10.0;
		c->score_reliability = c->reliability / 10.0;
		if (c->cost_micros == 0)
			c->score_cost = 1.0;
		else
			c->score_cost = (double) min_cost / (double) c->cost_micros;
		c->score = w->quality * c->score_quality + w->cost * c->score_cost +
			w->reliability * c->score_reliability + w->speed * c->score_speed;
	}

	if (n > 1)
		qsort(candidates, n, sizeof(RouterCandidate), cmp_candidates);
	return eligible;
}
