# The root key: generated in the data directory (mode 0600, with a warning)
# when donatello.root_key_file is unset; refused when others can read it;
# rotated with donatello.root_key_previous_file and secret_reseal.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('root_key');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'donatello'");
$node->start;

my $generated = $node->data_dir . '/donatello_root.key';
ok(-f $generated, 'a root key is generated in the data directory');
is((stat($generated))[2] & 07777, 0600, 'the generated key is readable by its owner only');
like(slurp_file($node->logfile), qr/WARNING:  donatello is using the root key in the data directory/,
	'the server warns that the key sits in the data directory');

$node->safe_psql('postgres', 'CREATE EXTENSION donatello');
$node->safe_psql('postgres', q{
	CREATE TABLE vault (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), sealed bytea);
	INSERT INTO vault (sealed) SELECT NULL FROM generate_series(1, 3);
	UPDATE vault SET sealed = donatello.secret_seal('test', id, convert_to('secret ' || id, 'UTF8'));
});
my $old_id = $node->safe_psql('postgres', 'SELECT donatello.root_key_id()');
unlike(slurp_file($generated), qr/\Q$old_id\E/, 'the key id is not the key');

# a key file readable by others stops the server
my $dir = PostgreSQL::Test::Utils::tempdir;
my $new_key = "$dir/root-2.key";
PostgreSQL::Test::Utils::append_to_file($new_key, ('ab' x 32) . "\n");
chmod 0644, $new_key;
$node->stop;
$node->append_conf('postgresql.conf', "donatello.root_key_file = '$new_key'");
ok(!$node->start(fail_ok => 1), 'a group- or world-readable key file stops the server');
like(slurp_file($node->logfile), qr/is accessible by group or others/, 'the log says why');

# rotation: new key current, old key previous
chmod 0600, $new_key;
$node->append_conf('postgresql.conf', "donatello.root_key_previous_file = '$generated'");
$node->start;
my $new_id = $node->safe_psql('postgres', 'SELECT donatello.root_key_id()');
isnt($new_id, $old_id, 'the new root key is current');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM vault WHERE convert_from(donatello.secret_open('test', id, sealed), 'UTF8') = 'secret ' || id"),
	'3', 'values sealed under the previous key still open during the rotation');
$node->safe_psql('postgres',
	"UPDATE vault SET sealed = donatello.secret_reseal('test', id, sealed) WHERE donatello.secret_key_id(sealed) <> donatello.root_key_id()");
is($node->safe_psql('postgres', "SELECT count(*) FROM vault WHERE donatello.secret_key_id(sealed) <> donatello.root_key_id()"),
	'0', 'every value is re-sealed under the new key');

# the old key is retired: everything still opens
$node->stop;
$node->append_conf('postgresql.conf', "donatello.root_key_previous_file = ''");
$node->start;
is($node->safe_psql('postgres',
		"SELECT count(*) FROM vault WHERE convert_from(donatello.secret_open('test', id, sealed), 'UTF8') = 'secret ' || id"),
	'3', 'after the rotation every secret opens with the new key alone');

# and a value sealed under a key that is not loaded fails with a hint
$node->stop;
$node->append_conf('postgresql.conf', "donatello.root_key_file = '$generated'");
$node->start;
my ($rc, $out, $err) = $node->psql('postgres', "SELECT donatello.secret_open('test', id, sealed) FROM vault LIMIT 1");
like($err, qr/sealed with a root key that is not loaded/, 'an unknown key is reported as such');
like($err, qr/HINT:  If the root key was rotated/, 'with a hint');

$node->stop;
done_testing();
