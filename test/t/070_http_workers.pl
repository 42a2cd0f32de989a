# The HTTP workers as processes: donatello.http_workers of them share one
# socket; settings reload on SIGHUP; SIGTERM lets a request in flight finish
# and the postmaster starts the worker again; the others keep answering
# meanwhile; the server stops cleanly with the workers running.
use strict;
use warnings;
use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('http');
$node->init;
my $port = PostgreSQL::Test::Cluster::get_free_port();
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'donatello'
donatello.database = 'postgres'
donatello.jwt_secret = 'tap-secret-tap-secret-tap-secret-0123456789'
donatello.http_port = $port
donatello.http_workers = 3
});
$node->start;

# Send a request; returns the socket (read the answer with answer()).
sub send_request
{
	my ($method, $path, $headers, $body) = @_;
	$body //= '';
	my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
	  or return undef;
	print $sock "$method $path HTTP/1.1\r\nHost: tap\r\nConnection: close\r\n"
	  . ($headers // '')
	  . "Content-Length: " . length($body) . "\r\n\r\n$body";
	return $sock;
}

# Read the whole answer of a request; returns (status, body).
sub answer
{
	my ($sock) = @_;
	return (0, '') unless $sock;
	local $/;
	my $text = <$sock> // '';
	close $sock;
	my ($status) = $text =~ m{^HTTP/1\.[01] (\d{3})};
	my ($body) = $text =~ m{\r\n\r\n(.*)\z}s;
	return ($status // 0, $body // '');
}

sub request { return answer(send_request(@_)); }

# Poll until the condition holds (safety-net timeout, not a performance threshold).
sub wait_for
{
	my ($cond) = @_;
	for (1 .. 600)
	{
		return 1 if $cond->();
		usleep(100_000);
	}
	return 0;
}

# before CREATE EXTENSION the workers already answer, with 503
ok(wait_for(sub { (request('GET', '/health'))[0] != 0 }), 'the workers answer before the extension exists');
my ($early, $early_body) = request('GET', '/health');
is($early, 503, 'with 503 until CREATE EXTENSION');
like($early_body, qr/"code":"PGRST002"/, 'and a PostgREST error body');

$node->safe_psql('postgres', q{
	CREATE EXTENSION donatello;
	CREATE SCHEMA tap_api;
	CREATE TABLE tap_api.t (id int);
	INSERT INTO tap_api.t VALUES (1), (2);
	CREATE FUNCTION tap_api.slow(seconds float8) RETURNS int LANGUAGE sql VOLATILE
		AS 'SELECT 7 FROM pg_sleep(seconds)';
	GRANT USAGE ON SCHEMA tap_api TO donatello_anon;
	GRANT SELECT ON tap_api.t TO donatello_anon;
	GRANT EXECUTE ON FUNCTION tap_api.slow(float8) TO donatello_anon;
});

ok(wait_for(sub { (request('GET', '/health'))[0] == 200 }), 'the HTTP layer answers /health');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'donatello httpd %'"),
	'3', 'donatello.http_workers = 3 worker processes');

# idle workers absorb procsignal barriers: DROP DATABASE waits for every backend
$node->safe_psql('postgres', 'CREATE DATABASE dropme');
$node->safe_psql('postgres', 'DROP DATABASE dropme');
pass('DROP DATABASE completes while the HTTP workers are idle');

# SIGHUP: a new exposed schema applies without a restart
my ($status) = request('GET', '/t', "Accept-Profile: tap_api\r\n");
is($status, 406, 'tap_api is not exposed yet');
$node->safe_psql('postgres', "ALTER SYSTEM SET donatello.http_schemas = 'donatello_api, tap_api'");
$node->reload;
ok(wait_for(sub { (request('GET', '/t?order=id', "Accept-Profile: tap_api\r\n"))[0] == 200 }),
	'after SIGHUP every worker exposes tap_api');
my $body;
($status, $body) = request('GET', '/t?order=id', "Accept-Profile: tap_api\r\n");
$body =~ s/\s+//g;
is($body, '[{"id":1},{"id":2}]', 'rows of the new schema');

# SIGTERM: a request in flight finishes; the worker is started again
my $slow = send_request('POST', '/rpc/slow', "Content-Profile: tap_api\r\nContent-Type: application/json\r\n",
	'{"seconds": 2}');
my $busy;
ok( wait_for(sub {
			$busy = $node->safe_psql('postgres',
				"SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'donatello httpd %' AND query LIKE '%/rpc/slow%' AND state = 'active'");
			return $busy ne '';
		}),
	'the slow request is running in a worker');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($busy)");
($status, $body) = request('GET', '/health');
is($status, 200, 'the other workers answer while one shuts down');
($status, $body) = answer($slow);
is($status, 200, 'the request in flight at SIGTERM got its answer');
is($body, '7', 'with its result');
ok( wait_for(sub {
			$node->safe_psql('postgres',
				"SELECT count(*) = 3 AND count(*) FILTER (WHERE pid = $busy) = 0 FROM pg_stat_activity WHERE backend_type LIKE 'donatello httpd %'") eq 't';
		}),
	'the postmaster started the worker again');
ok($node->log_contains('donatello httpd \d: shut down'), 'the worker logged its shutdown');

# a burst of requests over the shared socket is served by the workers together
my @socks = map { send_request('GET', '/t', "Accept-Profile: tap_api\r\n") } 1 .. 30;
my $ok = grep { (answer($_))[0] == 200 } @socks;
is($ok, 30, 'thirty concurrent connections all answered');

$node->stop('fast');
my $after = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp');
ok(!defined($after), 'the socket is closed after the server stops')
  or diag(`ss -ltnp | grep ':$port '`);
done_testing();
