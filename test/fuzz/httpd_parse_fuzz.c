/*
 * httpd_parse_fuzz.c
 *	  libFuzzer harness for the HTTP layer's request-target parser
 *	  (bgworker/httpd/httpd_parse.c): the input is a query string; every pair
 *	  goes through the parser that the server would apply to it (select=,
 *	  order=, columns=, on_conflict=, or=/and=, filters), plus the input as a
 *	  path. AddressSanitizer and UndefinedBehaviorSanitizer catch memory
 *	  errors; the harness also checks invariants of the parse trees.
 *
 *	  test/fuzz/run [seconds]     builds with clang and runs it
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bgworker/httpd/httpd_parse.h"

/* A bump allocator freed after each input (the server uses palloc0). */
typedef struct Block
{
	struct Block *next;
	char		data[];
} Block;

static Block *blocks = NULL;

void *
hp_alloc(size_t size)
{
	Block	   *b = calloc(1, sizeof(Block) + size);

	if (b == NULL)
		abort();
	b->next = blocks;
	blocks = b;
	return b->data;
}

/* Free everything allocated for one input. */
static void
arena_reset(void)
{
	while (blocks)
	{
		Block	   *next = blocks->next;

		free(blocks);
		blocks = next;
	}
}

/* Walk a condition tree and check what the SQL builder relies on. */
static void
check_cond(const HpCond *c, int depth)
{
	int			i;

	assert(depth <= HP_MAX_DEPTH + 1);
	if (c->kind == HP_LEAF)
	{
		assert(c->column != NULL && strlen(c->column) > 0 && strlen(c->column) <= HP_MAX_IDENT);
		assert(c->op <= HP_OV);
		if (c->op == HP_IN)
		{
			assert(c->nlist >= 0 && c->nlist <= HP_MAX_LIST);
			for (i = 0; i < c->nlist; i++)
				assert(c->list[i] != NULL);
		}
		else
			assert(c->value != NULL);
		return;
	}
	assert(c->nchildren >= 1);
	for (i = 0; i < c->nchildren; i++)
		check_cond(c->children[i], depth + 1);
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *input = hp_alloc(size + 1);
	HpParam    *params;
	int			nparams,
				i;
	const char *err = NULL;
	char	   *decoded;

	memcpy(input, data, size);
	input[size] = '\0';

	(void) hp_percent_decode(input, strlen(input), false, &decoded, &err);
	if (hp_parse_query_string(input, &params, &nparams, &err))
	{
		assert(nparams >= 0 && nparams <= HP_MAX_PARAMS);
		for (i = 0; i < nparams; i++)
		{
			const char *k = params[i].key;
			const char *v = params[i].value;
			HpSelectItem *sel;
			HpOrderItem *ord;
			char	  **names;
			int			n;
			long		num;

			assert(k != NULL && v != NULL);
			if (strcmp(k, "select") == 0)
				(void) hp_parse_select(v, &sel, &n, &err);
			else if (strcmp(k, "order") == 0)
				(void) hp_parse_order(v, &ord, &n, &err);
			else if (strcmp(k, "columns") == 0 || strcmp(k, "on_conflict") == 0)
				(void) hp_parse_column_list(v, &names, &n, &err);
			else if (strcmp(k, "limit") == 0 || strcmp(k, "offset") == 0)
			{
				if (hp_parse_nonnegative(v, &num))
					assert(num >= 0);
			}
			else
			{
				HpCond	   *c = hp_is_logic_key(k) ? hp_parse_logic(k, v, &err) : hp_parse_filter(k, v, &err);

				if (c != NULL)
					check_cond(c, 0);
				else
					assert(err != NULL);
			}
			/* every value is also tried as each grammar */
			(void) hp_parse_select(v, &sel, &n, &err);
			(void) hp_parse_order(v, &ord, &n, &err);
			(void) hp_parse_logic("or", v, &err);
		}
	}
	arena_reset();
	return 0;
}
