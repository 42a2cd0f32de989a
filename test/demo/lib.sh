# Helpers for the demo steps: headings, SQL shown before it runs, expected errors.
# Sourced by test/demo/run; steps share its shell (and its variables).

DEMO_STEP=0
PSQL_VARS=()
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

# remember NAME VALUE: set the shell variable NAME and the psql variable
# :name (lower case) for every later SQL, so the printed SQL reads :'alice'
# rather than a uuid
remember() {
	printf -v "$1" '%s' "$2"
	PSQL_VARS+=(-v "${1,,}=$2")
}

# run_sql "SQL": print the SQL, run it, print the result (stops the demo on error)
run_sql() {
	printf '%s%s%s\n' "$DIM" "$(sed 's/^/  sql> /' <<<"$1")" "$RESET"
	psql -X -q -v ON_ERROR_STOP=1 -P pager=off "${PSQL_VARS[@]}" <<<"$1" | sed 's/^/  /'
}

# do_sql "SQL": print the SQL and run it, without printing results (for calls
# whose result is void or not interesting; show the effect with run_sql)
do_sql() {
	printf '%s%s%s\n' "$DIM" "$(sed 's/^/  sql> /' <<<"$1")" "$RESET"
	psql -X -q -v ON_ERROR_STOP=1 "${PSQL_VARS[@]}" -o /dev/null <<<"$1"
}

# sql_value "SQL": the single value the SQL returns (not printed)
sql_value() {
	psql -X -q -At -v ON_ERROR_STOP=1 "${PSQL_VARS[@]}" <<<"$1"
}

# expect_error SQLSTATE "SQL": run SQL that must fail with SQLSTATE; show the error
expect_error() {
	local want=$1 sql=$2 out got
	printf '%s%s%s\n' "$DIM" "$(sed 's/^/  sql> /' <<<"$sql")" "$RESET"
	out=$(psql -X -q -P pager=off "${PSQL_VARS[@]}" 2>&1 <<SQL
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

# as_principal USER ORG "SQL": run SQL as donatello_user with the JWT claims of
# that user and organization (psql variable names, e.g. alice org)
as_principal() {
	run_sql "SET ROLE donatello_user;
SELECT set_config('request.jwt.claims', json_build_object('sub', :'$1', 'org', :'$2', 'role', 'donatello_user')::text, false) IS NOT NULL AS authenticated;
$3"
}

# http METHOD PATH [curl args...]: show the request (tokens and keys of the
# demo shown by name), run it with curl, show the body and the status
http() {
	local method=$1 path=$2 shown='' arg
	shift 2
	for arg in "$@"; do
		if [[ $arg == *\"* ]]; then
			arg="'$arg'"
		elif [[ $arg =~ [[:space:]\&] ]]; then
			arg="\"$arg\""
		fi
		shown+=" $arg"
	done
	shown=${shown# }
	[ -n "${ACCESS:-}" ] && shown=${shown//$ACCESS/\$ACCESS}
	[ -n "${HTTP_KEY:-}" ] && shown=${shown//$HTTP_KEY/\$KEY}
	[ -n "${ERIN_KEY:-}" ] && shown=${shown//$ERIN_KEY/\$ERIN_KEY}
	local url="\$DONATELLO_HTTP_URL$path"
	[[ $path == *[\&?]* ]] && url="\"$url\""
	printf '%s  $ curl -X %s %s %s%s\n' "$DIM" "$method" "$url" "$shown" "$RESET"
	curl -sS -X "$method" "$DONATELLO_HTTP_URL$path" -w '\n  (HTTP %{http_code})\n' "$@" | sed 's/^/  /'
}

# expect_http STATUS METHOD PATH [curl args...]: like http, for a request that
# must answer STATUS (stops the demo otherwise)
expect_http() {
	local want=$1 out got
	shift
	out=$(http "$@")
	printf '%s\n' "$out"
	got=$(sed -n 's/^ *(HTTP \([0-9]*\))$/\1/p' <<<"$out" | tail -1)
	if [ "$got" != "$want" ]; then
		echo "  demo: expected HTTP $want, got ${got:-none}" >&2
		exit 1
	fi
	printf '  -> answered %s, as expected\n' "$got"
}
