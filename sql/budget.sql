-- Department budgets, SQL surface: set_budget, reserve, settle, release,
-- budget_status, expiry, rollover, thresholds, modes, the ledger and its
-- invariants, who may read a budget. Concurrency: test/isolation/specs/budget_*
-- and test/t/040_budget_storm.pl.
\set SHOW_CONTEXT never
\set VERBOSITY default
SET donatello.budget_slots = 16;

-- errors with their SQLSTATE; ids replaced so the output is stable
CREATE FUNCTION pg_temp.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text; msg text; det text;
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RETURN st || ': ' || regexp_replace(regexp_replace(msg || coalesce(' / ' || nullif(det, ''), ''),
                                        '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'g'),
                                        '\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?[+-]\d\d', '<time>', 'g');
END
$$;

SELECT donatello.create_organization('Budget A', 'budget-a') AS org \gset
SELECT donatello.create_organization('Budget B', 'budget-b') AS org_b \gset
SELECT donatello.create_department(:'org', 'Design') AS design \gset
SELECT donatello.create_department(:'org', 'Ops') AS ops \gset
SELECT donatello.create_department(:'org', 'Lab') AS lab \gset
SELECT donatello.create_department(:'org_b', 'Other') AS other \gset
SELECT donatello.create_user(:'org', 'manager@a.test', 'Manager', :'design') AS manager \gset
SELECT donatello.create_user(:'org', 'viewer@a.test', 'Viewer') AS viewer \gset
SELECT donatello.create_user(:'org', 'nobody@a.test', 'Nobody') AS nobody \gset
SELECT donatello.create_user(:'org_b', 'admin@b.test', 'Admin B') AS admin_b \gset
UPDATE donatello.departments SET manager_id = :'manager' WHERE id = :'design';
SELECT donatello.grant_role(:'viewer', 'viewer');
SELECT donatello.grant_role(:'admin_b', 'org_admin');

-- bad input
SELECT pg_temp.try(format('SELECT donatello.set_budget(%L, -1)', :'design'));
SELECT pg_temp.try(format('SELECT donatello.set_budget(%L, 1.0000001)', :'design'));
SELECT pg_temp.try(format('SELECT donatello.set_budget(%L, ''NaN'')', :'design'));
SELECT pg_temp.try(format('SELECT donatello.set_budget(%L, 100, ''strict'')', :'design'));
SELECT pg_temp.try(format('SELECT donatello.set_budget(%L, 100, ''hard'', ''year'')', :'design'));
SELECT pg_temp.try(format('SELECT donatello.set_budget(%L, 100, ''hard'', ''month'', ''{0.5,0}'')', :'design'));
SELECT pg_temp.try(format('SELECT donatello.set_budget(%L, 100, ''hard'', ''month'', ''{0.5,0.5}'')', :'design'));
SELECT pg_temp.try(format('SELECT donatello.set_budget(%L, 100, ''hard'', ''month'', ''{0.5,NULL}'')', :'design'));
SELECT pg_temp.try('SELECT donatello.set_budget(''00000000-0000-4000-8000-000000000000'', 100)');
SELECT pg_temp.try(format('SELECT donatello.reserve(%L, 1)', :'design'));
SELECT pg_temp.try(format('SELECT donatello.budget_status(%L)', :'design'));

-- a hard budget of 100 for this month
SELECT donatello.set_budget(:'design', 100);
SELECT "limit", spent, reserved, available, utilization, mode, locked,
       period_start = date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS period_starts_this_month,
       period_end = (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC' AS period_ends_next_month
  FROM donatello.budget_status(:'design');
SELECT count(*) AS slots, sum(allowance_micros) + (SELECT pool_micros FROM donatello.budgets WHERE department_id = :'design') AS room
  FROM donatello.budget_slots WHERE department_id = :'design';

SELECT pg_temp.try(format('SELECT donatello.reserve(%L, 0)', :'design'));
SELECT pg_temp.try(format('SELECT donatello.reserve(%L, 1, NULL, ''-1 minute'')', :'design'));
SELECT pg_temp.try(format('SELECT donatello.reserve(%L, 1, '''')', :'design'));
SELECT pg_temp.try('SELECT donatello.reserve(NULL, 1)');

SELECT donatello.reserve(:'design', 10) AS r1 \gset
SELECT donatello.reserve(:'design', 60.25) AS r2 \gset
SELECT "limit", spent, reserved, available FROM donatello.budget_status(:'design');
-- the last dollars: 29.75 fit, 29.76 do not
SELECT pg_temp.try(format('SELECT donatello.reserve(%L, 29.76)', :'design'));
SELECT donatello.reserve(:'design', 29.75) AS r3 \gset
SELECT pg_temp.try(format('SELECT donatello.reserve(%L, 0.000001)', :'design'));
SELECT donatello.release(:'r3');

-- settle below the estimate; release; resolving twice is DNB03
SELECT donatello.settle(:'r1', 7.5);
SELECT donatello.release(:'r2');
SELECT pg_temp.try(format('SELECT donatello.settle(%L, 1)', :'r1'));
SELECT pg_temp.try(format('SELECT donatello.release(%L)', :'r1'));
SELECT pg_temp.try(format('SELECT donatello.settle(%L, 1)', :'r2'));
SELECT pg_temp.try('SELECT donatello.settle(''00000000-0000-4000-8000-000000000000'', 1)');
SELECT pg_temp.try(format('SELECT donatello.settle(%L, -1)', :'r1'));
SELECT id = :'r1' AS r1, status, amount_micros, actual_micros FROM donatello.budget_reservations
 WHERE department_id = :'design' ORDER BY created_at, amount_micros;
SELECT "limit", spent, reserved, available, utilization FROM donatello.budget_status(:'design');

-- idempotency: the same key returns the same reservation; another amount is a conflict
SELECT donatello.reserve(:'design', 5, 'job-1') AS k1 \gset
SELECT donatello.reserve(:'design', 5, 'job-1') = :'k1' AS same_reservation;
SELECT pg_temp.try(format('SELECT donatello.reserve(%L, 6, ''job-1'')', :'design'));
SELECT donatello.settle(:'k1', 5);
SELECT donatello.reserve(:'design', 5, 'job-1') = :'k1' AS same_after_settle;
SELECT count(*) AS reservations_with_key FROM donatello.budget_reservations WHERE idempotency_key = 'job-1';
-- the key is per department
SELECT donatello.set_budget(:'ops', 50);
SELECT donatello.reserve(:'ops', 5, 'job-1') <> :'k1' AS other_department_other_reservation;

-- thresholds: 80% and 90% once each, even when crossed again
SELECT donatello.reserve(:'design', 70) AS r4 \gset
SELECT donatello.settle(:'r4', 70);
SELECT spent, utilization FROM donatello.budget_status(:'design');
SELECT type, payload - 'department_id' - 'period_start' - 'period_end' AS payload
  FROM donatello.events WHERE org_id = :'org' ORDER BY created_at, payload ->> 'threshold';
SELECT donatello.reserve(:'design', 5) AS r5 \gset
SELECT donatello.settle(:'r5', 5);
SELECT count(*) AS threshold_events FROM donatello.events WHERE org_id = :'org' AND type = 'budget.threshold_reached';

-- an actual above the estimate is recorded even past the limit, and locks a hard budget
SELECT donatello.reserve(:'design', 2) AS r6 \gset
SELECT donatello.settle(:'r6', 20);
SELECT "limit", spent, reserved, available, utilization, locked FROM donatello.budget_status(:'design');
SELECT payload ->> 'threshold' AS threshold, payload ->> 'locks' AS locks FROM donatello.events
 WHERE org_id = :'org' AND type = 'budget.threshold_reached' ORDER BY created_at, payload ->> 'threshold';
-- each alert is in the organization's audit trail too, with the event's details
SELECT action, resource_type, resource_id = :'design' AS this_department, details ->> 'threshold' AS threshold
  FROM donatello.audit_log WHERE org_id = :'org' AND action LIKE 'budget.%' ORDER BY id;
SELECT kind, amount_micros FROM donatello.budget_ledger WHERE department_id = :'design' AND kind = 'overrun';
SELECT pg_temp.try(format('SELECT donatello.reserve(%L, 1)', :'design'));
-- lowering a hard limit below the spend is refused; raising it unlocks
SELECT pg_temp.try(format('SELECT donatello.set_budget(%L, 50)', :'design'));
SELECT donatello.set_budget(:'design', 200);
SELECT "limit", spent, available, locked FROM donatello.budget_status(:'design');
SELECT donatello.reserve(:'design', 1) AS r7 \gset
SELECT donatello.release(:'r7');
SELECT * FROM donatello.budget_check_invariants();

-- reaching exactly 100% in hard mode locks (DNB02) until the limit is raised
SELECT donatello.set_budget(:'lab', 10);
SELECT donatello.reserve(:'lab', 10) AS l1 \gset
SELECT donatello.settle(:'l1', 10);
SELECT spent, locked FROM donatello.budget_status(:'lab');
SELECT pg_temp.try(format('SELECT donatello.reserve(%L, 1)', :'lab'));

-- soft mode: overspend allowed, one budget.limit_exceeded event per period
SELECT donatello.set_budget(:'lab', 10, 'soft');
SELECT locked FROM donatello.budget_status(:'lab');
SELECT donatello.reserve(:'lab', 3) AS l2 \gset
SELECT donatello.reserve(:'lab', 3) AS l3 \gset
SELECT "limit", spent, reserved, available, locked FROM donatello.budget_status(:'lab');
SELECT type, payload ->> 'mode' AS mode, payload ->> 'spent' AS spent, payload ->> 'reserved' AS reserved
  FROM donatello.events WHERE org_id = :'org' AND type = 'budget.limit_exceeded';
-- warn mode: the department's manager is alerted (once per period)
SELECT donatello.set_budget(:'design', 100, 'warn');
SELECT donatello.reserve(:'design', 50) AS r8 \gset
SELECT type, payload ->> 'manager_id' = :'manager' AS names_manager, payload ->> 'department' AS department
  FROM donatello.events WHERE org_id = :'org' AND type = 'budget.manager_alert';
SELECT donatello.release(:'r8');
SELECT * FROM donatello.budget_check_invariants();

-- expiry: the maintenance task's function, as of a time past the ttl
SELECT donatello.set_budget(:'ops', 50, 'hard');
SELECT donatello.reserve(:'ops', 10, NULL, '1 minute') AS e1 \gset
SELECT donatello.reserve(:'ops', 10, NULL, '1 hour') AS e2 \gset
SELECT donatello.budget_expire_reservations(now() + interval '2 minutes') AS expired;
SELECT donatello.budget_expire_reservations(now() + interval '2 minutes') AS expired_again;
SELECT status FROM donatello.budget_reservations WHERE id IN (:'e1', :'e2') ORDER BY expires_at;
SELECT reserved FROM donatello.budget_status(:'ops');
-- an expired reservation can be neither settled nor released
UPDATE donatello.budget_reservations SET expires_at = now() - interval '1 second' WHERE id = :'e2';
SELECT pg_temp.try(format('SELECT donatello.settle(%L, 1)', :'e2'));
SELECT pg_temp.try(format('SELECT donatello.release(%L)', :'e2'));
-- ... and its room is taken back lazily when a reservation needs it
SELECT reserved, available FROM donatello.budget_status(:'ops');
SELECT donatello.reserve(:'ops', 45) IS NOT NULL AS fits_after_lazy_expiry;
SELECT status FROM donatello.budget_reservations WHERE id = :'e2';
SELECT kind, count(*) FROM donatello.budget_ledger WHERE department_id = :'ops' GROUP BY kind ORDER BY kind;
SELECT * FROM donatello.budget_check_invariants();

-- rollover: the maintenance function, as of a time in the next month, starts
-- the new period of every budget, keeps the history and carries running
-- reservations over; later operations count in the new period
SELECT donatello.reserve(:'design', 3) AS carried \gset
SELECT donatello.budget_roll_periods(date_trunc('month', now()) + interval '1 month 1 day') >= 3 AS rolled;
SELECT donatello.reserve(:'design', 4) AS r9 \gset
SELECT "limit", spent, reserved, locked,
       period_start = (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC' AS next_month
  FROM donatello.budget_status(:'design');
SELECT limit_micros, spent_micros, overrun_micros, mode,
       period_start = date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS this_month
  FROM donatello.budget_periods WHERE department_id = :'design';
SELECT donatello.settle(:'r9', 4);
SELECT donatello.settle(:'carried', 2.5);
SELECT spent, reserved FROM donatello.budget_status(:'design');
SELECT kind, period_start = (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC' AS next_month
  FROM donatello.budget_ledger WHERE department_id = :'design' ORDER BY id DESC LIMIT 4;
-- nothing is due any more
SELECT donatello.budget_roll_periods() AS rolled_again;
SELECT * FROM donatello.budget_check_invariants();

-- the ledger is append-only
SELECT pg_temp.try(format('UPDATE donatello.budget_ledger SET amount_micros = 0 WHERE department_id = %L', :'design'));
SELECT pg_temp.try(format('DELETE FROM donatello.budget_ledger WHERE department_id = %L', :'design'));
SELECT pg_temp.try('TRUNCATE donatello.budget_ledger');

-- the invariant check finds tampering
BEGIN;
UPDATE donatello.budget_slots SET reserved_micros = reserved_micros + 1, allowance_micros = allowance_micros + 1
 WHERE department_id = :'design' AND slot_no = 0;
SELECT violation FROM donatello.budget_check_invariants() ORDER BY 1;
ROLLBACK;
BEGIN;
UPDATE donatello.budget_slots SET spent_micros = spent_micros + 1000000000 WHERE department_id = :'lab' AND slot_no = 0;
UPDATE donatello.budgets SET mode = 'hard' WHERE department_id = :'lab';
SELECT violation FROM donatello.budget_check_invariants() ORDER BY 1;
ROLLBACK;

-- HTTP API: budget:read in the organization, or the department's manager
SET ROLE donatello_user;
SELECT set_config('request.jwt.claims', json_build_object('sub', :'viewer', 'org', :'org')::text, false) IS NOT NULL AS as_viewer;
SELECT "limit", mode FROM donatello_api.budget_status(:'design');
SELECT count(*) AS budgets_visible FROM donatello.budgets;
SELECT set_config('request.jwt.claims', json_build_object('sub', :'manager', 'org', :'org')::text, false) IS NOT NULL AS as_manager;
SELECT "limit", mode FROM donatello_api.budget_status(:'design');
SELECT pg_temp.try(format('SELECT donatello_api.budget_status(%L)', :'ops'));
SELECT set_config('request.jwt.claims', json_build_object('sub', :'nobody', 'org', :'org')::text, false) IS NOT NULL AS as_nobody;
SELECT pg_temp.try(format('SELECT donatello_api.budget_status(%L)', :'design'));
SELECT count(*) AS budgets_visible FROM donatello.budgets;
SELECT set_config('request.jwt.claims', json_build_object('sub', :'admin_b', 'org', :'org_b')::text, false) IS NOT NULL AS as_other_org;
SELECT pg_temp.try(format('SELECT donatello_api.budget_status(%L)', :'design'));
SELECT count(*) AS budgets_visible FROM donatello.budgets;
SELECT pg_temp.try(format('SELECT donatello.reserve(%L, 1)', :'design'));
SELECT pg_temp.try(format('SELECT donatello.budget_status(%L)', :'design'));
SELECT set_config('request.jwt.claims', '', false) IS NOT NULL AS anonymous;
SELECT pg_temp.try(format('SELECT donatello_api.budget_status(%L)', :'design'));
RESET ROLE;

-- privileges: the service role runs the API; nobody else
SELECT p.oid::regprocedure AS function,
       has_function_privilege('donatello_service', p.oid, 'EXECUTE') AS service,
       has_function_privilege('donatello_user', p.oid, 'EXECUTE') AS "user",
       has_function_privilege('donatello_anon', p.oid, 'EXECUTE') AS anon
  FROM pg_proc p
 WHERE p.pronamespace IN ('donatello'::regnamespace, 'donatello_api'::regnamespace)
   AND (p.proname IN ('set_budget', 'reserve', 'settle', 'release', 'budget_status')
        OR p.proname LIKE 'budget%')
 ORDER BY 1::text;
