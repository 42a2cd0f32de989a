-- The plain-SQL reference of the budget benchmark: one row per department
-- holding spent and reserved, a reservation is one statement (a conditional
-- UPDATE of that row plus the insert of the reservation row), a settlement
-- one statement (the reservation's row and the department's row).
CREATE SCHEMA budget_ref;
CREATE TABLE budget_ref.budgets (
    id               uuid PRIMARY KEY,
    limit_micros     bigint NOT NULL,
    spent_micros     bigint NOT NULL DEFAULT 0,
    reserved_micros  bigint NOT NULL DEFAULT 0
);
CREATE TABLE budget_ref.reservations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    budget_id       uuid NOT NULL REFERENCES budget_ref.budgets (id),
    amount_micros   bigint NOT NULL,
    actual_micros   bigint,
    status          text NOT NULL DEFAULT 'active',
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL
);
CREATE INDEX ON budget_ref.reservations (expires_at) WHERE status = 'active';

-- what the reference must keep true: balances equal the reservations' sums,
-- spent + reserved within the limit
CREATE FUNCTION budget_ref.violations() RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM budget_ref.budgets b
     WHERE b.reserved_micros <> coalesce((SELECT sum(amount_micros) FROM budget_ref.reservations r
                                            WHERE r.budget_id = b.id AND r.status = 'active'), 0)
        OR b.spent_micros <> coalesce((SELECT sum(actual_micros) FROM budget_ref.reservations r
                                         WHERE r.budget_id = b.id AND r.status = 'settled'), 0)
        OR b.spent_micros + b.reserved_micros > b.limit_micros
$$;
