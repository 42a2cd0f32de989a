# The budget storm: 32 pgbench clients do random reserve / settle / release on
# ONE hard-mode department (plus occasional expiry runs and limit raises, and
# some reservations with a 1-second ttl) for BUDGET_STORM_SECONDS seconds
# (default 20; the issue's full run is 60: BUDGET_STORM_SECONDS=60). While it
# runs, a monitor samples budget_status: spent + reserved must never exceed
# the limit (actuals never exceed estimates here, so no overrun is allowed).
# Afterwards budget_check_invariants() must be empty, no pgbench transaction
# may have failed (no deadlock, no unexpected error), and every threshold
# alert must have been emitted at most once. Then the maintenance worker must
# expire a reservation left behind.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $seconds = $ENV{BUDGET_STORM_SECONDS} // 20;
my $clients = $ENV{BUDGET_STORM_CLIENTS} // 32;

my $node = PostgreSQL::Test::Cluster->new('budget_storm');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'donatello'
donatello.database = 'postgres'
max_connections = 60
synchronous_commit = on
deadlock_timeout = '100ms'
donatello.budget_maintenance_interval = '200ms'
});
$node->start;

$node->safe_psql('postgres', q{
CREATE EXTENSION donatello;
INSERT INTO donatello.organizations (id, name, slug)
VALUES ('5e000000-0000-4000-8000-000000000001', 'Storm', 'storm');
INSERT INTO donatello.departments (id, org_id, name)
VALUES ('5e000000-0000-4000-8000-000000000002', '5e000000-0000-4000-8000-000000000001', 'Hot');
SELECT donatello.set_budget('5e000000-0000-4000-8000-000000000002', 1000);

CREATE SCHEMA storm;
-- reserve cents/100; refusals (no room, locked) are part of the storm
CREATE FUNCTION storm.reserve(cents integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM donatello.reserve('5e000000-0000-4000-8000-000000000002', cents / 100.0, NULL,
                              CASE WHEN random() < 0.05 THEN interval '1 second' ELSE interval '10 minutes' END);
EXCEPTION WHEN SQLSTATE 'DNB01' OR SQLSTATE 'DNB02' THEN
    NULL;
END $$;
-- settle or release one of the oldest active reservations (clients collide on
-- purpose: the loser gets DNB03)
CREATE FUNCTION storm.resolve(settle boolean) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    SELECT id, amount_micros INTO r FROM donatello.budget_reservations
     WHERE org_id = '5e000000-0000-4000-8000-000000000001' AND department_id = '5e000000-0000-4000-8000-000000000002'
       AND status = 'active'
     ORDER BY expires_at LIMIT 1 OFFSET floor(random() * 8)::int;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF settle THEN
        PERFORM donatello.settle(r.id, round(r.amount_micros * (0.5 + random() / 2))::bigint / 1000000.0);
    ELSE
        PERFORM donatello.release(r.id);
    END IF;
EXCEPTION WHEN SQLSTATE 'DNB03' THEN
    NULL;
END $$;
-- raise the limit by 200 (unlocks a locked department); a raise that read a
-- limit another raise has changed since may ask for less than is spent and
-- reserved: that refusal (DNV01) is part of the storm
CREATE FUNCTION storm.raise() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM donatello.set_budget('5e000000-0000-4000-8000-000000000002', b.limit_micros / 1000000.0 + 200)
       FROM donatello.budgets b WHERE b.department_id = '5e000000-0000-4000-8000-000000000002';
EXCEPTION WHEN SQLSTATE 'DNV01' THEN
    NULL;
END $$;
});

my $dir = PostgreSQL::Test::Utils::tempdir();
my %scripts = (
	reserve => "\\set cents random(1, 2000)\nSELECT storm.reserve(:cents);\n",
	settle  => "SELECT storm.resolve(true);\n",
	release => "SELECT storm.resolve(false);\n",
	expire  => "SELECT donatello.budget_expire_reservations();\n",
	raise   => "SELECT storm.raise();\n",);
my %weight = (reserve => 40, settle => 25, release => 20, expire => 2, raise => 1);
my @files;
for my $name (sort keys %scripts)
{
	my $file = "$dir/$name.sql";
	open(my $fh, '>', $file) or die "cannot write $file: $!";
	print $fh $scripts{$name};
	close $fh;
	push @files, '-f', "$file\@$weight{$name}";
}

my ($out, $err) = ('', '');
my $bench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', $clients, '-j', 4, '-T', $seconds, '--max-tries=1',
	  @files, '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$out, '2>', \$err);

# the monitor: spent + reserved <= limit in every sample
my ($samples, $over, $fullest) = (0, 0, 0);
my $worst = '';
while ($bench->pumpable)
{
	my $row = $node->safe_psql('postgres', q{
		SELECT spent + reserved <= "limit", spent, reserved, "limit", round((spent + reserved) / "limit" * 100)
		  FROM donatello.budget_status('5e000000-0000-4000-8000-000000000002')});
	$samples++;
	my $fill = (split /\|/, $row)[4];
	$fullest = $fill if $fill > $fullest;
	if ($row !~ /^t\|/)
	{
		$over++;
		$worst = $row;
	}
	usleep(200_000);
	$bench->pump_nb;
}
$bench->finish;
note $out;
note $err if $err ne '';

like($out, qr/number of transactions actually processed: [1-9]/, "pgbench ran ($clients clients, $seconds s)");
my ($failed) = $out =~ /number of failed transactions: (\d+)/;
is($failed // 0, 0, 'no transaction failed (no deadlock, no unexpected error)');
unlike($err, qr/aborted|ERROR/, 'no client aborted');
ok($samples > 0, "monitor took $samples samples");
is($over, 0, 'spent + reserved never above the limit in any sample') or diag $worst;
note "fullest sample: $fullest% of the limit spent or reserved";

is($node->safe_psql('postgres', 'SELECT count(*) FROM donatello.budget_check_invariants()'),
	'0', 'budget_check_invariants() is empty')
  or diag $node->safe_psql('postgres', 'SELECT * FROM donatello.budget_check_invariants() LIMIT 20');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM donatello.budgets
	 WHERE overrun_micros <> 0 OR pool_micros < 0}), '0', 'no overrun, pool never negative');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT payload ->> 'threshold' FROM donatello.events
	                       WHERE type = 'budget.threshold_reached' GROUP BY 1 HAVING count(*) > 1) x}),
	'0', 'each threshold alerted at most once in the period');
my $counts = $node->safe_psql('postgres', q{
	SELECT string_agg(status || '=' || n, ' ' ORDER BY status)
	  FROM (SELECT status, count(*) AS n FROM donatello.budget_reservations GROUP BY status) x});
note "reservations: $counts";
like($counts, qr/settled=\d+/, 'reservations were settled');
like($counts, qr/released=\d+/, 'reservations were released');
my $locks = $node->safe_psql('postgres', q{
	SELECT count(*) FROM donatello.budget_ledger WHERE kind = 'adjust'});
note "limit adjustments: $locks";

# the maintenance worker releases a reservation nobody settles once its ttl is over
$node->safe_psql('postgres', q{SELECT donatello.set_budget('5e000000-0000-4000-8000-000000000002', 1000000)});
my $abandoned = $node->safe_psql('postgres', q{
	SELECT donatello.reserve('5e000000-0000-4000-8000-000000000002', 1, 'abandoned', '1 second')});
ok($node->poll_query_until('postgres', qq{
	SELECT status = 'expired' FROM donatello.budget_reservations WHERE id = '$abandoned'}),
	'the maintenance worker expired an abandoned reservation');
is($node->safe_psql('postgres', 'SELECT count(*) FROM donatello.budget_check_invariants()'),
	'0', 'invariants still hold after expiry by the worker');

$node->stop;
done_testing();
