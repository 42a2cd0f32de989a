/*
 * httpd_parse.c
 *	  Parser of request targets in PostgREST's grammar (see httpd_parse.h).
 *
 *	  query string	key=value&key=value, percent-encoded, '+' is a space
 *	  filter		column=[not.]op.value   op: eq neq gt gte lt lte like ilike
 *					match imatch in is cs cd ov; in.(a,"b,c"); is.null|true|false|unknown
 *	  logic			or=(cond,cond,...)  and=(...)  not.or=(...)  with conds
 *					column.[not.]op.value or nested [not.]and(...) / [not.]or(...)
 *	  select		item,item   item: * | [alias:]column[::type]
 *	  order			column[.asc|.desc][.nullsfirst|.nullslast],...
 *
 * Identifiers are bare (any byte but , . : ( ) " and control characters) or
 * double-quoted; at most HP_MAX_IDENT bytes. Values are opaque text.
 */
#include "bgworker/httpd/httpd_parse.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_names[] = {
	"eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike",
	"match", "imatch", "in", "is", "cs", "cd", "ov"
};

/* The name of an operator, as in the query string. */
const char *
hp_op_name(HpOp op)
{
	return op_names[op];
}

/* A copy of len bytes of s, NUL-terminated. */
static char *
hp_strndup(const char *s, size_t len)
{
	char	   *r = hp_alloc(len + 1);

	memcpy(r, s, len);
	r[len] = '\0';
	return r;
}

/* Value of a hexadecimal digit, or -1. */
static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Decode %XX escapes (and '+' as a space when asked). A '%' not followed by
 * two hex digits, or a decoded NUL byte, is an error.
 */
bool
hp_percent_decode(const char *in, size_t len, bool plus_is_space, char **out, const char **err)
{
	char	   *r = hp_alloc(len + 1);
	size_t		i,
				n = 0;

	for (i = 0; i < len; i++)
	{
		char		c = in[i];

		if (c == '%')
		{
			int			hi,
						lo;

			if (i + 2 >= len)
			{
				*err = "invalid percent-encoding in the request target";
				return false;
			}
			hi = hex_value(in[i + 1]);
			lo = hex_value(in[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
			{
				*err = "invalid percent-encoding in the request target";
				return false;
			}
			r[n++] = (char) (hi * 16 + lo);
			i += 2;
		}
		else if (c == '+' && plus_is_space)
			r[n++] = ' ';
		else if (c == '\0')
		{
			*err = "NUL byte in the request target";
			return false;
		}
		else
			r[n++] = c;
	}
	r[n] = '\0';
	*out = r;
	return true;
}

/* Split a raw query string into decoded key/value pairs, in order. */
bool
hp_parse_query_string(const char *qs, HpParam **params, int *nparams, const char **err)
{
	int			count = 0;
	int			cap = 8;
	HpParam    *p = hp_alloc(sizeof(HpParam) * cap);
	const char *s = qs ? qs : "";

	while (*s)
	{
		const char *amp = strchr(s, '&');
		size_t		len = amp ? (size_t) (amp - s) : strlen(s);
		const char *eq = memchr(s, '=', len);
		size_t		klen = eq ? (size_t) (eq - s) : len;

		if (len > 0)
		{
			if (count >= HP_MAX_PARAMS)
			{
				*err = "too many query parameters";
				return false;
			}
			if (count == cap)
			{
				HpParam    *bigger = hp_alloc(sizeof(HpParam) * cap * 2);

				memcpy(bigger, p, sizeof(HpParam) * cap);
				p = bigger;
				cap *= 2;
			}
			if (!hp_percent_decode(s, klen, true, &p[count].key, err))
				return false;
			if (eq)
			{
				if (!hp_percent_decode(eq + 1, len - klen - 1, true, &p[count].value, err))
					return false;
			}
			else
				p[count].value = hp_strndup("", 0);
			count++;
		}
		s += len;
		if (*s == '&')
			s++;
	}
	*params = p;
	*nparams = count;
	return true;
}

/* May c appear in a bare identifier? */
static bool
ident_char(unsigned char c)
{
	return c >= 0x20 && c != 0x7f && c != ',' && c != '.' && c != ':' &&
		c != '(' && c != ')' && c != '"';
}

/*
 * Read an identifier at *p (bare or double-quoted); advance *p past it.
 * Surrounding spaces are skipped for bare names.
 */
static char *
read_ident(const char **p, const char **err)
{
	const char *s = *p;
	const char *start;
	size_t		len;

	while (*s == ' ')
		s++;
	if (*s == '"')
	{
		start = ++s;
		while (*s && *s != '"')
			s++;
		if (*s != '"')
		{
			*err = "unterminated quoted identifier";
			return NULL;
		}
		len = (size_t) (s - start);
		s++;
	}
	else
	{
		start = s;
		while (*s && ident_char((unsigned char) *s))
			s++;
		len = (size_t) (s - start);
		while (len > 0 && start[len - 1] == ' ')
			len--;
	}
	if (len == 0)
	{
		*err = "empty or invalid column name";
		return NULL;
	}
	if (len > HP_MAX_IDENT)
	{
		*err = "column name too long";
		return NULL;
	}
	if (memchr(start, '\0', len) != NULL)
	{
		*err = "invalid column name";
		return NULL;
	}
	while (*s == ' ')
		s++;
	*p = s;
	return hp_strndup(start, len);
}

/* Parse a non-negative decimal integer (limit, offset); no sign, no overflow. */
bool
hp_parse_nonnegative(const char *s, long *out)
{
	long		v = 0;

	if (s == NULL || *s == '\0')
		return false;
	for (; *s; s++)
	{
		if (*s < '0' || *s > '9')
			return false;
		if (v > (0x7fffffffL - (*s - '0')) / 10)
			return false;
		v = v * 10 + (*s - '0');
	}
	*out = v;
	return true;
}

/* A type name for a cast: lower-case letters, digits, '_', spaces and "[]". */
static char *
read_type_name(const char **p, const char **err)
{
	const char *s = *p;
	const char *start = s;

	while (*s && (islower((unsigned char) *s) || isdigit((unsigned char) *s) || *s == '_' ||
				  *s == ' ' || *s == '[' || *s == ']'))
		s++;
	if (s == start || s - start > HP_MAX_IDENT)
	{
		*err = "invalid type name in a cast";
		return NULL;
	}
	*p = s;
	return hp_strndup(start, (size_t) (s - start));
}

/* select=: a comma-separated list of [alias:]column[::type] or "*". */
bool
hp_parse_select(const char *s, HpSelectItem **items, int *nitems, const char **err)
{
	int			cap = 8,
				n = 0;
	HpSelectItem *it = hp_alloc(sizeof(HpSelectItem) * cap);

	for (;;)
	{
		HpSelectItem *cur;

		while (*s == ' ')
			s++;
		if (n >= HP_MAX_LIST)
		{
			*err = "too many items in select";
			return false;
		}
		if (n == cap)
		{
			HpSelectItem *bigger = hp_alloc(sizeof(HpSelectItem) * cap * 2);

			memcpy(bigger, it, sizeof(HpSelectItem) * cap);
			it = bigger;
			cap *= 2;
		}
		cur = &it[n];
		if (*s == '*')
		{
			s++;
			while (*s == ' ')
				s++;
		}
		else
		{
			char	   *name = read_ident(&s, err);

			if (name == NULL)
				return false;
			if (s[0] == ':' && s[1] != ':')
			{
				s++;
				cur->alias = name;
				if ((name = read_ident(&s, err)) == NULL)
					return false;
			}
			cur->column = name;
			if (s[0] == ':' && s[1] == ':')
			{
				s += 2;
				if ((cur->cast = read_type_name(&s, err)) == NULL)
					return false;
				while (*s == ' ')
					s++;
			}
			if (*s == '(')
			{
				*err = "embedded resources are not supported in select";
				return false;
			}
		}
		n++;
		if (*s == '\0')
			break;
		if (*s != ',')
		{
			*err = "unexpected character in select";
			return false;
		}
		s++;
	}
	*items = it;
	*nitems = n;
	return true;
}

/* order=: column[.asc|.desc][.nullsfirst|.nullslast],... */
bool
hp_parse_order(const char *s, HpOrderItem **items, int *nitems, const char **err)
{
	int			cap = 4,
				n = 0;
	HpOrderItem *it = hp_alloc(sizeof(HpOrderItem) * cap);

	for (;;)
	{
		HpOrderItem *cur;

		if (n >= HP_MAX_LIST)
		{
			*err = "too many items in order";
			return false;
		}
		if (n == cap)
		{
			HpOrderItem *bigger = hp_alloc(sizeof(HpOrderItem) * cap * 2);

			memcpy(bigger, it, sizeof(HpOrderItem) * cap);
			it = bigger;
			cap *= 2;
		}
		cur = &it[n];
		if ((cur->column = read_ident(&s, err)) == NULL)
			return false;
		while (*s == '.')
		{
			const char *word = ++s;
			size_t		len;

			while (*s && *s != '.' && *s != ',')
				s++;
			len = (size_t) (s - word);
			if (len == 3 && strncmp(word, "asc", 3) == 0)
				cur->descending = false;
			else if (len == 4 && strncmp(word, "desc", 4) == 0)
				cur->descending = true;
			else if (len == 10 && strncmp(word, "nullsfirst", 10) == 0)
				cur->nulls = 1;
			else if (len == 9 && strncmp(word, "nullslast", 9) == 0)
				cur->nulls = 2;
			else
			{
				*err = "invalid direction in order (asc, desc, nullsfirst, nullslast)";
				return false;
			}
		}
		n++;
		if (*s == '\0')
			break;
		if (*s != ',')
		{
			*err = "unexpected character in order";
			return false;
		}
		s++;
	}
	*items = it;
	*nitems = n;
	return true;
}

/* columns= and on_conflict=: a comma-separated list of (possibly quoted) names. */
bool
hp_parse_column_list(const char *s, char ***names, int *nnames, const char **err)
{
	int			cap = 8,
				n = 0;
	char	  **r = hp_alloc(sizeof(char *) * cap);

	for (;;)
	{
		if (n >= HP_MAX_LIST)
		{
			*err = "too many columns";
			return false;
		}
		if (n == cap)
		{
			char	  **bigger = hp_alloc(sizeof(char *) * cap * 2);

			memcpy(bigger, r, sizeof(char *) * cap);
			r = bigger;
			cap *= 2;
		}
		if ((r[n++] = read_ident(&s, err)) == NULL)
			return false;
		if (*s == '\0')
			break;
		if (*s != ',')
		{
			*err = "unexpected character in a column list";
			return false;
		}
		s++;
	}
	*names = r;
	*nnames = n;
	return true;
}

/* Read an operator name at *p up to the next '.'; advance past the dot. */
static bool
read_op(const char **p, HpOp *op)
{
	const char *s = *p;
	const char *dot = strchr(s, '.');
	size_t		len;
	int			i;

	if (dot == NULL)
		return false;
	len = (size_t) (dot - s);
	for (i = 0; i < (int) (sizeof(op_names) / sizeof(op_names[0])); i++)
	{
		if (strlen(op_names[i]) == len && strncmp(s, op_names[i], len) == 0)
		{
			*op = (HpOp) i;
			*p = dot + 1;
			return true;
		}
	}
	return false;
}

/* Replace '*' by '%' (like and ilike patterns, as PostgREST does). */
static void
star_to_percent(char *s)
{
	for (; *s; s++)
		if (*s == '*')
			*s = '%';
}

/*
 * Parse the list of in.(a,"b,c",d): items separated by commas; an item may be
 * double-quoted, with backslash escapes inside quotes.
 */
static bool
parse_in_list(const char *s, size_t len, HpCond *cond, const char **err)
{
	const char *end;
	int			cap = 8;

	if (len < 2 || s[0] != '(' || s[len - 1] != ')')
	{
		*err = "in. needs a parenthesized list: in.(a,b)";
		return false;
	}
	end = s + len - 1;
	s++;
	cond->list = hp_alloc(sizeof(char *) * cap);
	cond->nlist = 0;
	if (s == end)
		return true;			/* in.() matches nothing */
	for (;;)
	{
		char	   *item = hp_alloc((size_t) (end - s) + 1);
		size_t		n = 0;

		if (cond->nlist >= HP_MAX_LIST)
		{
			*err = "too many items in in.()";
			return false;
		}
		if (s < end && *s == '"')
		{
			s++;
			while (s < end && *s != '"')
			{
				if (*s == '\\' && s + 1 < end)
					s++;
				item[n++] = *s++;
			}
			if (s >= end)
			{
				*err = "unterminated quoted value in in.()";
				return false;
			}
			s++;
			if (s < end && *s != ',')
			{
				*err = "unexpected character after a quoted value in in.()";
				return false;
			}
		}
		else
		{
			while (s < end && *s != ',')
				item[n++] = *s++;
		}
		item[n] = '\0';
		if (cond->nlist == cap)
		{
			char	  **bigger = hp_alloc(sizeof(char *) * cap * 2);

			memcpy(bigger, cond->list, sizeof(char *) * cap);
			cond->list = bigger;
			cap *= 2;
		}
		cond->list[cond->nlist++] = item;
		if (s >= end)
			break;
		s++;					/* the comma */
	}
	return true;
}

/*
 * The operator part of a condition, "[not.]op.value", with value len bytes
 * long (already unquoted by the caller for logic trees).
 */
static HpCond *
parse_op_value(char *column, const char *s, size_t len, const char **err)
{
	HpCond	   *cond = hp_alloc(sizeof(HpCond));
	const char *end = s + len;
	const char *p = s;
	char	   *value;

	cond->kind = HP_LEAF;
	cond->column = column;
	if (len >= 4 && strncmp(p, "not.", 4) == 0)
	{
		cond->negate = true;
		p += 4;
	}
	if (!read_op(&p, &cond->op) || p > end)
	{
		*err = "unknown or missing operator (eq, neq, gt, gte, lt, lte, like, ilike, match, imatch, in, is, cs, cd, ov)";
		return NULL;
	}
	if (cond->op == HP_IN)
	{
		if (!parse_in_list(p, (size_t) (end - p), cond, err))
			return NULL;
		return cond;
	}
	value = hp_strndup(p, (size_t) (end - p));
	if (cond->op == HP_IS)
	{
		static const char *const allowed[] = {"null", "not_null", "true", "false", "unknown"};
		int			i;
		bool		ok = false;

		for (i = 0; i < 5; i++)
			if (strcmp(value, allowed[i]) == 0)
				ok = true;
		if (!ok)
		{
			*err = "is. accepts null, not_null, true, false or unknown";
			return NULL;
		}
	}
	if (cond->op == HP_LIKE || cond->op == HP_ILIKE)
		star_to_percent(value);
	cond->value = value;
	return cond;
}

/* column=[not.]op.value (a top-level query-string filter). */
HpCond *
hp_parse_filter(const char *column, const char *value, const char **err)
{
	const char *c = column;
	char	   *name = read_ident(&c, err);

	if (name == NULL)
		return NULL;
	if (*c != '\0')
	{
		*err = "invalid column name in a filter";
		return NULL;
	}
	return parse_op_value(name, value, strlen(value), err);
}

/* Is this query-string key a logic tree (or, and, not.or, not.and)? */
bool
hp_is_logic_key(const char *key)
{
	return strcmp(key, "or") == 0 || strcmp(key, "and") == 0 ||
		strcmp(key, "not.or") == 0 || strcmp(key, "not.and") == 0;
}

static HpCond *parse_group(const char **p, HpCondKind kind, bool negate, int depth, const char **err);

/*
 * One item of a logic list at *p: a nested [not.]and(...)/[not.]or(...) or a
 * column.[not.]op.value condition. Stops at the ',' or ')' that ends it.
 */
static HpCond *
parse_logic_item(const char **p, int depth, const char **err)
{
	const char *s = *p;
	bool		negate = false;
	char	   *column;
	char	   *buf;
	size_t		n = 0;
	int			parens = 0;
	HpCond	   *cond;

	if (strncmp(s, "not.", 4) == 0 && (strncmp(s + 4, "and(", 4) == 0 || strncmp(s + 4, "or(", 3) == 0))
	{
		negate = true;
		s += 4;
	}
	if (strncmp(s, "and(", 4) == 0)
	{
		s += 3;
		cond = parse_group(&s, HP_AND, negate, depth + 1, err);
		*p = s;
		return cond;
	}
	if (strncmp(s, "or(", 3) == 0)
	{
		s += 2;
		cond = parse_group(&s, HP_OR, negate, depth + 1, err);
		*p = s;
		return cond;
	}
	if ((column = read_ident(&s, err)) == NULL)
		return NULL;
	if (*s != '.')
	{
		*err = "a condition in or=/and= is column.operator.value";
		return NULL;
	}
	s++;
	/* copy "[not.]op." then the value, unquoting a double-quoted value */
	buf = hp_alloc(strlen(s) + 1);
	while (*s && *s != '"' && *s != ',' && *s != ')' && *s != '(')
		buf[n++] = *s++;
	if (*s == '"' && n > 0 && buf[n - 1] == '.')
	{
		s++;
		while (*s && *s != '"')
		{
			if (*s == '\\' && s[1])
				s++;
			buf[n++] = *s++;
		}
		if (*s != '"')
		{
			*err = "unterminated quoted value in or=/and=";
			return NULL;
		}
		s++;
	}
	else if (*s == '(')
	{
		/* in.(...) keeps its parentheses and quotes for parse_in_list */
		bool		quoted = false;

		while (*s)
		{
			if (*s == '"')
				quoted = !quoted;
			else if (*s == '\\' && quoted && s[1])
				buf[n++] = *s++;
			else if (!quoted && *s == '(')
				parens++;
			else if (!quoted && *s == ')')
			{
				if (--parens == 0)
				{
					buf[n++] = *s++;
					break;
				}
			}
			buf[n++] = *s++;
		}
		if (parens != 0)
		{
			*err = "unbalanced parentheses in or=/and=";
			return NULL;
		}
	}
	buf[n] = '\0';
	cond = parse_op_value(column, buf, n, err);
	*p = s;
	return cond;
}

/* A parenthesized list of logic items at *p (which points at '('). */
static HpCond *
parse_group(const char **p, HpCondKind kind, bool negate, int depth, const char **err)
{
	const char *s = *p;
	HpCond	   *group;
	int			cap = 4;

	if (depth > HP_MAX_DEPTH)
	{
		*err = "or=/and= nested too deeply";
		return NULL;
	}
	if (*s != '(')
	{
		*err = "or=/and= needs a parenthesized list: or=(a.eq.1,b.eq.2)";
		return NULL;
	}
	s++;
	group = hp_alloc(sizeof(HpCond));
	group->kind = kind;
	group->negate = negate;
	group->children = hp_alloc(sizeof(HpCond *) * cap);
	for (;;)
	{
		HpCond	   *child;

		if (group->nchildren >= HP_MAX_LIST)
		{
			*err = "too many conditions in or=/and=";
			return NULL;
		}
		if ((child = parse_logic_item(&s, depth, err)) == NULL)
			return NULL;
		if (group->nchildren == cap)
		{
			HpCond	  **bigger = hp_alloc(sizeof(HpCond *) * cap * 2);

			memcpy(bigger, group->children, sizeof(HpCond *) * cap);
			group->children = bigger;
			cap *= 2;
		}
		group->children[group->nchildren++] = child;
		if (*s == ',')
		{
			s++;
			continue;
		}
		if (*s == ')')
		{
			s++;
			break;
		}
		*err = "expected ',' or ')' in or=/and=";
		return NULL;
	}
	*p = s;
	return group;
}

/* or=(...), and=(...), not.or=(...), not.and=(...) */
HpCond *
hp_parse_logic(const char *key, const char *value, const char **err)
{
	bool		negate = strncmp(key, "not.", 4) == 0;
	const char *k = negate ? key + 4 : key;
	const char *s = value;
	HpCond	   *cond = parse_group(&s, strcmp(k, "or") == 0 ? HP_OR : HP_AND, negate, 1, err);

	if (cond != NULL && *s != '\0')
	{
		*err = "unexpected characters after or=/and= list";
		return NULL;
	}
	return cond;
}
