/*
 * pii_detect.c
 *	  The structured PII detectors: email addresses, phone numbers, US social
 *	  security numbers, payment card numbers (Luhn), IBANs (ISO 13616 country
 *	  length and mod-97), IPv4 and IPv6 addresses.
 *
 * Each detector looks at server-encoded text (every PostgreSQL server
 * encoding is ASCII-compatible, and the patterns are ASCII) and tries a match
 * starting at one position; pii_scan.c decides where to try and resolves
 * overlaps. Detectors read a bounded number of bytes past their start, so a
 * scan stays linear in the length of the text. A match never counts when it
 * is glued to an ASCII letter or digit on either side ("x4111…" is not a card
 * number).
 *
 * Rules are documented in docs/generation.md (the scan_pii section).
 */
#include "postgres.h"

#include <arpa/inet.h>

#include "donatello.h"
#include "safety/safety.h"

#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define IS_ALNUM(c) (IS_DIGIT(c) || IS_ALPHA(c))
#define IS_HEX(c) (IS_DIGIT(c) || ((c) >= 'a' && (c) <= 'f') || ((c) >= 'A' && (c) <= 'F'))

/* IBAN lengths by country (SWIFT IBAN registry) */
typedef struct IbanCountry
{
	char		code[3];
	int8		length;
} IbanCountry;

static const IbanCountry iban_countries[] = {
	{"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16},
	{"BG", 22}, {"BH", 22}, {"BI", 27}, {"BR", 29}, {"BY", 28}, {"CH", 21}, {"CR", 22},
	{"CY", 28}, {"CZ", 24}, {"DE", 22}, {"DJ", 27}, {"DK", 18}, {"DO", 28}, {"EE", 20},
	{"EG", 29}, {"ES", 24}, {"FI", 18}, {"FK", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22},
	{"GE", 22}, {"GI", 23}, {"GL", 18}, {"GR", 27}, {"GT", 28}, {"HR", 21}, {"HU", 28},
	{"IE", 22}, {"IL", 23}, {"IQ", 23}, {"IS", 26}, {"IT", 27}, {"JO", 30}, {"KW", 30},
	{"KZ", 20}, {"LB", 28}, {"LC", 32}, {"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21},
	{"LY", 25}, {"MC", 27}, {"MD", 24}, {"ME", 22}, {"MK", 19}, {"MN", 20}, {"MR", 27},
	{"MT", 31}, {"MU", 30}, {"NI", 28}, {"NL", 18}, {"NO", 15}, {"OM", 23}, {"PK", 24},
	{"PL", 28}, {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"RU", 33},
	{"SA", 24}, {"SC", 31}, {"SD", 18}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27},
	{"SO", 23}, {"ST", 25}, {"SV", 28}, {"TL", 23}, {"TN", 24}, {"TR", 26}, {"UA", 29},
	{"VA", 22}, {"VG", 24}, {"XK", 20}, {"YE", 30},
	/* territories that use their country's format: Aland (FI) and French ones (FR) */
	{"AX", 18}, {"GF", 27}, {"GP", 27}, {"MF", 27}, {"MQ", 27}, {"NC", 27}, {"PF", 27},
	{"PM", 27}, {"RE", 27}, {"TF", 27}, {"WF", 27}, {"YT", 27},
};

/* May a number start at pos? Not glued to a word, a decimal point or a "+" prefix. */
static bool
number_start_ok(const char *s, int pos)
{
	char		prev;

	if (pos == 0)
		return true;
	prev = s[pos - 1];
	if (IS_ALNUM(prev) || prev == '+')
		return false;
	if ((prev == '.' || prev == ',') && pos >= 2 && IS_DIGIT(s[pos - 2]))
		return false;
	return true;
}

/* May a number end at end? Not glued to a word or followed by decimals. */
static bool
number_end_ok(const char *s, int len, int end)
{
	if (end >= len)
		return true;
	if (IS_ALNUM(s[end]))
		return false;
	if ((s[end] == '.' || s[end] == ',') && end + 1 < len && IS_DIGIT(s[end + 1]))
		return false;
	return true;
}

/* Luhn check over n ASCII digits. */
bool
pii_luhn_valid(const char *digits, int n)
{
	int			sum = 0,
				i;

	for (i = 0; i < n; i++)
	{
		int			d = digits[n - 1 - i] - '0';

		if (i % 2 == 1)
		{
			d *= 2;
			if (d > 9)
				d -= 9;
		}
		sum += d;
	}
	return sum % 10 == 0;
}

/*
 * Payment card number: 13 to 19 digits, optionally in groups separated by
 * single spaces or hyphens, passing the Luhn check and not one repeated
 * digit. When more groups follow (a date, a code), the longest valid prefix
 * of whole groups counts.
 */
int
pii_match_credit_card(const char *s, int len, int pos)
{
	char		digits[20];
	int			ends[20];		/* byte end after each group */
	int			counts[20];		/* digits up to each group */
	int			ngroups = 0,
				n = 0,
				i = pos,
				g;

	if (!number_start_ok(s, pos))
		return -1;
	/* not from the middle of a grouped number ("1234 5678 ...") */
	if (pos >= 2 && (s[pos - 1] == ' ' || s[pos - 1] == '-') && IS_DIGIT(s[pos - 2]))
		return -1;
	for (;;)
	{
		while (i < len && IS_DIGIT(s[i]))
		{
			if (n == 19)
				goto done;		/* too long for a card: groups so far only */
			digits[n++] = s[i++];
		}
		ends[ngroups] = i;
		counts[ngroups] = n;
		ngroups++;
		if (i + 1 < len && (s[i] == ' ' || s[i] == '-') && IS_DIGIT(s[i + 1]) && ngroups < 19)
			i++;
		else
			break;
	}
done:
	for (g = ngroups - 1; g >= 0; g--)
	{
		int			c = counts[g];
		int			k;
		bool		repeated = true;

		if (c < 13 || c > 19 || !number_end_ok(s, len, ends[g]))
			continue;
		/* the run of digits must really end here (not cut at 19) */
		if (ends[g] < len && IS_DIGIT(s[ends[g]]))
			continue;
		for (k = 1; k < c; k++)
			if (digits[k] != digits[0])
				repeated = false;
		if (!repeated && pii_luhn_valid(digits, c))
			return ends[g];
	}
	return -1;
}

/* Read exactly n digits at i; true when they are all there. */
static bool
read_digits(const char *s, int len, int i, int n)
{
	int			k;

	if (i + n > len)
		return false;
	for (k = 0; k < n; k++)
		if (!IS_DIGIT(s[i + k]))
			return false;
	return true;
}

/*
 * US social security number: AAA-GG-SSSS (or with spaces), the area not 000,
 * 666 or 900-999, the group not 00, the serial not 0000.
 */
int
pii_match_ssn(const char *s, int len, int pos)
{
	char		sep;
	int			area,
				group,
				serial;

	if (!number_start_ok(s, pos) || !read_digits(s, len, pos, 3) || pos + 11 > len)
		return -1;
	sep = s[pos + 3];
	if ((sep != '-' && sep != ' ') || s[pos + 6] != sep ||
		!read_digits(s, len, pos + 4, 2) || !read_digits(s, len, pos + 7, 4))
		return -1;
	if (!number_end_ok(s, len, pos + 11) ||
		(pos + 12 < len && s[pos + 11] == sep && IS_DIGIT(s[pos + 12])))
		return -1;
	area = (s[pos] - '0') * 100 + (s[pos + 1] - '0') * 10 + (s[pos + 2] - '0');
	group = (s[pos + 4] - '0') * 10 + (s[pos + 5] - '0');
	serial = (s[pos + 7] - '0') * 1000 + (s[pos + 8] - '0') * 100 +
		(s[pos + 9] - '0') * 10 + (s[pos + 10] - '0');
	if (area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0)
		return -1;
	return pos + 11;
}

/*
 * International phone number: "+", a country code starting 1-9, then digits
 * with single separators (space, hyphen, dot, parentheses), 8 to 15 digits
 * in all (E.164).
 */
static int
match_international_phone(const char *s, int len, int pos)
{
	int			i = pos + 1,
				digits = 0,
				end = -1;
	bool		last_sep = false;

	if (pos > 0 && IS_ALNUM(s[pos - 1]))
		return -1;
	if (i >= len || s[i] < '1' || s[i] > '9')
		return -1;
	while (i < len && i - pos < 40)
	{
		char		c = s[i];

		if (IS_DIGIT(c))
		{
			if (++digits > 15)
				return -1;
			end = i + 1;
			last_sep = false;
		}
		else if (c == ' ' || c == '-' || c == '.' || c == '(' || c == ')')
		{
			/* ") " and " (" are the only separator pairs */
			if (last_sep && !(c == ' ' && s[i - 1] == ')') && !(c == '(' && s[i - 1] == ' '))
				break;
			last_sep = true;
		}
		else
			break;
		i++;
	}
	if (digits < 8 || !number_end_ok(s, len, end))
		return -1;
	return end;
}

/*
 * North American number written the usual ways: (NXX) NXX-XXXX,
 * NXX-NXX-XXXX, NXX.NXX.XXXX or NXX NXX XXXX, where N is 2-9.
 */
static int
match_north_american_phone(const char *s, int len, int pos)
{
	int			i = pos;
	char		sep;

	if (!number_start_ok(s, pos))
		return -1;
	if (s[i] == '(')
	{
		if (!read_digits(s, len, i + 1, 3) || i + 5 >= len || s[i + 4] != ')')
			return -1;
		if (s[i + 1] < '2')
			return -1;
		i += 5;
		if (i < len && s[i] == ' ')
			i++;
		sep = '-';
	}
	else
	{
		if (!read_digits(s, len, i, 3) || s[i] < '2' || i + 3 >= len)
			return -1;
		sep = s[i + 3];
		if (sep != '-' && sep != '.' && sep != ' ')
			return -1;
		i += 4;
	}
	if (!read_digits(s, len, i, 3) || s[i] < '2' || i + 3 >= len || s[i + 3] != sep ||
		!read_digits(s, len, i + 4, 4))
		return -1;
	i += 8;
	if (!number_end_ok(s, len, i) || (i + 1 < len && s[i] == sep && IS_DIGIT(s[i + 1])))
		return -1;
	return i;
}

/* Phone number starting at pos ("+", "(" or a digit). */
int
pii_match_phone(const char *s, int len, int pos)
{
	if (s[pos] == '+')
		return match_international_phone(s, len, pos);
	return match_north_american_phone(s, len, pos);
}

/* The registered IBAN length of a two-letter country code, or 0. */
int
pii_iban_length(const char *country)
{
	int			i;

	for (i = 0; i < (int) lengthof(iban_countries); i++)
		if (iban_countries[i].code[0] == country[0] && iban_countries[i].code[1] == country[1])
			return iban_countries[i].length;
	return 0;
}

/* ISO 7064 mod 97-10 over an IBAN's n characters (upper-case letters, digits). */
bool
pii_iban_checksum_valid(const char *chars, int n)
{
	int			remainder = 0,
				k;

	for (k = 0; k < n; k++)
	{
		char		c = chars[(k + 4) % n];	/* the first four characters go last */

		if (IS_DIGIT(c))
			remainder = (remainder * 10 + (c - '0')) % 97;
		else
			remainder = (remainder * 100 + (c - 'A' + 10)) % 97;
	}
	return remainder == 1;
}

/*
 * IBAN: a registered country code, two check digits, then the country's
 * number of letters and digits in all, optionally grouped by single spaces;
 * case-insensitive; the mod-97 check must hold.
 */
int
pii_match_iban(const char *s, int len, int pos)
{
	char		chars[40];
	int			expected,
				n = 0,
				i = pos;

	if ((pos > 0 && IS_ALNUM(s[pos - 1])) || pos + 4 > len ||
		!IS_ALPHA(s[pos]) || !IS_ALPHA(s[pos + 1]) || !IS_DIGIT(s[pos + 2]) || !IS_DIGIT(s[pos + 3]))
		return -1;
	chars[0] = pg_ascii_toupper(s[pos]);
	chars[1] = pg_ascii_toupper(s[pos + 1]);
	expected = pii_iban_length(chars);
	if (expected == 0)
		return -1;
	while (i < len && n < expected)
	{
		if (IS_ALNUM(s[i]))
			chars[n++] = pg_ascii_toupper(s[i++]);
		else if (s[i] == ' ' && n >= 4 && i + 1 < len && IS_ALNUM(s[i + 1]))
			i++;
		else
			break;
	}
	if (n != expected || (i < len && IS_ALNUM(s[i])))
		return -1;
	return pii_iban_checksum_valid(chars, n) ? i : -1;
}

/* IPv4 address in dotted decimal (no leading zeros), validated by inet_pton. */
int
pii_match_ipv4(const char *s, int len, int pos)
{
	char		buf[16];
	unsigned char addr[4];
	int			i = pos,
				dots = 0;

	if (pos > 0 && (IS_ALNUM(s[pos - 1]) || s[pos - 1] == '.'))
		return -1;
	while (i < len && i - pos < 16 && (IS_DIGIT(s[i]) || s[i] == '.'))
	{
		if (s[i] == '.')
		{
			if (dots == 3)
				break;
			dots++;
		}
		i++;
	}
	if (dots != 3 || i - pos > 15 || s[i - 1] == '.')
		return -1;
	if (i < len && (IS_ALNUM(s[i]) || (s[i] == '.' && i + 1 < len && IS_DIGIT(s[i + 1]))))
		return -1;
	memcpy(buf, s + pos, i - pos);
	buf[i - pos] = '\0';
	return inet_pton(AF_INET, buf, addr) == 1 ? i : -1;
}

/*
 * IPv6 address (any text form inet_pton accepts, including "::" compression
 * and a trailing dotted IPv4), at least two colons and one hex digit.
 */
int
pii_match_ipv6(const char *s, int len, int pos)
{
	char		buf[48];
	unsigned char addr[16];
	int			i = pos,
				colons = 0,
				hex = 0;

	if (pos > 0 && (IS_ALNUM(s[pos - 1]) || s[pos - 1] == ':' || s[pos - 1] == '.'))
		return -1;
	while (i < len && (IS_HEX(s[i]) || s[i] == ':' || s[i] == '.'))
	{
		if (i - pos >= 45)
			return -1;			/* longer than any address */
		if (s[i] == ':')
			colons++;
		else if (s[i] != '.')
			hex++;
		i++;
	}
	if (i < len && IS_ALNUM(s[i]))
		return -1;
	/* a sentence may end right after it */
	while (i > pos && s[i - 1] == '.')
		i--;
	if (i - pos >= 2 && s[i - 1] == ':' && s[i - 2] != ':')
		i--;
	if (colons < 2 || hex == 0)
		return -1;
	memcpy(buf, s + pos, i - pos);
	buf[i - pos] = '\0';
	return inet_pton(AF_INET6, buf, addr) == 1 ? i : -1;
}

/* Characters of an email's local part (the usual ones of RFC 5322's atext). */
static bool
is_email_local_char(char c)
{
	return IS_ALNUM(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-' ||
		c == '\'' || c == '!' || c == '#' || c == '$' || c == '&' || c == '*' ||
		c == '=' || c == '?' || c == '^' || c == '`' || c == '{' || c == '|' ||
		c == '}' || c == '~' || c == '/';
}

/*
 * Email address around the "@" at position at: a local part of up to 64
 * characters, and a domain of dot-separated labels (letters, digits,
 * hyphens) ending in a top-level domain of two or more letters.
 */
bool
pii_match_email(const char *s, int len, int at, int *start, int *end)
{
	int			b = at,
				e = at + 1,
				label_start,
				labels = 0;
	bool		tld_ok = false;

	while (b > 0 && at - b < 64 && is_email_local_char(s[b - 1]))
		b--;
	while (b < at && s[b] == '.')
		b++;
	if (b == at)
		return false;

	/* domain labels */
	label_start = e;
	for (;;)
	{
		int			k = label_start;
		bool		all_alpha = true;

		while (k < len && k - (at + 1) < 253 && (IS_ALNUM(s[k]) || s[k] == '-'))
		{
			if (!IS_ALPHA(s[k]))
				all_alpha = false;
			k++;
		}
		while (k > label_start && s[k - 1] == '-')
			k--;
		if (k == label_start || s[label_start] == '-')
			break;
		labels++;
		e = k;
		tld_ok = (all_alpha && k - label_start >= 2) ||
			(k - label_start > 4 && strncmp(s + label_start, "xn--", 4) == 0);
		if (k + 1 < len && s[k] == '.' && IS_ALNUM(s[k + 1]))
			label_start = k + 1;
		else
			break;
	}
	if (labels < 2 || !tld_ok)
		return false;
	*start = b;
	*end = e;
	return true;
}
