-- Secrets at rest: seal/open round trip, binding to purpose and row, tampering.
\set row1 '''00000000-0000-0000-0000-000000000001'''
\set row2 '''00000000-0000-0000-0000-000000000002'''
SELECT donatello.secret_seal('webhook', :row1, 'whsec_example') AS sealed \gset

-- the sealed value is not the plaintext, and two seals differ (random nonce)
SELECT position('whsec_example'::bytea in :'sealed'::bytea) = 0 AS plaintext_hidden,
       :'sealed'::bytea <> donatello.secret_seal('webhook', :row1, 'whsec_example') AS nonces_differ,
       donatello.secret_key_id(:'sealed') = donatello.root_key_id() AS sealed_by_current_key;

-- round trip
SELECT convert_from(donatello.secret_open('webhook', :row1, :'sealed'), 'UTF8') AS opened;

-- bound to the row and to the purpose
SELECT donatello.secret_open('webhook', :row2, :'sealed');
SELECT donatello.secret_open('totp', :row1, :'sealed');

-- one flipped bit anywhere in the ciphertext is detected
SELECT donatello.secret_open('webhook', :row1,
       set_byte(:'sealed'::bytea, length(:'sealed'::bytea) - 1,
                get_byte(:'sealed'::bytea, length(:'sealed'::bytea) - 1) # 1));

-- not a sealed value at all
SELECT donatello.secret_key_id('plain text'::bytea) IS NULL AS not_sealed;
SELECT donatello.secret_open('webhook', :row1, 'plain text'::bytea);

-- resealing keeps the secret
SELECT convert_from(donatello.secret_open('webhook', :row1,
       donatello.secret_reseal('webhook', :row1, :'sealed')), 'UTF8') AS resealed;

-- purposes are short labels
SELECT donatello.secret_seal('', :row1, 'x');

-- nobody but the owner may call them
SELECT has_function_privilege('donatello_service', 'donatello.secret_open(text,uuid,bytea)', 'EXECUTE') AS service_may_open,
       has_function_privilege('donatello_user', 'donatello.secret_seal(text,uuid,bytea)', 'EXECUTE') AS user_may_seal;
