# A provider's API key (or a password in a base URL) passed to
# donatello.register_provider never reaches the server log: a failed call is
# not logged with its statement (log_min_error_statement would otherwise echo
# the literals), its error message does not quote them, and a successful call
# logs nothing. The key is stored sealed, not in clear.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('generation_logs');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'donatello'
log_min_error_statement = error
log_statement = none
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION donatello');

my %secret_calls = (
	'sk-zebra-key-bad-url'        => "SELECT donatello.register_provider('zebra', 'openai', 'ftp://files.example.com', 'sk-zebra-key-bad-url')",
	'sk-zebra-key-bad-name'       => "SELECT donatello.register_provider('Zebra Provider', 'openai', 'https://api.example.com', 'sk-zebra-key-bad-name')",
	'sk-zebra-key-bad-kind'       => "SELECT donatello.register_provider('zebra', 'stability', 'https://api.example.com', 'sk-zebra-key-bad-kind')",
	'sk zebra key with spaces'    => "SELECT donatello.register_provider('zebra', 'openai', 'https://api.example.com', 'sk zebra key with spaces')",
	'zebra-url-password'          => "SELECT donatello.register_provider('zebra', 'openai', 'https://admin:zebra-url-password\@api.example.com')",
);

my $offset = -s $node->logfile;
for my $secret (sort keys %secret_calls)
{
	my ($rc, $out, $err) = $node->psql('postgres', $secret_calls{$secret});
	isnt($rc, 0, "the call naming '$secret' fails");
	like($err, qr/ERROR:  (invalid|unsupported)/, "with a donatello error");
	unlike($err, qr/\Q$secret\E/, "its error message does not quote the secret");
}

# a successful registration logs nothing and stores the key sealed
$node->safe_psql('postgres',
	"SELECT donatello.register_provider('zebra', 'openai', 'https://api.example.com', 'sk-zebra-key-that-works')");
is($node->safe_psql('postgres',
		"SELECT position('sk-zebra-key-that-works'::bytea IN api_key_sealed) FROM donatello.providers WHERE name = 'zebra'"),
	'0', 'the key is not stored in clear');
is($node->safe_psql('postgres',
		"SELECT donatello.provider_api_key(id) FROM donatello.providers WHERE name = 'zebra'"),
	'sk-zebra-key-that-works', 'the sealed key opens');
$node->safe_psql('postgres', 'SELECT 1');    # flush

my $log = substr(slurp_file($node->logfile), $offset);
like($log, qr/ERROR:  invalid base URL/, 'the failures are logged');
for my $secret (sort keys %secret_calls, 'sk-zebra-key-that-works')
{
	unlike($log, qr/\Q$secret\E/, "the server log never contains '$secret'");
}

$node->stop;
done_testing();
