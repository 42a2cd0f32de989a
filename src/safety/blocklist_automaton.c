/*
 * blocklist_automaton.c
 *	  Aho-Corasick matching of many blocked terms at once, on word
 *	  boundaries, in one pass over the text.
 *
 * Terms arrive folded (text_fold.c): lower case, no accents, one space
 * between words. The automaton runs over *symbols*: each folded word
 * character that occurs in some term has its own symbol, every other word
 * character shares the symbol OTHER, and every run of non-word characters is
 * one SPACE. A term is inserted as SPACE term SPACE and the text is read as
 * SPACE text SPACE, so a plain substring match is a match on word
 * boundaries, and overlapping terms ("bad", "very bad") are all found.
 *
 * The goto/failure functions are compiled into a complete transition table
 * (states x symbols, int32), so scanning costs one table read per character;
 * the alphabet is only as large as the set of characters the terms use, which
 * keeps the table small (a few MB for thousands of terms). Output links chain
 * the states whose suffix is also a term.
 *
 * Positions: the scanner remembers, in a ring as long as the longest term,
 * which character of the original text produced each symbol, and reports
 * matches as character offsets [start, end).
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "utils/memutils.h"

#include "donatello.h"
#include "safety/safety.h"

#define SYM_SPACE 0
#define SYM_OTHER 1

/* transition table limit: 128M entries (512 MB) */
#define BLOCKLIST_MAX_TABLE_ENTRIES ((Size) 128 * 1024 * 1024)

struct BlocklistAutomaton
{
	int			nsymbols;
	int			nstates;
	int			npatterns;
	int			ring_mask;		/* ring size - 1, a power of two minus one */
	uint16		ascii_symbol[128];	/* raw ASCII byte -> symbol (folds case) */
	int			nwide;
	pg_wchar   *wide_codepoint; /* sorted folded non-ASCII word characters */
	uint16	   *wide_symbol;
	int32	   *delta;			/* nstates x nsymbols */
	int32	   *match_head;		/* first state of the output chain, or -1 */
	int32	   *dict_next;		/* next state of the output chain, or -1 */
	int32	   *out_pattern;	/* pattern ending exactly here, or -1 */
	int32	   *pattern_symbols;	/* length of each pattern in symbols */
};

/* Decode a UTF-8 string into a palloc'd code point array; returns the count. */
static int
decode_utf8(const char *s, int len, pg_wchar **out)
{
	pg_wchar   *cps = palloc(sizeof(pg_wchar) * (len + 1));
	int			n = 0,
				pos = 0;

	while (pos < len)
	{
		cps[n++] = utf8_to_unicode((const unsigned char *) s + pos);
		pos += pg_utf_mblen((const unsigned char *) s + pos);
	}
	*out = cps;
	return n;
}

/* qsort comparator for code points. */
static int
cmp_codepoint(const void *a, const void *b)
{
	pg_wchar	x = *(const pg_wchar *) a,
				y = *(const pg_wchar *) b;

	return (x > y) - (x < y);
}

/* Symbol of a folded non-ASCII word character (binary search), or OTHER. */
static inline int
wide_symbol_of(const BlocklistAutomaton *a, pg_wchar c)
{
	int			lo = 0,
				hi = a->nwide - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (a->wide_codepoint[mid] < c)
			lo = mid + 1;
		else if (a->wide_codepoint[mid] > c)
			hi = mid - 1;
		else
			return a->wide_symbol[mid];
	}
	return SYM_OTHER;
}

/* Symbol of a folded code point. */
static inline int
symbol_of(const BlocklistAutomaton *a, pg_wchar c)
{
	if (c < 0x80)
		return a->ascii_symbol[c];
	if (!text_fold_is_word(c))
		return SYM_SPACE;
	return wide_symbol_of(a, c);
}

/* Build the alphabet from the code points the patterns use. */
static void
build_alphabet(BlocklistAutomaton *a, int npatterns, pg_wchar **cps, int *ncps)
{
	int			total = 0,
				i,
				j,
				k;
	int			ascii_sym[128];
	pg_wchar   *wide;
	int			nwide = 0;

	memset(ascii_sym, 0, sizeof(ascii_sym));
	for (i = 0; i < npatterns; i++)
		total += ncps[i];
	wide = palloc(sizeof(pg_wchar) * (total + 1));

	a->nsymbols = 2;
	for (i = 0; i < npatterns; i++)
		for (j = 0; j < ncps[i]; j++)
		{
			pg_wchar	c = cps[i][j];

			if (c == FOLD_SPACE)
				continue;
			if (c < 0x80)
			{
				if (ascii_sym[c] == 0)
					ascii_sym[c] = a->nsymbols++;
			}
			else
				wide[nwide++] = c;
		}

	/* unique non-ASCII code points, each with its symbol */
	if (nwide > 1)
		qsort(wide, nwide, sizeof(pg_wchar), cmp_codepoint);
	for (i = 0, k = 0; i < nwide; i++)
		if (k == 0 || wide[k - 1] != wide[i])
			wide[k++] = wide[i];
	a->nwide = k;
	a->wide_codepoint = wide;
	a->wide_symbol = palloc(sizeof(uint16) * (k + 1));
	for (i = 0; i < k; i++)
		a->wide_symbol[i] = (uint16) a->nsymbols++;
	if (a->nsymbols > PG_UINT16_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("blocked terms use too many distinct characters (%d)", a->nsymbols)));

	/* raw ASCII byte -> symbol, folding case and classifying boundaries */
	for (i = 0; i < 128; i++)
	{
		pg_wchar	folded[FOLD_MAX_EXPANSION];
		int			n = text_fold_codepoint((pg_wchar) i, folded);

		if (n == 0 || !text_fold_is_word(folded[0]))
			a->ascii_symbol[i] = SYM_SPACE;
		else
			a->ascii_symbol[i] = (uint16) (ascii_sym[folded[0]] ? ascii_sym[folded[0]] : SYM_OTHER);
	}
}

/* Make room for one more state row; returns its index. */
static int
add_state(BlocklistAutomaton *a, int *capacity)
{
	int			s = a->nstates;

	if (s == *capacity)
	{
		int			newcap = *capacity * 2;

		if ((Size) newcap * a->nsymbols > BLOCKLIST_MAX_TABLE_ENTRIES)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("blocklist is too large to compile (%d states, %d symbols)",
							s, a->nsymbols),
					 errhint("Remove blocked terms, or split long phrases.")));
		a->delta = repalloc_huge(a->delta, sizeof(int32) * (Size) newcap * a->nsymbols);
		memset(a->delta + (Size) *capacity * a->nsymbols, 0,
			   sizeof(int32) * (Size) (newcap - *capacity) * a->nsymbols);
		a->out_pattern = repalloc(a->out_pattern, sizeof(int32) * newcap);
		*capacity = newcap;
	}
	a->out_pattern[s] = -1;
	a->nstates++;
	return s;
}

/* Insert one pattern (SPACE symbols SPACE) into the trie. */
static void
insert_pattern(BlocklistAutomaton *a, int *capacity, int p, const pg_wchar *cps, int n)
{
	int			state = 0,
				i;

	for (i = -1; i <= n; i++)
	{
		int			sym = (i < 0 || i == n) ? SYM_SPACE : symbol_of(a, cps[i]);
		int32	   *slot = &a->delta[(Size) state * a->nsymbols + sym];

		if (*slot == 0)
		{
			int			next = add_state(a, capacity);

			/* add_state may have moved the table */
			a->delta[(Size) state * a->nsymbols + sym] = next;
			state = next;
		}
		else
			state = *slot;
	}
	a->pattern_symbols[p] = n + 2;
	if (a->out_pattern[state] < 0)
		a->out_pattern[state] = p;	/* a duplicate term keeps the first */
}

/* Breadth-first: failure links, output chains, and the complete table. */
static void
complete_automaton(BlocklistAutomaton *a)
{
	int32	   *fail = palloc0(sizeof(int32) * a->nstates);
	int32	   *queue = palloc(sizeof(int32) * a->nstates);
	int			head = 0,
				tail = 0,
				sym;

	a->dict_next = palloc(sizeof(int32) * a->nstates);
	a->match_head = palloc(sizeof(int32) * a->nstates);
	a->dict_next[0] = -1;
	a->match_head[0] = -1;

	for (sym = 0; sym < a->nsymbols; sym++)
	{
		int32		t = a->delta[sym];

		if (t != 0)
		{
			fail[t] = 0;
			queue[tail++] = t;
		}
	}
	while (head < tail)
	{
		int32		s = queue[head++];
		int32		f = fail[s];

		a->dict_next[s] = (a->out_pattern[f] >= 0) ? f : a->dict_next[f];
		a->match_head[s] = (a->out_pattern[s] >= 0) ? s : a->dict_next[s];

		for (sym = 0; sym < a->nsymbols; sym++)
		{
			int32	   *slot = &a->delta[(Size) s * a->nsymbols + sym];

			if (*slot != 0)
			{
				/* a trie child: states are never children of themselves' rows */
				fail[*slot] = a->delta[(Size) f * a->nsymbols + sym];
				queue[tail++] = *slot;
			}
			else
				*slot = a->delta[(Size) f * a->nsymbols + sym];
		}
	}
	pfree(fail);
	pfree(queue);
}

/*
 * Build an automaton, in the current memory context, from npatterns folded
 * terms (UTF-8, non-empty, as text_fold_term returns them).
 */
BlocklistAutomaton *
blocklist_build(int npatterns, char **folded, int *folded_len)
{
	BlocklistAutomaton *a = palloc0(sizeof(BlocklistAutomaton));
	pg_wchar  **cps = palloc(sizeof(pg_wchar *) * (npatterns + 1));
	int		   *ncps = palloc(sizeof(int) * (npatterns + 1));
	int			capacity = 64;
	int			longest = 2;
	int			ring = 4;
	int			i;

	for (i = 0; i < npatterns; i++)
	{
		ncps[i] = decode_utf8(folded[i], folded_len[i], &cps[i]);
		longest = Max(longest, ncps[i] + 2);
	}
	build_alphabet(a, npatterns, cps, ncps);

	a->npatterns = npatterns;
	a->pattern_symbols = palloc(sizeof(int32) * (npatterns + 1));
	a->delta = palloc0(sizeof(int32) * (Size) capacity * a->nsymbols);
	a->out_pattern = palloc(sizeof(int32) * capacity);
	add_state(a, &capacity);	/* the root */
	for (i = 0; i < npatterns; i++)
		insert_pattern(a, &capacity, i, cps[i], ncps[i]);
	complete_automaton(a);

	while (ring <= longest)
		ring *= 2;
	a->ring_mask = ring - 1;

	for (i = 0; i < npatterns; i++)
		pfree(cps[i]);
	pfree(cps);
	pfree(ncps);
	return a;
}

/* Scanner state: current automaton state and the symbol-to-character ring. */
typedef struct ScanState
{
	const BlocklistAutomaton *a;
	int32		state;
	bool		last_space;
	uint32		symbol_index;
	int		   *ring;
	BlocklistMatch *matches;
	int			max;
	int			count;
} ScanState;

/* Report every pattern ending at the current state. */
static void
report_matches(ScanState *ss)
{
	const BlocklistAutomaton *a = ss->a;
	int32		m;

	for (m = a->match_head[ss->state]; m >= 0; m = a->dict_next[m])
	{
		int			p = a->out_pattern[m];
		uint32		first = ss->symbol_index - a->pattern_symbols[p] + 2;
		uint32		last = ss->symbol_index - 1;

		if (ss->count < ss->max)
		{
			ss->matches[ss->count].pattern = p;
			ss->matches[ss->count].start = ss->ring[first & a->ring_mask];
			ss->matches[ss->count].end = ss->ring[last & a->ring_mask] + 1;
		}
		ss->count++;
	}
}

/* Feed one symbol produced by the character at charpos. */
static inline void
feed(ScanState *ss, int sym, int charpos)
{
	if (sym == SYM_SPACE)
	{
		if (ss->last_space)
			return;
		ss->last_space = true;
	}
	else
		ss->last_space = false;
	ss->symbol_index++;
	ss->ring[ss->symbol_index & ss->a->ring_mask] = charpos;
	ss->state = ss->a->delta[(Size) ss->state * ss->a->nsymbols + sym];
	if (unlikely(ss->a->match_head[ss->state] >= 0))
		report_matches(ss);
}

/*
 * Scan UTF-8 text. Stores up to max matches (ordered by where they end) and
 * returns how many there are in all.
 */
int
blocklist_scan(const BlocklistAutomaton *a, const char *text, int len,
			   BlocklistMatch *matches, int max)
{
	ScanState	ss;
	int			pos = 0,
				charpos = 0;

	ss.a = a;
	ss.state = 0;
	ss.last_space = false;
	ss.symbol_index = 0;
	ss.ring = palloc(sizeof(int) * (a->ring_mask + 1));
	ss.matches = matches;
	ss.max = max;
	ss.count = 0;

	feed(&ss, SYM_SPACE, 0);	/* the text starts on a boundary */
	while (pos < len)
	{
		unsigned char b = (unsigned char) text[pos];

		if (b < 0x80)
		{
			feed(&ss, a->ascii_symbol[b], charpos);
			pos++;
		}
		else
		{
			pg_wchar	folded[FOLD_MAX_EXPANSION];
			int			n = text_fold_codepoint(utf8_to_unicode((const unsigned char *) text + pos),
												folded);
			int			i;

			for (i = 0; i < n; i++)
				feed(&ss, symbol_of(a, folded[i]), charpos);
			pos += pg_utf_mblen((const unsigned char *) text + pos);
		}
		charpos++;
	}
	feed(&ss, SYM_SPACE, charpos);	/* and ends on one */
	pfree(ss.ring);
	return ss.count;
}

/* Memory the automaton's tables use, in bytes. */
Size
blocklist_memory(const BlocklistAutomaton *a)
{
	return sizeof(BlocklistAutomaton) +
		sizeof(int32) * (Size) a->nstates * (a->nsymbols + 3) +
		sizeof(int32) * (Size) a->npatterns +
		(sizeof(pg_wchar) + sizeof(uint16)) * (Size) a->nwide;
}

/* Number of states (for statistics). */
int
blocklist_state_count(const BlocklistAutomaton *a)
{
	return a->nstates;
}
