/*
 * httpd_image.c
 *	  GET/HEAD /images/{id}?exp=…&sig=…: the bytes of a generated image, for
 *	  the holder of a signed, unexpired URL (donatello.image_url; the
 *	  pipeline puts such URLs in generation.completed and generation_status).
 *
 * A raw route: the path tail is the image id, exp and sig are query
 * parameters; nothing goes through the filter grammar. The signature, the
 * expiry and the image are checked by donatello.image_fetch (called through
 * a saved SPI plan, every value a parameter), which raises DNP01 (403) for a
 * bad or expired signature and DNV02 (404) for an image that does not exist;
 * a malformed id or exp never reaches it (DNV01, 400). The answer carries the
 * image's content type, its ETag (the SHA-256 of the bytes), and
 * Cache-Control allowing caches to keep it until the URL expires; a matching
 * If-None-Match gets 304 without the bytes, after the same checks.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "donatello.h"
#include "bgworker/httpd/httpd.h"

/* the saved plan of the one query this route runs (one per worker) */
static SPIPlanPtr image_fetch_plan = NULL;

/* Is s a UUID in the canonical 8-4-4-4-12 hexadecimal form? */
static bool
is_canonical_uuid(const char *s)
{
	int			i;

	if (strlen(s) != 36)
		return false;
	for (i = 0; i < 36; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return false;
		}
		else if (!isxdigit((unsigned char) s[i]))
			return false;
	}
	return true;
}

/*
 * The URL's expiry, in Unix seconds: 1 to 18 decimal digits (no sign, no
 * space), so it always fits a bigint. Anything else is a malformed URL.
 */
static int64
parse_expiry(const char *exp)
{
	size_t		len = exp ? strlen(exp) : 0;
	size_t		i;

	if (len == 0 || len > 18)
		len = 0;
	for (i = 0; i < len; i++)
		if (!isdigit((unsigned char) exp[i]))
			len = 0;
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("invalid image URL: exp must be a Unix time in seconds"),
				 errdetail("exp is %s.", exp ? "not a decimal number of at most 18 digits" : "missing"),
				 errhint("Use the URL exactly as donatello returned it (generation_status signs fresh ones).")));
	return (int64) strtoll(exp, NULL, 10);
}

/* Now in Unix seconds. */
static int64
unix_now(void)
{
	return (int64) (GetCurrentTimestamp() / USECS_PER_SEC) +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

/*
 * Does If-None-Match match etag? The header is "*" or a comma-separated list
 * of entity tags, compared weakly (RFC 9110 13.1.2: a W/ prefix is ignored).
 */
static bool
etag_matches(const char *header, const char *etag)
{
	const char *p = header;
	size_t		elen = strlen(etag);

	while (*p != '\0')
	{
		const char *start;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		if (*p == '*')
			return true;
		if (strncmp(p, "W/", 2) == 0)
			p += 2;
		start = p;
		if (*p == '"')
		{
			p++;
			while (*p != '\0' && *p != '"')
				p++;
			if (*p == '"')
				p++;
		}
		else
			while (*p != '\0' && *p != ',' && *p != ' ' && *p != '\t')
				p++;
		if ((size_t) (p - start) == elen && strncmp(start, etag, elen) == 0)
			return true;
		while (*p != '\0' && *p != ',')
			p++;
	}
	return false;
}

/* The saved plan of SELECT … FROM donatello.image_fetch($1, $2, $3). */
static SPIPlanPtr
image_plan(void)
{
	if (image_fetch_plan == NULL)
	{
		Oid			types[3] = {UUIDOID, INT8OID, TEXTOID};
		SPIPlanPtr	plan;

		plan = SPI_prepare("SELECT f.content_type, f.etag, f.body"
						   "  FROM donatello.image_fetch($1, $2, $3) f",
						   3, types);
		if (plan == NULL)
			elog(ERROR, "could not prepare the image query: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "could not keep the image query's plan");
		image_fetch_plan = plan;
	}
	return image_fetch_plan;
}

/*
 * GET/HEAD /images/{id}?exp=&sig=: answer the image (200), 304 for a
 * matching If-None-Match, or raise (400 malformed, 403 bad or expired
 * signature, 404 unknown image).
 */
void
httpd_route_image(HttpRequest *req, HttpResponse *resp, const char *tail)
{
	const char *sig = httpd_query_param(req, "sig");
	const char *if_none_match = httpd_header(req, "If-None-Match");
	Datum		args[3];
	int64		exp;
	int64		max_age;
	bool		isnull;
	char	   *content_type;
	char	   *etag;
	bytea	   *body;
	HeapTuple	row;
	TupleDesc	desc;

	if (!is_canonical_uuid(tail))
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("invalid image URL: the image id is not a UUID"),
				 errdetail("The path must be /images/{id} with id in the form 8-4-4-4-12 hexadecimal digits."),
				 errhint("Use the URL exactly as donatello returned it (generation_status signs fresh ones).")));
	exp = parse_expiry(httpd_query_param(req, "exp"));
	if (sig == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("invalid image URL: sig is missing"),
				 errhint("Use the URL exactly as donatello returned it (generation_status signs fresh ones).")));

	args[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(tail));
	args[1] = Int64GetDatum(exp);
	args[2] = CStringGetTextDatum(sig);
	if (SPI_execute_plan(image_plan(), args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read an image");
	if (SPI_processed != 1)
		elog(ERROR, "donatello.image_fetch returned %lu rows", (unsigned long) SPI_processed);

	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	content_type = SPI_getvalue(row, desc, 1);
	etag = SPI_getvalue(row, desc, 2);
	if (content_type == NULL || etag == NULL)
		elog(ERROR, "an image without a content type or hash");

	/* caches may keep it until the URL expires (image_fetch refused an expired one) */
	max_age = Max(exp - unix_now(), 0);
	httpd_add_header(req, resp, "ETag", etag);
	httpd_add_header(req, resp, "Cache-Control",
					 psprintf("private, max-age=" INT64_FORMAT ", immutable", max_age));
	httpd_add_header(req, resp, "X-Content-Type-Options", "nosniff");
	resp->content_type = MemoryContextStrdup(req->cxt, content_type);

	if (if_none_match != NULL && etag_matches(if_none_match, etag))
	{
		resp->status = 304;
		resp->empty = true;
		return;
	}

	body = DatumGetByteaPP(SPI_getbinval(row, desc, 3, &isnull));
	if (isnull)
		elog(ERROR, "an image without bytes");
	resetStringInfo(&resp->body);
	appendBinaryStringInfo(&resp->body, VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body));
	resp->status = 200;
}
