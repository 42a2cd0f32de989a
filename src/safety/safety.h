/*
 * safety.h
 *	  Safety checks on prompts: the PII scanner (scan_pii) and the content
 *	  check against an organization's blocklist (check_content).
 *
 * Positions reported by both are character offsets into the text as given
 * (not bytes): "start" is 0-based, "end" is exclusive, so the finding is
 * substr(text, start + 1, end - start) in SQL. Neither ever copies the value
 * of a PII finding into a result, a log line or an error.
 */
#ifndef DONATELLO_SAFETY_H
#define DONATELLO_SAFETY_H

#include "postgres.h"

#include "mb/pg_wchar.h"
#include "utils/uuid.h"

/* most findings a scan returns; more set "truncated" */
#define SAFETY_MAX_FINDINGS 1000

/* longest expansion of one code point by text_fold_codepoint (NFKD of U+FDFA is 18) */
#define FOLD_MAX_EXPANSION 32

/* the code point that stands for any run of non-word characters */
#define FOLD_SPACE ((pg_wchar) ' ')

/* ---- text_fold.c: case- and accent-insensitive, word-boundary folding ---- */

/* Fold one code point: lower case, accents and format characters removed. */
extern int	text_fold_codepoint(pg_wchar c, pg_wchar *out);

/* Is a folded code point part of a word (letter, digit, underscore)? */
extern bool text_fold_is_word(pg_wchar c);

/* A term as it is matched: folded, non-word runs as one space, trimmed (UTF-8 in and out). */
extern char *text_fold_term(const char *utf8, int len, int *out_len);

/* Server-encoded text as UTF-8 (the same pointer when the server encoding is UTF-8). */
extern char *text_to_utf8(const char *s, int len, int *out_len);

/* ---- pii_detect.c / pii_scan.c: the PII scanner ---- */

/* kinds of findings, in order of precedence when two start together */
typedef enum PiiKind
{
	PII_EMAIL = 0,
	PII_API_KEY,
	PII_IBAN,
	PII_CREDIT_CARD,
	PII_SSN,
	PII_PHONE,
	PII_IP_ADDRESS,
	PII_TOKEN,
	PII_KIND_COUNT
} PiiKind;

/* a finding: kind and range, in bytes while scanning, in characters at the end */
typedef struct PiiFinding
{
	PiiKind		kind;
	int			start;
	int			end;
} PiiFinding;

extern const char *const pii_kind_names[PII_KIND_COUNT];

/*
 * Detectors on server-encoded text s[0..len) (ASCII-compatible), each trying
 * a match that starts at pos; they return the end offset, or -1. The email
 * detector starts at the "@" and also returns the start.
 */
extern int	pii_match_credit_card(const char *s, int len, int pos);
extern int	pii_match_ssn(const char *s, int len, int pos);
extern int	pii_match_phone(const char *s, int len, int pos);
extern int	pii_match_iban(const char *s, int len, int pos);
extern int	pii_match_ipv4(const char *s, int len, int pos);
extern int	pii_match_ipv6(const char *s, int len, int pos);
extern bool pii_match_email(const char *s, int len, int at, int *start, int *end);
extern bool pii_luhn_valid(const char *digits, int n);
extern bool pii_iban_checksum_valid(const char *chars, int n);
extern int	pii_iban_length(const char *country);

/* ---- blocklist_automaton.c: Aho-Corasick over folded code points ---- */

typedef struct BlocklistAutomaton BlocklistAutomaton;

/* one match of a blocked term: pattern index and character range */
typedef struct BlocklistMatch
{
	int			pattern;
	int			start;
	int			end;
} BlocklistMatch;

/* Build an automaton in the current memory context from folded terms. */
extern BlocklistAutomaton *blocklist_build(int npatterns, char **folded, int *folded_len);

/* Scan UTF-8 text; appends matches (in order of their end) up to max; returns the total count. */
extern int	blocklist_scan(const BlocklistAutomaton *a, const char *text, int len,
						   BlocklistMatch *matches, int max);

/* Memory the automaton's tables use, in bytes. */
extern Size blocklist_memory(const BlocklistAutomaton *a);
extern int	blocklist_state_count(const BlocklistAutomaton *a);

/* ---- blocklist_cache.c: compiled blocklists per organization ---- */

/* A compiled blocklist with its terms and categories, valid for one generation. */
typedef struct CompiledBlocklist
{
	pg_uuid_t	org_id;
	uint64		generation;
	MemoryContext context;		/* owns everything below */
	int			nterms;
	char	  **terms;			/* as added (server encoding) */
	char	  **categories;
	BlocklistAutomaton *automaton;
	Size		bytes;
	struct CompiledBlocklist *lru_prev;
	struct CompiledBlocklist *lru_next;
} CompiledBlocklist;

/* The organization's compiled blocklist (from the cache, or compiled now). */
extern const CompiledBlocklist *blocklist_for_org(const pg_uuid_t *org_id);

extern void blocklist_cache_init(void);
extern void blocklist_invalidate_init(void);

#endif							/* DONATELLO_SAFETY_H */
