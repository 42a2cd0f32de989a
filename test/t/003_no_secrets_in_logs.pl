# Secrets passed to donatello never reach the server log: a failed call that
# names a password, code, token, API key or plaintext secret must not be
# logged with its statement (log_min_error_statement would otherwise echo the
# literal), and its error message must not quote the secret.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('no_secrets');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'donatello'
donatello.jwt_secret = 'a-test-secret-of-at-least-32-characters!!'
log_min_error_statement = error
log_statement = none
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION donatello');
$node->safe_psql('postgres', q{
	SELECT donatello.create_user(donatello.create_organization('Logs', 'logs'), 'user@logs.test', 'User');
});
my $user = $node->safe_psql('postgres', "SELECT id FROM donatello.users WHERE email = 'user\@logs.test'");

my %secret_calls = (
	'Wr0ng-Passw0rd-Zebra!'            => "SELECT donatello.login('user\@logs.test', 'Wr0ng-Passw0rd-Zebra!', 'logs')",
	'weakzebrapass'                    => "SELECT donatello.set_password('$user', 'weakzebrapass')",
	'dnk_ZebraZebraZebraZebraZebra01'  => "SELECT donatello.verify_api_key('dnk_ZebraZebraZebraZebraZebra01')",
	'eyJhbGciOiJub25lIn0.zebra.token'  => "SELECT donatello.jwt_verify('eyJhbGciOiJub25lIn0.zebra.token')",
	'zebra-refresh-token-value'        => "SELECT donatello.refresh('zebra-refresh-token-value')",
	'zebra-mfa-challenge'              => "SELECT donatello.login_mfa('zebra-mfa-challenge', '123456')",
	'zebra-plaintext-webhook-secret'   => "SELECT donatello.secret_seal('', '$user', 'zebra-plaintext-webhook-secret')",
	'Another-Wr0ng-Zebra-Pass!'        => "SELECT donatello_api.login('user\@logs.test', 'Another-Wr0ng-Zebra-Pass!', 'logs')",
);

my $offset = -s $node->logfile;
for my $secret (sort keys %secret_calls)
{
	my ($rc, $out, $err) = $node->psql('postgres', $secret_calls{$secret});
	isnt($rc, 0, "the call naming '$secret' fails");
	unlike($err, qr/\Q$secret\E/, "its error message does not quote the secret");
}
$node->safe_psql('postgres', 'SELECT 1');    # flush

my $log = substr(slurp_file($node->logfile), $offset);
like($log, qr/ERROR:  invalid email or password/, 'the failures are logged');
for my $secret (sort keys %secret_calls)
{
	unlike($log, qr/\Q$secret\E/, "the server log never contains '$secret'");
}

$node->stop;
done_testing();
