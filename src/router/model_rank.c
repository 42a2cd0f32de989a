/*
 * model_rank.c
 *	  The SQL face of the router: donatello.score_models(candidates, request)
 *	  reads models and a request as jsonb, runs the pure scoring of
 *	  model_score.c, and returns the ranking as jsonb (what a generation job
 *	  stores); donatello.prompt_complexity(prompt) exposes the complexity
 *	  score. donatello.rank_models() (SQL) feeds score_models from the tables.
 *
 * Money crosses as exact numerics (currency units) and is handled as
 * micro-units inside; scores are rounded to 4 decimals in the output.
 */
#include "postgres.h"

#include <math.h>

#include "common/int.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "donatello.h"
#include "router/router.h"

PG_FUNCTION_INFO_V1(donatello_score_models);
PG_FUNCTION_INFO_V1(donatello_prompt_complexity);

const char *const circuit_state_names[] = {
	[CIRCUIT_CLOSED] = "closed",
	[CIRCUIT_OPEN] = "open",
	[CIRCUIT_HALF_OPEN] = "half_open",
	[CIRCUIT_TRIAL] = "trial",
};

/* Raise DNV01 about the input of score_models. */
static void
invalid_input(const char *what, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_DN_INVALID_ARGUMENT),
			 errmsg("invalid %s for score_models", what),
			 errdetail("%s", detail)));
}

/* The value of key in an object, or NULL when absent or JSON null. */
static bool
json_field(JsonbContainer *c, const char *key, JsonbValue *out)
{
	return getKeyJsonValueFromContainer(c, key, strlen(key), out) != NULL && out->type != jbvNull;
}

/* A string field (palloc'd), or NULL when absent and not required. */
static char *
json_string(JsonbContainer *c, const char *key, const char *what, bool required)
{
	JsonbValue	v;

	if (!json_field(c, key, &v))
	{
		if (required)
			invalid_input(what, psprintf("\"%s\" is missing.", key));
		return NULL;
	}
	if (v.type != jbvString)
		invalid_input(what, psprintf("\"%s\" must be a string.", key));
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/* A numeric field as a double, or def when absent. */
static double
json_number(JsonbContainer *c, const char *key, const char *what, double def)
{
	JsonbValue	v;

	if (!json_field(c, key, &v))
		return def;
	if (v.type != jbvNumeric)
		invalid_input(what, psprintf("\"%s\" must be a number.", key));
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v.val.numeric)));
}

/* An integer field within [min, max]; def when absent (required if def < min). */
static int
json_int(JsonbContainer *c, const char *key, const char *what, int min, int max, int def)
{
	JsonbValue	v;
	double		d;

	if (!json_field(c, key, &v))
	{
		if (def < min)
			invalid_input(what, psprintf("\"%s\" is missing.", key));
		return def;
	}
	d = json_number(c, key, what, 0);
	if (d != floor(d) || d < min || d > max)
		invalid_input(what, psprintf("\"%s\" must be an integer from %d to %d.", key, min, max));
	return (int) d;
}

/* A boolean field, def when absent. */
static bool
json_bool(JsonbContainer *c, const char *key, const char *what, bool def)
{
	JsonbValue	v;

	if (!json_field(c, key, &v))
		return def;
	if (v.type != jbvBool)
		invalid_input(what, psprintf("\"%s\" must be true or false.", key));
	return v.val.boolean;
}

/* A non-negative amount with at most 6 decimals, as micro-units. */
static int64
json_micros(JsonbContainer *c, const char *key, const char *what)
{
	JsonbValue	v;
	Datum		product,
				rounded;

	if (!json_field(c, key, &v) || v.type != jbvNumeric)
		invalid_input(what, psprintf("\"%s\" must be a number.", key));
	product = DirectFunctionCall2(numeric_mul, NumericGetDatum(v.val.numeric),
								  NumericGetDatum(int64_to_numeric(1000000)));
	rounded = DirectFunctionCall2(numeric_round, product, Int32GetDatum(0));
	if (!DatumGetBool(DirectFunctionCall2(numeric_eq, product, rounded)) ||
		DatumGetBool(DirectFunctionCall2(numeric_lt, rounded, NumericGetDatum(int64_to_numeric(0)))))
		invalid_input(what, psprintf("\"%s\" must be zero or more, with at most 6 decimals.", key));
	return DatumGetInt64(DirectFunctionCall1(numeric_int8, rounded));
}

/* Parse "closed", "open", "half_open" or "trial". */
bool
circuit_parse_state(const char *s, CircuitState *out)
{
	int			i;

	for (i = 0; i <= CIRCUIT_TRIAL; i++)
		if (strcmp(s, circuit_state_names[i]) == 0)
		{
			*out = (CircuitState) i;
			return true;
		}
	return false;
}

/* Read one candidate object. */
static void
parse_candidate(JsonbContainer *c, int index, RouterCandidate *out)
{
	char	   *what = psprintf("candidate %d", index + 1);
	char	   *circuit;
	JsonbValue	sizes;
	int			i;

	memset(out, 0, sizeof(*out));
	out->model_id = json_string(c, "model_id", what, false);
	out->provider = json_string(c, "provider", what, true);
	out->model = json_string(c, "model", what, true);
	out->cost_micros = json_micros(c, "cost_per_image", what);
	out->quality = json_int(c, "quality", what, 1, 10, 0);
	out->speed = json_int(c, "speed", what, 1, 10, 0);
	out->reliability = json_int(c, "reliability", what, 1, 10, 0);
	out->commercial_use = json_bool(c, "commercial_use", what, false);

	circuit = json_string(c, "circuit", what, false);
	if (circuit != NULL && !circuit_parse_state(circuit, &out->circuit))
		invalid_input(what, "\"circuit\" must be \"closed\", \"open\", \"half_open\" or \"trial\".");

	if (!json_field(c, "sizes", &sizes) || sizes.type != jbvBinary ||
		!JsonContainerIsArray(sizes.val.binary.data))
		invalid_input(what, "\"sizes\" must be an array of strings such as \"1024x1024\".");
	out->nsizes = JsonContainerSize(sizes.val.binary.data);
	out->sizes = palloc(sizeof(char *) * (out->nsizes + 1));
	for (i = 0; i < out->nsizes; i++)
	{
		JsonbValue *s = getIthJsonbValueFromContainer(sizes.val.binary.data, i);

		if (s->type != jbvString)
			invalid_input(what, "\"sizes\" must be an array of strings such as \"1024x1024\".");
		out->sizes[i] = pnstrdup(s->val.string.val, s->val.string.len);
	}
}

/* Read the request object. */
static void
parse_request(JsonbContainer *c, RouterRequest *req)
{
	char	   *preference;
	char	   *prompt;

	req->size = json_string(c, "size", "request", false);
	if (req->size == NULL)
		req->size = "1024x1024";
	req->n = json_int(c, "n", "request", 1, 1000, 1);
	req->commercial = json_bool(c, "commercial", "request", false);
	preference = json_string(c, "preference", "request", false);
	req->preference = ROUTER_BALANCED;
	if (preference != NULL && !router_parse_preference(preference, &req->preference))
		invalid_input("request", "\"preference\" must be \"balanced\", \"quality\" or \"cost\".");
	prompt = json_string(c, "prompt", "request", false);
	req->complexity = json_number(c, "complexity", "request",
								  prompt ? router_prompt_complexity(prompt, strlen(prompt)) : 0.0);
	if (req->complexity < 0.0 || req->complexity > 1.0)
		invalid_input("request", "\"complexity\" must be from 0 to 1.");
}

/* Append an amount of micro-units as a JSON number in currency units. */
static void
append_micros(StringInfo buf, int64 micros)
{
	char		frac[8];
	int			len;

	if (micros % 1000000 == 0)
	{
		appendStringInfo(buf, INT64_FORMAT, micros / 1000000);
		return;
	}
	snprintf(frac, sizeof(frac), "%06d", (int) (micros % 1000000));
	for (len = 6; frac[len - 1] == '0'; len--)
		frac[len - 1] = '\0';
	appendStringInfo(buf, INT64_FORMAT ".%s", micros / 1000000, frac);
}

/* Append a JSON string, or null. */
static void
append_json_string(StringInfo buf, const char *s)
{
	if (s == NULL)
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, s);
}

/* The ranking as jsonb. */
static Datum
ranking_jsonb(const RouterCandidate *c, int n, const RouterRequest *req, const RouterWeights *w)
{
	StringInfoData buf;
	int			i,
				rank = 0;
	bool		first_excluded = true;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"preference\": \"%s\", \"complexity\": %.3f, \"size\": ",
					 router_preference_names[req->preference], req->complexity);
	escape_json(&buf, req->size);
	appendStringInfo(&buf, ", \"n\": %d, \"commercial\": %s", req->n, req->commercial ? "true" : "false");
	appendStringInfo(&buf, ", \"weights\": {\"quality\": %.4f, \"cost\": %.4f, \"reliability\": %.4f, \"speed\": %.4f}",
					 w->quality, w->cost, w->reliability, w->speed);
	appendStringInfoString(&buf, ", \"candidates\": [");
	for (i = 0; i < n && c[i].excluded == NULL; i++)
	{
		int64		estimated;

		if (pg_mul_s64_overflow(c[i].cost_micros, req->n, &estimated))
			invalid_input("request", "the estimated cost is out of range.");
		appendStringInfo(&buf, "%s{\"rank\": %d, \"model_id\": ", i > 0 ? ", " : "", ++rank);
		append_json_string(&buf, c[i].model_id);
		appendStringInfoString(&buf, ", \"provider\": ");
		escape_json(&buf, c[i].provider);
		appendStringInfoString(&buf, ", \"model\": ");
		escape_json(&buf, c[i].model);
		appendStringInfo(&buf, ", \"score\": %.4f, \"scores\": {\"quality\": %.4f, \"cost\": %.4f, \"reliability\": %.4f, \"speed\": %.4f}",
						 c[i].score, c[i].score_quality, c[i].score_cost, c[i].score_reliability, c[i].score_speed);
		appendStringInfoString(&buf, ", \"cost_per_image\": ");
		append_micros(&buf, c[i].cost_micros);
		appendStringInfoString(&buf, ", \"estimated_cost\": ");
		append_micros(&buf, estimated);
		appendStringInfo(&buf, ", \"circuit\": \"%s\"}", circuit_state_names[c[i].circuit]);
	}
	appendStringInfoString(&buf, "], \"excluded\": [");
	for (; i < n; i++)
	{
		appendStringInfo(&buf, "%s{\"model_id\": ", first_excluded ? "" : ", ");
		first_excluded = false;
		append_json_string(&buf, c[i].model_id);
		appendStringInfoString(&buf, ", \"provider\": ");
		escape_json(&buf, c[i].provider);
		appendStringInfoString(&buf, ", \"model\": ");
		escape_json(&buf, c[i].model);
		appendStringInfoString(&buf, ", \"reason\": ");
		escape_json(&buf, c[i].excluded);
		appendStringInfoString(&buf, "}");
	}
	appendStringInfoString(&buf, "]}");
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}

/* donatello.score_models(candidates jsonb, request jsonb) returns jsonb */
Datum
donatello_score_models(PG_FUNCTION_ARGS)
{
	Jsonb	   *candidates = PG_GETARG_JSONB_P(0);
	Jsonb	   *request = PG_GETARG_JSONB_P(1);
	RouterCandidate *c;
	RouterRequest req;
	RouterWeights w;
	int			n,
				i;

	if (!JB_ROOT_IS_ARRAY(candidates) || JB_ROOT_IS_SCALAR(candidates))
		invalid_input("candidates", "Pass a JSON array of model objects.");
	if (!JB_ROOT_IS_OBJECT(request))
		invalid_input("request", "Pass a JSON object.");

	parse_request(&request->root, &req);
	n = JsonContainerSize(&candidates->root);
	c = palloc0(sizeof(RouterCandidate) * (n + 1));
	for (i = 0; i < n; i++)
	{
		JsonbValue *v = getIthJsonbValueFromContainer(&candidates->root, i);

		if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
			invalid_input(psprintf("candidate %d", i + 1), "Each candidate must be a JSON object.");
		parse_candidate(v->val.binary.data, i, &c[i]);
	}

	router_weights(req.preference, req.complexity, &w);
	router_rank(c, n, &req, &w);
	PG_RETURN_DATUM(ranking_jsonb(c, n, &req, &w));
}

/* donatello.prompt_complexity(prompt text) returns numeric */
Datum
donatello_prompt_complexity(PG_FUNCTION_ARGS)
{
	text	   *prompt = PG_GETARG_TEXT_PP(0);
	double		c = router_prompt_complexity(VARDATA_ANY(prompt), VARSIZE_ANY_EXHDR(prompt));

	PG_RETURN_DATUM(DirectFunctionCall2(numeric_round,
										DirectFunctionCall1(float8_numeric, Float8GetDatum(c)),
										Int32GetDatum(3)));
}
