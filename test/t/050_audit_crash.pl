# The audit trail across a crash: records committed but not sealed when the
# server stops with -m immediate are sealed after the restart and the trail
# verifies; records of a transaction that was open at the crash, or that
# rolled back, never appear.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('audit');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'donatello'
donatello.database = 'postgres'
donatello.password_memory = '8MB'
donatello.password_iterations = 1
donatello.jwt_secret = 'tap-secret-tap-secret-tap-secret-0123456789'
donatello.audit_seal_interval = '1h'
});
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION donatello;
	CREATE TABLE ledger (id serial PRIMARY KEY, org_id uuid NOT NULL, v integer NOT NULL);
	SELECT donatello.enable_audit('ledger');
});
my $org = $node->safe_psql('postgres', "SELECT donatello.create_organization('Crash', 'crash')");

# seal what exists now; the worker's next pass is an hour away, so what
# follows stays unsealed until the crash
ok($node->safe_psql('postgres', 'SELECT donatello.audit_seal()') > 0, 'sealed what existed');
$node->safe_psql('postgres', "INSERT INTO ledger (org_id, v) SELECT '$org', g FROM generate_series(1, 50) g");
$node->safe_psql('postgres', "UPDATE ledger SET v = v + 100 WHERE v <= 10");
$node->safe_psql('postgres', "BEGIN; INSERT INTO ledger (org_id, v) VALUES ('$org', 777); ROLLBACK;");
$node->safe_psql('postgres', "SELECT donatello.audit_event('crash.note', 'ledger', 'all')");

my $backlog = $node->safe_psql('postgres', 'SELECT donatello.audit_backlog()');
cmp_ok($backlog, '>=', 61, "committed records wait unsealed before the crash ($backlog)");

# a transaction still open when the server dies
my $open = $node->background_psql('postgres');
$open->query_safe("BEGIN");
$open->query_safe("INSERT INTO ledger (org_id, v) VALUES ('$org', 999)");

$node->stop('immediate');
$open->{run}->finish;

# after the restart the worker seals quickly
$node->append_conf('postgresql.conf', "donatello.audit_seal_interval = '100ms'");
$node->start;
ok($node->poll_query_until('postgres', 'SELECT donatello.audit_backlog() = 0'),
	'every committed record is sealed after the restart');

is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM donatello.audit_log
	 WHERE table_name = 'public.ledger' AND org_id = '$org'}),
	'60', '50 inserts and 10 updates are in the trail');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM donatello.audit_log
	 WHERE table_name = 'public.ledger' AND (new_data->>'v')::int IN (777, 999)}),
	'0', 'rolled-back and open-at-crash records never appear');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM donatello.audit_log r
	 WHERE r.org_id = '$org'
	   AND NOT EXISTS (SELECT FROM donatello.audit_blocks b WHERE b.org_id = r.org_id AND r.id = ANY (b.record_ids))}),
	'0', 'every record of the organization is in a block');
is($node->safe_psql('postgres', "SELECT intact FROM donatello.audit_verify('$org')"), 't',
	'the trail verifies after the crash');
is($node->safe_psql('postgres', "SELECT intact FROM donatello.audit_verify()"), 't',
	'every organization verifies');

# new writes after the restart are sealed by the worker too (no manual audit_seal)
$node->safe_psql('postgres', "INSERT INTO ledger (org_id, v) VALUES ('$org', 5000)");
ok($node->poll_query_until('postgres', qq{
	SELECT count(*) = 1 FROM donatello.audit_log r
	  JOIN donatello.audit_blocks b ON b.org_id = r.org_id AND r.id = ANY (b.record_ids)
	 WHERE (r.new_data->>'v')::int = 5000}),
	'a new record is sealed by the worker');
is($node->safe_psql('postgres', "SELECT intact FROM donatello.audit_verify('$org')"), 't',
	'the trail still verifies');

$node->stop;
done_testing();
