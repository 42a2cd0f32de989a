-- PNG headers (donatello.png_info) and signed, expiring image URLs.
-- The PNG headers below were made with Python's struct and zlib.crc32 (an
-- independent encoder); the last one is a complete 1x1 RGBA image.

CREATE TEMP TABLE png_cases (id serial, label text, png bytea);
INSERT INTO png_cases (label, png) VALUES
    ('rgb 1024x1024',            decode('iVBORw0KGgoAAAANSUhEUgAABAAAAAQACAIAAADwf7zU', 'base64')),
    ('rgba 1792x1024 16-bit',    decode('iVBORw0KGgoAAAANSUhEUgAABwAAAAQAEAYAAAC2b5HB', 'base64')),
    ('gray 1-bit',               decode('iVBORw0KGgoAAAANSUhEUgAAAoAAAAHgAQAAAAAdquFJ', 'base64')),
    ('palette 4-bit interlaced', decode('iVBORw0KGgoAAAANSUhEUgAAASwAAADIBAMAAAHX9vHw', 'base64')),
    ('gray+alpha 1x65535',       decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAP//CAQAAAAIsj5b', 'base64')),
    ('complete 1x1 rgba',        decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64'));

SELECT c.label, i->>'width' AS width, i->>'height' AS height, i->>'bit_depth' AS bit_depth,
       i->>'color' AS color, i->>'interlaced' AS interlaced, i->>'mime_type' AS mime_type
  FROM png_cases c, donatello.png_info(c.png) i ORDER BY c.id;
SELECT donatello.png_info(png) FROM png_cases WHERE label = 'complete 1x1 rgba';

-- what is not a valid PNG, and why
SELECT donatello.png_info(decode('iVBORw0KGgoAAAANSUhEUgAAAAoAAAAKCAIAAAACUFjr', 'base64'));  -- CRC flipped
SELECT donatello.png_info(decode('iVBORw0KGgoAAAANSUhEUgAAAAAAAAAKCAIAAAAVcsgj', 'base64'));  -- width 0
SELECT donatello.png_info(decode('iVBORw0KGgoAAAANSUhEUgAAAAqAAAAACAIAAADFnnvD', 'base64'));  -- height 2^31
SELECT donatello.png_info(decode('iVBORw0KGgoAAAANSUhEUgAAAAoAAAAKBAIAAADHoLXr', 'base64'));  -- rgb 4-bit
SELECT donatello.png_info(decode('iVBORw0KGgoAAAANSUhEUgAAAAoAAAAKEAMAAADqfOPM', 'base64'));  -- palette 16-bit
SELECT donatello.png_info(decode('iVBORw0KGgoAAAANSUhEUgAAAAoAAAAKCAUAAACfh2BT', 'base64'));  -- colour type 5
SELECT donatello.png_info(decode('iVBORw0KGgoAAAANSUhEUgAAAAoAAAAKCAIAAALsXjnG', 'base64'));  -- interlace 2
SELECT donatello.png_info(decode('iVBORw0KGgoAAAANSUhEUgAAAAoAAAAKCAIAAQAbS2mr', 'base64'));  -- filter 1
SELECT donatello.png_info(decode('iVBORw0KGgoAAAANSURBVAAAAAoAAAAKCAIAAABuN34f', 'base64'));  -- IDAT first
SELECT donatello.png_info(substring(png FROM 1 FOR 20)) FROM png_cases WHERE label = 'rgb 1024x1024';
SELECT donatello.png_info('\xffd8ffe000104a464946'::bytea);  -- a JPEG
SELECT donatello.png_info(''::bytea);

-- a large stored image: only its first bytes are read
CREATE TEMP TABLE stored_image (img bytea);
ALTER TABLE stored_image ALTER img SET STORAGE EXTERNAL;
INSERT INTO stored_image
SELECT png || decode(string_agg(md5(i::text), ''), 'hex') FROM png_cases, generate_series(1, 200000) i
 WHERE label = 'rgb 1024x1024' GROUP BY png;
SELECT pg_size_pretty(octet_length(img)::bigint) AS size, donatello.png_info(img)->>'width' AS width FROM stored_image;

-- signed image URLs
\set image '''6f1c2c1e-0000-4000-8000-000000000001'''
SELECT donatello.image_url(:image) ~ '^/images/6f1c2c1e-0000-4000-8000-000000000001\?exp=[0-9]+&sig=[A-Za-z0-9_-]{43}$' AS shaped;
SELECT (regexp_match(u, 'exp=([0-9]+)'))[1]::bigint AS exp, (regexp_match(u, 'sig=(.*)$'))[1] AS sig
  FROM donatello.image_url(:image) u \gset
-- the default lifetime is donatello.image_url_ttl (1 hour)
SELECT :exp - extract(epoch FROM now())::bigint BETWEEN 3500 AND 3700 AS about_one_hour;
SELECT donatello.verify_image_url(:image, :exp, :'sig') AS valid;
SELECT donatello.verify_image_url('6f1c2c1e-0000-4000-8000-000000000002', :exp, :'sig') AS other_image,
       donatello.verify_image_url(:image, :exp + 1, :'sig') AS later_expiry,
       donatello.verify_image_url(:image, :exp, overlay(:'sig' PLACING CASE WHEN substr(:'sig', 5, 1) = 'A' THEN 'B' ELSE 'A' END FROM 5 FOR 1)) AS one_character_changed,
       donatello.verify_image_url(:image, :exp, left(:'sig', 42)) AS too_short,
       donatello.verify_image_url(:image, :exp, :'sig' || 'A') AS too_long,
       donatello.verify_image_url(:image, :exp, '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!') AS not_base64url,
       donatello.verify_image_url(:image, :exp, '') AS empty;
-- the same image and expiry always sign the same; an expired URL never verifies
SELECT donatello.sign_image_url(:image, to_timestamp(:exp)) = format('/images/%s?exp=%s&sig=%s', :image, :exp, :'sig') AS deterministic;
SELECT (regexp_match(u, 'exp=([0-9]+)'))[1]::bigint AS past_exp, (regexp_match(u, 'sig=(.*)$'))[1] AS past_sig
  FROM donatello.sign_image_url(:image, now() - interval '1 second') u \gset
SELECT donatello.verify_image_url(:image, :past_exp, :'past_sig') AS expired_url_verifies;
-- lifetimes
SELECT (regexp_match(donatello.image_url(:image, '15 minutes'), 'exp=([0-9]+)'))[1]::bigint
       - extract(epoch FROM now())::bigint BETWEEN 800 AND 1000 AS about_15_minutes;
SET donatello.image_url_ttl = '5min';
SELECT (regexp_match(donatello.image_url(:image), 'exp=([0-9]+)'))[1]::bigint
       - extract(epoch FROM now())::bigint BETWEEN 200 AND 400 AS about_5_minutes;
RESET donatello.image_url_ttl;
SELECT donatello.image_url(:image, '0 seconds');
SELECT donatello.image_url(:image, '31 days');
SELECT donatello.sign_image_url(:image, 'infinity');

-- who may call what
SELECT f AS function,
       has_function_privilege('donatello_user', f, 'EXECUTE') AS user_may,
       has_function_privilege('donatello_service', f, 'EXECUTE') AS service_may
  FROM unnest(ARRAY['donatello.png_info(bytea)', 'donatello.image_url(uuid,interval)',
                    'donatello.sign_image_url(uuid,timestamptz)', 'donatello.verify_image_url(uuid,bigint,text)']) f;
