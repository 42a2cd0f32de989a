/*
 * rbac_compile.c
 *	  Compute compiled permission sets from the RBAC tables.
 *
 * Reads go through SPI with saved plans, as the extension owner (so neither
 * row-level security nor the caller's grants can change the answer), and all
 * under one snapshot taken *after* the caller read the cache generation
 * (see rbac_cache.c). The snapshot is the latest one, not the transaction's:
 * a check always reflects committed RBAC state plus the current
 * transaction's own changes, even in a REPEATABLE READ transaction, so a
 * revocation takes effect at once everywhere.
 *
 * Role closures are compiled once per role and cached separately, so
 * compiling a user costs two indexed reads plus the closures it misses.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "donatello.h"
#include "rbac/rbac.h"

/* deepest role inheritance chain followed (guards against a cycle made by hand) */
#define RBAC_MAX_ROLE_DEPTH 32

typedef enum RbacQuery
{
	Q_USER,
	Q_GRANTS,
	Q_EXCEPTIONS,
	Q_ROLE,
	Q_ROLE_PERMISSIONS,
	Q_DEPARTMENT,
	Q_COUNT
} RbacQuery;

static const char *const rbac_query_text[Q_COUNT] = {
	[Q_USER] =
	"SELECT org_id, active FROM donatello.users WHERE id OPERATOR(pg_catalog.=) $1",
	[Q_GRANTS] =
	"SELECT role_id, department_id FROM donatello.user_roles"
	" WHERE user_id OPERATOR(pg_catalog.=) $1 AND org_id OPERATOR(pg_catalog.=) $2",
	[Q_EXCEPTIONS] =
	"SELECT permission, expires_at FROM donatello.permission_exceptions"
	" WHERE user_id OPERATOR(pg_catalog.=) $1 AND org_id OPERATOR(pg_catalog.=) $2"
	" AND expires_at OPERATOR(pg_catalog.>) pg_catalog.now()",
	[Q_ROLE] =
	"SELECT parent_id FROM donatello.roles WHERE id OPERATOR(pg_catalog.=) $1",
	[Q_ROLE_PERMISSIONS] =
	"SELECT permission FROM donatello.role_permissions WHERE role_id OPERATOR(pg_catalog.=) $1",
	[Q_DEPARTMENT] =
	"SELECT org_id FROM donatello.departments WHERE id OPERATOR(pg_catalog.=) $1",
};

static const int rbac_query_nargs[Q_COUNT] = {
	[Q_USER] = 1,[Q_GRANTS] = 2,[Q_EXCEPTIONS] = 2,
	[Q_ROLE] = 1,[Q_ROLE_PERMISSIONS] = 1,[Q_DEPARTMENT] = 1,
};

static SPIPlanPtr rbac_plans[Q_COUNT];

/* State of one compilation: snapshot, generation, and whether to use the cache. */
typedef struct CompileContext
{
	Snapshot	snapshot;
	RbacStamp	stamp;
	bool		use_cache;
} CompileContext;

/* Run one saved query with up to two uuid arguments under the compile snapshot. */
static void
rbac_run(CompileContext *cc, RbacQuery q, const pg_uuid_t *a, const pg_uuid_t *b)
{
	Datum		values[2];
	Oid			types[2] = {UUIDOID, UUIDOID};
	int			rc;

	if (rbac_plans[q] == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(rbac_query_text[q], rbac_query_nargs[q], types);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for donatello RBAC query %d: %s",
				 (int) q, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed for donatello RBAC query %d", (int) q);
		rbac_plans[q] = plan;
	}
	values[0] = UUIDPGetDatum(unconstify(pg_uuid_t *, a));
	values[1] = b ? UUIDPGetDatum(unconstify(pg_uuid_t *, b)) : (Datum) 0;
	rc = SPI_execute_snapshot(rbac_plans[q], values, NULL, cc->snapshot,
							  InvalidSnapshot, true, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "donatello RBAC query %d failed: %s", (int) q, SPI_result_code_string(rc));
}

/* Column i (1-based) of result row r as a uuid; false when NULL. */
static bool
rbac_get_uuid(int r, int i, pg_uuid_t *out)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, i, &isnull);

	if (isnull)
		return false;
	memcpy(out, DatumGetUUIDP(d), sizeof(pg_uuid_t));
	return true;
}

/* Column i (1-based) of result row r as a palloc'd C string. */
static char *
rbac_get_text(int r, int i)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, i, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* qsort comparator for an array of C strings. */
static int
rbac_cmp_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Sort and deduplicate n strings in place; returns the new count. */
static int
rbac_sort_unique(char **s, int n)
{
	int			i,
				out = 0;

	if (n <= 1)
		return n;
	qsort(s, n, sizeof(char *), rbac_cmp_strings);
	for (i = 0; i < n; i++)
		if (out == 0 || strcmp(s[out - 1], s[i]) != 0)
			s[out++] = s[i];
	return out;
}

/* The i-th string of a blob whose offset table is at offsets. */
const char *
rbac_blob_string(const void *blob, const uint32 *offsets, uint32 i)
{
	return (const char *) blob + offsets[i];
}

/* Offset table of a compiled role. */
static inline const uint32 *
role_offsets(const CompiledRole *cr)
{
	return (const uint32 *) (cr + 1);
}

/* Serialize a sorted, unique string array as a CompiledRole. */
static CompiledRole *
rbac_build_role(char **s, int n)
{
	Size		size = sizeof(CompiledRole) + sizeof(uint32) * n;
	CompiledRole *cr;
	char	   *p;
	int			i;

	for (i = 0; i < n; i++)
		size += strlen(s[i]) + 1;
	cr = palloc0(size);
	cr->size = (uint32) size;
	cr->nstrings = n;
	p = (char *) ((uint32 *) (cr + 1) + n);
	for (i = 0; i < n; i++)
	{
		Size		len = strlen(s[i]) + 1;

		((uint32 *) (cr + 1))[i] = (uint32) (p - (char *) cr);
		memcpy(p, s[i], len);
		p += len;
	}
	return cr;
}

/* Compile the closure of a role: its permissions plus its ancestors'. */
static CompiledRole *
rbac_compile_role_in(CompileContext *cc, const pg_uuid_t *role_id, int depth)
{
	CompiledRole *cr = NULL;
	CompiledRole *parent_cr = NULL;
	pg_uuid_t	parent_id;
	bool		has_parent = false;
	char	  **s;
	int			n = 0,
				i;
	bool		dummy;

	if (cc->use_cache &&
		rbac_cache_read(RBAC_CACHE_ROLE, role_id, rbac_cache_copy_reader, &cr, &dummy))
		return cr;

	rbac_run(cc, Q_ROLE, role_id, NULL);
	if (SPI_processed == 1)
		has_parent = rbac_get_uuid(0, 1, &parent_id);
	if (has_parent && depth < RBAC_MAX_ROLE_DEPTH)
		parent_cr = rbac_compile_role_in(cc, &parent_id, depth + 1);

	rbac_run(cc, Q_ROLE_PERMISSIONS, role_id, NULL);
	s = palloc(sizeof(char *) * (SPI_processed + (parent_cr ? parent_cr->nstrings : 0) + 1));
	for (i = 0; i < (int) SPI_processed; i++)
		s[n++] = rbac_get_text(i, 1);
	if (parent_cr)
		for (i = 0; i < (int) parent_cr->nstrings; i++)
			s[n++] = (char *) rbac_blob_string(parent_cr, role_offsets(parent_cr), i);
	n = rbac_sort_unique(s, n);
	cr = rbac_build_role(s, n);
	if (cc->use_cache)
		rbac_cache_store(RBAC_CACHE_ROLE, role_id, &cc->stamp, false, cr, cr->size);
	return cr;
}

/* One grant group while compiling a user. */
typedef struct GroupBuild
{
	bool		org_wide;
	pg_uuid_t	department_id;
	char	  **s;
	int			n;
	int			cap;
} GroupBuild;

/* Add a role closure's strings to a group under construction. */
static void
rbac_group_add(GroupBuild *g, const CompiledRole *cr)
{
	uint32		i;

	if (g->n + (int) cr->nstrings > g->cap)
	{
		g->cap = Max(g->cap * 2, g->n + (int) cr->nstrings + 8);
		g->s = g->s ? repalloc(g->s, sizeof(char *) * g->cap) : palloc(sizeof(char *) * g->cap);
	}
	for (i = 0; i < cr->nstrings; i++)
		g->s[g->n++] = (char *) rbac_blob_string(cr, role_offsets(cr), i);
}

/* Serialize groups and exceptions into one CompiledUser blob. */
static CompiledUser *
rbac_build_user(bool active, const pg_uuid_t *org_id, GroupBuild *groups, int ngroups,
				char **exc_perm, TimestampTz *exc_expires, int nexc)
{
	Size		size = sizeof(CompiledUser);
	uint32		nstrings = nexc;
	CompiledUser *cu;
	RbacGroup  *rg;
	RbacException *re;
	uint32	   *offsets;
	char	   *p;
	uint32		si = 0;
	int			g,
				i;

	for (g = 0; g < ngroups; g++)
	{
		nstrings += groups[g].n;
		for (i = 0; i < groups[g].n; i++)
			size += strlen(groups[g].s[i]) + 1;
	}
	for (i = 0; i < nexc; i++)
		size += strlen(exc_perm[i]) + 1;
	size += sizeof(RbacGroup) * ngroups + sizeof(RbacException) * nexc + sizeof(uint32) * nstrings;
	size = MAXALIGN(size);

	cu = palloc0(size);
	cu->size = (uint32) size;
	cu->exists = true;
	cu->active = active;
	memcpy(&cu->org_id, org_id, sizeof(pg_uuid_t));
	cu->ngroups = ngroups;
	cu->nexceptions = nexc;
	cu->nstrings = nstrings;

	rg = (RbacGroup *) (cu + 1);
	re = (RbacException *) (rg + ngroups);
	offsets = (uint32 *) (re + nexc);
	p = (char *) (offsets + nstrings);

	for (g = 0; g < ngroups; g++)
	{
		rg[g].org_wide = groups[g].org_wide;
		memcpy(&rg[g].department_id, &groups[g].department_id, sizeof(pg_uuid_t));
		rg[g].first = si;
		rg[g].count = groups[g].n;
		rg[g].has_star = false;
		for (i = 0; i < groups[g].n; i++)
		{
			Size		len = strlen(groups[g].s[i]) + 1;

			if (strcmp(groups[g].s[i], "*") == 0)
				rg[g].has_star = true;
			offsets[si++] = (uint32) (p - (char *) cu);
			memcpy(p, groups[g].s[i], len);
			p += len;
		}
	}
	for (i = 0; i < nexc; i++)
	{
		Size		len = strlen(exc_perm[i]) + 1;

		re[i].expires_at = exc_expires[i];
		re[i].string_index = si;
		offsets[si++] = (uint32) (p - (char *) cu);
		memcpy(p, exc_perm[i], len);
		p += len;
	}
	return cu;
}

/* Compile a user: NULL when the user does not exist. Caller is SPI-connected. */
static CompiledUser *
rbac_compile_user_in(CompileContext *cc, const pg_uuid_t *user_id)
{
	pg_uuid_t	org_id;
	bool		active,
				isnull;
	int			ngrants,
				ngroups = 1,
				i,
				g;
	pg_uuid_t  *grant_role;
	pg_uuid_t  *grant_dept;
	bool	   *grant_scoped;
	GroupBuild *groups;
	char	  **exc_perm;
	TimestampTz *exc_expires;
	int			nexc;

	rbac_run(cc, Q_USER, user_id, NULL);
	if (SPI_processed == 0)
		return NULL;
	rbac_get_uuid(0, 1, &org_id);
	active = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (!active)
		return rbac_build_user(false, &org_id, NULL, 0, NULL, NULL, 0);

	/* grants: copy out before running more queries (SPI_tuptable is reused) */
	rbac_run(cc, Q_GRANTS, user_id, &org_id);
	ngrants = (int) SPI_processed;
	grant_role = palloc(sizeof(pg_uuid_t) * (ngrants + 1));
	grant_dept = palloc0(sizeof(pg_uuid_t) * (ngrants + 1));
	grant_scoped = palloc0(sizeof(bool) * (ngrants + 1));
	for (i = 0; i < ngrants; i++)
	{
		rbac_get_uuid(i, 1, &grant_role[i]);
		grant_scoped[i] = rbac_get_uuid(i, 2, &grant_dept[i]);
	}

	/* exceptions */
	rbac_run(cc, Q_EXCEPTIONS, user_id, &org_id);
	nexc = (int) SPI_processed;
	exc_perm = palloc(sizeof(char *) * (nexc + 1));
	exc_expires = palloc(sizeof(TimestampTz) * (nexc + 1));
	for (i = 0; i < nexc; i++)
	{
		exc_perm[i] = rbac_get_text(i, 1);
		exc_expires[i] = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 2, &isnull));
	}

	/* group 0 is org-wide; one more group per distinct scoped department */
	groups = palloc0(sizeof(GroupBuild) * (ngrants + 1));
	groups[0].org_wide = true;
	for (i = 0; i < ngrants; i++)
	{
		CompiledRole *cr = rbac_compile_role_in(cc, &grant_role[i], 0);

		if (!grant_scoped[i])
			g = 0;
		else
		{
			for (g = 1; g < ngroups; g++)
				if (memcmp(&groups[g].department_id, &grant_dept[i], sizeof(pg_uuid_t)) == 0)
					break;
			if (g == ngroups)
			{
				memcpy(&groups[g].department_id, &grant_dept[i], sizeof(pg_uuid_t));
				ngroups++;
			}
		}
		rbac_group_add(&groups[g], cr);
	}
	for (g = 0; g < ngroups; g++)
		groups[g].n = rbac_sort_unique(groups[g].s, groups[g].n);

	return rbac_build_user(true, &org_id, groups, ngroups, exc_perm, exc_expires, nexc);
}

/*
 * Connect to SPI, switch to the owner and take the compile snapshot; the
 * result is allocated in the caller's memory context.
 */
typedef struct CompileSession
{
	CompileContext cc;
	MemoryContext caller_cxt;
	MemoryContext work_cxt;
	DonatelloSavedUser saved;
} CompileSession;

static void
rbac_session_begin(CompileSession *cs, const RbacStamp *stamp, bool use_cache)
{
	cs->caller_cxt = CurrentMemoryContext;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed in the donatello permission engine");
	cs->work_cxt = CurrentMemoryContext;	/* SPI procedure context, freed at finish */
	donatello_begin_as_owner(&cs->saved);
	cs->cc.stamp = *stamp;
	cs->cc.use_cache = use_cache;
	cs->cc.snapshot = RegisterSnapshot(GetLatestSnapshot());
}

/* Copy the result blob to the caller's context and undo rbac_session_begin. */
static void *
rbac_session_end(CompileSession *cs, const void *blob)
{
	void	   *result = NULL;

	if (blob != NULL)
	{
		uint32		size = *(const uint32 *) blob;

		result = MemoryContextAlloc(cs->caller_cxt, size);
		memcpy(result, blob, size);
	}
	UnregisterSnapshot(cs->cc.snapshot);
	donatello_end_as_owner(&cs->saved);
	SPI_finish();
	return result;
}

/*
 * Compile a user's permissions. With use_cache, role closures come from and
 * go to the shared cache under the given counters (read by the caller before
 * calling). Returns NULL for an unknown user.
 */
CompiledUser *
rbac_compile_user(const pg_uuid_t *user_id, const RbacStamp *stamp, bool use_cache)
{
	CompileSession cs;
	CompiledUser *cu;

	rbac_session_begin(&cs, stamp, use_cache);
	cu = rbac_compile_user_in(&cs.cc, user_id);
	return rbac_session_end(&cs, cu);
}

/* Read a department's organization from the tables; false if unknown. */
bool
rbac_read_department_org(const pg_uuid_t *department_id, pg_uuid_t *org_id)
{
	CompileSession cs;
	RbacStamp	none = {0, 0};
	bool		found = false;

	rbac_session_begin(&cs, &none, false);
	rbac_run(&cs.cc, Q_DEPARTMENT, department_id, NULL);
	if (SPI_processed == 1)
		found = rbac_get_uuid(0, 1, org_id);
	rbac_session_end(&cs, NULL);
	return found;
}
