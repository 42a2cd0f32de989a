# Helpers for the demo steps: headings, SQL shown before it runs, expected errors.
# Sourced by test/demo/run; steps share its shell (and its variables).

DEMO_STEP=0
if [ -t 1 ]; then BOLD=$'\e[1m'; DIM=$'\e[2m'; RESET=$'\e[0m'; else BOLD=''; DIM=''; RESET=''; fi

# step "title": a numbered heading
step() {
	DEMO_STEP=$((DEMO_STEP + 1))
	printf '\n%s== Step %d: %s%s\n' "$BOLD" "$DEMO_STEP" "$1" "$RESET"
}

# say "text": narration
say() {
	printf '%s\n' "$*"
}

# run_sql "SQL": print the SQL, run it, print the result (stops the demo on error)
run_sql() {
	printf '%s%s%s\n' "$DIM" "$(sed 's/^/  sql> /' <<<"$1")" "$RESET"
	psql -X -q -v ON_ERROR_STOP=1 -P pager=off <<<"$1" | sed 's/^/  /'
}

# sql_value "SQL": the single value the SQL returns (not printed)
sql_value() {
	psql -X -q -At -v ON_ERROR_STOP=1 -c "$1"
}

# expect_error SQLSTATE "SQL": run SQL that must fail with SQLSTATE; show the error
expect_error() {
	local want=$1 sql=$2 out got
	printf '%s%s%s\n' "$DIM" "$(sed 's/^/  sql> /' <<<"$sql")" "$RESET"
	out=$(psql -X -q -P pager=off 2>&1 <<SQL
\\set VERBOSITY default
\\set SHOW_CONTEXT never
$sql
\\echo SQLSTATE=:LAST_ERROR_SQLSTATE
SQL
)
	got=$(sed -n 's/^SQLSTATE=//p' <<<"$out")
	grep -v '^SQLSTATE=' <<<"$out" | sed 's/^/  /'
	if [ "$got" != "$want" ]; then
		echo "  demo: expected SQLSTATE $want, got ${got:-none}" >&2
		exit 1
	fi
	printf '  -> refused with SQLSTATE %s, as expected\n' "$got"
}

# as_principal USER_ID ORG_ID "SQL": run SQL as donatello_user with those JWT claims
as_principal() {
	run_sql "SET ROLE donatello_user;
SET request.jwt.claims = '{\"sub\": \"$1\", \"org\": \"$2\", \"role\": \"donatello_user\"}';
$3"
}
