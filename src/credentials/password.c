/*
 * password.c
 *	  Passwords: Argon2id hashing with libsodium (PHC strings
 *	  "$argon2id$v=19$m=<KiB>,t=<passes>,p=1$<salt>$<hash>"), the password
 *	  policy and donatello.set_password().
 *
 * The cost comes from donatello.password_memory and
 * donatello.password_iterations; login rehashes a password whose stored
 * parameters differ (password_needs_rehash). For an unknown email login
 * verifies against a dummy hash of the current cost, so both cases take
 * about the same time.
 *
 * No password is ever copied into an error message or a log line; buffers
 * that held one are wiped with sodium_memzero where we own them.
 */
#include "postgres.h"

#include <sodium.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "donatello.h"
#include "credentials/credentials.h"

PG_FUNCTION_INFO_V1(donatello_password_hash);
PG_FUNCTION_INFO_V1(donatello_password_verify);
PG_FUNCTION_INFO_V1(donatello_password_policy_violations);
PG_FUNCTION_INFO_V1(donatello_set_password);

#define PASSWORD_MIN_LENGTH 12
#define PASSWORD_MAX_BYTES 1024

/* donatello.password_memory (kB) and donatello.password_iterations */
static int	password_memory_kb = 65536;
static int	password_iterations = 2;

/* dummy hash for unknown users, remade when the cost settings change */
static char *dummy_hash = NULL;
static int	dummy_memory_kb = 0;
static int	dummy_iterations = 0;

/* Define the Argon2id cost settings. */
void
password_init(void)
{
	DefineCustomIntVariable("donatello.password_memory",
							"Memory used by Argon2id for each password hash.",
							"Stored hashes with other parameters are rehashed at the next successful login.",
							&password_memory_kb, 65536, 8, 4 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("donatello.password_iterations",
							"Argon2id passes (t) for each password hash.",
							NULL, &password_iterations, 2, 1, 100,
							PGC_SUSET, 0, NULL, NULL, NULL);
}

/* Raise DNV01 for a password too long to hash (before any work). */
static void
password_check_length(const char *password)
{
	if (strlen(password) > PASSWORD_MAX_BYTES)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("password is longer than %d bytes", PASSWORD_MAX_BYTES)));
}

/* Argon2id PHC string of a password with the configured cost. */
char *
password_hash_cstring(const char *password)
{
	char		out[crypto_pwhash_STRBYTES];

	password_check_length(password);
	if (crypto_pwhash_str_alg(out, password, strlen(password),
							  (unsigned long long) password_iterations,
							  (size_t) password_memory_kb * 1024,
							  crypto_pwhash_ALG_ARGON2ID13) != 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not hash the password with Argon2id"),
				 errdetail("Argon2id needs %d kB of memory (donatello.password_memory).",
						   password_memory_kb)));
	return pstrdup(out);
}

/*
 * Does the password match the PHC string? Argon2id and Argon2i strings of any
 * cost verify; an unparsable string is simply a mismatch.
 */
bool
password_verify_cstring(const char *password, const char *hash)
{
	password_check_length(password);
	if (strlen(hash) >= crypto_pwhash_STRBYTES)
		return false;
	return crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
}

/* Was the hash made with other parameters (or another algorithm) than now configured? */
bool
password_needs_rehash(const char *hash)
{
	if (strncmp(hash, "$argon2id$", 10) != 0)
		return true;
	return crypto_pwhash_str_needs_rehash(hash, (unsigned long long) password_iterations,
										  (size_t) password_memory_kb * 1024) != 0;
}

/*
 * Make the dummy hash for unknown users if it is missing or the cost settings
 * changed. login calls this first, whoever logs in, so that making it never
 * shows in the time of an unknown-email attempt only.
 */
void
password_dummy_prepare(void)
{
	char		random_password[33];
	uint8		raw[16];
	char	   *hash;

	if (dummy_hash != NULL && dummy_memory_kb == password_memory_kb &&
		dummy_iterations == password_iterations)
		return;
	randombytes_buf(raw, sizeof(raw));
	sodium_bin2hex(random_password, sizeof(random_password), raw, sizeof(raw));
	hash = password_hash_cstring(random_password);
	if (dummy_hash)
		pfree(dummy_hash);
	dummy_hash = MemoryContextStrdup(TopMemoryContext, hash);
	dummy_memory_kb = password_memory_kb;
	dummy_iterations = password_iterations;
}

/* Spend the time of one verification on the dummy hash (unknown users). */
void
password_dummy_verify(const char *password)
{
	password_dummy_prepare();
	(void) password_verify_cstring(strlen(password) > PASSWORD_MAX_BYTES ? "" : password, dummy_hash);
}

/* Append rule to the list of unmet rules. */
static List *
add_rule(List *rules, const char *rule)
{
	return lappend(rules, pstrdup(rule));
}

/* Case-insensitive substring test on ASCII letters (UTF-8 left as is). */
static bool
contains_ci(const char *haystack, const char *needle)
{
	size_t		n = strlen(needle);
	size_t		h = strlen(haystack);
	size_t		i;

	if (n == 0 || n > h)
		return false;
	for (i = 0; i + n <= h; i++)
		if (pg_strncasecmp(haystack + i, needle, n) == 0)
			return true;
	return false;
}

/*
 * The rules the password breaks, in a fixed order: length (in characters),
 * upper case, lower case, digit, symbol, and the email's local part.
 */
static List *
password_policy_check(const char *password, const char *email)
{
	List	   *rules = NIL;
	bool		upper = false,
				lower = false,
				digit = false,
				symbol = false;
	const unsigned char *p;

	if (pg_mbstrlen(password) < PASSWORD_MIN_LENGTH)
		rules = add_rule(rules, "at least 12 characters");
	for (p = (const unsigned char *) password; *p; p++)
	{
		if (*p >= 'A' && *p <= 'Z')
			upper = true;
		else if (*p >= 'a' && *p <= 'z')
			lower = true;
		else if (*p >= '0' && *p <= '9')
			digit = true;
		else if (*p > ' ')		/* punctuation, or any non-ASCII character */
			symbol = true;
	}
	if (!upper)
		rules = add_rule(rules, "an upper-case letter");
	if (!lower)
		rules = add_rule(rules, "a lower-case letter");
	if (!digit)
		rules = add_rule(rules, "a digit");
	if (!symbol)
		rules = add_rule(rules, "a symbol");
	if (email)
	{
		const char *at = strchr(email, '@');
		char	   *local = at ? pnstrdup(email, at - email) : pstrdup(email);

		if (strlen(local) >= 3 && contains_ci(password, local))
			rules = add_rule(rules, "must not contain the local part of the email address");
	}
	return rules;
}

/* donatello.password_hash(password text) returns text */
Datum
donatello_password_hash(PG_FUNCTION_ARGS)
{
	char	   *password = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *hash = password_hash_cstring(password);

	sodium_memzero(password, strlen(password));
	PG_RETURN_TEXT_P(cstring_to_text(hash));
}

/* donatello.password_verify(password text, hash text) returns boolean */
Datum
donatello_password_verify(PG_FUNCTION_ARGS)
{
	char	   *password = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *hash = text_to_cstring(PG_GETARG_TEXT_PP(1));
	bool		ok = password_verify_cstring(password, hash);

	sodium_memzero(password, strlen(password));
	PG_RETURN_BOOL(ok);
}

/* donatello.password_policy_violations(password text, email text) returns text[] */
Datum
donatello_password_policy_violations(PG_FUNCTION_ARGS)
{
	char	   *password;
	char	   *email = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	List	   *rules;
	Datum	   *elems;
	ListCell   *lc;
	int			i = 0;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("password must not be null")));
	password = text_to_cstring(PG_GETARG_TEXT_PP(0));
	rules = password_policy_check(password, email);
	sodium_memzero(password, strlen(password));
	elems = palloc(sizeof(Datum) * (list_length(rules) + 1));
	foreach(lc, rules)
		elems[i++] = CStringGetTextDatum((char *) lfirst(lc));
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, i, TEXTOID, -1, false, TYPALIGN_INT));
}

/* Join the unmet rules into the HINT of DNA06. */
static char *
rules_hint(List *rules)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "The password needs: ");
	foreach(lc, rules)
	{
		if (lc != list_head(rules))
			appendStringInfoString(&buf, "; ");
		appendStringInfoString(&buf, (char *) lfirst(lc));
	}
	appendStringInfoChar(&buf, '.');
	return buf.data;
}

/*
 * donatello.set_password(user_id uuid, password text)
 *
 * Runs as the extension owner (SECURITY DEFINER, pinned search_path). The
 * user's row in user_credentials is locked first, so concurrent changes of
 * one user's password are serialized and the history check is exact.
 */
Datum
donatello_set_password(PG_FUNCTION_ARGS)
{
	pg_uuid_t	user_id,
				org_id;
	char	   *password;
	char	   *email;
	char	   *hash;
	List	   *rules;
	Datum		args[3];
	Oid			types[3] = {UUIDOID, UUIDOID, TEXTOID};
	uint64		i,
				nhistory;
	char	  **history;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("user_id and password must not be null")));
	memcpy(&user_id, PG_GETARG_UUID_P(0), sizeof(pg_uuid_t));
	password = text_to_cstring(PG_GETARG_TEXT_PP(1));
	password_check_length(password);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in set_password");

	args[0] = cred_uuid_datum(&user_id);
	cred_spi_exec("SELECT org_id, email FROM donatello.users WHERE id = $1",
				  1, types, args, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_NOT_FOUND),
				 errmsg("user %s does not exist", cred_uuid_string(&user_id))));
	cred_spi_uuid(0, 1, &org_id);
	email = cred_spi_text(0, 2);

	rules = password_policy_check(password, email);

	/* lock the credentials row (creating it), then compare with the history */
	args[1] = cred_uuid_datum(&org_id);
	cred_spi_exec("INSERT INTO donatello.user_credentials (org_id, user_id) VALUES ($2, $1)"
				  " ON CONFLICT (user_id) DO UPDATE SET org_id = excluded.org_id",
				  2, types, args, NULL, SPI_OK_INSERT);
	cred_spi_exec("SELECT password_hash FROM donatello.password_history WHERE user_id = $1"
				  " ORDER BY id DESC LIMIT 5",
				  1, types, args, NULL, SPI_OK_SELECT);
	nhistory = SPI_processed;
	history = palloc(sizeof(char *) * (nhistory + 1));
	for (i = 0; i < nhistory; i++)
		history[i] = cred_spi_text(i, 1);
	if (rules == NIL)
	{
		for (i = 0; i < nhistory; i++)
			if (password_verify_cstring(password, history[i]))
			{
				rules = add_rule(rules, "not one of the last 5 passwords");
				break;
			}
	}
	if (rules != NIL)
	{
		sodium_memzero(password, strlen(password));
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_PASSWORD_POLICY),
				 errmsg("password rejected by the password policy"),
				 errdetail("%d rule(s) not met.", list_length(rules)),
				 errhint("%s", rules_hint(rules))));
	}

	hash = password_hash_cstring(password);
	sodium_memzero(password, strlen(password));
	args[2] = CStringGetTextDatum(hash);
	cred_spi_exec("UPDATE donatello.user_credentials SET password_hash = $3,"
				  " password_changed_at = pg_catalog.now() WHERE user_id = $1",
				  3, types, args, NULL, SPI_OK_UPDATE);
	cred_spi_exec("INSERT INTO donatello.password_history (org_id, user_id, password_hash)"
				  " VALUES ($2, $1, $3)",
				  3, types, args, NULL, SPI_OK_INSERT);
	cred_spi_exec("DELETE FROM donatello.password_history WHERE user_id = $1 AND id NOT IN"
				  " (SELECT id FROM donatello.password_history WHERE user_id = $1"
				  " ORDER BY id DESC LIMIT 5)",
				  1, types, args, NULL, SPI_OK_DELETE);
	security_event_record(&org_id, &user_id, "password.changed", NULL, NULL, "{}");
	SPI_finish();
	PG_RETURN_VOID();
}
