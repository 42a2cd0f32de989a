-- Department budgets: limits, reservations, an immutable ledger, threshold
-- alerts. The logic is C (src/budget/); design, proof of no overspend and
-- examples in docs/budget.md.
--
-- A department's available room is split between a pool on its budgets row
-- and budget_slots rows ("escrow" slots): a reservation locks one slot only,
-- so concurrent reservations of one department do not queue on one row.
-- Invariants (checked by budget_check_invariants):
--   pool + sum(slot allowance) = limit
--   slot spent + slot reserved <= slot allowance           (every slot)
--   slot reserved = ledger sum of reserved_delta for the slot
--   slot spent    = ledger sum of spent_delta for the slot in the current period
-- Every locking statement names org_id (tables can be distributed by org_id).

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

CREATE TABLE donatello.budgets (
    org_id          uuid NOT NULL REFERENCES donatello.organizations (id) ON DELETE CASCADE,
    department_id   uuid NOT NULL,
    limit_micros    bigint NOT NULL CHECK (limit_micros >= 0),
    mode            text NOT NULL CHECK (mode IN ('hard', 'soft', 'warn')),
    period          text NOT NULL CHECK (period IN ('day', 'week', 'month')),
    thresholds      numeric[] NOT NULL,
    pool_micros     bigint NOT NULL,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    locked          boolean NOT NULL DEFAULT false,
    locked_at       timestamptz,
    overrun_micros  bigint NOT NULL DEFAULT 0 CHECK (overrun_micros >= 0),
    next_watch_micros bigint,
    slot_count      integer NOT NULL CHECK (slot_count BETWEEN 1 AND 256),
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (org_id, department_id),
    FOREIGN KEY (org_id, department_id) REFERENCES donatello.departments (org_id, id) ON DELETE CASCADE
) WITH (fillfactor = 70);
COMMENT ON TABLE donatello.budgets IS
    'one budget per department: limit, mode, current period, the room not yet handed to a slot (pool_micros)';
COMMENT ON COLUMN donatello.budgets.pool_micros IS
    'limit minus the room handed to slots; negative only after a recorded overrun or a soft/warn overspend';
COMMENT ON COLUMN donatello.budgets.overrun_micros IS
    'this period: spend above the limit recorded by settlements whose actual exceeded the estimate';
COMMENT ON COLUMN donatello.budgets.next_watch_micros IS
    'spend at which the next threshold (or, in hard mode, the limit) is reached; NULL when none is left this period';

CREATE TABLE donatello.budget_slots (
    org_id            uuid NOT NULL,
    department_id     uuid NOT NULL,
    slot_no           integer NOT NULL,
    period_start      timestamptz NOT NULL,
    period_end        timestamptz NOT NULL,
    allowance_micros  bigint NOT NULL,
    reserved_micros   bigint NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0),
    spent_micros      bigint NOT NULL DEFAULT 0 CHECK (spent_micros >= 0),
    locked            boolean NOT NULL DEFAULT false,
    watch             boolean NOT NULL DEFAULT false,
    PRIMARY KEY (org_id, department_id, slot_no),
    FOREIGN KEY (org_id, department_id) REFERENCES donatello.budgets (org_id, department_id) ON DELETE CASCADE
) WITH (fillfactor = 30);
COMMENT ON TABLE donatello.budget_slots IS
    'escrow slots of a budget: each holds part of the room; a reservation locks one slot';
COMMENT ON COLUMN donatello.budget_slots.watch IS
    'the room handed out reaches the next threshold or the limit: settlements take the exact path';

CREATE TABLE donatello.budget_reservations (
    id                uuid NOT NULL DEFAULT pg_catalog.gen_random_uuid(),
    org_id            uuid NOT NULL,
    department_id     uuid NOT NULL,
    slot_no           integer NOT NULL,
    amount_micros     bigint NOT NULL CHECK (amount_micros > 0),
    actual_micros     bigint CHECK (actual_micros >= 0),
    idempotency_key   text CHECK (pg_catalog.length(idempotency_key) BETWEEN 1 AND 200),
    status            text NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'settled', 'released', 'expired')),
    created_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expires_at        timestamptz NOT NULL,
    resolved_at       timestamptz,
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, department_id) REFERENCES donatello.budgets (org_id, department_id) ON DELETE CASCADE,
    CHECK ((status = 'active') = (resolved_at IS NULL)),
    CHECK ((status = 'settled') = (actual_micros IS NOT NULL))
);
CREATE UNIQUE INDEX budget_reservations_id_key ON donatello.budget_reservations (id);
CREATE UNIQUE INDEX budget_reservations_idempotency_key
    ON donatello.budget_reservations (org_id, department_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX budget_reservations_expiry_idx
    ON donatello.budget_reservations (expires_at) WHERE status = 'active';
COMMENT ON TABLE donatello.budget_reservations IS
    'reservations of estimated cost; each resolves exactly once (settled, released or expired)';

CREATE TABLE donatello.budget_ledger (
    id                bigint GENERATED ALWAYS AS IDENTITY,
    org_id            uuid NOT NULL REFERENCES donatello.organizations (id) ON DELETE CASCADE,
    department_id     uuid NOT NULL,
    period_start      timestamptz NOT NULL,
    kind              text NOT NULL
                      CHECK (kind IN ('reserve', 'settle', 'release', 'expire', 'overrun', 'adjust', 'rollover')),
    slot_no           integer,
    reservation_id    uuid,
    amount_micros     bigint NOT NULL,
    reserved_delta    bigint NOT NULL DEFAULT 0,
    spent_delta       bigint NOT NULL DEFAULT 0,
    at                timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (org_id, id),
    CHECK ((kind IN ('reserve', 'settle', 'release', 'expire')) = (reservation_id IS NOT NULL))
);
COMMENT ON TABLE donatello.budget_ledger IS
    'append-only: every reserve, settle, release, expiry, overrun, limit adjustment and period rollover';
COMMENT ON COLUMN donatello.budget_ledger.amount_micros IS
    'reserve/release/expire: the estimate; settle: the actual; overrun: the spend above the limit; adjust: the new limit';

CREATE TABLE donatello.budget_periods (
    org_id          uuid NOT NULL,
    department_id   uuid NOT NULL,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    limit_micros    bigint NOT NULL,
    spent_micros    bigint NOT NULL,
    overrun_micros  bigint NOT NULL,
    mode            text NOT NULL,
    locked          boolean NOT NULL,
    closed_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (org_id, department_id, period_start),
    FOREIGN KEY (org_id, department_id) REFERENCES donatello.budgets (org_id, department_id) ON DELETE CASCADE
);
COMMENT ON TABLE donatello.budget_periods IS 'closed periods of every budget, written at rollover';

CREATE TABLE donatello.budget_alerts (
    org_id          uuid NOT NULL,
    department_id   uuid NOT NULL,
    period_start    timestamptz NOT NULL,
    alert           text NOT NULL,
    event_id        uuid,
    at              timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (org_id, department_id, period_start, alert),
    FOREIGN KEY (org_id, department_id) REFERENCES donatello.budgets (org_id, department_id) ON DELETE CASCADE
);
COMMENT ON TABLE donatello.budget_alerts IS
    'one row per alert per period ("threshold:0.8", "over_limit"): the primary key makes each event happen once';

SELECT pg_catalog.pg_extension_config_dump('donatello.budgets', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.budget_slots', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.budget_reservations', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.budget_ledger', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.budget_periods', '');
SELECT pg_catalog.pg_extension_config_dump('donatello.budget_alerts', '');

-- The ledger is append-only. Rows go only with their organization (a
-- cascaded delete, after which the organization is gone).
CREATE FUNCTION donatello.budget_ledger_immutable() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'DELETE' AND NOT EXISTS (SELECT FROM donatello.organizations o WHERE o.id = OLD.org_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = 'DNV01',
        MESSAGE = 'the budget ledger is append-only',
        DETAIL = CASE WHEN TG_OP = 'TRUNCATE' THEN 'TRUNCATE refused.'
                      ELSE format('%s of ledger entry %s refused.', TG_OP, OLD.id) END,
        HINT = 'Correct a balance with a new entry (donatello.set_budget records an adjustment).';
END
$$;
COMMENT ON FUNCTION donatello.budget_ledger_immutable() IS
    'trigger: refuses UPDATE and DELETE on budget_ledger (except the cascade of a deleted organization)';
CREATE TRIGGER budget_ledger_immutable BEFORE UPDATE OR DELETE ON donatello.budget_ledger
    FOR EACH ROW EXECUTE FUNCTION donatello.budget_ledger_immutable();
CREATE TRIGGER budget_ledger_no_truncate BEFORE TRUNCATE ON donatello.budget_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION donatello.budget_ledger_immutable();

-- ---------------------------------------------------------------------------
-- Row-level security: budgets are visible inside their organization to
-- holders of budget:read; donatello_service sees every row. Writes go through
-- the SECURITY DEFINER functions below only.
-- ---------------------------------------------------------------------------

-- true when the current principal may read the department's budget: it holds
-- budget:read there (or organization-wide), or manages the department.
CREATE FUNCTION donatello.budget_readable(org_id uuid, department_id uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT budget_readable.org_id = donatello.current_org_id()
       AND donatello.current_user_id() IS NOT NULL
       AND EXISTS (SELECT FROM donatello.departments d
                    WHERE d.org_id = budget_readable.org_id AND d.id = budget_readable.department_id
                      AND (d.manager_id = donatello.current_user_id()
                           OR donatello.has_permission(donatello.current_user_id(), 'budget:read', d.id)))
$$;
COMMENT ON FUNCTION donatello.budget_readable(uuid, uuid) IS
    'true when the current principal holds budget:read in the department or manages it (row-level security of budget tables)';
GRANT EXECUTE ON FUNCTION donatello.budget_readable(uuid, uuid) TO donatello_user, donatello_service;

ALTER TABLE donatello.budgets ENABLE ROW LEVEL SECURITY;
ALTER TABLE donatello.budget_slots ENABLE ROW LEVEL SECURITY;
ALTER TABLE donatello.budget_reservations ENABLE ROW LEVEL SECURITY;
ALTER TABLE donatello.budget_ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE donatello.budget_periods ENABLE ROW LEVEL SECURITY;
ALTER TABLE donatello.budget_alerts ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON donatello.budgets
    USING (donatello.budget_readable(org_id, department_id));
CREATE POLICY tenant_isolation ON donatello.budget_slots
    USING (donatello.budget_readable(org_id, department_id));
CREATE POLICY tenant_isolation ON donatello.budget_reservations
    USING (donatello.budget_readable(org_id, department_id));
CREATE POLICY tenant_isolation ON donatello.budget_ledger
    USING (donatello.budget_readable(org_id, department_id));
CREATE POLICY tenant_isolation ON donatello.budget_periods
    USING (donatello.budget_readable(org_id, department_id));
CREATE POLICY tenant_isolation ON donatello.budget_alerts
    USING (donatello.budget_readable(org_id, department_id));
CREATE POLICY service_all ON donatello.budgets TO donatello_service USING (true);
CREATE POLICY service_all ON donatello.budget_slots TO donatello_service USING (true);
CREATE POLICY service_all ON donatello.budget_reservations TO donatello_service USING (true);
CREATE POLICY service_all ON donatello.budget_ledger TO donatello_service USING (true);
CREATE POLICY service_all ON donatello.budget_periods TO donatello_service USING (true);
CREATE POLICY service_all ON donatello.budget_alerts TO donatello_service USING (true);

GRANT SELECT ON donatello.budgets, donatello.budget_slots, donatello.budget_reservations,
                donatello.budget_ledger, donatello.budget_periods, donatello.budget_alerts
    TO donatello_user, donatello_service;

-- ---------------------------------------------------------------------------
-- SQL API (C, src/budget/)
-- ---------------------------------------------------------------------------

CREATE FUNCTION donatello.set_budget(department_id uuid, amount numeric, mode text DEFAULT 'hard',
                                     period text DEFAULT 'month',
                                     thresholds numeric[] DEFAULT '{0.8,0.9,1.0}')
    RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_set_budget';
COMMENT ON FUNCTION donatello.set_budget(uuid, numeric, text, text, numeric[]) IS
    'create or change a department''s budget (limit, mode hard/soft/warn, period, alert thresholds); raising the limit unlocks';

CREATE FUNCTION donatello.reserve(department_id uuid, amount numeric, idempotency_key text DEFAULT NULL,
                                  ttl interval DEFAULT '15 minutes')
    RETURNS uuid
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_reserve';
COMMENT ON FUNCTION donatello.reserve(uuid, numeric, text, interval) IS
    'reserve an estimated cost; DNB01 if it does not fit (hard mode), DNB02 if the department is locked';

CREATE FUNCTION donatello.settle(reservation_id uuid, actual numeric) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_settle';
COMMENT ON FUNCTION donatello.settle(uuid, numeric) IS
    'turn a reservation into spend at the actual cost; DNB03 if it is not active';

CREATE FUNCTION donatello.release(reservation_id uuid) RETURNS void
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_release';
COMMENT ON FUNCTION donatello.release(uuid) IS
    'give a reservation''s room back without spending it; DNB03 if it is not active';

CREATE FUNCTION donatello.budget_status(department_id uuid,
        OUT "limit" numeric, OUT spent numeric, OUT reserved numeric, OUT available numeric,
        OUT utilization numeric, OUT mode text, OUT period_start timestamptz,
        OUT period_end timestamptz, OUT locked boolean)
    RETURNS record
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_budget_status';
COMMENT ON FUNCTION donatello.budget_status(uuid) IS
    'limit, spent, reserved, available, utilization (spent / limit), mode, current period and lock of a budget';

CREATE FUNCTION donatello.budget_expire_reservations(as_of timestamptz DEFAULT NULL) RETURNS integer
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_budget_expire_reservations';
COMMENT ON FUNCTION donatello.budget_expire_reservations(timestamptz) IS
    'release every reservation past its expiry (as of now, or as_of); what the maintenance worker runs; returns how many';

CREATE FUNCTION donatello.budget_roll_periods(as_of timestamptz DEFAULT NULL) RETURNS integer
    LANGUAGE c VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'donatello_budget_roll_periods';
COMMENT ON FUNCTION donatello.budget_roll_periods(timestamptz) IS
    'start the period containing now (or as_of) for every budget whose period has ended by then; what the maintenance worker runs; returns how many';

-- Every violation of the budget invariants; no row means healthy.
CREATE FUNCTION donatello.budget_check_invariants(
        OUT org_id uuid, OUT department_id uuid, OUT violation text, OUT detail text)
    RETURNS SETOF record
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
    WITH ledger AS (
        SELECT l.org_id, l.department_id, l.slot_no, l.period_start,
               sum(l.reserved_delta) AS reserved, sum(l.spent_delta) AS spent
          FROM donatello.budget_ledger l
         WHERE l.slot_no IS NOT NULL
         GROUP BY l.org_id, l.department_id, l.slot_no, l.period_start
    ), overruns AS (
        SELECT l.org_id, l.department_id, l.period_start, sum(l.amount_micros) AS amount
          FROM donatello.budget_ledger l
         WHERE l.kind = 'overrun'
         GROUP BY l.org_id, l.department_id, l.period_start
    ), active AS (
        SELECT r.org_id, r.department_id, r.slot_no, sum(r.amount_micros) AS reserved
          FROM donatello.budget_reservations r
         WHERE r.status = 'active'
         GROUP BY r.org_id, r.department_id, r.slot_no
    ), slot_ledger AS (
        SELECT s.org_id, s.department_id, s.slot_no, s.reserved_micros, s.spent_micros, s.allowance_micros,
               coalesce((SELECT sum(l.reserved) FROM ledger l
                          WHERE l.org_id = s.org_id AND l.department_id = s.department_id
                            AND l.slot_no = s.slot_no), 0) AS ledger_reserved,
               coalesce((SELECT sum(l.spent) FROM ledger l
                          WHERE l.org_id = s.org_id AND l.department_id = s.department_id
                            AND l.slot_no = s.slot_no AND l.period_start = s.period_start), 0) AS ledger_spent,
               coalesce((SELECT a.reserved FROM active a
                          WHERE a.org_id = s.org_id AND a.department_id = s.department_id
                            AND a.slot_no = s.slot_no), 0) AS active_reserved
          FROM donatello.budget_slots s
    ), totals AS (
        SELECT b.org_id, b.department_id, b.mode, b.limit_micros, b.pool_micros, b.overrun_micros, b.period_start,
               sum(s.allowance_micros) AS allowance, sum(s.spent_micros) AS spent, sum(s.reserved_micros) AS reserved,
               bool_or(s.period_start <> b.period_start) AS stale_slot
          FROM donatello.budgets b JOIN donatello.budget_slots s USING (org_id, department_id)
         GROUP BY b.org_id, b.department_id, b.mode, b.limit_micros, b.pool_micros, b.overrun_micros, b.period_start
    )
    SELECT org_id, department_id, 'slot reserved differs from ledger',
           format('slot %s: reserved %s, ledger %s', slot_no, reserved_micros, ledger_reserved)
      FROM slot_ledger WHERE reserved_micros <> ledger_reserved
    UNION ALL
    SELECT org_id, department_id, 'slot spent differs from ledger',
           format('slot %s: spent %s, ledger %s this period', slot_no, spent_micros, ledger_spent)
      FROM slot_ledger WHERE spent_micros <> ledger_spent
    UNION ALL
    SELECT org_id, department_id, 'slot reserved differs from active reservations',
           format('slot %s: reserved %s, active reservations %s', slot_no, reserved_micros, active_reserved)
      FROM slot_ledger WHERE reserved_micros <> active_reserved
    UNION ALL
    SELECT org_id, department_id, 'slot holds more than its allowance',
           format('slot %s: spent %s + reserved %s > allowance %s', slot_no, spent_micros, reserved_micros, allowance_micros)
      FROM slot_ledger WHERE spent_micros + reserved_micros > allowance_micros
    UNION ALL
    SELECT org_id, department_id, 'pool and allowances do not add up to the limit',
           format('pool %s + allowances %s <> limit %s', pool_micros, allowance, limit_micros)
      FROM totals WHERE pool_micros + allowance <> limit_micros
    UNION ALL
    SELECT org_id, department_id, 'slots in another period than their budget', format('period %s', period_start)
      FROM totals WHERE stale_slot
    UNION ALL
    SELECT t.org_id, t.department_id, 'hard-mode spent + reserved above the limit',
           format('spent %s + reserved %s > limit %s + recorded overrun %s', t.spent, t.reserved, t.limit_micros, t.overrun_micros)
      FROM totals t WHERE t.mode = 'hard' AND t.spent + t.reserved > t.limit_micros + t.overrun_micros
    UNION ALL
    SELECT t.org_id, t.department_id, 'recorded overrun differs from ledger',
           format('overrun %s, ledger %s', t.overrun_micros, coalesce(o.amount, 0))
      FROM totals t
      LEFT JOIN overruns o ON o.org_id = t.org_id AND o.department_id = t.department_id
                          AND o.period_start = t.period_start
     WHERE t.overrun_micros <> coalesce(o.amount, 0)
    UNION ALL
    SELECT l.org_id, l.department_id, 'reservation resolved more than once',
           format('reservation %s: %s', l.reservation_id, string_agg(l.kind, ', ' ORDER BY l.id))
      FROM donatello.budget_ledger l
     WHERE l.kind IN ('settle', 'release', 'expire')
     GROUP BY l.org_id, l.department_id, l.reservation_id HAVING count(*) > 1
    UNION ALL
    SELECT r.org_id, r.department_id, 'reservation status differs from ledger',
           format('reservation %s is %s', r.id, r.status)
      FROM donatello.budget_reservations r
      LEFT JOIN (SELECT l.org_id, l.reservation_id,
                        count(*) FILTER (WHERE l.kind = 'reserve') AS reserves,
                        count(*) FILTER (WHERE l.kind = 'settle') AS settles,
                        count(*) FILTER (WHERE l.kind = 'release') AS releases,
                        count(*) FILTER (WHERE l.kind = 'expire') AS expiries
                   FROM donatello.budget_ledger l
                  WHERE l.reservation_id IS NOT NULL
                  GROUP BY l.org_id, l.reservation_id) e
        ON e.org_id = r.org_id AND e.reservation_id = r.id
     WHERE e.reserves IS DISTINCT FROM 1
        OR e.settles <> (r.status = 'settled')::int
        OR e.releases <> (r.status = 'released')::int
        OR e.expiries <> (r.status = 'expired')::int
$$;
COMMENT ON FUNCTION donatello.budget_check_invariants() IS
    'every violation of the budget invariants (balances vs ledger, limit, double resolution); empty means healthy';

-- ---------------------------------------------------------------------------
-- HTTP API
-- ---------------------------------------------------------------------------

-- A department's budget, for principals who may read it: budget:read in the
-- department (or organization), or the department's manager.
CREATE FUNCTION donatello_api.budget_status(department_id uuid,
        OUT "limit" numeric, OUT spent numeric, OUT reserved numeric, OUT available numeric,
        OUT utilization numeric, OUT mode text, OUT period_start timestamptz,
        OUT period_end timestamptz, OUT locked boolean)
    RETURNS record
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    uid uuid := donatello.current_user_id();
    oid uuid := donatello.current_org_id();
BEGIN
    IF uid IS NULL OR oid IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNA03',
            MESSAGE = 'budget_status requires an authenticated principal',
            HINT = 'Call with a valid token (request.jwt.claims with "sub" and "org").';
    END IF;
    IF NOT donatello.budget_readable(oid, budget_status.department_id) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'DNP01',
            MESSAGE = 'permission denied: "budget:read" is required',
            DETAIL = format('User %s may not read the budget of department %s.', uid, budget_status.department_id),
            HINT = 'Ask an administrator for a role that includes "budget:read" in this department.';
    END IF;
    SELECT * INTO "limit", spent, reserved, available, utilization, mode, period_start, period_end, locked
      FROM donatello.budget_status(budget_status.department_id);
END
$$;
COMMENT ON FUNCTION donatello_api.budget_status(uuid) IS
    'the budget of a department of the caller''s organization (budget:read, or the department''s manager)';

GRANT EXECUTE ON FUNCTION donatello_api.budget_status(uuid) TO donatello_user, donatello_service;
GRANT EXECUTE ON FUNCTION
    donatello.set_budget(uuid, numeric, text, text, numeric[]),
    donatello.reserve(uuid, numeric, text, interval),
    donatello.settle(uuid, numeric),
    donatello.release(uuid),
    donatello.budget_status(uuid),
    donatello.budget_check_invariants()
    TO donatello_service;
