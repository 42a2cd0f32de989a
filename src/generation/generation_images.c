/*
 * generation_images.c
 *	  donatello.generation_decode_images(response bytea): the images of an
 *	  OpenAI images API response.
 *
 * The response is {"created": ..., "data": [{"b64_json": "<base64 PNG>", ...}, ...]}.
 * Each image is decoded from base64, checked to be a PNG (its header read by
 * png_read_header(), which also gives width and height), and hashed with
 * SHA-256 (OpenSSL). Anything else is DNV01 naming what was wrong, so the
 * completion hook can count a malformed answer as a failure of the model.
 * The JSON is parsed by PostgreSQL's jsonb parser.
 */
#include "postgres.h"

#include <openssl/sha.h>

#include "common/base64.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "donatello.h"
#include "generation/generation.h"
#include "images/images.h"

PG_FUNCTION_INFO_V1(donatello_generation_decode_images);

/* DNV01 about a provider's response. */
static void
response_error(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_DN_INVALID_ARGUMENT),
			 errmsg("invalid image response from the provider"),
			 errdetail("%s", detail)));
}

/* The value of key in a jsonb object container, or NULL. */
static JsonbValue *
object_get(JsonbContainer *container, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = unconstify(char *, key);
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(container, JB_FOBJECT, &k);
}

/* Decode, check and hash one b64_json image; fills values[1..5]. */
static void
decode_image(int index, JsonbValue *b64, Datum *values)
{
	int			max_len;
	int			len;
	bytea	   *data;
	PngHeader	header;
	const char *problem = NULL;
	bytea	   *hash;

	if (b64 == NULL || b64->type != jbvString)
		response_error(psprintf("Image %d has no \"b64_json\" string.", index));
	max_len = pg_b64_dec_len(b64->val.string.len);
	data = palloc(VARHDRSZ + max_len);
	len = pg_b64_decode(b64->val.string.val, b64->val.string.len, VARDATA(data), max_len);
	if (len <= 0)
		response_error(psprintf("Image %d is not valid base64.", index));
	SET_VARSIZE(data, VARHDRSZ + len);
	if (!png_read_header((unsigned char *) VARDATA(data), len, &header, &problem))
		response_error(psprintf("Image %d is not a valid PNG: %s", index, problem ? problem : "unknown problem"));
	if (header.width > INT32_MAX || header.height > INT32_MAX)
		response_error(psprintf("Image %d is too large.", index));

	hash = palloc(VARHDRSZ + SHA256_DIGEST_LENGTH);
	SET_VARSIZE(hash, VARHDRSZ + SHA256_DIGEST_LENGTH);
	SHA256((unsigned char *) VARDATA(data), len, (unsigned char *) VARDATA(hash));

	values[1] = CStringGetTextDatum("image/png");
	values[2] = Int32GetDatum((int32) header.width);
	values[3] = Int32GetDatum((int32) header.height);
	values[4] = PointerGetDatum(hash);
	values[5] = PointerGetDatum(data);
}

/*
 * donatello.generation_decode_images(response bytea) returns setof
 * (image_index, mime_type, width, height, content_hash, data)
 */
Datum
donatello_generation_decode_images(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bytea	   *response = PG_GETARG_BYTEA_PP(0);
	int			len = VARSIZE_ANY_EXHDR(response);
	char	   *text;
	Jsonb	   *json;
	JsonbValue *data;
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;
	int			index = 0;

	InitMaterializedSRF(fcinfo, 0);

	text = palloc(len + 1);
	memcpy(text, VARDATA_ANY(response), len);
	text[len] = '\0';
	if (memchr(text, '\0', len) != NULL || !pg_verifymbstr(text, len, true))
		response_error("The response body is not text in the database encoding.");
	json = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
	if (!JB_ROOT_IS_OBJECT(json))
		response_error("The response body is not a JSON object.");
	data = object_get(&json->root, "data");
	if (data == NULL || data->type != jbvBinary || !JsonContainerIsArray(data->val.binary.data))
		response_error("The response has no \"data\" array.");

	it = JsonbIteratorInit(data->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};

		if (tok != WJB_ELEM)
			continue;
		if (elem.type != jbvBinary || !JsonContainerIsObject(elem.val.binary.data))
			response_error(psprintf("Image %d is not a JSON object.", index));
		values[0] = Int32GetDatum(index);
		decode_image(index, object_get(elem.val.binary.data, "b64_json"), values);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		index++;
	}
	return (Datum) 0;
}
