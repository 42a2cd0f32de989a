-- donatello.check_content(): blocklists per organization, matched case- and
-- accent-insensitively on word boundaries, the compiled-blocklist cache, and
-- a cross-check of thousands of terms against a regular-expression reference.
SELECT donatello.create_organization('Safety Org', 'safety-org') AS org \gset
SELECT donatello.create_organization('Safety Other', 'safety-other') AS other \gset

-- folding: what a term is matched as
SELECT t AS term, donatello.fold_blocked_term(t) AS folded
  FROM unnest(ARRAY['Crème Brûlée', '  Très   MAUVAIS!! ', 'ﬁlthy', 'ＦＵＬＬ width', 'Ⓒircled',
                    'Straße', 'ΆΓΡΙΟΣ', 'ПЛОХО', 'x-rated', 'sh​it', 'snake_case', '¿¡…!?']) AS t;

-- adding terms: validation
SELECT donatello.add_blocked_terms(:'org', ARRAY['gore'], 'Bad Category');
SELECT donatello.add_blocked_terms(:'org', ARRAY['gore', NULL], 'violence');
SELECT donatello.add_blocked_terms(:'org', ARRAY['?!'], 'violence');
SELECT donatello.add_blocked_terms(:'org', ARRAY[repeat('x', 201)], 'violence');
SELECT donatello.add_blocked_terms(:'org', NULL, 'violence');
SELECT donatello.add_blocked_terms('00000000-0000-0000-0000-000000000000', ARRAY['gore'], 'violence');

-- duplicates up to case, accents and spacing count once
SELECT donatello.add_blocked_terms(:'org', ARRAY['gore', 'GORE', ' Gore ', 'very bad', 'Very   Bad!', 'bad', 'crème brûlée'], 'violence') AS added;
SELECT donatello.add_blocked_terms(:'org', ARRAY['Gore', 'x-rated', 'nsfw'], 'adult') AS added_again;
SELECT donatello.add_blocked_terms(:'other', ARRAY['banana'], 'fruit') AS added_other;
SELECT term, folded, category FROM donatello.blocked_terms WHERE org_id = :'org' ORDER BY folded;

-- matching
CREATE TEMP TABLE content_cases (id serial, label text, prompt text, expect text[]);
INSERT INTO content_cases (label, prompt, expect) VALUES
    ('exact',               'gore', '{gore}'),
    ('upper case',          'GORE everywhere', '{gore}'),
    ('accents both ways',   'CREME BRULEE and crème brûlée', '{crème brûlée,crème brûlée}'),
    ('full width',          'ｇｏｒｅ', '{gore}'),
    ('zero-width split',    'go​re', '{gore}'),
    ('inside a word',       'gorey gored bigore', '{}'),
    ('hyphen is a boundary','Gore-Tex jacket', '{gore}'),
    ('phrase, any spacing', 'a very...   BAD idea', '{very bad,bad}'),
    ('phrase broken',       'very, very good; not bad-ish', '{bad}'),
    ('two categories',      'nsfw and x rated and x-rated', '{nsfw,x-rated,x-rated}'),
    ('underscore joins',    'x_rated', '{}'),
    ('other org''s term',   'banana split', '{}'),
    ('clean',               'a watercolor fox at dawn', '{}'),
    ('empty',               '', '{}');

SELECT c.id, c.label,
       coalesce(array_agg(m->>'term' ORDER BY (m->>'start')::int, (m->>'end')::int) FILTER (WHERE m IS NOT NULL), '{}') AS found,
       coalesce(array_agg(m->>'term' ORDER BY (m->>'start')::int, (m->>'end')::int) FILTER (WHERE m IS NOT NULL), '{}') = c.expect AS ok
  FROM content_cases c
  LEFT JOIN LATERAL jsonb_array_elements(donatello.check_content(c.prompt, :'org')->'matches') m ON true
 GROUP BY c.id, c.label, c.expect
 ORDER BY c.id;

-- the whole result; positions are character offsets [start, end)
SELECT jsonb_pretty(donatello.check_content('Très bien: the CRÈME BRÛLÉE was gore, very bad', :'org'));
SELECT substr('Très bien: the CRÈME BRÛLÉE was gore, very bad', 16, 12) AS at_offset;

-- the organization comes from the current principal
SET request.jwt.claims = '{}';
SELECT donatello.check_content('gore');
SELECT set_config('request.jwt.claims', json_build_object('org', :'org')::text, false) IS NOT NULL AS as_org;
SELECT donatello.check_content('gore and banana')->'matches' AS org_matches;
SELECT set_config('request.jwt.claims', json_build_object('org', :'other')::text, false) IS NOT NULL AS as_other;
SELECT donatello.check_content('gore and banana')->'matches' AS other_matches;
RESET request.jwt.claims;

-- the cache: a hit on the second check, a miss after a committed change,
-- and inside the changing transaction the change is seen at once (bypass)
SELECT donatello.check_content('warm up', :'org') IS NOT NULL AS warm;
SELECT hits, misses FROM donatello.content_cache_stats() \gset before_
SELECT donatello.check_content('gore', :'org')->'clean' AS clean;
SELECT hits - :before_hits AS new_hits, misses - :before_misses AS new_misses FROM donatello.content_cache_stats();
BEGIN;
SELECT donatello.add_blocked_terms(:'org', ARRAY['zombie'], 'horror') AS added;
SELECT donatello.check_content('zombie', :'org')->'categories' AS seen_in_transaction;
SELECT bypasses > 0 AS bypassed FROM donatello.content_cache_stats();
ROLLBACK;
SELECT donatello.check_content('zombie', :'org')->'clean' AS clean_after_rollback;
SELECT donatello.add_blocked_terms(:'org', ARRAY['zombie'], 'horror') AS added;
SELECT misses FROM donatello.content_cache_stats() \gset before_
SELECT donatello.check_content('zombie', :'org')->'categories' AS seen_after_commit;
SELECT misses - :before_misses AS recompiled FROM donatello.content_cache_stats();
SELECT donatello.remove_blocked_terms(:'org', ARRAY['ZOMBIE', 'not there']) AS removed;
SELECT donatello.check_content('zombie', :'org')->'clean' AS clean_after_remove;

-- deleting the organization drops its terms
SELECT donatello.create_organization('Safety Short Lived', 'safety-short-lived') AS gone \gset
SELECT donatello.add_blocked_terms(:'gone', ARRAY['ephemeral'], 'misc');
SELECT donatello.check_content('ephemeral', :'gone')->'clean' AS clean_before;
DELETE FROM donatello.organizations WHERE id = :'gone';
SELECT donatello.check_content('ephemeral', :'gone')->'clean' AS clean_after_delete;

-- thousands of terms, checked against a regular-expression reference:
-- 4000 pseudo-words and 500 two-word phrases (deterministic, many sharing
-- prefixes), and a text of 1000 words drawn from a larger vocabulary; the
-- terms found must be exactly those the reference finds
SELECT donatello.create_organization('Safety Big List', 'safety-big-list') AS big \gset
CREATE TEMP TABLE vocab AS
    SELECT i, 'w' || substr(md5(i::text), 1, 2 + i % 5) AS word FROM generate_series(1, 8000) i;
CREATE TEMP TABLE big_words AS
    SELECT g, v.word FROM generate_series(1, 1000) g JOIN vocab v ON v.i = 1 + (g * 7919) % 8000;
CREATE TEMP TABLE big_text AS
    SELECT string_agg(word, CASE WHEN g % 7 = 0 THEN ', ' ELSE ' ' END ORDER BY g) AS t FROM big_words;
-- words, phrases of the vocabulary, and phrases that occur in the text
SELECT donatello.add_blocked_terms(:'big',
       (SELECT array_agg(word) FROM vocab WHERE i <= 4000) ||
       (SELECT array_agg(a.word || ' ' || b.word) FROM vocab a JOIN vocab b ON b.i = a.i + 1 WHERE a.i % 8 = 0) ||
       (SELECT array_agg(a.word || ' ' || b.word) FROM big_words a JOIN big_words b ON b.g = a.g + 1 WHERE a.g % 20 = 0),
       'bulk') AS added_terms;
WITH result AS (SELECT donatello.check_content(t, :'big') AS r FROM big_text),
c AS (
    SELECT DISTINCT m->>'term' AS term FROM result, jsonb_array_elements(r->'matches') m),
ref AS (
    SELECT b.term FROM donatello.blocked_terms b, big_text
     WHERE b.org_id = :'big'
       AND big_text.t ~ ('\m' || replace(b.term, ' ', '[^[:alnum:]_]+') || '\M'))
SELECT (SELECT r->'truncated' FROM result) AS truncated,
       (SELECT count(*) FROM c) AS found,
       (SELECT count(*) FROM ref) AS reference,
       (SELECT count(*) FILTER (WHERE term LIKE '% %') FROM c) AS phrases_found,
       (SELECT count(*) FROM (SELECT term FROM c EXCEPT SELECT term FROM ref) x) AS only_found,
       (SELECT count(*) FROM (SELECT term FROM ref EXCEPT SELECT term FROM c) x) AS only_reference;

-- who may call what
SELECT has_function_privilege('donatello_user', 'donatello.check_content(text)', 'EXECUTE') AS user_check,
       has_function_privilege('donatello_user', 'donatello.check_content(text, uuid)', 'EXECUTE') AS user_check_any_org,
       has_function_privilege('donatello_user', 'donatello.add_blocked_terms(uuid, text[], text)', 'EXECUTE') AS user_add,
       has_function_privilege('donatello_service', 'donatello.add_blocked_terms(uuid, text[], text)', 'EXECUTE') AS service_add;
