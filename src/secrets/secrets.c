/*
 * secrets.c
 *	  The root key and secrets at rest.
 *
 * The root key (32 bytes) is read once, in the postmaster while
 * shared_preload_libraries is processed, from donatello.root_key_file; every
 * backend inherits it by fork. It never reaches shared memory, a setting, a
 * log line or SQL. When donatello.root_key_file is unset, a key is generated
 * in the data directory (mode 0600) on first start, and every start logs a
 * WARNING advising to move it out (a base backup would otherwise carry the
 * key next to the data it protects).
 *
 * Rotation: donatello.root_key_previous_file names the old key while the
 * sealed values are re-sealed under the new one (docs/secrets.md); every
 * sealed value names the key that sealed it, so both can be read meanwhile.
 *
 * Sealed format (bytea):
 *	  'D' | version 1 | key id (8 bytes) | nonce (24 bytes) | ciphertext + tag
 * Cipher: XChaCha20-Poly1305-IETF (libsodium). Key: BLAKE2b-256 keyed with the
 * root key over "donatello secret:" || purpose. Associated data: the row id.
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "donatello.h"
#include "secrets/secrets.h"

PG_FUNCTION_INFO_V1(donatello_secret_seal);
PG_FUNCTION_INFO_V1(donatello_secret_open);
PG_FUNCTION_INFO_V1(donatello_secret_reseal);
PG_FUNCTION_INFO_V1(donatello_secret_key_id);
PG_FUNCTION_INFO_V1(donatello_root_key_id);

#define GENERATED_KEY_FILE "donatello_root.key"
#define SEALED_MAGIC 'D'
#define SEALED_VERSION 1
#define SEALED_HEADER (2 + SECRETS_KEY_ID_BYTES + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)

typedef struct RootKey
{
	bool		loaded;
	unsigned char key[SECRETS_KEY_BYTES];
	unsigned char id[SECRETS_KEY_ID_BYTES];
} RootKey;

static char *root_key_file = NULL;
static char *root_key_previous_file = NULL;

static RootKey current_key;
static RootKey previous_key;

/* The key id: the first bytes of BLAKE2b keyed with the key over a label. */
static void
root_key_compute_id(RootKey *rk)
{
	unsigned char digest[crypto_generichash_BYTES];
	static const char label[] = "donatello root key id";

	crypto_generichash(digest, sizeof(digest), (const unsigned char *) label, sizeof(label) - 1,
					   rk->key, SECRETS_KEY_BYTES);
	memcpy(rk->id, digest, SECRETS_KEY_ID_BYTES);
}

/* Write a fresh random key, hex-encoded, to path (which must not exist). */
static void
root_key_generate(const char *path)
{
	unsigned char key[SECRETS_KEY_BYTES];
	char		hex[SECRETS_KEY_BYTES * 2 + 2];
	int			fd;

	randombytes_buf(key, sizeof(key));
	sodium_bin2hex(hex, sizeof(hex), key, sizeof(key));
	strcat(hex, "\n");
	sodium_memzero(key, sizeof(key));

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, S_IRUSR | S_IWUSR);
	if (fd < 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode_for_file_access(),
				 errmsg("could not create donatello root key file \"%s\": %m", path)));
	if (write(fd, hex, strlen(hex)) != (ssize_t) strlen(hex) || fsync(fd) != 0)
	{
		int			save_errno = errno;

		close(fd);
		unlink(path);
		errno = save_errno;
		ereport(ERROR,
				(errhidestmt(true),
				 errcode_for_file_access(),
				 errmsg("could not write donatello root key file \"%s\": %m", path)));
	}
	close(fd);
	sodium_memzero(hex, sizeof(hex));
}

/* Read a key file: 32 raw bytes, or 64 hex digits (a final newline allowed). */
static void
root_key_read(const char *setting, const char *path, RootKey *rk)
{
	unsigned char buf[SECRETS_KEY_BYTES * 2 + 4];
	struct stat st;
	ssize_t		n;
	size_t		bin_len = 0;
	int			fd;

	fd = open(path, O_RDONLY);
	if (fd < 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode_for_file_access(),
				 errmsg("could not open %s \"%s\": %m", setting, path)));
	if (fstat(fd, &st) != 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode_for_file_access(),
				 errmsg("could not stat %s \"%s\": %m", setting, path)));
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s \"%s\" is accessible by group or others", setting, path),
				 errhint("Run: chmod 600 %s", path)));
	n = read(fd, buf, sizeof(buf));
	close(fd);

	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	if (n == SECRETS_KEY_BYTES * 2 &&
		sodium_hex2bin(rk->key, SECRETS_KEY_BYTES, (const char *) buf, n, NULL, &bin_len, NULL) == 0 &&
		bin_len == SECRETS_KEY_BYTES)
		rk->loaded = true;
	else if (n == SECRETS_KEY_BYTES)
	{
		memcpy(rk->key, buf, SECRETS_KEY_BYTES);
		rk->loaded = true;
	}
	sodium_memzero(buf, sizeof(buf));
	if (!rk->loaded)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s \"%s\" does not hold a 32-byte key", setting, path),
				 errhint("The file must hold 32 random bytes, or 64 hexadecimal digits such as the output of: openssl rand -hex 32")));
	root_key_compute_id(rk);
}

/* Load the root keys; runs once in the postmaster. */
static void
secrets_load_keys(void)
{
	const char *path = root_key_file;

	if (path == NULL || path[0] == '\0')
	{
		struct stat st;

		path = GENERATED_KEY_FILE;	/* relative to the data directory */
		if (stat(path, &st) != 0)
			root_key_generate(path);
		ereport(WARNING,
				(errmsg("donatello is using the root key in the data directory (%s/%s)",
						DataDir, GENERATED_KEY_FILE),
				 errdetail("A backup of the data directory then carries the key that protects the secrets in it."),
				 errhint("Move the file out of the data directory and set donatello.root_key_file to its new path.")));
	}
	root_key_read("donatello.root_key_file", path, &current_key);

	if (root_key_previous_file != NULL && root_key_previous_file[0] != '\0')
		root_key_read("donatello.root_key_previous_file", root_key_previous_file, &previous_key);
}

/* Define the settings and, when preloading, load the keys. */
void
secrets_init(void)
{
	DefineCustomStringVariable("donatello.root_key_file",
							   "File holding the 32-byte root key that protects secrets at rest.",
							   "Read once at server start. Empty: a key generated in the data directory.",
							   &root_key_file,
							   "",
							   PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("donatello.root_key_previous_file",
							   "File holding the previous root key, while secrets are re-sealed after a rotation.",
							   NULL,
							   &root_key_previous_file,
							   "",
							   PGC_POSTMASTER,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	if (!process_shared_preload_libraries_in_progress)
		return;
	if (sodium_init() < 0)
		ereport(ERROR, (errmsg("could not initialize libsodium")));
	secrets_load_keys();
}

/* Fail unless the root key is loaded (the library must be preloaded). */
static void
secrets_require_key(void)
{
	donatello_require_preload("secrets at rest");
	if (!current_key.loaded)
		elog(ERROR, "donatello root key is not loaded");
}

/* Derive the key for a purpose from a root key. */
static void
derive_key(const RootKey *rk, const char *purpose, unsigned char out[SECRETS_KEY_BYTES])
{
	crypto_generichash_state st;
	static const char label[] = "donatello secret:";

	crypto_generichash_init(&st, rk->key, SECRETS_KEY_BYTES, SECRETS_KEY_BYTES);
	crypto_generichash_update(&st, (const unsigned char *) label, sizeof(label) - 1);
	crypto_generichash_update(&st, (const unsigned char *) purpose, strlen(purpose));
	crypto_generichash_final(&st, out, SECRETS_KEY_BYTES);
}

/*
 * A key for one purpose, derived from the current root key (HMAC keys, token
 * peppers). It changes when the root key is rotated; purposes whose outputs
 * are stored must plan for that (docs/secrets.md).
 */
void
secrets_derive_key(const char *purpose, unsigned char out[SECRETS_KEY_BYTES])
{
	secrets_require_key();
	derive_key(&current_key, purpose, out);
}

/* Reject empty or oversized purpose labels (they name keys, not data). */
static void
check_purpose(const char *purpose)
{
	if (purpose[0] == '\0' || strlen(purpose) > 64)
		ereport(ERROR,
				(errhidestmt(true),
				 errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("invalid secret purpose \"%s\"", purpose),
				 errhint("A purpose is a short label such as \"webhook\" or \"totp\".")));
}

/* Seal plaintext for (purpose, row) under the current root key. */
bytea *
secrets_seal(const char *purpose, const pg_uuid_t *row_id, const void *plain, size_t len)
{
	unsigned char key[SECRETS_KEY_BYTES];
	bytea	   *out;
	unsigned char *p;
	unsigned long long clen;

	secrets_require_key();
	check_purpose(purpose);
	out = palloc(VARHDRSZ + SEALED_HEADER + len + crypto_aead_xchacha20poly1305_ietf_ABYTES);
	p = (unsigned char *) VARDATA(out);
	p[0] = SEALED_MAGIC;
	p[1] = SEALED_VERSION;
	memcpy(p + 2, current_key.id, SECRETS_KEY_ID_BYTES);
	randombytes_buf(p + 2 + SECRETS_KEY_ID_BYTES, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);

	derive_key(&current_key, purpose, key);
	crypto_aead_xchacha20poly1305_ietf_encrypt(p + SEALED_HEADER, &clen,
											   plain, len,
											   row_id->data, UUID_LEN,
											   NULL,
											   p + 2 + SECRETS_KEY_ID_BYTES, key);
	sodium_memzero(key, sizeof(key));
	SET_VARSIZE(out, VARHDRSZ + SEALED_HEADER + clen);
	return out;
}

/* The loaded root key that sealed a value, or NULL. */
static const RootKey *
sealing_key(const unsigned char *p, size_t n)
{
	if (n < SEALED_HEADER + crypto_aead_xchacha20poly1305_ietf_ABYTES ||
		p[0] != SEALED_MAGIC || p[1] != SEALED_VERSION)
		return NULL;
	if (current_key.loaded && sodium_memcmp(p + 2, current_key.id, SECRETS_KEY_ID_BYTES) == 0)
		return &current_key;
	if (previous_key.loaded && sodium_memcmp(p + 2, previous_key.id, SECRETS_KEY_ID_BYTES) == 0)
		return &previous_key;
	return NULL;
}

/* Raise the one error every failure to open a secret gets (no detail leaks). */
static void
secrets_open_failed(const char *purpose, const pg_uuid_t *row_id, const char *why)
{
	ereport(ERROR,
			(errhidestmt(true),
			 errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("could not open the %s secret of row %s", purpose,
					DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(row_id)))),
			 errdetail("%s", why),
			 errhint("If the root key was rotated, set donatello.root_key_previous_file to the old key file and restart.")));
}

/*
 * Open a sealed value; the plaintext is palloc'd (NUL-terminated for
 * convenience, *len excludes it). Callers wipe it with sodium_memzero.
 */
char *
secrets_open(const char *purpose, const pg_uuid_t *row_id, const bytea *sealed, size_t *len)
{
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(sealed);
	size_t		n = VARSIZE_ANY_EXHDR(sealed);
	const RootKey *rk;
	unsigned char key[SECRETS_KEY_BYTES];
	unsigned long long plen;
	char	   *out;
	int			rc;

	secrets_require_key();
	check_purpose(purpose);
	rk = sealing_key(p, n);
	if (rk == NULL)
		secrets_open_failed(purpose, row_id,
							"The value is not a sealed secret, or was sealed with a root key that is not loaded.");

	out = palloc(n - SEALED_HEADER - crypto_aead_xchacha20poly1305_ietf_ABYTES + 1);
	derive_key(rk, purpose, key);
	rc = crypto_aead_xchacha20poly1305_ietf_decrypt((unsigned char *) out, &plen, NULL,
													p + SEALED_HEADER, n - SEALED_HEADER,
													row_id->data, UUID_LEN,
													p + 2 + SECRETS_KEY_ID_BYTES, key);
	sodium_memzero(key, sizeof(key));
	if (rc != 0)
		secrets_open_failed(purpose, row_id,
							"The value was altered, or belongs to another row or purpose.");
	out[plen] = '\0';
	*len = (size_t) plen;
	return out;
}

/* A bytea copy of len bytes, wiping the source. */
static bytea *
bytea_from_plain(char *plain, size_t len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), plain, len);
	sodium_memzero(plain, len);
	pfree(plain);
	return b;
}

/* donatello.secret_seal(purpose text, row_id uuid, plaintext bytea) returns bytea */
Datum
donatello_secret_seal(PG_FUNCTION_ARGS)
{
	char	   *purpose = text_to_cstring(PG_GETARG_TEXT_PP(0));
	bytea	   *plain = PG_GETARG_BYTEA_PP(2);

	PG_RETURN_BYTEA_P(secrets_seal(purpose, PG_GETARG_UUID_P(1),
								   VARDATA_ANY(plain), VARSIZE_ANY_EXHDR(plain)));
}

/* donatello.secret_open(purpose text, row_id uuid, sealed bytea) returns bytea */
Datum
donatello_secret_open(PG_FUNCTION_ARGS)
{
	char	   *purpose = text_to_cstring(PG_GETARG_TEXT_PP(0));
	size_t		len;
	char	   *plain = secrets_open(purpose, PG_GETARG_UUID_P(1), PG_GETARG_BYTEA_PP(2), &len);

	PG_RETURN_BYTEA_P(bytea_from_plain(plain, len));
}

/* donatello.secret_reseal(purpose, row_id, sealed): the same secret under the current key */
Datum
donatello_secret_reseal(PG_FUNCTION_ARGS)
{
	char	   *purpose = text_to_cstring(PG_GETARG_TEXT_PP(0));
	pg_uuid_t  *row_id = PG_GETARG_UUID_P(1);
	size_t		len;
	char	   *plain = secrets_open(purpose, row_id, PG_GETARG_BYTEA_PP(2), &len);
	bytea	   *resealed = secrets_seal(purpose, row_id, plain, len);

	sodium_memzero(plain, len);
	PG_RETURN_BYTEA_P(resealed);
}

/* Hex text of a key id. */
static text *
key_id_text(const unsigned char *id)
{
	char		hex[SECRETS_KEY_ID_BYTES * 2 + 1];

	sodium_bin2hex(hex, sizeof(hex), id, SECRETS_KEY_ID_BYTES);
	return cstring_to_text(hex);
}

/* donatello.secret_key_id(sealed bytea) returns text: which root key sealed it */
Datum
donatello_secret_key_id(PG_FUNCTION_ARGS)
{
	bytea	   *sealed = PG_GETARG_BYTEA_PP(0);
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(sealed);

	if (VARSIZE_ANY_EXHDR(sealed) < SEALED_HEADER || p[0] != SEALED_MAGIC || p[1] != SEALED_VERSION)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(key_id_text(p + 2));
}

/* donatello.root_key_id() returns text: the id of the current root key */
Datum
donatello_root_key_id(PG_FUNCTION_ARGS)
{
	secrets_require_key();
	PG_RETURN_TEXT_P(key_id_text(current_key.id));
}
