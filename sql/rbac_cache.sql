-- The shared permission cache: hits after the first check, bypass inside a
-- transaction that changed RBAC data, one invalidation per committing
-- change, none for rollbacks or unrelated writes.
\set SHOW_CONTEXT never
SELECT donatello.create_organization('Cache Test', 'cache-test') AS org \gset
SELECT donatello.create_user(:'org', 'cache@cache.test', 'Cache') AS u \gset
SELECT donatello.grant_role(:'u', 'member');
SELECT donatello.permission_cache_reset();
SELECT entries AS entries_after_reset FROM donatello.permission_cache_stats();
SELECT backend_hits AS h0, backend_misses AS m0, backend_bypasses AS b0, generation AS g0
  FROM donatello.permission_cache_stats() \gset

-- the first check compiles the user (a miss), the next ones are hits
SELECT donatello.has_permission(:'u', 'generation:create') AS a,
       donatello.has_permission(:'u', 'generation:read') AS b,
       donatello.has_permission(:'u', 'budget:manage') AS c;
SELECT backend_hits - :h0 AS hits, backend_misses - :m0 AS misses,
       backend_bypasses - :b0 AS bypasses, generation = :g0 AS same_generation, entries > 0 AS cached
  FROM donatello.permission_cache_stats();

-- a transaction that changes RBAC data bypasses the cache, and invalidates it once, at commit
BEGIN;
SELECT donatello.grant_role(:'u', 'dept_manager');
SELECT donatello.has_permission(:'u', 'budget:manage') AS sees_own_grant;
SELECT backend_bypasses - :b0 AS bypasses, generation = :g0 AS not_yet_invalidated FROM donatello.permission_cache_stats();
COMMIT;
SELECT generation - :g0 AS invalidations FROM donatello.permission_cache_stats();
SELECT donatello.has_permission(:'u', 'budget:manage') AS after_commit;

-- a rolled-back change invalidates nothing
SELECT generation AS g1 FROM donatello.permission_cache_stats() \gset
BEGIN;
SELECT donatello.revoke_role(:'u', 'dept_manager');
ROLLBACK;
SELECT generation - :g1 AS invalidations_after_rollback FROM donatello.permission_cache_stats();
SELECT donatello.has_permission(:'u', 'budget:manage') AS still_granted;

-- writes that cannot change an answer invalidate nothing: renaming a user,
-- creating a user or a department
UPDATE donatello.users SET name = 'Renamed' WHERE id = :'u';
SELECT donatello.create_user(:'org', 'new@cache.test', 'New') IS NOT NULL AS created;
SELECT donatello.create_department(:'org', 'New Department') IS NOT NULL AS created;
SELECT generation - :g1 AS invalidations_after_unrelated_writes FROM donatello.permission_cache_stats();

-- unknown ids are remembered too, until a user or department is inserted
SELECT backend_hits AS h1, backend_misses AS m1 FROM donatello.permission_cache_stats() \gset
SELECT donatello.has_permission('00000000-0000-0000-0000-0000000000aa', 'generation:read') AS unknown_1,
       donatello.has_permission('00000000-0000-0000-0000-0000000000aa', 'generation:read') AS unknown_2;
SELECT backend_hits - :h1 AS hits, backend_misses - :m1 AS misses FROM donatello.permission_cache_stats();
SELECT donatello.has_permission(:'u', 'generation:create', '00000000-0000-0000-0000-0000000000bb') AS in_unknown_department;
INSERT INTO donatello.departments (id, org_id, name) VALUES ('00000000-0000-0000-0000-0000000000bb', :'org', 'Created Later');
SELECT donatello.has_permission(:'u', 'generation:create', '00000000-0000-0000-0000-0000000000bb') AS once_it_exists;
SELECT generation - :g1 AS invalidations_after_inserts FROM donatello.permission_cache_stats();

-- deactivation does
SELECT donatello.deactivate_user(:'u');
SELECT generation - :g1 AS invalidations_after_deactivation FROM donatello.permission_cache_stats();
SELECT donatello.has_permission(:'u', 'generation:create') AS deactivated_user;

-- a prepared transaction could commit out of reach of the invalidation: refused
BEGIN;
SELECT donatello.grant_role(:'u', 'viewer');
PREPARE TRANSACTION 'rbac-change';
SELECT count(*) AS viewer_grants FROM donatello.user_roles ur JOIN donatello.roles r ON r.id = ur.role_id
 WHERE ur.user_id = :'u' AND r.name = 'viewer';

-- the trigger function refuses to be called directly
SELECT donatello.rbac_invalidate();
