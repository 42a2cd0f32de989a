-- API keys (format, checksum, storage, scopes, expiry, rotation, revocation,
-- usage), the RBAC checks of the donatello_api wrappers, and rate limits.

CREATE FUNCTION pg_temp.try(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RETURN regexp_replace(regexp_replace(SQLSTATE || ': ' || SQLERRM || coalesce(' (' || nullif(d, '') || ')', ''),
                          '[0-9a-f]{8}-[0-9a-f-]{27}', '<id>', 'g'),
                          '\w{3} \w{3} \d+ [\d:.]+ \d{4} \w+', '<time>', 'g');
END
$$;

SELECT donatello.create_organization('Key Org', 'key-org') AS org \gset
SELECT donatello.create_user(:'org', 'kim@keys.test', 'Kim') AS kim \gset
SELECT donatello.create_user(:'org', 'lou@keys.test', 'Lou') AS lou \gset
SELECT donatello.create_user(:'org', 'vic@keys.test', 'Vic') AS vic \gset
SELECT donatello.create_user(:'org', 'ada@keys.test', 'Ada') AS ada \gset
SELECT donatello.grant_role(:'kim', 'member');
SELECT donatello.grant_role(:'lou', 'member');
SELECT donatello.grant_role(:'vic', 'viewer');
SELECT donatello.grant_role(:'ada', 'org_admin');

-- a key: dnk_ + 30 random base62 characters + 6 checksum characters; shown once
SELECT donatello.create_api_key(:'kim', 'ci pipeline', '{generation:create,model:*}') AS k \gset
SELECT :'k'::jsonb ->> 'key' AS key, :'k'::jsonb ->> 'key_id' AS key_id \gset
SELECT :'key' ~ '^dnk_[0-9A-Za-z]{36}$' AS key_format, jsonb_object_keys(:'k'::jsonb) AS field ORDER BY 2;
-- only SHA-256 of the key is stored
SELECT key_hash = sha256(convert_to(:'key', 'UTF8')) AS stored_sha256, key_prefix = left(:'key', 8) AS prefix,
       scopes, expires_at, usage_count
  FROM donatello.api_keys WHERE id = :'key_id';

-- verification
SELECT donatello.verify_api_key(:'key') - 'key_id' - 'user_id' - 'org_id' AS verified,
       donatello.verify_api_key(:'key') ->> 'user_id' = :'kim' AS user_ok,
       donatello.verify_api_key(:'key') ->> 'org_id' = :'org' AS org_ok;
SELECT donatello.verify_api_key(:'key', 'generation:create') IS NOT NULL AS exact_scope,
       donatello.verify_api_key(:'key', 'model:read') IS NOT NULL AS wildcard_scope;
SELECT pg_temp.try(format('SELECT donatello.verify_api_key(%L, %L)', :'key', 'budget:read'));
SELECT pg_temp.try(format('SELECT donatello.verify_api_key(%L, %L)', :'key', 'generation:delete'));

-- mistyped keys are refused by the checksum, before any lookup
SELECT pg_temp.try(format('SELECT donatello.verify_api_key(%L)',
       left(:'key', 10) || CASE substr(:'key', 11, 1) WHEN 'a' THEN 'b' ELSE 'a' END || substr(:'key', 12)));
SELECT pg_temp.try(format('SELECT donatello.verify_api_key(%L)', left(:'key', 39)));
SELECT pg_temp.try('SELECT donatello.verify_api_key(''sk_live_123'')');
SELECT pg_temp.try('SELECT donatello.verify_api_key(''dnk_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'')');
SELECT pg_temp.try('SELECT donatello.verify_api_key(NULL)');
-- a well-formed key that does not exist (its row is gone)
SELECT donatello.create_api_key(:'kim', 'short-lived', '{}') AS gone \gset
DELETE FROM donatello.api_keys WHERE id = (:'gone'::jsonb ->> 'key_id')::uuid;
SELECT pg_temp.try(format('SELECT donatello.verify_api_key(%L)', :'gone'::jsonb ->> 'key'));

-- bad arguments
SELECT pg_temp.try(format('SELECT donatello.create_api_key(%L, %L, %L)', :'kim', 'x', '{Generation}'));
SELECT pg_temp.try(format('SELECT donatello.create_api_key(%L, %L, %L)', :'kim', ' ', '{}'));
SELECT pg_temp.try(format('SELECT donatello.create_api_key(%L, %L, %L, now() - interval ''1 day'')', :'kim', 'x', '{}'));
SELECT pg_temp.try(format('SELECT donatello.create_api_key(%L, %L, %L)', gen_random_uuid(), 'x', '{}'));

-- expiry
SELECT donatello.create_api_key(:'kim', 'expiring', '{}', now() + interval '1 hour') AS e \gset
SELECT donatello.verify_api_key(:'e'::jsonb ->> 'key') IS NOT NULL AS valid_before_expiry;
UPDATE donatello.api_keys SET expires_at = now() - interval '1 second' WHERE id = (:'e'::jsonb ->> 'key_id')::uuid;
SELECT pg_temp.try(format('SELECT donatello.verify_api_key(%L)', :'e'::jsonb ->> 'key'));

-- rotation: a new key; the old one works for the grace period (30 minutes)
SHOW donatello.api_key_rotation_grace;
SELECT donatello.rotate_api_key(:'key_id') AS r \gset
SELECT :'r'::jsonb ->> 'replaces' = :'key_id' AS replaces_old, :'r'::jsonb ->> 'key' <> :'key' AS new_key;
SELECT donatello.verify_api_key(:'key') IS NOT NULL AS old_still_valid,
       donatello.verify_api_key(:'r'::jsonb ->> 'key', 'generation:create') IS NOT NULL AS new_valid_same_scopes;
SELECT expires_at - now() BETWEEN interval '29 minutes' AND interval '30 minutes' AS old_expires_in_grace,
       replaced_by = (:'r'::jsonb ->> 'key_id')::uuid AS linked
  FROM donatello.api_keys WHERE id = :'key_id';
SELECT pg_temp.try(format('SELECT donatello.rotate_api_key(%L)', :'key_id'));

-- revocation takes effect at once
SELECT donatello.revoke_api_key((:'r'::jsonb ->> 'key_id')::uuid, 'leaked in a log');
SELECT pg_temp.try(format('SELECT donatello.verify_api_key(%L)', :'r'::jsonb ->> 'key'));
SELECT pg_temp.try(format('SELECT donatello.revoke_api_key(%L, %L)', gen_random_uuid(), 'x'));
SELECT pg_temp.try(format('SELECT donatello.revoke_api_key(%L, %L)', :'key_id', ''));

-- a deactivated user's keys stop working
SELECT donatello.create_api_key(:'lou', 'lou key', '{}') AS lk \gset
SELECT donatello.verify_api_key(:'lk'::jsonb ->> 'key') IS NOT NULL AS before;
SELECT donatello.deactivate_user(:'lou');
SELECT pg_temp.try(format('SELECT donatello.verify_api_key(%L)', :'lk'::jsonb ->> 'key'));

-- usage is counted in shared memory and flushed, not written per call
SELECT donatello.create_api_key(:'kim', 'counted', '{}') AS c \gset
SELECT count(donatello.verify_api_key(:'c'::jsonb ->> 'key')) FROM generate_series(1, 250);
SELECT donatello.flush_api_key_usage() >= 1 AS flushed;
SELECT usage_count >= 250 AS counted, last_used_at IS NOT NULL AS last_used
  FROM donatello.api_keys WHERE id = (:'c'::jsonb ->> 'key_id')::uuid;

-- the donatello_api wrappers: own keys need apikey:manage; others' keys need user:manage too
SET ROLE donatello_user;
SELECT set_config('request.jwt.claims', json_build_object('sub', :'kim', 'org', :'org')::text, false) IS NOT NULL AS as_kim;
SELECT donatello_api.create_api_key('kim via api', '{generation:create}') AS own \gset
SELECT name, scopes, revoked_at IS NULL AS live FROM donatello_api.api_keys() ORDER BY created_at, name;
SELECT pg_temp.try(format('SELECT donatello_api.create_api_key(%L, %L, NULL, %L)', 'for lou', '{}', :'ada'));
SELECT pg_temp.try(format('SELECT donatello_api.revoke_api_key(%L)',
       (SELECT id FROM donatello.api_keys WHERE user_id = :'lou' LIMIT 1)));
SELECT pg_temp.try(format('SELECT * FROM donatello_api.api_keys(%L)', :'ada'));
SELECT donatello_api.rotate_api_key((:'own'::jsonb ->> 'key_id')::uuid) ? 'key' AS rotated_own;
SELECT set_config('request.jwt.claims', json_build_object('sub', :'vic', 'org', :'org')::text, false) IS NOT NULL AS as_vic;
SELECT pg_temp.try($$SELECT donatello_api.create_api_key('viewer key')$$);
SELECT set_config('request.jwt.claims', json_build_object('sub', :'ada', 'org', :'org')::text, false) IS NOT NULL AS as_ada;
SELECT donatello_api.create_api_key('made by admin', '{}', NULL, :'kim') ? 'key' AS admin_for_member;
SELECT donatello_api.revoke_api_key((:'own'::jsonb ->> 'key_id')::uuid, 'offboarding');
SELECT revoked_reason FROM donatello.api_keys WHERE id = (:'own'::jsonb ->> 'key_id')::uuid;
SELECT count(*) AS kims_keys_seen_by_admin FROM donatello_api.api_keys(:'kim');
-- org admins unlock users of their organization; members cannot
SELECT donatello_api.unlock_user(:'kim');
SELECT set_config('request.jwt.claims', json_build_object('sub', :'kim', 'org', :'org')::text, false) IS NOT NULL AS as_kim;
SELECT pg_temp.try(format('SELECT donatello_api.unlock_user(%L)', :'ada'));
SELECT set_config('request.jwt.claims', json_build_object('sub', :'ada', 'org', :'org')::text, false) IS NOT NULL AS as_ada;
SELECT set_config('request.jwt.claims', '', false) = '' AS as_nobody;
SELECT pg_temp.try($$SELECT donatello_api.create_api_key('nobody')$$);
RESET ROLE;

-- key events (the key itself never appears)
SELECT event, count(*) FROM donatello.security_events WHERE org_id = :'org' GROUP BY event ORDER BY event;
SELECT count(*) AS events_with_keys FROM donatello.security_events WHERE details::text LIKE '%dnk\_%';

-- rate limits: token buckets shared by every session
SELECT donatello.rate_limit_take('regress:a:' || :'org', 3, '1 minute') FROM generate_series(1, 4);
SELECT donatello.rate_limit_take('regress:b:' || :'org', 1, '1 hour') AS other_bucket;
SELECT donatello.rate_limit_take('regress:fast:' || :'org', 1, '10 milliseconds') AS first;
SELECT pg_sleep(0.05);
SELECT donatello.rate_limit_take('regress:fast:' || :'org', 1, '10 milliseconds') AS refilled;
SELECT pg_temp.try($$SELECT donatello.rate_limit_take('regress:c', 0, '1 minute')$$);
SELECT pg_temp.try($$SELECT donatello.rate_limit_take('regress:c', 1, '0 seconds')$$);
SHOW donatello.api_key_rate_limit;
