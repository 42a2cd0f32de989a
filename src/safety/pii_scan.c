/*
 * pii_scan.c
 *	  donatello.scan_pii(): one pass over a prompt that finds personal data
 *	  and secrets, reporting each finding's kind and character range, never
 *	  its value.
 *
 *	  {"clean": false, "truncated": false, "kinds": ["credit_card", "email"],
 *	   "findings": [{"kind": "email", "start": 9, "end": 26}, ...]}
 *
 * The scan walks the bytes once and, where a pattern can begin, asks the
 * detectors of pii_detect.c (and the key and token detectors here) for a
 * match. Overlapping findings are resolved afterwards: the earliest start
 * wins, then the longest, then the kind listed first in PiiKind (an email
 * address beats the token its local part might look like). Byte offsets
 * are converted to character offsets at the end.
 *
 * Secrets: API keys of well-known services by their published prefixes, JSON
 * Web Tokens, and long random-looking strings (docs/generation.md gives the
 * exact rules; they are heuristics, tuned to miss few secrets).
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "donatello.h"
#include "safety/safety.h"

PG_FUNCTION_INFO_V1(donatello_scan_pii);

#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define IS_ALNUM(c) (IS_DIGIT(c) || IS_ALPHA(c))
#define IS_HEX(c) (IS_DIGIT(c) || ((c) >= 'a' && (c) <= 'f') || ((c) >= 'A' && (c) <= 'F'))
#define IS_URLSAFE(c) (IS_ALNUM(c) || (c) == '_' || (c) == '-')
#define IS_TOKEN_CHAR(c) (IS_URLSAFE(c) || (c) == '+' || (c) == '/')

/* shortest generic token, and the entropy it needs (bits per character) */
#define TOKEN_MIN_LENGTH 20
#define TOKEN_MIN_HEX_LENGTH 32
#define TOKEN_MIN_ENTROPY 3.5

const char *const pii_kind_names[PII_KIND_COUNT] = {
	[PII_EMAIL] = "email",
	[PII_API_KEY] = "api_key",
	[PII_IBAN] = "iban",
	[PII_CREDIT_CARD] = "credit_card",
	[PII_SSN] = "ssn",
	[PII_PHONE] = "phone",
	[PII_IP_ADDRESS] = "ip_address",
	[PII_TOKEN] = "token",
};

/* A published API key format: a prefix, then a tail of some length. */
typedef struct KeyFormat
{
	const char *prefix;
	int			prefix_len;
	int			min_tail;		/* at least this many tail characters, or */
	int			exact_tail;		/* exactly this many (then not followed by one) */
	bool		upper_digits;	/* tail of A-Z and 0-9 only; else letters and digits, */
	bool		underscore;		/* and "_" */
	bool		hyphen;			/* and "-" */
} KeyFormat;

#define KEY(prefix, min_tail, exact_tail, upper, underscore, hyphen) \
	{prefix, sizeof(prefix) - 1, min_tail, exact_tail, upper, underscore, hyphen}

static const KeyFormat key_formats[] = {
	KEY("sk-", 20, 0, false, true, true),	/* OpenAI, Anthropic (sk-ant-), sk-proj- */
	KEY("sk_live_", 16, 0, false, false, false),	/* Stripe */
	KEY("sk_test_", 16, 0, false, false, false),
	KEY("rk_live_", 16, 0, false, false, false),
	KEY("rk_test_", 16, 0, false, false, false),
	KEY("pk_live_", 16, 0, false, false, false),
	KEY("ghp_", 30, 0, false, false, false),	/* GitHub */
	KEY("gho_", 30, 0, false, false, false),
	KEY("ghu_", 30, 0, false, false, false),
	KEY("ghs_", 30, 0, false, false, false),
	KEY("ghr_", 30, 0, false, false, false),
	KEY("github_pat_", 40, 0, false, true, false),
	KEY("glpat-", 20, 0, false, true, true),	/* GitLab */
	KEY("xoxb-", 10, 0, false, false, true),	/* Slack */
	KEY("xoxp-", 10, 0, false, false, true),
	KEY("xoxa-", 10, 0, false, false, true),
	KEY("xoxr-", 10, 0, false, false, true),
	KEY("xoxs-", 10, 0, false, false, true),
	KEY("xapp-", 10, 0, false, false, true),
	KEY("AKIA", 0, 16, true, false, false),	/* AWS access key ids */
	KEY("ASIA", 0, 16, true, false, false),
	KEY("AIza", 0, 35, false, true, true),	/* Google API keys */
	KEY("hf_", 30, 0, false, false, false),	/* Hugging Face */
	KEY("npm_", 0, 36, false, false, false),	/* npm */
};

/* A growing list of findings. */
typedef struct FindingList
{
	PiiFinding *items;
	int			count;
	int			capacity;
} FindingList;

/* Append a finding. */
static void
add_finding(FindingList *list, PiiKind kind, int start, int end)
{
	if (list->count == list->capacity)
	{
		list->capacity *= 2;
		list->items = repalloc_huge(list->items, sizeof(PiiFinding) * list->capacity);
	}
	list->items[list->count].kind = kind;
	list->items[list->count].start = start;
	list->items[list->count].end = end;
	list->count++;
}

/* Is c a tail character of the key format? */
static inline bool
key_tail_char(const KeyFormat *f, char c)
{
	if (f->upper_digits)
		return IS_DIGIT(c) || (c >= 'A' && c <= 'Z');
	return IS_ALNUM(c) || (c == '_' && f->underscore) || (c == '-' && f->hyphen);
}

/* An API key of a known format starting at pos; returns its end or -1. */
static int
match_api_key(const char *s, int len, int pos)
{
	int			f;

	/* the first letters of the prefixes above */
	switch (s[pos])
	{
		case 's': case 'p': case 'r': case 'g': case 'x': case 'A': case 'h': case 'n':
			break;
		default:
			return -1;
	}
	for (f = 0; f < (int) lengthof(key_formats); f++)
	{
		const KeyFormat *kf = &key_formats[f];
		int			i,
					tail;

		if (s[pos] != kf->prefix[0] || pos + kf->prefix_len > len ||
			memcmp(s + pos, kf->prefix, kf->prefix_len) != 0)
			continue;
		i = pos + kf->prefix_len;
		while (i < len && key_tail_char(kf, s[i]) &&
			   (kf->exact_tail == 0 || i - pos - kf->prefix_len <= kf->exact_tail))
			i++;
		tail = i - pos - kf->prefix_len;
		if (kf->exact_tail ? tail == kf->exact_tail : tail >= kf->min_tail)
			return i;
	}
	return -1;
}

/* A JSON Web Token: three base64url segments, the first two starting "eyJ". */
static int
match_jwt(const char *s, int len, int pos)
{
	int			i = pos,
				seg;

	if (s[pos] != 'e' || pos + 3 > len || memcmp(s + pos, "eyJ", 3) != 0)
		return -1;
	for (seg = 0; seg < 3; seg++)
	{
		int			seg_start = i;

		while (i < len && IS_URLSAFE(s[i]))
			i++;
		if (seg < 2)
		{
			if (i - seg_start < 10 || i >= len || s[i] != '.')
				return -1;
			if (seg == 0 && (i + 4 > len || memcmp(s + i + 1, "eyJ", 3) != 0))
				return -1;
			i++;
		}
	}
	return (i < len && IS_TOKEN_CHAR(s[i])) ? -1 : i;
}

/*
 * A long random-looking string: at least 20 characters of letters, digits
 * and "_-+/" (base64 padding allowed) that either are 32 or more hex digits
 * mixing digits and letters, or mix lower case, upper case and digits with
 * high entropy and frequent changes between those classes.
 */
static int
match_generic_token(const char *s, int len, int pos)
{
	int			counts[128];
	int			i = pos,
				n,
				k,
				transitions = 0;
	bool		lower = false,
				upper = false,
				digit = false,
				all_hex = true;
	double		entropy = 0.0;
	int			prev_class = -1;

	while (i < len && IS_TOKEN_CHAR(s[i]))
		i++;
	n = i - pos;
	if (n < TOKEN_MIN_LENGTH)
		return -1;
	memset(counts, 0, sizeof(counts));
	for (k = pos; k < i; k++)
	{
		char		c = s[k];
		int			cls = IS_DIGIT(c) ? 0 : (c >= 'a' && c <= 'z') ? 1 : (c >= 'A' && c <= 'Z') ? 2 : 3;

		counts[(int) c]++;
		digit |= (cls == 0);
		lower |= (cls == 1);
		upper |= (cls == 2);
		if (!IS_HEX(c))
			all_hex = false;
		if (prev_class >= 0 && cls != prev_class)
			transitions++;
		prev_class = cls;
	}
	/* base64 padding */
	for (k = 0; k < 2 && i < len && s[i] == '='; k++)
		i++;
	if (i < len && (IS_ALNUM(s[i]) || s[i] == '='))
		return -1;

	if (all_hex)
		return (n >= TOKEN_MIN_HEX_LENGTH && digit && (lower || upper)) ? i : -1;
	if (!(lower && upper && digit) || transitions * 3 < n)
		return -1;
	for (k = 0; k < 128; k++)
		if (counts[k] > 0)
		{
			double		p = (double) counts[k] / n;

			entropy -= p * log2(p);
		}
	return entropy >= TOKEN_MIN_ENTROPY ? i : -1;
}

/* Run every detector that can start at each position; collect raw findings. */
static void
detect_all(const char *s, int len, FindingList *list)
{
	int			token_skip_until = 0;
	int			pos;

	for (pos = 0; pos < len; pos++)
	{
		unsigned char c = (unsigned char) s[pos];
		char		prev = pos > 0 ? s[pos - 1] : '\0';
		int			start,
					end;

		if (c >= 0x80)
			continue;
		if (c == '@' && pii_match_email(s, len, pos, &start, &end))
			add_finding(list, PII_EMAIL, start, end);
		/* every other pattern starts a word: skip the inside of words at once */
		if (IS_ALNUM(prev))
			continue;
		if ((c == '+' || c == '(' || IS_DIGIT(c)) && (end = pii_match_phone(s, len, pos)) > 0)
			add_finding(list, PII_PHONE, pos, end);
		if (IS_DIGIT(c))
		{
			if ((end = pii_match_credit_card(s, len, pos)) > 0)
				add_finding(list, PII_CREDIT_CARD, pos, end);
			if ((end = pii_match_ssn(s, len, pos)) > 0)
				add_finding(list, PII_SSN, pos, end);
			if ((end = pii_match_ipv4(s, len, pos)) > 0)
				add_finding(list, PII_IP_ADDRESS, pos, end);
		}
		if ((IS_HEX(c) || c == ':') && (end = pii_match_ipv6(s, len, pos)) > 0)
			add_finding(list, PII_IP_ADDRESS, pos, end);
		if (IS_ALPHA(c) && (end = pii_match_iban(s, len, pos)) > 0)
			add_finding(list, PII_IBAN, pos, end);

		if (pos < token_skip_until)
			continue;
		if (IS_ALNUM(c))
		{
			if ((end = match_api_key(s, len, pos)) > 0)
			{
				add_finding(list, PII_API_KEY, pos, end);
				token_skip_until = end;
				continue;
			}
			if ((end = match_jwt(s, len, pos)) > 0)
			{
				add_finding(list, PII_TOKEN, pos, end);
				token_skip_until = end;
				continue;
			}
		}
		if (IS_TOKEN_CHAR(c) && !IS_TOKEN_CHAR(prev) && (end = match_generic_token(s, len, pos)) > 0)
		{
			add_finding(list, PII_TOKEN, pos, end);
			token_skip_until = end;
		}
	}
}

/* qsort comparator: earliest start, then longest, then kind precedence. */
static int
cmp_finding(const void *a, const void *b)
{
	const PiiFinding *x = a,
			   *y = b;

	if (x->start != y->start)
		return (x->start > y->start) - (x->start < y->start);
	if (x->end != y->end)
		return (x->end < y->end) - (x->end > y->end);
	return (int) x->kind - (int) y->kind;
}

/* Keep non-overlapping findings, in order; returns the new count. */
static int
resolve_overlaps(FindingList *list)
{
	int			i,
				kept = 0,
				last_end = -1;

	if (list->count > 1)
		qsort(list->items, list->count, sizeof(PiiFinding), cmp_finding);
	for (i = 0; i < list->count; i++)
		if (list->items[i].start >= last_end)
		{
			list->items[kept++] = list->items[i];
			last_end = list->items[i].end;
		}
	list->count = kept;
	return kept;
}

/* Characters in s[from..to); counts UTF-8 lead bytes directly. */
static int
count_characters(const char *s, int from, int to, bool utf8)
{
	int			chars = 0;

	if (utf8)
	{
		for (; from < to; from++)
			chars += ((unsigned char) s[from] & 0xC0) != 0x80;
		return chars;
	}
	while (from < to)
	{
		from += pg_mblen(s + from);
		chars++;
	}
	return chars;
}

/* Turn byte offsets of sorted, non-overlapping findings into character offsets. */
static void
to_character_offsets(const char *s, PiiFinding *f, int n)
{
	bool		utf8 = (GetDatabaseEncoding() == PG_UTF8);
	int			byte = 0,
				chars = 0,
				i;

	for (i = 0; i < n; i++)
	{
		int			start = f[i].start,
					end = f[i].end;

		chars += count_characters(s, byte, start, utf8);
		f[i].start = chars;
		chars += count_characters(s, start, end, utf8);
		f[i].end = chars;
		byte = end;
	}
}

/* Scan text for PII; the findings, resolved, with character offsets. */
static FindingList
pii_scan(const char *s, int len)
{
	FindingList list;

	list.capacity = 16;
	list.count = 0;
	list.items = palloc(sizeof(PiiFinding) * list.capacity);
	detect_all(s, len, &list);
	resolve_overlaps(&list);
	to_character_offsets(s, list.items, list.count);
	return list;
}

/* donatello.scan_pii(prompt text) returns jsonb */
Datum
donatello_scan_pii(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	FindingList list = pii_scan(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	bool		seen[PII_KIND_COUNT] = {false};
	const char *names[PII_KIND_COUNT];
	int			nnames = 0;
	StringInfoData buf;
	int			i,
				k;

	for (i = 0; i < list.count; i++)
		seen[list.items[i].kind] = true;
	/* kinds in alphabetical order */
	for (k = 0; k < PII_KIND_COUNT; k++)
		if (seen[k])
		{
			int			j = nnames++;

			while (j > 0 && strcmp(names[j - 1], pii_kind_names[k]) > 0)
			{
				names[j] = names[j - 1];
				j--;
			}
			names[j] = pii_kind_names[k];
		}

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"clean\": %s, \"truncated\": %s, \"kinds\": [",
					 list.count == 0 ? "true" : "false",
					 list.count > SAFETY_MAX_FINDINGS ? "true" : "false");
	for (i = 0; i < nnames; i++)
		appendStringInfo(&buf, "%s\"%s\"", i > 0 ? ", " : "", names[i]);
	appendStringInfoString(&buf, "], \"findings\": [");
	for (i = 0; i < Min(list.count, SAFETY_MAX_FINDINGS); i++)
		appendStringInfo(&buf, "%s{\"kind\": \"%s\", \"start\": %d, \"end\": %d}",
						 i > 0 ? ", " : "", pii_kind_names[list.items[i].kind],
						 list.items[i].start, list.items[i].end);
	appendStringInfoString(&buf, "]}");
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
