# Credentials across the maintenance worker and a restart: the events and
# lockout counters of failed logins (whose transactions rolled back) are
# written by the worker without anyone asking; a lockout survives a server
# restart (the shared-memory guard is seeded from user_credentials); a
# refresh token reused after a restart still revokes its session.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('credentials');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'donatello'
donatello.database = 'postgres'
donatello.password_memory = '8MB'
donatello.password_iterations = 1
donatello.jwt_secret = 'tap-secret-tap-secret-tap-secret-0123456789'
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION donatello');
my $user = $node->safe_psql('postgres', q{
	SELECT donatello.create_user(donatello.create_organization('TAP', 'tap'), 'tia@tap.test', 'Tia')});
$node->safe_psql('postgres', "SELECT donatello.set_password('$user', 'Tap-Password-2024!')");

# five wrong passwords: each rolls back with DNA01 / DNA02
for my $i (1 .. 5)
{
	my ($ret, $stdout, $stderr) = $node->psql('postgres',
		"SELECT donatello.login('tia\@tap.test', 'wrong-$i')");
	like($stderr, $i < 5 ? qr/invalid email or password/ : qr/account is locked/,
		"wrong password $i is refused");
}

# the maintenance worker writes the queued events and counters by itself
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 5 FROM donatello.security_events WHERE event = 'login.failure' AND user_id = '$user'"),
	'the worker wrote the five failure events');
ok( $node->poll_query_until('postgres',
		"SELECT failed_logins = 5 AND locked_until > now() FROM donatello.user_credentials WHERE user_id = '$user'"),
	'the worker wrote the lockout to user_credentials');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) >= 1 FROM donatello.security_events WHERE event = 'login.lockout' AND user_id = '$user'"),
	'the worker wrote the lockout event');
$node->safe_psql('postgres', 'SELECT donatello.flush_security_events()');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM donatello.security_events WHERE event = 'login.lockout' AND user_id = '$user'"),
	'1', 'exactly one lockout event');

# a session whose refresh token will be reused after the restart
$node->safe_psql('postgres', "SELECT donatello.unlock_user('$user')");
my $tokens = $node->safe_psql('postgres',
	"SELECT donatello.login('tia\@tap.test', 'Tap-Password-2024!')");
my ($refresh) = $tokens =~ /"refresh_token": "([^"]+)"/;
ok($refresh, 'logged in');
$node->safe_psql('postgres', "SELECT donatello.refresh('$refresh')");
for my $i (1 .. 5)
{
	$node->psql('postgres', "SELECT donatello.login('tia\@tap.test', 'again-$i')");
}
ok( $node->poll_query_until('postgres',
		"SELECT locked_until > now() FROM donatello.user_credentials WHERE user_id = '$user'"),
	'locked again, and written');

$node->restart;

my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"SELECT donatello.login('tia\@tap.test', 'Tap-Password-2024!')");
like($stderr, qr/account is locked/, 'the lockout survives a restart (right password refused)');

($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT donatello.refresh('$refresh')");
like($stderr, qr/refresh token was already used/, 'a used refresh token is still reuse after the restart');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM donatello.sessions WHERE user_id = '$user' AND revoked_reason = 'refresh token reuse'"),
	'the worker revoked the session');

$node->safe_psql('postgres', "SELECT donatello.unlock_user('$user')");
like($node->safe_psql('postgres', "SELECT donatello.login('tia\@tap.test', 'Tap-Password-2024!')"),
	qr/access_token/, 'unlocked: the right password works');

$node->stop;
done_testing();
