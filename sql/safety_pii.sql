-- donatello.scan_pii(): kinds, positions, validation (Luhn, mod-97, inet_pton),
-- overlaps, multibyte offsets, and that values never appear in the result.
-- Card numbers are the networks' published test numbers; IBANs are the
-- examples of the ISO 13616 registry; the AWS key is AWS's documented example.

CREATE TEMP TABLE pii_cases (id serial, label text, prompt text, expect text[]);
INSERT INTO pii_cases (label, prompt, expect) VALUES
    -- emails
    ('email plain',           'write to jane.doe@example.com today', '{email}'),
    ('email tag, subdomain',  'JANE+promo@mail.Example.co.uk.', '{email}'),
    ('email no tld',          'user@localhost and a@b', '{}'),
    ('email no local part',   'see @example.com', '{}'),
    -- phones
    ('phone +1',              'call +1 415 555 2671 now', '{phone}'),
    ('phone +44',             'office: +44 20 7946 0958', '{phone}'),
    ('phone +49 (0)',         'Tel. +49 (0)30 1234567', '{phone}'),
    ('phone +33 dotted',      '+33.1.23.45.67.89', '{phone}'),
    ('phone nanp parens',     'ring (415) 555-2671', '{phone}'),
    ('phone nanp dashes',     '415-555-2671 or 415.555.2671', '{phone,phone}'),
    ('phone too short',       'dial +1 23 45', '{}'),
    ('phone too long',        '+1234567890123456789', '{}'),
    ('phone nanp area 1xx',   '123-456-7890', '{}'),
    -- US social security numbers
    ('ssn',                   'SSN 123-45-6789.', '{ssn}'),
    ('ssn spaces',            'ssn 123 45 6789', '{ssn}'),
    ('ssn area 000',          '000-12-3456', '{}'),
    ('ssn area 666',          '666-12-3456', '{}'),
    ('ssn area 9xx',          '900-12-3456', '{}'),
    ('ssn group 00',          '123-00-4567', '{}'),
    ('ssn serial 0000',       '123-45-0000', '{}'),
    ('ssn mixed separators',  '123-45 6789', '{}'),
    -- payment cards
    ('visa',                  'card 4111111111111111 exp 12/29', '{credit_card}'),
    ('visa spaced',           'card 4111 1111 1111 1111', '{credit_card}'),
    ('mastercard dashed',     '5555-5555-5555-4444', '{credit_card}'),
    ('amex 15',               'amex 3782 822463 10005', '{credit_card}'),
    ('discover',              '6011111111111117', '{credit_card}'),
    ('jcb',                   '3530111333300000', '{credit_card}'),
    ('diners 14',             '30569309025904', '{credit_card}'),
    ('card then year',        '4012 8888 8888 1881 2029', '{credit_card}'),
    ('luhn fails',            '4111111111111112', '{}'),
    ('all zeros',             '0000 0000 0000 0000', '{}'),
    ('12 digits',             '411111111111', '{}'),
    ('glued to letters',      'x4111111111111111', '{}'),
    ('decimal digits',        'pi is 3.14159265358979323', '{}'),
    ('middle of a group run', '2296 2322 8963 7154 534', '{}'),
    -- IBANs
    ('iban GB compact',       'pay GB82WEST12345698765432 now', '{iban}'),
    ('iban GB grouped',       'GB82 WEST 1234 5698 7654 32 is mine', '{iban}'),
    ('iban DE',               'DE89 3704 0044 0532 0130 00', '{iban}'),
    ('iban FR',               'FR14 2004 1010 0505 0001 3M02 606', '{iban}'),
    ('iban NO (15)',          'NO93 8601 1117 947', '{iban}'),
    ('iban Aland (FI format)','AX21 1234 5600 0007 85', '{iban}'),
    ('iban lower case',       'gb82west12345698765432', '{iban}'),
    ('iban bad checksum',     'GB82WEST12345698765433', '{}'),
    ('iban short',            'GB82WEST1234569876543', '{}'),
    ('iban unknown country',  'XX82WEST12345698765432', '{}'),
    -- IP addresses
    ('ipv4',                  'server 192.168.1.20, gateway 10.0.0.1.', '{ip_address,ip_address}'),
    ('ipv6 compressed',       'host 2001:db8::1 up', '{ip_address}'),
    ('ipv6 loopback',         'bind ::1 only', '{ip_address}'),
    ('ipv6 full',             '2001:0db8:85a3:0000:0000:8a2e:0370:7334', '{ip_address}'),
    ('ipv6 mapped ipv4',      '::ffff:192.0.2.128', '{ip_address}'),
    ('ipv6 with zone',        'fe80::1%eth0', '{ip_address}'),
    ('ipv4 octet > 255',      '256.1.1.1', '{}'),
    ('ipv4 leading zero',     '01.2.3.4', '{}'),
    ('version string',        'release 1.2.3.4.5', '{}'),
    ('clock time',            'at 12:30:45 sharp', '{}'),
    ('mac address',           '00:1A:2B:3C:4D:5E', '{}'),
    -- API keys and tokens
    ('openai key',            'OPENAI_API_KEY=sk-proj-4fT9qLm2ZxR7vB1nK8sW3dY6hJ0pC5gA', '{api_key}'),
    ('github token',          'token ghp_aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5', '{api_key}'),
    ('aws key id',            'AKIAIOSFODNN7EXAMPLE', '{api_key}'),
    ('google key',            'key=AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q', '{api_key}'),
    ('slack token',           'xoxb-123456789012-abcdefABCDEF', '{api_key}'),
    ('jwt',                   'Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U', '{token}'),
    ('random token',          'secret: q7Rz2Kp9Xw4Lm8Nv3Bt6Yh1J', '{token}'),
    ('hex digest',            'sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709', '{token}'),
    ('long word',             'supercalifragilisticexpialidocious', '{}'),
    ('camel case name',       'ImageGenerationServiceConfiguration', '{}'),
    ('path',                  '/usr/local/lib/postgresql/extension', '{}'),
    ('short sk- word',        'sk-learn is a library', '{}'),
    -- nothing at all
    ('plain prompt',          'A watercolor fox in a misty forest at dawn, 4k, 16:9', '{}'),
    ('dates and numbers',     'On 2024-01-15 at 10:30 we sold 1,234,567 units for $12.50', '{}'),
    -- several at once, in order
    ('mixed',                 'Mail bob@example.org, card 5105 1051 0510 5100, from 8.8.8.8', '{email,credit_card,ip_address}');

SELECT c.id, c.label,
       coalesce(array_agg(f->>'kind' ORDER BY (f->>'start')::int) FILTER (WHERE f IS NOT NULL), '{}') AS found,
       coalesce(array_agg(f->>'kind' ORDER BY (f->>'start')::int) FILTER (WHERE f IS NOT NULL), '{}') = c.expect AS ok
  FROM pii_cases c
  LEFT JOIN LATERAL jsonb_array_elements(donatello.scan_pii(c.prompt)->'findings') f ON true
 GROUP BY c.id, c.label, c.expect
 ORDER BY c.id;

-- positions are character offsets [start, end): substr(prompt, start + 1, end - start)
SELECT c.label, f->>'kind' AS kind,
       substr(c.prompt, (f->>'start')::int + 1, (f->>'end')::int - (f->>'start')::int) AS text_at_position
  FROM pii_cases c, jsonb_array_elements(donatello.scan_pii(c.prompt)->'findings') f
 WHERE c.label IN ('email tag, subdomain', 'phone +49 (0)', 'card then year', 'iban GB grouped',
                   'ipv4', 'ipv6 with zone', 'openai key', 'mixed')
 ORDER BY c.id, (f->>'start')::int;

-- offsets count characters, not bytes
SELECT donatello.scan_pii('Prénom : José — écrire à jose@example.com') AS multibyte;
SELECT substr(t, 26, 16) AS at_offset
  FROM (VALUES ('Prénom : José — écrire à jose@example.com')) v(t);

-- the whole result, clean and not
SELECT donatello.scan_pii('a red bicycle leaning on a wall');
SELECT donatello.scan_pii('card 4111 1111 1111 1111 and 123-45-6789');

-- the value itself never appears in the result
SELECT position('4111' IN donatello.scan_pii('card 4111 1111 1111 1111')::text) = 0 AS card_not_echoed,
       position('jane' IN donatello.scan_pii('jane.doe@example.com')::text) = 0 AS email_not_echoed;

-- at most 1000 findings are listed; the kinds still cover all of them
SELECT r->'truncated' AS truncated, jsonb_array_length(r->'findings') AS listed, r->'kinds' AS kinds
  FROM (SELECT donatello.scan_pii(string_agg('u' || i || '@example.com', ' ') || ' 4111111111111111') AS r
          FROM generate_series(1, 1200) i) s;

-- empty text, NULL
SELECT donatello.scan_pii('') AS empty, donatello.scan_pii(NULL) IS NULL AS null_in_null_out;

-- who may call it
SELECT has_function_privilege('donatello_user', 'donatello.scan_pii(text)', 'EXECUTE') AS user_may_scan,
       has_function_privilege('donatello_anon', 'donatello.scan_pii(text)', 'EXECUTE') AS anon_may_scan;
