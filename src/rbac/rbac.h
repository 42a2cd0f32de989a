/*
 * rbac.h
 *	  The RBAC permission engine: compiled permission sets, how they are
 *	  computed from the tables, cached in shared memory and checked.
 *
 * A user's permissions are compiled into one contiguous, pointer-free blob
 * (CompiledUser) so the same bytes can live in backend memory or in the shared
 * cache. A role's closure (its permissions plus its ancestors') is compiled
 * into a CompiledRole blob. Both hold permission strings sorted with strcmp so
 * a check is a few binary searches.
 *
 * Rules (docs/rbac.md): union over the user's roles and their ancestors; a
 * department-scoped grant counts only for that department; unexpired
 * exceptions count everywhere in the organization; "*" and "resource:*" are
 * wildcards; an inactive or unknown user has nothing; a department of another
 * organization gets nothing.
 */
#ifndef DONATELLO_RBAC_H
#define DONATELLO_RBAC_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/uuid.h"

/* longest permission string accepted ("resource:action") */
#define RBAC_MAX_PERMISSION_LEN 64

/* one set of permissions: org-wide, or for one department */
typedef struct RbacGroup
{
	pg_uuid_t	department_id;	/* all zero for the org-wide group */
	bool		org_wide;
	bool		has_star;		/* the set contains "*" */
	uint32		first;			/* index of its first string */
	uint32		count;			/* number of strings, sorted */
} RbacGroup;

/* a permission exception: one string, valid while now() < expires_at */
typedef struct RbacException
{
	TimestampTz expires_at;
	uint32		string_index;
} RbacException;

/*
 * A user's compiled permissions. Layout, all offsets from the start:
 *	 CompiledUser | RbacGroup[ngroups] | RbacException[nexceptions] |
 *	 uint32 string_offsets[nstrings] | NUL-terminated strings
 * Group 0, when present, is the org-wide group.
 */
typedef struct CompiledUser
{
	uint32		size;			/* total bytes */
	bool		exists;			/* false: a remembered unknown user */
	bool		active;
	pg_uuid_t	org_id;
	uint32		ngroups;
	uint32		nexceptions;
	uint32		nstrings;
} CompiledUser;

/*
 * A role's closure. Layout: CompiledRole | uint32 string_offsets[nstrings] |
 * NUL-terminated strings, sorted.
 */
typedef struct CompiledRole
{
	uint32		size;
	uint32		nstrings;
} CompiledRole;

/* rbac_check.c: permission strings and the check itself */
extern bool rbac_permission_is_valid(const char *p, int len);
extern bool rbac_check(const pg_uuid_t *user_id, text *permission,
					   const pg_uuid_t *department_id);

/* rbac_compile.c: computing blobs from the tables (SPI, as extension owner) */
/*
 * What a cache entry was compiled under: the RBAC generation (bumped after
 * every commit that changed RBAC data) and the insert generation (bumped after
 * every commit that inserted users or departments, which only unknown-id
 * entries depend on).
 */
typedef struct RbacStamp
{
	uint64		generation;
	uint64		inserts;
} RbacStamp;

extern CompiledUser *rbac_compile_user(const pg_uuid_t *user_id, const RbacStamp *stamp,
									   bool use_cache);
extern bool rbac_read_department_org(const pg_uuid_t *department_id, pg_uuid_t *org_id);
extern const char *rbac_blob_string(const void *blob, const uint32 *offsets, uint32 i);

/* rbac_cache.c: the shared cache */
typedef enum RbacCacheKind
{
	RBAC_CACHE_USER = 1,
	RBAC_CACHE_ROLE = 2,
	RBAC_CACHE_DEPARTMENT = 3
} RbacCacheKind;

typedef struct RbacCacheStats
{
	int64		entries;
	int64		capacity;
	int64		bytes_used;
	int64		bytes_total;
	int64		generation;
	int64		evictions;
} RbacCacheStats;

/* Called with the blob while the entry's partition lock is held; no ereport. */
typedef bool (*rbac_blob_reader) (const void *blob, void *arg);

extern bool rbac_cache_usable(void);
extern RbacStamp rbac_cache_stamp(void);
extern bool rbac_cache_read(RbacCacheKind kind, const pg_uuid_t *id,
							rbac_blob_reader reader, void *arg, bool *result);
extern bool rbac_cache_copy_reader(const void *blob, void *arg);
extern void rbac_cache_store(RbacCacheKind kind, const pg_uuid_t *id, const RbacStamp *stamp,
							 bool negative, const void *blob, Size size);
extern void rbac_cache_bump_generation(void);
extern void rbac_cache_bump_inserts(void);
extern void rbac_cache_reset(void);
extern void rbac_cache_get_stats(RbacCacheStats *stats);

/* rbac_invalidate.c: has this transaction changed RBAC data? */
extern bool rbac_changed_in_transaction(void);

/* backend-local counters, reported by permission_cache_stats() */
extern int64 rbac_backend_hits;
extern int64 rbac_backend_misses;
extern int64 rbac_backend_bypasses;

#endif							/* DONATELLO_RBAC_H */
