/*
 * httpd_parse.h
 *	  The HTTP layer's parser of request targets: percent-decoding, the query
 *	  string, and PostgREST's select=, order=, filter and or=/and= grammars.
 *
 * Plain C with no PostgreSQL dependency, so that the libFuzzer harness
 * (test/fuzz/) links it alone. Memory comes from hp_alloc(), which the user
 * provides (palloc0 in the server, an arena in the fuzzer); nothing is freed
 * one by one. Every function returns NULL/false on bad input and leaves a
 * message in *err (a static string, safe to show a client); nothing is ever
 * interpreted as SQL here: the result is a tree of names and values that
 * httpd_query.c checks against the catalog.
 */
#ifndef DONATELLO_HTTPD_PARSE_H
#define DONATELLO_HTTPD_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/* provided by the user of the parser: zeroed memory, never NULL */
extern void *hp_alloc(size_t size);

/* limits that keep a hostile query string cheap */
#define HP_MAX_PARAMS		256		/* query-string pairs */
#define HP_MAX_DEPTH		16		/* nesting of or=/and= */
#define HP_MAX_LIST			1000	/* items of in.(), select, order, columns */
#define HP_MAX_IDENT		63		/* bytes of a column or relation name */

typedef struct HpParam
{
	char	   *key;
	char	   *value;
} HpParam;

typedef enum HpOp
{
	HP_EQ, HP_NEQ, HP_GT, HP_GTE, HP_LT, HP_LTE, HP_LIKE, HP_ILIKE,
	HP_MATCH, HP_IMATCH, HP_IN, HP_IS, HP_CS, HP_CD, HP_OV
} HpOp;

typedef enum HpCondKind
{
	HP_LEAF, HP_AND, HP_OR
} HpCondKind;

typedef struct HpCond
{
	HpCondKind	kind;
	bool		negate;
	/* HP_LEAF */
	char	   *column;
	HpOp		op;
	char	   *value;			/* like/ilike: '*' already turned into '%' */
	char	  **list;			/* HP_IN */
	int			nlist;
	/* HP_AND, HP_OR */
	struct HpCond **children;
	int			nchildren;
} HpCond;

typedef struct HpSelectItem
{
	char	   *column;			/* NULL for "*" */
	char	   *alias;			/* NULL: the column's name */
	char	   *cast;			/* NULL or a type name ([a-z0-9_ ] and []) */
} HpSelectItem;

typedef struct HpOrderItem
{
	char	   *column;
	bool		descending;
	int			nulls;			/* 0 default, 1 first, 2 last */
} HpOrderItem;

extern bool hp_percent_decode(const char *in, size_t len, bool plus_is_space, char **out,
							  const char **err);
extern bool hp_parse_query_string(const char *qs, HpParam **params, int *nparams,
								  const char **err);
extern bool hp_parse_select(const char *s, HpSelectItem **items, int *nitems, const char **err);
extern bool hp_parse_order(const char *s, HpOrderItem **items, int *nitems, const char **err);
extern bool hp_parse_column_list(const char *s, char ***names, int *nnames, const char **err);
extern HpCond *hp_parse_filter(const char *column, const char *value, const char **err);
extern HpCond *hp_parse_logic(const char *key, const char *value, const char **err);
extern bool hp_is_logic_key(const char *key);
extern bool hp_parse_nonnegative(const char *s, long *out);
extern const char *hp_op_name(HpOp op);

#endif							/* DONATELLO_HTTPD_PARSE_H */
