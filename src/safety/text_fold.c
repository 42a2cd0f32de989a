/*
 * text_fold.c
 *	  Folding text for the content check: case- and accent-insensitive
 *	  matching on word boundaries.
 *
 * A code point is folded by
 *	1. dropping invisible format characters (soft hyphen, zero-width space
 *	   and joiners, bidirectional controls, byte order mark), so that they
 *	   cannot be used to split a blocked word;
 *	2. Unicode compatibility decomposition (NFKD, PostgreSQL's own tables),
 *	   which turns "é" into "e" + a combining accent, "ﬁ" into "fi" and
 *	   full-width or circled letters into plain ones;
 *	3. dropping combining marks (the accents; PostgreSQL's table of
 *	   non-spacing and enclosing marks);
 *	4. simple lower-casing for Latin, Greek, Cyrillic and Armenian letters
 *	   (a fixed table, so the result never depends on the server's locale).
 * After folding, letters, digits and "_" are word characters and every run of
 * other characters (spaces, punctuation, symbols, emoji) stands for one
 * boundary. Scripts written without spaces between words (Chinese, Japanese,
 * Thai) therefore only match whole runs; docs/generation.md says so.
 *
 * Everything works on UTF-8; callers convert text in another server encoding
 * with text_to_utf8() first.
 */
#include "postgres.h"

#include "common/unicode_norm.h"
#include "lib/stringinfo.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "donatello.h"
#include "safety/safety.h"

/* PostgreSQL's table of combining marks (Mn, Me) uses this element type. */
struct mbinterval
{
	unsigned int first;
	unsigned int last;
};

#include "common/unicode_combining_table.h"

PG_FUNCTION_INFO_V1(donatello_fold_blocked_term);

/* decomposition cache: direct-mapped by code point, short results only */
#define FOLD_CACHE_SIZE 1024
#define FOLD_CACHE_WIDTH 6

typedef struct FoldCacheEntry
{
	pg_wchar	codepoint;		/* 0: empty slot (NUL is ASCII, never cached) */
	uint8		count;
	pg_wchar	out[FOLD_CACHE_WIDTH];
} FoldCacheEntry;

static FoldCacheEntry fold_cache[FOLD_CACHE_SIZE];

/* Is c a combining mark (binary search in PostgreSQL's interval table)? */
static bool
is_combining_mark(pg_wchar c)
{
	int			lo = 0,
				hi = lengthof(combining) - 1;

	if (c < combining[0].first || c > combining[hi].last)
		return false;
	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (c > combining[mid].last)
			lo = mid + 1;
		else if (c < combining[mid].first)
			hi = mid - 1;
		else
			return true;
	}
	return false;
}

/* Invisible format characters that are dropped before matching. */
static bool
is_invisible_format(pg_wchar c)
{
	return c == 0x00AD ||
		(c >= 0x200B && c <= 0x200F) ||
		(c >= 0x202A && c <= 0x202E) ||
		(c >= 0x2060 && c <= 0x2064) ||
		c == 0x034F || c == 0x180E || c == 0xFEFF;
}

/* Simple lower case of one code point: a fixed table, independent of locale. */
static pg_wchar
fold_lower(pg_wchar c)
{
	if (c < 0x80)
		return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
	if (c >= 0xC0 && c <= 0xDE && c != 0xD7)
		return c + 0x20;		/* Latin-1: À..Þ */
	if ((c >= 0x100 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
		return c | 1;			/* Latin Extended-A, even upper / odd lower */
	if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
		return (c & 1) ? c + 1 : c; /* odd upper / even lower */
	if (c == 0x178)
		return 0xFF;			/* Ÿ */
	if (c == 0x17F)
		return 's';				/* long s */
	if (c == 0x1E9E)
		return 0xDF;			/* capital sharp s */
	if (c >= 0x391 && c <= 0x3AB && c != 0x3A2)
		return c + 0x20;		/* Greek capitals */
	if (c == 0x3C2)
		return 0x3C3;			/* final sigma */
	if (c >= 0x400 && c <= 0x40F)
		return c + 0x50;		/* Cyrillic Ѐ..Џ */
	if (c >= 0x410 && c <= 0x42F)
		return c + 0x20;		/* Cyrillic А..Я */
	if ((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF) ||
		(c >= 0x4D0 && c <= 0x52F))
		return c | 1;			/* Cyrillic pairs */
	if (c >= 0x531 && c <= 0x556)
		return c + 0x30;		/* Armenian */
	if ((c >= 0x1E00 && c <= 0x1E95) || (c >= 0x1EA0 && c <= 0x1EFF))
		return c | 1;			/* Latin Extended Additional pairs */
	return c;
}

/* Is a folded code point part of a word (letter, digit, underscore)? */
bool
text_fold_is_word(pg_wchar c)
{
	if (c < 0x80)
		return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			(c >= 'A' && c <= 'Z') || c == '_';
	if (c < 0xC0 || c == 0xD7 || c == 0xF7)
		return false;			/* Latin-1 spaces, punctuation and symbols */
	if ((c >= 0x2000 && c <= 0x2BFF) ||	/* punctuation, currency, arrows, math, shapes */
		(c >= 0x2E00 && c <= 0x2E7F) || /* supplemental punctuation */
		(c >= 0x3000 && c <= 0x303F) || /* CJK symbols and punctuation */
		(c >= 0xD800 && c <= 0xF8FF) || /* surrogates, private use */
		(c >= 0xFE10 && c <= 0xFE1F) || (c >= 0xFE30 && c <= 0xFE6F) ||
		c == 0xFFFD ||
		(c >= 0x1F000 && c <= 0x1FAFF)) /* emoji and pictographs */
		return false;
	return true;
}

/*
 * Fold one code point into out[] (at most FOLD_MAX_EXPANSION code points);
 * returns how many. ASCII takes a fast path; the rest is cached.
 */
int
text_fold_codepoint(pg_wchar c, pg_wchar *out)
{
	FoldCacheEntry *entry;
	pg_wchar	input[2];
	pg_wchar   *decomposed;
	int			n = 0,
				i;

	if (c < 0x80)
	{
		out[0] = fold_lower(c);
		return 1;
	}
	if (is_invisible_format(c))
		return 0;

	entry = &fold_cache[c % FOLD_CACHE_SIZE];
	if (entry->codepoint == c)
	{
		memcpy(out, entry->out, entry->count * sizeof(pg_wchar));
		return entry->count;
	}

	input[0] = c;
	input[1] = 0;
	decomposed = unicode_normalize(UNICODE_NFKD, input);
	if (decomposed == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	for (i = 0; decomposed[i] != 0 && n < FOLD_MAX_EXPANSION; i++)
	{
		if (is_combining_mark(decomposed[i]) || is_invisible_format(decomposed[i]))
			continue;
		out[n++] = fold_lower(decomposed[i]);
	}
	pfree(decomposed);

	if (n <= FOLD_CACHE_WIDTH)
	{
		entry->codepoint = c;
		entry->count = (uint8) n;
		memcpy(entry->out, out, n * sizeof(pg_wchar));
	}
	return n;
}

/* Server-encoded text as UTF-8 (the same pointer when the server encoding is UTF-8). */
char *
text_to_utf8(const char *s, int len, int *out_len)
{
	char	   *utf8 = pg_server_to_any(s, len, PG_UTF8);

	*out_len = (utf8 == s) ? len : (int) strlen(utf8);
	return utf8;
}

/*
 * A term as the matcher sees it: folded, every run of non-word characters
 * replaced by one space, leading and trailing spaces removed. UTF-8 in, a
 * palloc'd NUL-terminated UTF-8 string out.
 */
char *
text_fold_term(const char *utf8, int len, int *out_len)
{
	StringInfoData buf;
	pg_wchar	folded[FOLD_MAX_EXPANSION];
	bool		pending_space = false;
	int			pos = 0;

	initStringInfo(&buf);
	while (pos < len)
	{
		int			clen = pg_utf_mblen((const unsigned char *) utf8 + pos);
		pg_wchar	c = utf8_to_unicode((const unsigned char *) utf8 + pos);
		int			n = text_fold_codepoint(c, folded);
		int			i;

		pos += clen;
		for (i = 0; i < n; i++)
		{
			unsigned char enc[8];

			if (!text_fold_is_word(folded[i]))
			{
				pending_space = (buf.len > 0);
				continue;
			}
			if (pending_space)
				appendStringInfoChar(&buf, ' ');
			pending_space = false;
			unicode_to_utf8(folded[i], enc);
			appendBinaryStringInfo(&buf, (const char *) enc, pg_utf_mblen(enc));
		}
	}
	*out_len = buf.len;
	return buf.data;
}

/* donatello.fold_blocked_term(term text) returns text: the form a term is matched in */
Datum
donatello_fold_blocked_term(PG_FUNCTION_ARGS)
{
	text	   *term = PG_GETARG_TEXT_PP(0);
	int			utf8_len,
				folded_len;
	char	   *utf8 = text_to_utf8(VARDATA_ANY(term), VARSIZE_ANY_EXHDR(term), &utf8_len);
	char	   *folded = text_fold_term(utf8, utf8_len, &folded_len);
	char	   *server = pg_any_to_server(folded, folded_len, PG_UTF8);

	PG_RETURN_TEXT_P(cstring_to_text(server));
}
