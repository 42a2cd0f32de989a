# At-least-once delivery across a crash: 5,000 webhook events are queued, the
# server is stopped with -m immediate while the dispatcher is delivering them,
# and restarted. Every event must reach the receiver (which verifies each
# signature with the npm standardwebhooks library) at least once, and the only
# duplicates allowed are deliveries that were in flight ('sending') at the
# moment of the crash.
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Spec;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $events = 5000;
my $root = File::Spec->rel2abs(dirname(__FILE__) . '/../..');
my $receiver_script = "$root/test/client/lib/webhook-receiver.mjs";
plan skip_all => 'node and test/client/node_modules are needed (make deps)'
  unless -d "$root/test/client/node_modules/standardwebhooks" && system('node --version >/dev/null 2>&1') == 0;

my $node = PostgreSQL::Test::Cluster->new('dispatcher_crash');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'donatello'
donatello.database = 'postgres'
donatello.allowed_hosts = '127.0.0.1'
donatello.webhook_retry_schedule = '1s, 1s, 2s, 5s'
donatello.dispatcher_max_in_flight = 64
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION donatello');
my $org = $node->safe_psql('postgres', "SELECT donatello.create_organization('Crash test', 'crash')");
# The receiver listens on a free port, known once it runs; the endpoint is
# created first (for its secret) and pointed at the receiver afterwards.
my $endpoint = $node->safe_psql('postgres',
	"SELECT donatello.create_webhook_endpoint('$org', 'http://127.0.0.1:9/hook', '{crash.*}')");
my $secret = $node->safe_psql('postgres', "SELECT '$endpoint'::jsonb ->> 'secret'");
like($secret, qr/^whsec_/, 'endpoint created');

# The receiver answers 25 ms late, so that many deliveries are in flight at once.
my $ids_file = PostgreSQL::Test::Utils::tempdir() . '/received.txt';
my ($out, $err) = ('', '');
my $receiver = IPC::Run::start(
	[ 'node', $receiver_script, '--port', '0', '--secret', $secret, '--quiet',
	  '--ids', $ids_file, '--delay-ms', '25' ],
	'>', \$out, '2>', \$err);
for (1 .. 100)
{
	$receiver->pump_nb;
	last if $out =~ /listening/;
	usleep(100_000);
}
like($out, qr/listening/, 'receiver listening');
my ($receiver_port) = $out =~ /"listening":(\d+)/;
$node->safe_psql('postgres',
	"UPDATE donatello.webhook_endpoints SET url = 'http://127.0.0.1:$receiver_port/hook' WHERE id = ('$endpoint'::jsonb ->> 'id')::uuid");

# Read the receiver's log: webhook-id => number of verified receipts.
sub received
{
	my %count;
	open(my $fh, '<', $ids_file) or return \%count;
	while (my $line = <$fh>)
	{
		my ($id) = split / /, $line;
		$count{$id}++;
	}
	close $fh;
	return \%count;
}

$node->safe_psql('postgres',
	"SELECT donatello.emit_event('$org', 'crash.test', jsonb_build_object('n', n)) FROM generate_series(1, $events) n");

# Crash while delivering: once a fifth has arrived, well before the end.
my $waited = 0;
usleep(20_000) while scalar(keys %{ received() }) < $events / 5 && $waited++ < 3000;
$node->stop('immediate');
my $before_crash = received();
diag('received before the crash: ' . scalar(keys %$before_crash) . " (waited $waited polls), file " . (-s $ids_file // 'missing'));
cmp_ok(scalar(keys %$before_crash), '<', $events, 'the crash came while deliveries were still going on');

# Look at the outbox as the crash left it, with the dispatcher off.
$node->append_conf('postgresql.conf', 'donatello.dispatcher_enabled = off');
$node->start;
my %in_flight = map { $_ => 1 } split /\n/,
  $node->safe_psql('postgres', "SELECT id FROM donatello.outbox WHERE state = 'sending'");
ok(scalar(keys %in_flight) > 0, scalar(keys %in_flight) . ' deliveries were in flight at the crash');
is($node->safe_psql('postgres', 'SELECT count(*) FROM donatello.outbox'), $events, 'every queued delivery survived the crash');

# Dispatcher on again: it requeues what was in flight and finishes the rest.
$node->append_conf('postgresql.conf', 'donatello.dispatcher_enabled = on');
$node->restart;
ok($node->poll_query_until('postgres',
	"SELECT count(*) = $events FROM donatello.outbox WHERE state = 'succeeded'"),
	'every delivery succeeded after the restart');
like(slurp_file($node->logfile), qr/requests in flight at the last shutdown queued again/, 'the dispatcher requeued the in-flight rows');

my %ids = map { $_ => 1 } split /\n/, $node->safe_psql('postgres', 'SELECT id FROM donatello.outbox');
my $count = received();
my @missing = grep { !$count->{$_} } keys %ids;
is(scalar(@missing), 0, "all $events events arrived at least once (verified signatures)");
my @duplicates = grep { $count->{$_} > 1 } keys %$count;
my @unexpected = grep { !$in_flight{$_} } @duplicates;
is(scalar(@unexpected), 0,
	scalar(@duplicates) . ' duplicates, all among the ' . scalar(keys %in_flight) . ' in flight at the crash');
my @strangers = grep { !$ids{$_} } keys %$count;
is(scalar(@strangers), 0, 'the receiver saw no id that is not in the outbox');
is($node->safe_psql('postgres', "SELECT count(*) FROM donatello.outbox WHERE state = 'succeeded' AND attempt_count > 1 AND NOT id = ANY('{" . join(',', keys %in_flight) . "}'::uuid[])"),
	0, 'only the in-flight deliveries needed a second attempt');

$receiver->kill_kill;
$node->stop;
done_testing();
