-- Regex-based PL/pgSQL references for bench/safety/run: the same checks as
-- donatello.scan_pii() and donatello.check_content(), written the way one
-- would without donatello (regular expressions plus PL/pgSQL validation).
-- They return the kinds / terms found, not positions.
DROP SCHEMA IF EXISTS bench_safety CASCADE;
CREATE SCHEMA bench_safety;

-- Luhn check of a string of digits.
CREATE FUNCTION bench_safety.luhn(digits text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    s int := 0;
    d int;
    n int := length(digits);
BEGIN
    FOR i IN 0 .. n - 1 LOOP
        d := substr(digits, n - i, 1)::int;
        IF i % 2 = 1 THEN
            d := d * 2;
            IF d > 9 THEN d := d - 9; END IF;
        END IF;
        s := s + d;
    END LOOP;
    RETURN s % 10 = 0 AND digits !~ '^(.)\1*$';
END $$;

-- ISO 7064 mod 97-10 over an IBAN without spaces.
CREATE FUNCTION bench_safety.iban_ok(iban text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    r text := upper(substr(iban, 5) || substr(iban, 1, 4));
    num text := '';
    c text;
BEGIN
    FOREACH c IN ARRAY regexp_split_to_array(r, '') LOOP
        num := num || CASE WHEN c ~ '[0-9]' THEN c ELSE (ascii(c) - 55)::text END;
    END LOOP;
    RETURN num::numeric % 97 = 1;
END $$;

-- Is s a valid inet address?
CREATE FUNCTION bench_safety.is_inet(s text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    PERFORM s::inet;
    RETURN true;
EXCEPTION WHEN others THEN
    RETURN false;
END $$;

-- The PII reference: kinds found, sorted, as a jsonb array.
CREATE FUNCTION bench_safety.scan_pii_regex(t text) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    kinds text[] := '{}';
    m text[];
BEGIN
    IF t ~ '[A-Za-z0-9._%+''-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}' THEN
        kinds := kinds || 'email'::text;
    END IF;
    FOR m IN SELECT regexp_matches(t, '(?:^|[^A-Za-z0-9])(\+[1-9][0-9 ().-]{6,22}[0-9])', 'g') LOOP
        IF length(regexp_replace(m[1], '[^0-9]', '', 'g')) BETWEEN 8 AND 15 THEN
            kinds := kinds || 'phone'::text;
        END IF;
    END LOOP;
    IF t ~ '(?:^|[^0-9A-Za-z])\(?[2-9][0-9]{2}\)?[-. ]?[2-9][0-9]{2}[-. ][0-9]{4}(?:$|[^0-9A-Za-z])' THEN
        kinds := kinds || 'phone'::text;
    END IF;
    FOR m IN SELECT regexp_matches(t, '\m([0-9]{3})([- ])([0-9]{2})\2([0-9]{4})\M', 'g') LOOP
        IF m[1] NOT IN ('000', '666') AND m[1] < '900' AND m[3] <> '00' AND m[4] <> '0000' THEN
            kinds := kinds || 'ssn'::text;
        END IF;
    END LOOP;
    FOR m IN SELECT regexp_matches(t, '\m([0-9](?:[ -]?[0-9]){12,18})\M', 'g') LOOP
        IF bench_safety.luhn(regexp_replace(m[1], '[^0-9]', '', 'g')) THEN
            kinds := kinds || 'credit_card'::text;
        END IF;
    END LOOP;
    FOR m IN SELECT regexp_matches(t, '\m([A-Za-z]{2}[0-9]{2}(?: ?[A-Za-z0-9]){11,30})\M', 'g') LOOP
        IF bench_safety.iban_ok(replace(m[1], ' ', '')) THEN
            kinds := kinds || 'iban'::text;
        END IF;
    END LOOP;
    FOR m IN SELECT regexp_matches(t, '(?:^|[^0-9.])((?:[0-9]{1,3}\.){3}[0-9]{1,3})(?![0-9.])', 'g') LOOP
        IF bench_safety.is_inet(m[1]) THEN
            kinds := kinds || 'ip_address'::text;
        END IF;
    END LOOP;
    FOR m IN SELECT regexp_matches(t, '(?:^|[^0-9A-Za-z:])([0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?![0-9A-Za-z:])', 'g') LOOP
        IF m[1] ~ '[0-9A-Fa-f]' AND bench_safety.is_inet(m[1]) THEN
            kinds := kinds || 'ip_address'::text;
        END IF;
    END LOOP;
    IF t ~ '\m(sk-[A-Za-z0-9_-]{20,}|sk_(live|test)_[A-Za-z0-9]{16,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}|glpat-[A-Za-z0-9_-]{20,}|xox[bpars]-[A-Za-z0-9-]{10,}|AKIA[A-Z0-9]{16}|AIza[A-Za-z0-9_-]{35}|hf_[A-Za-z0-9]{30,}|npm_[A-Za-z0-9]{36})' THEN
        kinds := kinds || 'api_key'::text;
    END IF;
    IF t ~ 'eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*' THEN
        kinds := kinds || 'token'::text;
    END IF;
    FOR m IN SELECT regexp_matches(t, '(?:^|[^A-Za-z0-9_+/-])([A-Za-z0-9_+/-]{20,})', 'g') LOOP
        IF m[1] ~ '[a-z]' AND m[1] ~ '[A-Z]' AND m[1] ~ '[0-9]' THEN
            kinds := kinds || 'token'::text;
        END IF;
    END LOOP;
    RETURN coalesce((SELECT jsonb_agg(DISTINCT k ORDER BY k) FROM unnest(kinds) k), '[]');
END $$;

-- The content reference: one alternation regex per organization, built once.
CREATE TABLE bench_safety.org_regex (org_id uuid PRIMARY KEY, pattern text NOT NULL);

CREATE FUNCTION bench_safety.fold(t text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT lower(regexp_replace(normalize(t, NFKD), '[\u0300-\u036f]', '', 'g')) $$;

CREATE FUNCTION bench_safety.compile(org uuid) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO bench_safety.org_regex
    SELECT org, '\m(' || string_agg(regexp_replace(folded, '([^a-z0-9 ])', '\\\1', 'g'), '|' ORDER BY length(folded) DESC) || ')\M'
      FROM donatello.blocked_terms WHERE org_id = org
    ON CONFLICT (org_id) DO UPDATE SET pattern = excluded.pattern
$$;

-- Distinct folded terms found, as a jsonb array.
CREATE FUNCTION bench_safety.check_content_regex(t text, org uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    p text := (SELECT pattern FROM bench_safety.org_regex WHERE org_id = org);
BEGIN
    RETURN coalesce((SELECT jsonb_agg(DISTINCT m[1])
                       FROM regexp_matches(regexp_replace(bench_safety.fold(t), '[^[:alnum:]_]+', ' ', 'g'), p, 'g') m),
                    '[]');
END $$;
