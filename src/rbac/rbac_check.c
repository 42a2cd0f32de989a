/*
 * rbac_check.c
 *	  The SQL face of the permission engine: has_permission,
 *	  effective_permissions, require_permission, is_valid_permission and the
 *	  cache functions; and the evaluation of a compiled user against one
 *	  requested permission.
 *
 * A check resolves the department's organization first (a backend-local memo
 * in front of the shared cache), then evaluates the user's compiled set while
 * holding the cache entry's partition lock, so a hit copies nothing.
 * Within a transaction that changed RBAC data, checks bypass every cache and
 * compile from the tables, so the transaction sees its own changes at once.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "donatello.h"
#include "rbac/rbac.h"
#include "tenancy/claims.h"

PG_FUNCTION_INFO_V1(donatello_has_permission);
PG_FUNCTION_INFO_V1(donatello_effective_permissions);
PG_FUNCTION_INFO_V1(donatello_require_permission);
PG_FUNCTION_INFO_V1(donatello_is_valid_permission);
PG_FUNCTION_INFO_V1(donatello_permission_cache_stats);
PG_FUNCTION_INFO_V1(donatello_permission_cache_reset);

/* most departments remembered by the backend-local memo */
#define DEPARTMENT_MEMO_MAX 4096

/* One requested check, prepared once and evaluated against a compiled user. */
typedef struct CheckRequest
{
	const char *perm;
	int			len;
	char		wildcard[RBAC_MAX_PERMISSION_LEN + 2];	/* "resource:*" */
	int			wildcard_len;	/* 0 when the request is itself a wildcard */
	const pg_uuid_t *department_id; /* NULL: no department */
	bool		department_known;
	pg_uuid_t	department_org;
	TimestampTz now;
} CheckRequest;

/* Backend-local memo: department id -> organization (or unknown), for one stamp. */
typedef struct DepartmentMemoEntry
{
	pg_uuid_t	department_id;	/* hash key */
	bool		exists;
	pg_uuid_t	org_id;
} DepartmentMemoEntry;

/* Blob stored in the shared cache for a department (exists false: unknown id). */
typedef struct DepartmentFact
{
	uint32		size;
	bool		exists;
	pg_uuid_t	org_id;
} DepartmentFact;

static HTAB *department_memo = NULL;
static RbacStamp department_memo_stamp = {0, 0};

static inline bool
is_lower(char c)
{
	return c >= 'a' && c <= 'z';
}

static inline bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * Is p (len bytes, not necessarily terminated) a permission string?
 * "*", or resource ":" action, where resource is [a-z][a-z0-9_-]* and action
 * is "*" or [a-z][a-z0-9_.-]*; at most RBAC_MAX_PERMISSION_LEN bytes.
 */
bool
rbac_permission_is_valid(const char *p, int len)
{
	int			i = 0;

	if (len == 1 && p[0] == '*')
		return true;
	if (len < 3 || len > RBAC_MAX_PERMISSION_LEN)
		return false;
	if (!is_lower(p[i++]))
		return false;
	while (i < len && (is_lower(p[i]) || is_digit(p[i]) || p[i] == '_' || p[i] == '-'))
		i++;
	if (i >= len - 1 || p[i++] != ':')
		return false;
	if (p[i] == '*')
		return i + 1 == len;
	if (!is_lower(p[i++]))
		return false;
	while (i < len && (is_lower(p[i]) || is_digit(p[i]) || p[i] == '_' || p[i] == '-' || p[i] == '.'))
		i++;
	return i == len;
}

/* strcmp between a (ptr, len) key and a NUL-terminated string. */
static inline int
compare_key(const char *key, int len, const char *s)
{
	int			c = strncmp(key, s, len);

	if (c != 0)
		return c;
	return s[len] == '\0' ? 0 : -1;
}

/* Binary search for key among strings [first, first + count) of a user blob. */
static bool
user_group_contains(const CompiledUser *cu, const uint32 *offsets,
					uint32 first, uint32 count, const char *key, int len)
{
	int64		lo = first,
				hi = (int64) first + count - 1;

	while (lo <= hi)
	{
		int64		mid = (lo + hi) / 2;
		int			c = compare_key(key, len, rbac_blob_string(cu, offsets, (uint32) mid));

		if (c == 0)
			return true;
		if (c < 0)
			hi = mid - 1;
		else
			lo = mid + 1;
	}
	return false;
}

/* Does a granted pattern (from an exception) match the request? */
static bool
pattern_matches(const char *pattern, const CheckRequest *req)
{
	if (strcmp(pattern, "*") == 0)
		return true;
	if (compare_key(req->perm, req->len, pattern) == 0)
		return true;
	return req->wildcard_len > 0 && compare_key(req->wildcard, req->wildcard_len, pattern) == 0;
}

/* Evaluate a compiled user against a request (docs/rbac.md). */
static bool
rbac_evaluate(const CompiledUser *cu, const CheckRequest *req)
{
	const RbacGroup *groups = (const RbacGroup *) (cu + 1);
	const RbacException *exceptions = (const RbacException *) (groups + cu->ngroups);
	const uint32 *offsets = (const uint32 *) (exceptions + cu->nexceptions);
	uint32		g,
				i;

	if (!cu->exists || !cu->active)
		return false;
	if (req->department_id != NULL &&
		(!req->department_known ||
		 memcmp(&req->department_org, &cu->org_id, sizeof(pg_uuid_t)) != 0))
		return false;

	for (g = 0; g < cu->ngroups; g++)
	{
		const RbacGroup *grp = &groups[g];

		if (!grp->org_wide &&
			(req->department_id == NULL ||
			 memcmp(&grp->department_id, req->department_id, sizeof(pg_uuid_t)) != 0))
			continue;
		if (grp->has_star ||
			user_group_contains(cu, offsets, grp->first, grp->count, req->perm, req->len) ||
			(req->wildcard_len > 0 &&
			 user_group_contains(cu, offsets, grp->first, grp->count,
								 req->wildcard, req->wildcard_len)))
			return true;
	}
	for (i = 0; i < cu->nexceptions; i++)
		if (exceptions[i].expires_at > req->now &&
			pattern_matches(rbac_blob_string(cu, offsets, exceptions[i].string_index), req))
			return true;
	return false;
}

/* Cache reader: evaluate the shared blob in place. */
static bool
evaluate_reader(const void *blob, void *arg)
{
	return rbac_evaluate((const CompiledUser *) blob, (const CheckRequest *) arg);
}

/* Cache reader: copy a department fact out. */
static bool
department_reader(const void *blob, void *arg)
{
	memcpy(arg, blob, sizeof(DepartmentFact));
	return true;
}

/* Can this check use the caches (shared and local)? */
static bool
caches_usable(void)
{
	return !rbac_changed_in_transaction() && rbac_cache_usable();
}

/* Find a department's organization: local memo, shared cache, then tables. */
static bool
resolve_department(const pg_uuid_t *department_id, pg_uuid_t *org_id)
{
	RbacStamp	stamp;
	DepartmentMemoEntry *memo;
	DepartmentFact fact;
	bool		found,
				dummy;

	if (!caches_usable())
		return rbac_read_department_org(department_id, org_id);

	stamp = rbac_cache_stamp();
	if (department_memo == NULL ||
		department_memo_stamp.generation != stamp.generation ||
		department_memo_stamp.inserts != stamp.inserts ||
		hash_get_num_entries(department_memo) >= DEPARTMENT_MEMO_MAX)
	{
		HASHCTL		info;

		if (department_memo != NULL)
			hash_destroy(department_memo);
		info.keysize = sizeof(pg_uuid_t);
		info.entrysize = sizeof(DepartmentMemoEntry);
		info.hcxt = TopMemoryContext;
		department_memo = hash_create("donatello department memo", 256, &info,
									  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		department_memo_stamp = stamp;
	}

	memo = hash_search(department_memo, department_id, HASH_FIND, NULL);
	if (memo != NULL)
	{
		memcpy(org_id, &memo->org_id, sizeof(pg_uuid_t));
		return memo->exists;
	}

	if (!rbac_cache_read(RBAC_CACHE_DEPARTMENT, department_id, department_reader, &fact, &dummy))
	{
		memset(&fact, 0, sizeof(fact));
		fact.size = sizeof(fact);
		fact.exists = rbac_read_department_org(department_id, &fact.org_id);
		rbac_cache_store(RBAC_CACHE_DEPARTMENT, department_id, &stamp, !fact.exists,
						 &fact, sizeof(fact));
	}
	memo = hash_search(department_memo, department_id, HASH_ENTER, &found);
	memo->exists = fact.exists;
	memcpy(&memo->org_id, &fact.org_id, sizeof(pg_uuid_t));
	memcpy(org_id, &fact.org_id, sizeof(pg_uuid_t));
	return fact.exists;
}

/* Validate a requested permission and prepare the request. */
static void
prepare_request(CheckRequest *req, text *permission, const pg_uuid_t *department_id)
{
	const char *colon;

	req->perm = VARDATA_ANY(permission);
	req->len = VARSIZE_ANY_EXHDR(permission);
	if (!rbac_permission_is_valid(req->perm, req->len))
		ereport(ERROR,
				(errcode(ERRCODE_DN_INVALID_ARGUMENT),
				 errmsg("invalid permission \"%s\"", text_to_cstring(permission)),
				 errhint("A permission is \"resource:action\", \"resource:*\" or \"*\", lower-case, at most %d characters, such as \"generation:create\".",
						 RBAC_MAX_PERMISSION_LEN)));

	req->wildcard_len = 0;
	colon = memchr(req->perm, ':', req->len);
	if (colon != NULL && !(colon[1] == '*'))
	{
		int			rlen = (int) (colon - req->perm) + 1;

		memcpy(req->wildcard, req->perm, rlen);
		req->wildcard[rlen] = '*';
		req->wildcard_len = rlen + 1;
	}
	req->department_id = department_id;
	req->department_known = department_id != NULL &&
		resolve_department(department_id, &req->department_org);
	req->now = GetCurrentTransactionStartTimestamp();
}

/*
 * Compile a user after a cache miss (storing the result; an unknown user is
 * remembered as a negative entry) or when the caches cannot be used. Returns
 * NULL for an unknown user.
 */
static CompiledUser *
compile_user_for_check(const pg_uuid_t *user_id)
{
	CompiledUser *cu;
	RbacStamp	stamp;

	if (!caches_usable())
	{
		RbacStamp	none = {0, 0};

		rbac_backend_bypasses++;
		return rbac_compile_user(user_id, &none, false);
	}
	rbac_backend_misses++;
	stamp = rbac_cache_stamp();
	cu = rbac_compile_user(user_id, &stamp, true);
	if (cu != NULL)
		rbac_cache_store(RBAC_CACHE_USER, user_id, &stamp, false, cu, cu->size);
	else
	{
		CompiledUser unknown;

		memset(&unknown, 0, sizeof(unknown));
		unknown.size = sizeof(unknown);
		unknown.exists = false;
		rbac_cache_store(RBAC_CACHE_USER, user_id, &stamp, true, &unknown, sizeof(unknown));
	}
	return cu;
}

/* A copy of the user's compiled set, from the shared cache or the tables. */
static CompiledUser *
fetch_compiled_user(const pg_uuid_t *user_id)
{
	CompiledUser *cu = NULL;
	bool		dummy;

	if (caches_usable() &&
		rbac_cache_read(RBAC_CACHE_USER, user_id, rbac_cache_copy_reader, &cu, &dummy))
	{
		rbac_backend_hits++;
		return cu->exists ? cu : NULL;
	}
	return compile_user_for_check(user_id);
}

/*
 * The engine's entry point for C callers: does the user hold the permission
 * (in the department, if not NULL)? A hit evaluates the shared blob in place.
 */
bool
rbac_check(const pg_uuid_t *user_id, text *permission, const pg_uuid_t *department_id)
{
	CheckRequest req;
	CompiledUser *cu;
	bool		result;

	donatello_require_preload("permission checks");
	prepare_request(&req, permission, department_id);

	if (caches_usable() &&
		rbac_cache_read(RBAC_CACHE_USER, user_id, evaluate_reader, &req, &result))
	{
		rbac_backend_hits++;
		return result;
	}
	cu = compile_user_for_check(user_id);
	result = cu != NULL && rbac_evaluate(cu, &req);
	if (cu != NULL)
		pfree(cu);
	return result;
}

/* A NULL permission argument is a caller error, not "no". */
static text *
permission_arg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("permission must not be NULL")));
	return PG_GETARG_TEXT_PP(argno);
}

/* donatello.has_permission(user_id uuid, permission text, department_id uuid) */
Datum
donatello_has_permission(PG_FUNCTION_ARGS)
{
	text	   *permission = permission_arg(fcinfo, 1);

	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);	/* nobody holds nothing */
	PG_RETURN_BOOL(rbac_check(PG_GETARG_UUID_P(0), permission,
							  PG_ARGISNULL(2) ? NULL : PG_GETARG_UUID_P(2)));
}

/* donatello.require_permission(permission text, department_id uuid) */
Datum
donatello_require_permission(PG_FUNCTION_ARGS)
{
	text	   *permission = permission_arg(fcinfo, 0);
	pg_uuid_t  *department_id = PG_ARGISNULL(1) ? NULL : PG_GETARG_UUID_P(1);
	pg_uuid_t	user_id;
	char	   *perm;

	if (!donatello_claims_user_id(&user_id))
	{
		perm = text_to_cstring(permission);
		ereport(ERROR,
				(errcode(ERRCODE_DN_PERMISSION_DENIED),
				 errmsg("permission denied: \"%s\" requires an authenticated user", perm),
				 errhint("Authenticate with a JWT or an API key; SQL callers set request.jwt.claims.")));
	}
	if (!rbac_check(&user_id, permission, department_id))
	{
		perm = text_to_cstring(permission);
		ereport(ERROR,
				(errcode(ERRCODE_DN_PERMISSION_DENIED),
				 errmsg("permission denied: \"%s\" is required", perm),
				 department_id
				 ? errdetail("User %s does not hold \"%s\" in department %s.",
							 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&user_id))),
							 perm,
							 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(department_id))))
				 : errdetail("User %s does not hold \"%s\".",
							 DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&user_id))),
							 perm),
				 errhint("Ask an administrator of your organization for a role that includes \"%s\".", perm)));
	}
	PG_RETURN_VOID();
}

/* qsort comparator for C strings. */
static int
cmp_cstrings(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* donatello.effective_permissions(user_id uuid, department_id uuid) */
Datum
donatello_effective_permissions(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *department_id = PG_ARGISNULL(1) ? NULL : PG_GETARG_UUID_P(1);
	CompiledUser *cu = NULL;
	pg_uuid_t	department_org;
	const RbacGroup *groups;
	const RbacException *exceptions;
	const uint32 *offsets;
	const char **strings;
	Datum	   *datums;
	int			n = 0,
				out = 0,
				i;
	uint32		g;
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	donatello_require_preload("permission checks");
	if (!PG_ARGISNULL(0))
		cu = fetch_compiled_user(PG_GETARG_UUID_P(0));
	if (cu == NULL || !cu->exists || !cu->active ||
		(department_id != NULL &&
		 (!resolve_department(department_id, &department_org) ||
		  memcmp(&department_org, &cu->org_id, sizeof(pg_uuid_t)) != 0)))
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(TEXTOID));

	groups = (const RbacGroup *) (cu + 1);
	exceptions = (const RbacException *) (groups + cu->ngroups);
	offsets = (const uint32 *) (exceptions + cu->nexceptions);
	strings = palloc(sizeof(char *) * (cu->nstrings + 1));
	for (g = 0; g < cu->ngroups; g++)
	{
		if (!groups[g].org_wide &&
			(department_id == NULL ||
			 memcmp(&groups[g].department_id, department_id, sizeof(pg_uuid_t)) != 0))
			continue;
		for (i = 0; i < (int) groups[g].count; i++)
			strings[n++] = rbac_blob_string(cu, offsets, groups[g].first + i);
	}
	for (i = 0; i < (int) cu->nexceptions; i++)
		if (exceptions[i].expires_at > now)
			strings[n++] = rbac_blob_string(cu, offsets, exceptions[i].string_index);

	qsort(strings, n, sizeof(char *), cmp_cstrings);
	datums = palloc(sizeof(Datum) * (n + 1));
	for (i = 0; i < n; i++)
		if (out == 0 || strcmp(strings[i], strings[i - 1]) != 0)
			datums[out++] = CStringGetTextDatum(strings[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(datums, out, TEXTOID, -1, false, TYPALIGN_INT));
}

/* donatello.is_valid_permission(p text) */
Datum
donatello_is_valid_permission(PG_FUNCTION_ARGS)
{
	text	   *p = PG_GETARG_TEXT_PP(0);

	PG_RETURN_BOOL(rbac_permission_is_valid(VARDATA_ANY(p), VARSIZE_ANY_EXHDR(p)));
}

/* donatello.permission_cache_stats() */
Datum
donatello_permission_cache_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	RbacCacheStats stats;
	Datum		values[9];
	bool		nulls[9] = {0};

	donatello_require_preload("permission cache");
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	rbac_cache_get_stats(&stats);
	values[0] = Int64GetDatum(stats.entries);
	values[1] = Int64GetDatum(stats.capacity);
	values[2] = Int64GetDatum(stats.bytes_used);
	values[3] = Int64GetDatum(stats.bytes_total);
	values[4] = Int64GetDatum(stats.generation);
	values[5] = Int64GetDatum(stats.evictions);
	values[6] = Int64GetDatum(rbac_backend_hits);
	values[7] = Int64GetDatum(rbac_backend_misses);
	values[8] = Int64GetDatum(rbac_backend_bypasses);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

/* donatello.permission_cache_reset() */
Datum
donatello_permission_cache_reset(PG_FUNCTION_ARGS)
{
	donatello_require_preload("permission cache");
	rbac_cache_reset();
	PG_RETURN_VOID();
}
