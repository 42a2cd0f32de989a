/*
 * content_check.c
 *	  donatello.check_content(): a prompt against an organization's blocklist.
 *
 * The organization is the current principal's (the "org" claim of
 * request.jwt.claims, as donatello.current_org_id() reads it); trusted
 * services name it with check_content(text, org_id). The result lists every
 * blocked term found, with its category and character range:
 *
 *	{"clean": false, "categories": ["violence"], "truncated": false,
 *	 "matches": [{"term": "gore", "category": "violence", "start": 10, "end": 14}]}
 *
 * A blocked term is an organization's own policy, not personal data, so the
 * matched term may be shown (it is the term as added, not the text found).
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "donatello.h"
#include "safety/safety.h"
#include "tenancy/claims.h"

PG_FUNCTION_INFO_V1(donatello_check_content);
PG_FUNCTION_INFO_V1(donatello_check_content_for_org);

/* qsort comparator: matches by start, then end, then pattern. */
static int
cmp_match(const void *a, const void *b)
{
	const BlocklistMatch *x = a,
			   *y = b;

	if (x->start != y->start)
		return (x->start > y->start) - (x->start < y->start);
	if (x->end != y->end)
		return (x->end > y->end) - (x->end < y->end);
	return (x->pattern > y->pattern) - (x->pattern < y->pattern);
}

/* qsort comparator for C strings. */
static int
cmp_cstring(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Scan text against an organization's blocklist and build the jsonb result. */
static Datum
check_content(text *t, const pg_uuid_t *org_id)
{
	const CompiledBlocklist *bl = blocklist_for_org(org_id);
	int			utf8_len;
	char	   *utf8 = text_to_utf8(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), &utf8_len);
	BlocklistMatch *matches = palloc(sizeof(BlocklistMatch) * SAFETY_MAX_FINDINGS);
	int			total = 0;
	int			stored;
	char	  **categories;
	int			ncategories = 0;
	StringInfoData buf;
	int			i;

	if (bl->nterms > 0)
		total = blocklist_scan(bl->automaton, utf8, utf8_len, matches, SAFETY_MAX_FINDINGS);
	stored = Min(total, SAFETY_MAX_FINDINGS);
	qsort(matches, stored, sizeof(BlocklistMatch), cmp_match);

	/* distinct categories, sorted */
	categories = palloc(sizeof(char *) * (stored + 1));
	for (i = 0; i < stored; i++)
		categories[ncategories++] = bl->categories[matches[i].pattern];
	if (ncategories > 1)
		qsort(categories, ncategories, sizeof(char *), cmp_cstring);

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"clean\": %s, \"truncated\": %s, \"categories\": [",
					 total == 0 ? "true" : "false",
					 total > SAFETY_MAX_FINDINGS ? "true" : "false");
	for (i = 0; i < ncategories; i++)
	{
		if (i > 0 && strcmp(categories[i], categories[i - 1]) == 0)
			continue;
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		escape_json(&buf, categories[i]);
	}
	appendStringInfoString(&buf, "], \"matches\": [");
	for (i = 0; i < stored; i++)
	{
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		appendStringInfoString(&buf, "{\"term\": ");
		escape_json(&buf, bl->terms[matches[i].pattern]);
		appendStringInfoString(&buf, ", \"category\": ");
		escape_json(&buf, bl->categories[matches[i].pattern]);
		appendStringInfo(&buf, ", \"start\": %d, \"end\": %d}", matches[i].start, matches[i].end);
	}
	appendStringInfoString(&buf, "]}");
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}

/* donatello.check_content(prompt text) returns jsonb: for the current principal's organization */
Datum
donatello_check_content(PG_FUNCTION_ARGS)
{
	pg_uuid_t	org_id;

	if (!donatello_claims_org_id(&org_id))
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("check_content needs the current principal's organization"),
				 errdetail("request.jwt.claims has no \"org\" claim."),
				 errhint("Call it as an authenticated principal, or as donatello_service with donatello.check_content(text, org_id).")));
	return check_content(PG_GETARG_TEXT_PP(0), &org_id);
}

/* donatello.check_content(prompt text, org_id uuid) returns jsonb: for a named organization */
Datum
donatello_check_content_for_org(PG_FUNCTION_ARGS)
{
	return check_content(PG_GETARG_TEXT_PP(0), PG_GETARG_UUID_P(1));
}
