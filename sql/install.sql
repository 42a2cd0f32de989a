-- The extension installs (pg_regress created it with --load-extension) with
-- its schemas, roles and version.
SELECT extname, extversion, extrelocatable, n.nspname AS schema
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'donatello';
SELECT donatello.version() = (SELECT extversion FROM pg_extension WHERE extname = 'donatello') AS library_matches_script;
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'donatello\_%' ORDER BY 1;
SELECT nspname FROM pg_namespace WHERE nspname LIKE 'donatello%' ORDER BY 1;
SELECT current_setting('shared_preload_libraries') ~ 'donatello' AS preloaded;

-- settings live under a reserved prefix: a typo is an error
SET donatello.no_such_setting = 'x';
SHOW donatello.database;

-- nothing of donatello is executable by PUBLIC
SELECT p.oid::regprocedure AS function
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('donatello', 'donatello_api')
   AND has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY 1;

-- every SECURITY DEFINER function pins search_path
SELECT p.oid::regprocedure AS unpinned_security_definer
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('donatello', 'donatello_api') AND p.prosecdef
   AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')
 ORDER BY 1;

-- every table of donatello that holds org_id has row-level security
SELECT c.relname AS tenant_table_without_rls
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'donatello' AND c.relkind IN ('r', 'p')
   AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'org_id')
   AND NOT c.relrowsecurity
 ORDER BY 1;

-- every function is documented by a comment
SELECT p.oid::regprocedure AS undocumented
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('donatello', 'donatello_api')
   AND obj_description(p.oid, 'pg_proc') IS NULL
   AND p.prorettype <> 'trigger'::regtype
 ORDER BY 1;
