-- The model router as a pure function (donatello.score_models), checked
-- against an independent SQL implementation of the formulas documented in
-- docs/generation.md, plus prompt complexity, ties, eligibility, errors and
-- donatello.rank_models over registered models.

-- reference: the documented formula in plain SQL (numeric arithmetic)
CREATE FUNCTION pg_temp.reference(candidates jsonb, request jsonb)
RETURNS TABLE (rank bigint, model text, score numeric) LANGUAGE sql AS $$
WITH req AS (
    SELECT coalesce(request->>'size', '1024x1024') AS size,
           coalesce((request->>'commercial')::boolean, false) AS commercial,
           coalesce(request->>'preference', 'balanced') AS pref,
           coalesce((request->>'complexity')::numeric, 0) AS cx),
base AS (
    SELECT CASE pref WHEN 'quality' THEN 0.6 WHEN 'cost' THEN 0.5 / 3 ELSE 0.25 END AS q,
           CASE pref WHEN 'quality' THEN 0.4 / 3 WHEN 'cost' THEN 0.5 ELSE 0.25 END AS c,
           CASE pref WHEN 'quality' THEN 0.4 / 3 WHEN 'cost' THEN 0.5 / 3 ELSE 0.25 END AS other,
           cx FROM req),
w AS (
    SELECT q + cx * 0.5 * (1 - q) AS wq,
           c * (1 - (q + cx * 0.5 * (1 - q))) / (1 - q) AS wc,
           other * (1 - (q + cx * 0.5 * (1 - q))) / (1 - q) AS wo FROM base),
cand AS (
    SELECT e->>'provider' AS p, e->>'model' AS m, (e->>'cost_per_image')::numeric AS cost,
           (e->>'quality')::int AS qq, (e->>'speed')::int AS ss, (e->>'reliability')::int AS rr
      FROM jsonb_array_elements(candidates) e, req
     WHERE req.size IN (SELECT jsonb_array_elements_text(e->'sizes'))
       AND (NOT req.commercial OR (e->>'commercial_use')::boolean)
       AND coalesce(e->>'circuit', 'closed') IN ('closed', 'half_open')),
mc AS (SELECT min(cost) AS mc FROM cand),
scored AS (
    SELECT p, m, cost,
           wq * qq / 10.0 + wc * (CASE WHEN cost = 0 THEN 1 ELSE mc / cost END) + wo * rr / 10.0 + wo * ss / 10.0 AS s
      FROM cand, w, mc)
SELECT row_number() OVER (ORDER BY round(s, 9) DESC, cost, p, m), m, s FROM scored
$$;

CREATE TEMP TABLE catalog AS SELECT '[
  {"provider": "openai", "model": "dall-e-3", "cost_per_image": 0.04, "quality": 9, "speed": 5, "reliability": 8,
   "commercial_use": true, "sizes": ["1024x1024", "1792x1024", "1024x1792"]},
  {"provider": "openai", "model": "dall-e-2", "cost_per_image": 0.02, "quality": 6, "speed": 8, "reliability": 8,
   "commercial_use": true, "sizes": ["256x256", "512x512", "1024x1024"]},
  {"provider": "local", "model": "sdxl", "cost_per_image": 0.005, "quality": 7, "speed": 9, "reliability": 6,
   "commercial_use": false, "sizes": ["1024x1024"]}
]'::jsonb AS c;

CREATE TEMP TABLE score_cases (id serial, label text, candidates jsonb, request jsonb);
INSERT INTO score_cases (label, candidates, request)
SELECT label, coalesce(candidates, c), request::jsonb FROM catalog, (VALUES
    ('balanced',                    NULL::jsonb, '{"preference": "balanced"}'),
    ('quality',                     NULL, '{"preference": "quality"}'),
    ('cost',                        NULL, '{"preference": "cost"}'),
    ('balanced, complex prompt',    NULL, '{"preference": "balanced", "complexity": 1}'),
    ('quality, complexity 0.5',     NULL, '{"preference": "quality", "complexity": 0.5}'),
    ('commercial',                  NULL, '{"commercial": true}'),
    ('wide size',                   NULL, '{"size": "1792x1024"}'),
    ('small size, cost',            NULL, '{"size": "256x256", "preference": "cost"}'),
    ('circuits', '[
       {"provider": "a", "model": "open", "cost_per_image": 0.01, "quality": 9, "speed": 9, "reliability": 9, "sizes": ["1024x1024"], "circuit": "open"},
       {"provider": "a", "model": "trial", "cost_per_image": 0.01, "quality": 9, "speed": 9, "reliability": 9, "sizes": ["1024x1024"], "circuit": "trial"},
       {"provider": "a", "model": "half-open", "cost_per_image": 0.03, "quality": 5, "speed": 5, "reliability": 5, "sizes": ["1024x1024"], "circuit": "half_open"},
       {"provider": "a", "model": "closed", "cost_per_image": 0.02, "quality": 6, "speed": 6, "reliability": 6, "sizes": ["1024x1024"], "circuit": "closed"}]', '{}'),
    ('ties: cheaper, then name', '[
       {"provider": "p2", "model": "x", "cost_per_image": 0.02, "quality": 8, "speed": 6, "reliability": 7, "sizes": ["1024x1024"]},
       {"provider": "p1", "model": "y", "cost_per_image": 0.02, "quality": 6, "speed": 8, "reliability": 7, "sizes": ["1024x1024"]},
       {"provider": "p1", "model": "x", "cost_per_image": 0.02, "quality": 7, "speed": 7, "reliability": 7, "sizes": ["1024x1024"]}]',
     '{"preference": "balanced"}'),
    ('a free model', '[
       {"provider": "p", "model": "free", "cost_per_image": 0, "quality": 4, "speed": 4, "reliability": 4, "sizes": ["1024x1024"]},
       {"provider": "p", "model": "paid", "cost_per_image": 0.01, "quality": 10, "speed": 10, "reliability": 10, "sizes": ["1024x1024"]}]',
     '{"preference": "cost"}'),
    ('nothing eligible',            NULL, '{"size": "64x64"}')
) AS v(label, candidates, request);

SELECT s.id, s.label,
       (SELECT coalesce(array_agg(x->>'model' ORDER BY (x->>'rank')::int), '{}') FROM jsonb_array_elements(r->'candidates') x) AS ranking,
       (SELECT coalesce(array_agg(round((x->>'score')::numeric, 4) ORDER BY (x->>'rank')::int), '{}') FROM jsonb_array_elements(r->'candidates') x) AS scores,
       (SELECT coalesce(array_agg(x->>'model' ORDER BY (x->>'rank')::int), '{}') FROM jsonb_array_elements(r->'candidates') x)
         = (SELECT coalesce(array_agg(f.model ORDER BY f.rank), '{}') FROM pg_temp.reference(s.candidates, s.request) f)
       AND NOT EXISTS (SELECT FROM jsonb_array_elements(r->'candidates') x
                         JOIN pg_temp.reference(s.candidates, s.request) f ON f.model = x->>'model'
                        WHERE abs((x->>'score')::numeric - f.score) > 0.0001) AS matches_reference
  FROM score_cases s, LATERAL donatello.score_models(s.candidates, s.request) r
 ORDER BY s.id;

-- the weights themselves
SELECT p AS preference, cx AS complexity, r->'weights' AS weights
  FROM (VALUES ('balanced', 0), ('quality', 0), ('cost', 0), ('balanced', 1), ('quality', 0.5), ('cost', 1)) v(p, cx),
       LATERAL donatello.score_models('[]', jsonb_build_object('preference', p, 'complexity', cx)) r;

-- reasons for exclusion, and the full output of one ranking
SELECT x->>'model' AS model, x->>'reason' AS reason
  FROM score_cases s, jsonb_array_elements(donatello.score_models(s.candidates, s.request)->'excluded') x
 WHERE s.label IN ('commercial', 'wide size', 'circuits') ORDER BY s.id, 1;
SELECT jsonb_pretty(donatello.score_models(c, '{"preference": "quality", "n": 3, "complexity": 0.25}')) FROM catalog;

-- estimated cost is exact: cost per image x n
SELECT x->>'cost_per_image' AS per_image, x->>'estimated_cost' AS estimated
  FROM jsonb_array_elements(donatello.score_models(
         '[{"provider": "p", "model": "m", "cost_per_image": 0.000001, "quality": 5, "speed": 5, "reliability": 5, "sizes": ["1024x1024"]},
           {"provider": "p", "model": "n", "cost_per_image": 1.1, "quality": 5, "speed": 5, "reliability": 5, "sizes": ["1024x1024"]}]',
         '{"n": 3}')->'candidates') x;

-- prompt complexity: 0.7 * min(words, 60)/60 + 0.3 * min(separators, 8)/8
SELECT left(p, 60) AS prompt, donatello.prompt_complexity(p) AS complexity
  FROM unnest(ARRAY['', 'a fox', 'a red fox with a hat and boots',
                    'portrait: an old sailor; weathered face, rain, lantern light, oil painting, dramatic, detailed, 4k',
                    repeat('word ', 60), repeat('word, ', 100)]) p;
-- a prompt in the request is scored the same as its complexity
SELECT donatello.score_models(c, '{"prompt": "a red fox with a hat and boots"}')->'complexity' AS from_prompt FROM catalog;

-- invalid input
SELECT donatello.score_models('{}', '{}');
SELECT donatello.score_models('[1]', '{}');
SELECT donatello.score_models('[{"model": "m", "cost_per_image": 1, "quality": 5, "speed": 5, "reliability": 5, "sizes": []}]', '{}');
SELECT donatello.score_models('[{"provider": "p", "model": "m", "cost_per_image": 1, "quality": 11, "speed": 5, "reliability": 5, "sizes": []}]', '{}');
SELECT donatello.score_models('[{"provider": "p", "model": "m", "cost_per_image": -1, "quality": 5, "speed": 5, "reliability": 5, "sizes": []}]', '{}');
SELECT donatello.score_models('[{"provider": "p", "model": "m", "cost_per_image": 0.0000001, "quality": 5, "speed": 5, "reliability": 5, "sizes": []}]', '{}');
SELECT donatello.score_models('[{"provider": "p", "model": "m", "cost_per_image": 1, "quality": 5, "speed": 5, "reliability": 5}]', '{}');
SELECT donatello.score_models('[{"provider": "p", "model": "m", "cost_per_image": 1, "quality": 5, "speed": 5, "reliability": 5, "sizes": [], "circuit": "ajar"}]', '{}');
SELECT donatello.score_models('[]', '{"preference": "speed"}');
SELECT donatello.score_models('[]', '{"complexity": 2}');
SELECT donatello.score_models('[]', '[]');

-- rank_models: registered models, the department's preference, circuits
SELECT donatello.register_provider('router-a', 'openai', 'https://a.example.com') IS NOT NULL AS provider_a;
SELECT donatello.register_model('router-a', 'premium', 0.08, 10, 4, 9, true, '{1024x1024,1792x1024}') AS premium \gset
SELECT donatello.register_model('router-a', 'budget', 0.01, 5, 8, 7, true, '{1024x1024}') AS budget \gset
SELECT donatello.create_organization('Router Rank Org', 'router-rank-org') AS org \gset
SELECT donatello.create_department(:'org', 'Art') AS art \gset
SELECT donatello.create_department(:'org', 'Ops') AS ops \gset
SELECT donatello.set_department_preference(:'art', 'quality');
SELECT donatello.set_department_preference(:'ops', 'cost');
SELECT d.name AS department, r->>'preference' AS preference,
       (SELECT array_agg(x->>'model' ORDER BY (x->>'rank')::int) FROM jsonb_array_elements(r->'candidates') x) AS ranking
  FROM donatello.departments d, LATERAL donatello.rank_models('a lighthouse at night', '{}', d.id) r
 WHERE d.org_id = :'org' ORDER BY 1;
-- a complex prompt raises the quality weight (no department: balanced)
SELECT (r->>'complexity')::numeric AS complexity, (r->'weights'->>'quality')::numeric AS quality_weight,
       (SELECT array_agg(x->>'model' ORDER BY (x->>'rank')::int) FROM jsonb_array_elements(r->'candidates') x) AS ranking
  FROM unnest(ARRAY['a lighthouse at night',
                    'A lighthouse at night on a rocky coast, storm clouds, crashing waves, a lone keeper with a lantern, ' ||
                    'warm window light, cinematic, volumetric fog, ultra detailed, oil painting, dramatic composition, ' ||
                    'seagulls, moonlight through clouds, wet rocks, spray, reflections']) p,
       LATERAL donatello.rank_models(p) r;
-- an open circuit takes the model out; its cool-down over, it is back as half-open
SELECT donatello.model_circuit_report(:'budget', false), donatello.model_circuit_report(:'budget', false),
       donatello.model_circuit_report(:'budget', false) AS third;
SELECT (SELECT array_agg(x->>'model') FROM jsonb_array_elements(r->'candidates') x) AS eligible,
       (SELECT array_agg((x->>'model') || ': ' || (x->>'reason')) FROM jsonb_array_elements(r->'excluded') x) AS excluded
  FROM donatello.rank_models('a lighthouse', '{}', :'ops') r;
UPDATE donatello.model_circuits SET retry_at = now() - interval '1 second' WHERE model_id = :'budget';
SELECT x->>'model' AS model, x->>'circuit' AS circuit
  FROM jsonb_array_elements(donatello.rank_models('a lighthouse', '{}', :'ops')->'candidates') x;
-- invalid settings are refused before anything is ranked
SELECT donatello.rank_models('a lighthouse', '{"n": 99}');
