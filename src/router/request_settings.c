/*
 * request_settings.c
 *	  The first step of a generation request: the prompt and its settings
 *	  are checked and completed with defaults (DNV01 names what is wrong),
 *	  and the settings that bound a request are defined here.
 *
 *	  donatello.check_generation_request('a fox', '{"size": "1792x1024", "n": 2}')
 *	  -> {"size": "1792x1024", "n": 2, "quality": "standard", "commercial": false}
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "donatello.h"
#include "router/router.h"

PG_FUNCTION_INFO_V1(donatello_check_generation_request);
PG_FUNCTION_INFO_V1(donatello_is_valid_image_size);

/* smallest and largest image side accepted, in pixels */
#define IMAGE_SIDE_MIN 64
#define IMAGE_SIDE_MAX 4096

int			router_max_prompt_length = 4000;
int			router_max_images = 4;

/* Define the request limits and the circuit breaker settings. */
void
router_init(void)
{
	DefineCustomIntVariable("donatello.max_prompt_length",
							"Longest prompt a generation request may have, in characters.",
							NULL,
							&router_max_prompt_length,
							4000, 1, 100000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.max_images_per_request",
							"Most images (settings.n) one generation request may ask for.",
							NULL,
							&router_max_images,
							4, 1, 100,
							PGC_SUSET, 0,
							NULL, NULL, NULL);
	circuit_init();
}

/* Is s an image size "WIDTHxHEIGHT", each side from 64 to 4096, no leading zero? */
static bool
image_size_is_valid(const char *s, int len)
{
	int			i = 0,
				side;

	for (side = 0; side < 2; side++)
	{
		int			value = 0,
					digits = 0;

		if (i >= len || s[i] < '1' || s[i] > '9')
			return false;
		while (i < len && s[i] >= '0' && s[i] <= '9' && digits < 5)
		{
			value = value * 10 + (s[i++] - '0');
			digits++;
		}
		if (value < IMAGE_SIDE_MIN || value > IMAGE_SIDE_MAX)
			return false;
		if (side == 0)
		{
			if (i >= len || s[i] != 'x')
				return false;
			i++;
		}
	}
	return i == len;
}

/* Raise DNV01 about a setting. */
static void
invalid_setting(const char *message, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_DN_INVALID_ARGUMENT),
			 errmsg_internal("%s", message),
			 hint ? errhint("%s", hint) : 0));
}

/* donatello.check_generation_request(prompt text, settings jsonb) returns jsonb */
Datum
donatello_check_generation_request(PG_FUNCTION_ARGS)
{
	text	   *prompt;
	Jsonb	   *settings;
	int			chars;
	const char *size = "1024x1024";
	int			n = 1;
	const char *quality = "standard";
	bool		commercial = false;
	StringInfoData buf;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("prompt must not be null")));
	prompt = PG_GETARG_TEXT_PP(0);
	chars = pg_mbstrlen_with_len(VARDATA_ANY(prompt), VARSIZE_ANY_EXHDR(prompt));
	{
		char	   *s = text_to_cstring(prompt);
		char	   *p = s;

		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (*p == '\0')
			invalid_setting("prompt must not be empty", "Describe the image to generate.");
	}
	if (chars > router_max_prompt_length)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("prompt is longer than %d characters (%d)", router_max_prompt_length, chars),
				 errhint("Shorten the prompt; the limit is donatello.max_prompt_length.")));

	if (!PG_ARGISNULL(1))
	{
		JsonbIterator *it;
		JsonbValue	v;
		JsonbIteratorToken tok;

		settings = PG_GETARG_JSONB_P(1);
		if (!JB_ROOT_IS_OBJECT(settings))
			invalid_setting("settings must be a JSON object",
							"Pass an object such as {\"size\": \"1024x1024\", \"n\": 1}.");

		it = JsonbIteratorInit(&settings->root);
		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			char	   *key;

			if (tok != WJB_KEY)
				continue;
			key = pnstrdup(v.val.string.val, v.val.string.len);
			tok = JsonbIteratorNext(&it, &v, true);
			if (strcmp(key, "size") == 0)
			{
				if (v.type != jbvString || !image_size_is_valid(v.val.string.val, v.val.string.len))
					invalid_setting(v.type == jbvString
									? psprintf("invalid size \"%s\"", pnstrdup(v.val.string.val, v.val.string.len))
									: "invalid size: not a string",
									"Use WIDTHxHEIGHT with sides from 64 to 4096, such as \"1024x1024\".");
				size = pnstrdup(v.val.string.val, v.val.string.len);
			}
			else if (strcmp(key, "n") == 0)
			{
				double		d = (v.type == jbvNumeric)
					? DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v.val.numeric)))
					: -1;

				if (d != floor(d) || d < 1 || d > router_max_images)
					invalid_setting(psprintf("invalid n: must be an integer from 1 to %d", router_max_images),
									"n is the number of images; the limit is donatello.max_images_per_request.");
				n = (int) d;
			}
			else if (strcmp(key, "quality") == 0)
			{
				if (v.type != jbvString ||
					!((v.val.string.len == 8 && strncmp(v.val.string.val, "standard", 8) == 0) ||
					  (v.val.string.len == 2 && strncmp(v.val.string.val, "hd", 2) == 0)))
					invalid_setting("invalid quality: must be \"standard\" or \"hd\"", NULL);
				quality = pnstrdup(v.val.string.val, v.val.string.len);
			}
			else if (strcmp(key, "commercial") == 0)
			{
				if (v.type != jbvBool)
					invalid_setting("invalid commercial: must be true or false", NULL);
				commercial = v.val.boolean;
			}
			else
				invalid_setting(psprintf("unknown setting \"%s\"", key),
								"Known settings are size, n, quality and commercial.");
		}
	}

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"size\": ");
	escape_json(&buf, size);
	appendStringInfo(&buf, ", \"n\": %d, \"quality\": \"%s\", \"commercial\": %s}",
					 n, quality, commercial ? "true" : "false");
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/* donatello.is_valid_image_size(size text) returns boolean */
Datum
donatello_is_valid_image_size(PG_FUNCTION_ARGS)
{
	text	   *size = PG_GETARG_TEXT_PP(0);

	PG_RETURN_BOOL(image_size_is_valid(VARDATA_ANY(size), VARSIZE_ANY_EXHDR(size)));
}
