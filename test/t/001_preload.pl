# Without shared_preload_libraries the extension installs, and every feature
# that needs preloading fails with an error that says how to fix the config.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('not_preloaded');
$node->init;
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION donatello');
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'donatello'"),
	$node->safe_psql('postgres', 'SELECT donatello.version()'),
	'CREATE EXTENSION works without preloading');

my $org = $node->safe_psql('postgres', "SELECT donatello.create_organization('Acme', 'acme')");
my $user = $node->safe_psql('postgres', "SELECT donatello.create_user('$org', 'a\@acme.test', 'A')");
ok($user, 'plain SQL functions work without preloading');

my ($rc, $out, $err) = $node->psql('postgres',
	"SELECT donatello.has_permission('$user', 'generation:create')");
isnt($rc, 0, 'a permission check fails without preloading');
like($err, qr/donatello permission checks requires the library to be preloaded/, 'the error names the feature');
like($err, qr/HINT:  Add 'donatello' to shared_preload_libraries in postgresql.conf and restart the server/,
	'the hint says how to fix the configuration');

($rc, $out, $err) = $node->psql('postgres', "SELECT donatello.secret_seal('webhook', '$user', 'x')");
like($err, qr/donatello secrets at rest requires the library to be preloaded/, 'secrets need preloading too');

# after the fix, the same calls work
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'donatello'");
$node->restart;
$node->safe_psql('postgres', "SELECT donatello.grant_role('$user', 'member')");
is($node->safe_psql('postgres', "SELECT donatello.has_permission('$user', 'generation:create')"),
	't', 'with the library preloaded the check works');

$node->stop;
done_testing();
