# Step group: department budgets (issue: department budgets in C).
# Design gets a hard monthly budget of 100; generations reserve, settle and
# release; the 80% threshold emits one event; the department reaches its
# limit and the next reservation is refused with DNB01.

step "Budgets: Design gets a hard budget of 100 a month (alerts at 80%, 90%, 100%)"
do_sql "SELECT donatello.set_budget(:'design', 100);"
run_sql "SELECT \"limit\", spent, reserved, available, utilization, mode, period_start, period_end, locked
  FROM donatello.budget_status(:'design');"

step "Generations reserve their estimate, then settle the actual cost (or release)"
remember GEN1 "$(sql_value "SELECT donatello.reserve(:'design', 30, 'gen-1')")"
remember GEN2 "$(sql_value "SELECT donatello.reserve(:'design', 45, 'gen-2')")"
say "  reservations $GEN1 (30) and $GEN2 (45)"
say "A retried request with the same idempotency key gets the same reservation, not a second one:"
run_sql "SELECT donatello.reserve(:'design', 30, 'gen-1') = :'gen1' AS same_reservation;"
run_sql "SELECT \"limit\", spent, reserved, available FROM donatello.budget_status(:'design');"
say "gen-1 cost less than estimated; gen-2 cost more (the actual is recorded as it was incurred):"
do_sql "SELECT donatello.settle(:'gen1', 28.40);
SELECT donatello.settle(:'gen2', 52.10);"
run_sql "SELECT \"limit\", spent, reserved, available, utilization FROM donatello.budget_status(:'design');"
say "Spend crossed 80%: one budget.threshold_reached event went to the outbox of the dispatcher:"
run_sql "SELECT type, payload ->> 'threshold' AS threshold, payload ->> 'spent' AS spent, payload ->> 'limit' AS \"limit\"
  FROM donatello.events WHERE org_id = :'org' AND type LIKE 'budget.%' ORDER BY created_at;"
expect_error DNB03 "SELECT donatello.settle(:'gen1', 28.40);"

step "Bob manages Design and may read its budget over the HTTP API; Erin, who holds no role, may not"
remember ERIN "$(sql_value "SELECT donatello.create_user(:'org', 'erin@acme.test', 'Erin', :'marketing')")"
as_principal bob org "SELECT \"limit\", spent, available, locked FROM donatello_api.budget_status(:'design');"
expect_error DNP01 "SET ROLE donatello_user;
SELECT set_config('request.jwt.claims', json_build_object('sub', :'erin', 'org', :'org')::text, false) IS NULL;
SELECT * FROM donatello_api.budget_status(:'design');"

step "Design reaches its limit: the next request is refused with DNB01"
remember GEN3 "$(sql_value "SELECT donatello.reserve(:'design', 15, 'gen-3')")"
run_sql "SELECT \"limit\", spent, reserved, available FROM donatello.budget_status(:'design');"
expect_error DNB01 "SELECT donatello.reserve(:'design', 10, 'gen-4');"
say "Releasing gen-3 (its generation failed) gives the room back:"
do_sql "SELECT donatello.release(:'gen3');"
run_sql "SELECT \"limit\", spent, reserved, available FROM donatello.budget_status(:'design');"

step "Every change is in the append-only ledger; the balances equal its sums"
run_sql "SELECT kind, (amount_micros / 1e6)::numeric(12,2) AS amount, (reserved_delta / 1e6)::numeric(12,2) AS reserved_change,
       (spent_delta / 1e6)::numeric(12,2) AS spent_change
  FROM donatello.budget_ledger WHERE department_id = :'design' ORDER BY id;"
run_sql "SELECT count(*) AS invariant_violations FROM donatello.budget_check_invariants();"
expect_error DNV01 "UPDATE donatello.budget_ledger SET amount_micros = 0 WHERE department_id = :'design';"
