-- 004_jsonb_helpers.sql: JSONB helper functions over the document tables of 003.
--
-- Creates (all in the current schema; every one is CREATE OR REPLACE):
--   jsonb_merge_deep(a jsonb, b jsonb) returns jsonb                       immutable, plpgsql
--   jsonb_text_values(j jsonb) returns text                                immutable, sql
--   extract_skills(doc jsonb) returns text[]                               immutable, sql
--   resume_experience_text(doc jsonb) returns text                         immutable, sql
--   resume_search_text(doc jsonb) returns text                             immutable, sql
--   resume_search_vector(doc jsonb) returns tsvector                       immutable, sql
--   job_search_text(title text, company text, doc jsonb) returns text      immutable, sql
--   job_search_vector(title text, company text, doc jsonb) returns tsvector immutable, sql
--   calculate_keyword_match(resume jsonb, job jsonb) returns numeric       immutable, sql
--   calculate_ats_score(resume jsonb, job jsonb) returns jsonb             immutable, sql
--   search_documents(query text, doc_type text = null, user_id text = null,
--                    max_results int = 20)
--     returns table(document_type text, document_id uuid, user_id text, title text,
--                   rank real, snippet text)                              stable, sql
--   get_user_documents(user_id text, doc_type text = null, page_size int = 50, page int = 0)
--     returns table(document_type text, document_id uuid, title text, status text,
--                   created_at timestamptz, updated_at timestamptz, parsed_data jsonb,
--                   total_count bigint)                                   stable, sql
--   cleanup_old_documents() returns integer                                volatile, plpgsql
-- Undone by: rollback.drop_helper_functions() (drop 005's materialized views and full-text
-- indexes first, or use CASCADE: they depend on extract_skills and the *_search_vector
-- functions).
--
-- Decisions:
--  * jsonb_merge_deep is plpgsql because it recurses (a SQL body cannot name itself before it
--    exists); everything else that can be is LANGUAGE sql, and immutable where it reads no table.
--  * The full-text functions live here, not in 005, so that search_documents compiles when
--    004 is applied; 005 builds the GIN indexes over exactly these expressions:
--    resume_search_vector(parsed_data) and job_search_vector(title, company, parsed_data).
--    search_documents uses the same expressions, so the planner can use those indexes.
--  * Functions that index expressions and materialized views call (extract_skills,
--    jsonb_text_values, resume_*, job_*) use SQL-standard bodies (RETURN ...), which are
--    bound to the referenced objects when created. Since PostgreSQL 17, CREATE INDEX,
--    REINDEX, ANALYZE and REFRESH MATERIALIZED VIEW run with search_path = pg_catalog, so a
--    classic body that called extract_skills() by name would fail there.
--  * The two *_search_vector functions (evaluated on every INSERT/UPDATE and by ANALYZE) are each
--    one query calling no other function of this file: before PostgreSQL 18 a SQL function
--    that calls another non-inlinable SQL function re-plans the callee on every call, which
--    made loading and ANALYZE about three times slower. They are, by test, equal to the weighted
--    composition of extract_skills, resume_experience_text and jsonb_text_values.
--  * Malformed shapes never raise: lax jsonpath treats a scalar where an array was expected
--    as a one-element array and a missing key as empty, so an odd document cannot make an
--    INSERT fail through an index expression.
--  * extract_skills: top-level skills, technical_skills, soft_skills, then the skills of each
--    work_experience entry (and of `experience`, the oldest layout); elements that are
--    strings or objects with a string `name`; trimmed, empty ones dropped; de-duplicated
--    case-insensitively keeping the first spelling; returned in that order.
--  * Full text (english configuration). Resume: name (weight A), skills (B), summary and work
--    experience: position, title, company, description, responsibilities (C). Job: title (A),
--    company, skills, keywords (B), description, requirements, qualifications (C). The free-text
--    part (C) is cut to its first 200,000 characters so that a document of several megabytes
--    cannot exceed the 1 MB tsvector limit and make its INSERT fail.
--  * calculate_keyword_match: the job's terms are its `keywords` (strings or {name}) plus
--    extract_skills(job), lower-cased and distinct; a term is found when it occurs in any
--    string value of the resume as a whole word or phrase (case-insensitive; the characters
--    around it must not be letters or digits, so "go" does not match "good" but "c++" and
--    "node.js" work). Result = round(100 * found / terms, 2); a job without terms gives 0.
--  * calculate_ats_score weights (sum 1.0):
--      keyword_match 0.35  = calculate_keyword_match(resume, job)
--      skills_match  0.25  = % of extract_skills(job) present in extract_skills(resume)
--                            (case-insensitive exact names; 0 when the job lists no skills)
--      experience    0.20  = 25 per work_experience entry (objects), capped at 100
--      education     0.10  = 100 when the resume has at least one education entry, else 0
--      completeness  0.10  = 20 each: a name, an email or phone, a non-empty summary, at least
--                            one work experience, at least one skill
--      overall             = round(weighted sum, 2)
--    Every component is 0..100, rounded to 2 decimals; the result also carries `weights`.
--  * search_documents: websearch_to_tsquery('english', query) (quotes, OR, -negation); only
--    active, not deleted, not expired rows; doc_type null|'resume'|'job' (anything else finds
--    nothing); ranked by ts_rank over the weighted vector, ties newest first; snippet =
--    ts_headline with matches in <b>..</b>, whitespace collapsed to single spaces, computed only
--    for the returned rows. Title: a
--    resume's contact_info.full_name (else its filename); a job's title (else its company).
--  * get_user_documents: the four document tables; active, not deleted, not expired rows,
--    newest first (created_at desc, id desc); page counts from 0; total_count is the number
--    of the user's matching documents over all pages. Title: resume filename, job title (else
--    company), optimization_type, research "job_title at company" (else report_type).
--  * cleanup_old_documents: SOFT delete. Every row of the four tables whose expires_at has
--    passed and whose deleted_at is null gets is_active = false, deleted_at = now() and
--    updated_at = now(); the rows stay (optimizations keep their resume). Returns the number of
--    rows changed. The audit entries ('update', with the changed columns) are written by the
--    statement-level audit triggers of 006, one per changed row.

CREATE OR REPLACE FUNCTION jsonb_merge_deep(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    -- SQL NULL is "no value": the other side wins. JSON null is a scalar: b wins with it.
    IF a IS NULL THEN
        RETURN b;
    ELSIF b IS NULL THEN
        RETURN a;
    ELSIF jsonb_typeof(a) <> 'object' OR jsonb_typeof(b) <> 'object' THEN
        RETURN b;
    END IF;
    RETURN (
        SELECT coalesce(jsonb_object_agg(k.key,
                   CASE WHEN a ? k.key AND b ? k.key THEN jsonb_merge_deep(a -> k.key, b -> k.key)
                        WHEN b ? k.key THEN b -> k.key
                        ELSE a -> k.key END), '{}'::jsonb)
        FROM (SELECT jsonb_object_keys(a) UNION SELECT jsonb_object_keys(b)) AS k(key)
    );
END
$$;

-- Every string value inside j (at any depth, document order), joined with spaces.
CREATE OR REPLACE FUNCTION jsonb_text_values(j jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (
    SELECT string_agg(v.value #>> '{}', ' ')
    FROM jsonb_path_query(j, 'strict $.** ? (@.type() == "string")') AS v(value)
);

CREATE OR REPLACE FUNCTION extract_skills(doc jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (
    SELECT coalesce(array_agg(d.skill ORDER BY d.src, d.pos), '{}'::text[])
    FROM (
        SELECT DISTINCT ON (lower(s.skill)) s.skill, s.src, s.pos
        FROM (
            SELECT p.src, e.pos,
                   btrim(CASE jsonb_typeof(e.value)
                             WHEN 'string' THEN e.value #>> '{}'
                             WHEN 'object' THEN
                                 CASE WHEN jsonb_typeof(e.value -> 'name') = 'string'
                                      THEN e.value ->> 'name' END
                         END) AS skill
            FROM (VALUES (1, 'lax $.skills[*]'::jsonpath),
                         (2, 'lax $.technical_skills[*]'::jsonpath),
                         (3, 'lax $.soft_skills[*]'::jsonpath),
                         (4, 'lax $.work_experience[*].skills[*]'::jsonpath),
                         (5, 'lax $.experience[*].skills[*]'::jsonpath)) AS p(src, path)
            CROSS JOIN LATERAL jsonb_path_query(doc, p.path) WITH ORDINALITY AS e(value, pos)
        ) AS s
        WHERE s.skill <> ''
        ORDER BY lower(s.skill), s.src, s.pos
    ) AS d
);

-- Position, title, company, description and responsibilities of each work experience entry.
CREATE OR REPLACE FUNCTION resume_experience_text(doc jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (
    SELECT string_agg(concat_ws(' ', x.value ->> 'position', x.value ->> 'title',
                                x.value ->> 'company', x.value ->> 'description',
                                jsonb_text_values(x.value -> 'responsibilities')),
                      E'\n' ORDER BY p.src, x.pos)
    FROM (VALUES (1, 'lax $.work_experience[*] ? (@.type() == "object")'::jsonpath),
                 (2, 'lax $.experience[*] ? (@.type() == "object")'::jsonpath)) AS p(src, path)
    CROSS JOIN LATERAL jsonb_path_query(doc, p.path) WITH ORDINALITY AS x(value, pos)
);

-- The text search_documents shows snippets from: name, summary, skills, experience.
CREATE OR REPLACE FUNCTION resume_search_text(doc jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN concat_ws(E'\n',
    coalesce(doc -> 'contact_info' ->> 'full_name', doc ->> 'name'),
    doc ->> 'summary',
    nullif(array_to_string(extract_skills(doc), ', '), ''),
    resume_experience_text(doc));

-- The indexed resume vector (005: idx_resume_documents_fts). It is
--   setweight(to_tsvector(name), 'A') || setweight(to_tsvector(extract_skills joined), 'B')
--   || setweight(to_tsvector(summary + resume_experience_text), 'C')
-- written out as ONE query that calls none of the functions above: a SQL function calling
-- another one that cannot be inlined re-plans the callee on every call (before PostgreSQL 18),
-- which made every INSERT and ANALYZE three times slower. tests/test_sql_helpers.py checks
-- that it stays equal to that composition.
CREATE OR REPLACE FUNCTION resume_search_vector(doc jsonb) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (
    SELECT setweight(to_tsvector('english'::regconfig,
                                 coalesce(doc -> 'contact_info' ->> 'full_name', doc ->> 'name', '')), 'A')
        || setweight(to_tsvector('english'::regconfig, coalesce(sk.s, '')), 'B')
        || setweight(to_tsvector('english'::regconfig, left(concat_ws(' ', doc ->> 'summary', ex.s), 200000)), 'C')
      FROM (SELECT string_agg(d.skill, ' ' ORDER BY d.src, d.pos) AS s
           FROM (SELECT DISTINCT ON (lower(x.skill)) x.skill, x.src, x.pos
                   FROM (SELECT p.src, e.pos,
                                btrim(CASE jsonb_typeof(e.value)
                                          WHEN 'string' THEN e.value #>> '{}'
                                          WHEN 'object' THEN
                                              CASE WHEN jsonb_typeof(e.value -> 'name') = 'string'
                                                   THEN e.value ->> 'name' END
                                      END) AS skill
                           FROM (VALUES (1, 'lax $.skills[*]'::jsonpath),
                                        (2, 'lax $.technical_skills[*]'::jsonpath),
                                        (3, 'lax $.soft_skills[*]'::jsonpath),
                                        (4, 'lax $.work_experience[*].skills[*]'::jsonpath),
                                        (5, 'lax $.experience[*].skills[*]'::jsonpath)) AS p(src, path)
                          CROSS JOIN LATERAL jsonb_path_query(doc, p.path) WITH ORDINALITY AS e(value, pos)) AS x
                  WHERE x.skill <> ''
                  ORDER BY lower(x.skill), x.src, x.pos) AS d) AS sk,
           (SELECT string_agg(concat_ws(' ', w.value ->> 'position', w.value ->> 'title',
                                        w.value ->> 'company', w.value ->> 'description',
                                        (SELECT string_agg(v.value #>> '{}', ' ')
                                           FROM jsonb_path_query(w.value -> 'responsibilities',
                                                                 'strict $.** ? (@.type() == "string")') AS v(value))),
                              E'\n' ORDER BY p.src, w.pos) AS s
              FROM (VALUES (1, 'lax $.work_experience[*] ? (@.type() == "object")'::jsonpath),
                           (2, 'lax $.experience[*] ? (@.type() == "object")'::jsonpath)) AS p(src, path)
             CROSS JOIN LATERAL jsonb_path_query(doc, p.path) WITH ORDINALITY AS w(value, pos)) AS ex
);

-- The text search_documents shows snippets from: title, company, description, lists.
CREATE OR REPLACE FUNCTION job_search_text(title text, company text, doc jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN concat_ws(E'\n', nullif(title, ''), nullif(company, ''),
    doc ->> 'description',
    jsonb_text_values(doc -> 'requirements'),
    jsonb_text_values(doc -> 'qualifications'),
    nullif(array_to_string(extract_skills(doc), ', '), ''),
    jsonb_text_values(doc -> 'keywords'));

-- The indexed job vector (005: idx_job_documents_fts): setweight(title, 'A') || setweight(company,
-- extract_skills, keywords, 'B') || setweight(description, requirements, qualifications, 'C'),
-- written out as one query for the same reason as resume_search_vector.
CREATE OR REPLACE FUNCTION job_search_vector(title text, company text, doc jsonb) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (
    SELECT setweight(to_tsvector('english'::regconfig, coalesce(title, '')), 'A')
        || setweight(to_tsvector('english'::regconfig, concat_ws(' ', company, sk.s, kw.s)), 'B')
        || setweight(to_tsvector('english'::regconfig,
                                 left(concat_ws(' ', doc ->> 'description', rq.s, ql.s), 200000)), 'C')
      FROM (SELECT string_agg(d.skill, ' ' ORDER BY d.src, d.pos) AS s
           FROM (SELECT DISTINCT ON (lower(x.skill)) x.skill, x.src, x.pos
                   FROM (SELECT p.src, e.pos,
                                btrim(CASE jsonb_typeof(e.value)
                                          WHEN 'string' THEN e.value #>> '{}'
                                          WHEN 'object' THEN
                                              CASE WHEN jsonb_typeof(e.value -> 'name') = 'string'
                                                   THEN e.value ->> 'name' END
                                      END) AS skill
                           FROM (VALUES (1, 'lax $.skills[*]'::jsonpath),
                                        (2, 'lax $.technical_skills[*]'::jsonpath),
                                        (3, 'lax $.soft_skills[*]'::jsonpath),
                                        (4, 'lax $.work_experience[*].skills[*]'::jsonpath),
                                        (5, 'lax $.experience[*].skills[*]'::jsonpath)) AS p(src, path)
                          CROSS JOIN LATERAL jsonb_path_query(doc, p.path) WITH ORDINALITY AS e(value, pos)) AS x
                  WHERE x.skill <> ''
                  ORDER BY lower(x.skill), x.src, x.pos) AS d) AS sk,
           (SELECT string_agg(v.value #>> '{}', ' ') AS s
           FROM jsonb_path_query(doc -> 'keywords', 'strict $.** ? (@.type() == "string")') AS v(value)) AS kw,
           (SELECT string_agg(v.value #>> '{}', ' ') AS s
           FROM jsonb_path_query(doc -> 'requirements', 'strict $.** ? (@.type() == "string")') AS v(value)) AS rq,
           (SELECT string_agg(v.value #>> '{}', ' ') AS s
           FROM jsonb_path_query(doc -> 'qualifications', 'strict $.** ? (@.type() == "string")') AS v(value)) AS ql
);

CREATE OR REPLACE FUNCTION calculate_keyword_match(resume jsonb, job jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (
    WITH terms AS (
        SELECT DISTINCT lower(t.term) AS term
        FROM (
            SELECT btrim(CASE jsonb_typeof(k.value)
                             WHEN 'string' THEN k.value #>> '{}'
                             WHEN 'object' THEN
                                 CASE WHEN jsonb_typeof(k.value -> 'name') = 'string'
                                      THEN k.value ->> 'name' END
                         END)
            FROM jsonb_path_query(job, 'lax $.keywords[*]') AS k(value)
            UNION ALL
            SELECT unnest(extract_skills(job))
        ) AS t(term)
        WHERE t.term <> ''
    ), body AS (
        SELECT ' ' || lower(coalesce(jsonb_text_values(resume), '')) || ' ' AS txt
    )
    SELECT CASE WHEN count(*) = 0 THEN 0.00
                ELSE round(100.0 * count(*) FILTER (
                         WHERE body.txt ~ ('(^|[^[:alnum:]])'
                                           || regexp_replace(terms.term, '([.^$*+?(){}|\\[\]])', '\\\1', 'g')
                                           || '($|[^[:alnum:]])')) / count(*), 2)
           END
    FROM terms CROSS JOIN body
);

CREATE OR REPLACE FUNCTION calculate_ats_score(resume jsonb, job jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (
    WITH parts AS (
        SELECT
            calculate_keyword_match(resume, job) AS keyword_match,
            (SELECT CASE WHEN count(*) = 0 THEN 0.00
                         ELSE round(100.0 * count(*) FILTER (
                                  WHERE lower(js.skill) IN (SELECT lower(rs.skill)
                                                            FROM unnest(extract_skills(resume)) AS rs(skill)))
                              / count(*), 2) END
             FROM unnest(extract_skills(job)) AS js(skill)) AS skills_match,
            (SELECT round(least(100, 25 * count(*))::numeric, 2)
             FROM jsonb_path_query(resume, 'lax $.work_experience[*] ? (@.type() == "object")')) AS experience,
            (SELECT CASE WHEN count(*) > 0 THEN 100.00 ELSE 0.00 END
             FROM jsonb_path_query(resume, 'lax $.education[*] ? (@.type() == "object" || @.type() == "string")')) AS education,
            round((20 * (
                coalesce(nullif(btrim(coalesce(resume -> 'contact_info' ->> 'full_name', resume ->> 'name')), '') IS NOT NULL, false)::int
              + coalesce(coalesce(nullif(btrim(resume -> 'contact_info' ->> 'email'), ''),
                                  nullif(btrim(resume -> 'contact_info' ->> 'phone'), '')) IS NOT NULL, false)::int
              + coalesce(jsonb_typeof(resume -> 'summary') = 'string' AND btrim(resume ->> 'summary') <> '', false)::int
              + coalesce(jsonb_path_exists(resume, 'lax $.work_experience[*] ? (@.type() == "object")'), false)::int
              + coalesce(cardinality(extract_skills(resume)) > 0, false)::int))::numeric, 2) AS completeness
    )
    SELECT jsonb_build_object(
        'keyword_match', p.keyword_match,
        'skills_match', p.skills_match,
        'experience', p.experience,
        'education', p.education,
        'completeness', p.completeness,
        'overall', round(0.35 * p.keyword_match + 0.25 * p.skills_match + 0.20 * p.experience
                         + 0.10 * p.education + 0.10 * p.completeness, 2),
        'weights', jsonb_build_object('keyword_match', 0.35, 'skills_match', 0.25,
                                      'experience', 0.20, 'education', 0.10, 'completeness', 0.10))
    FROM parts AS p
);

CREATE OR REPLACE FUNCTION search_documents(query text, doc_type text DEFAULT NULL,
                                            user_id text DEFAULT NULL, max_results int DEFAULT 20)
RETURNS TABLE (document_type text, document_id uuid, user_id text, title text, rank real,
               snippet text)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    -- Kept a single inlinable SELECT (sql, stable, not strict, no SET): the planner inlines it
    -- into the caller, folds the constant query, and uses the full-text GIN indexes of 005.
    SELECT h.document_type, h.document_id, h.user_id, h.title, h.rank,
           regexp_replace(ts_headline('english'::regconfig,
                       CASE h.document_type
                           WHEN 'resume' THEN resume_search_text(h.parsed_data)
                           ELSE job_search_text(h.raw_title, h.raw_company, h.parsed_data) END,
                       websearch_to_tsquery('english'::regconfig, search_documents.query),
                       'StartSel=<b>, StopSel=</b>, MaxWords=35, MinWords=15, MaxFragments=2, FragmentDelimiter=" ... "'), '\s+', ' ', 'g')
    FROM (
        SELECT 'resume'::text AS document_type, r.id AS document_id, r.user_id,
               coalesce(nullif(r.parsed_data -> 'contact_info' ->> 'full_name', ''), r.filename)::text AS title,
               NULL::text AS raw_title, NULL::text AS raw_company, r.parsed_data, r.created_at,
               ts_rank(resume_search_vector(r.parsed_data),
                       websearch_to_tsquery('english'::regconfig, search_documents.query)) AS rank
        FROM resume_documents AS r
        WHERE (search_documents.doc_type IS NULL OR search_documents.doc_type = 'resume')
          AND (search_documents.user_id IS NULL OR r.user_id = search_documents.user_id)
          AND r.is_active AND r.deleted_at IS NULL
          AND (r.expires_at IS NULL OR r.expires_at > now())
          AND resume_search_vector(r.parsed_data)
              @@ websearch_to_tsquery('english'::regconfig, search_documents.query)
        UNION ALL
        SELECT 'job'::text, j.id, j.user_id,
               coalesce(nullif(j.title, ''), j.company)::text,
               j.title::text, j.company::text, j.parsed_data, j.created_at,
               ts_rank(job_search_vector(j.title, j.company, j.parsed_data),
                       websearch_to_tsquery('english'::regconfig, search_documents.query))
        FROM job_documents AS j
        WHERE (search_documents.doc_type IS NULL OR search_documents.doc_type = 'job')
          AND (search_documents.user_id IS NULL OR j.user_id = search_documents.user_id)
          AND j.is_active AND j.deleted_at IS NULL
          AND (j.expires_at IS NULL OR j.expires_at > now())
          AND job_search_vector(j.title, j.company, j.parsed_data)
              @@ websearch_to_tsquery('english'::regconfig, search_documents.query)
        ORDER BY rank DESC, created_at DESC, document_id
        LIMIT greatest(coalesce(search_documents.max_results, 20), 0)
    ) AS h
    ORDER BY h.rank DESC, h.created_at DESC, h.document_id
$$;

CREATE OR REPLACE FUNCTION get_user_documents(user_id text, doc_type text DEFAULT NULL,
                                              page_size int DEFAULT 50, page int DEFAULT 0)
RETURNS TABLE (document_type text, document_id uuid, title text, status text,
               created_at timestamptz, updated_at timestamptz, parsed_data jsonb,
               total_count bigint)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT d.document_type, d.document_id, d.title, d.status, d.created_at, d.updated_at,
           d.parsed_data, count(*) OVER () AS total_count
    FROM (
        SELECT 'resume'::text, r.id, r.filename::text, r.status::text, r.created_at, r.updated_at,
               r.parsed_data
        FROM resume_documents AS r
        WHERE r.user_id = get_user_documents.user_id
          AND (get_user_documents.doc_type IS NULL OR get_user_documents.doc_type = 'resume')
          AND r.is_active AND r.deleted_at IS NULL AND (r.expires_at IS NULL OR r.expires_at > now())
        UNION ALL
        SELECT 'job', j.id, coalesce(nullif(j.title, ''), j.company)::text, j.status::text,
               j.created_at, j.updated_at, j.parsed_data
        FROM job_documents AS j
        WHERE j.user_id = get_user_documents.user_id
          AND (get_user_documents.doc_type IS NULL OR get_user_documents.doc_type = 'job')
          AND j.is_active AND j.deleted_at IS NULL AND (j.expires_at IS NULL OR j.expires_at > now())
        UNION ALL
        SELECT 'optimization', o.id, o.optimization_type::text, o.status::text, o.created_at,
               o.updated_at, o.parsed_data
        FROM optimization_results AS o
        WHERE o.user_id = get_user_documents.user_id
          AND (get_user_documents.doc_type IS NULL OR get_user_documents.doc_type = 'optimization')
          AND o.is_active AND o.deleted_at IS NULL AND (o.expires_at IS NULL OR o.expires_at > now())
        UNION ALL
        SELECT 'research', s.id,
               coalesce(nullif(concat_ws(' at ', nullif(s.job_title, ''), nullif(s.company, '')), ''),
                        s.report_type)::text,
               s.status::text, s.created_at, s.updated_at, s.parsed_data
        FROM research_results AS s
        WHERE s.user_id = get_user_documents.user_id
          AND (get_user_documents.doc_type IS NULL OR get_user_documents.doc_type = 'research')
          AND s.is_active AND s.deleted_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > now())
    ) AS d (document_type, document_id, title, status, created_at, updated_at, parsed_data)
    ORDER BY d.created_at DESC, d.document_id DESC
    LIMIT greatest(coalesce(get_user_documents.page_size, 50), 0)
    OFFSET greatest(coalesce(get_user_documents.page, 0), 0)::bigint
           * greatest(coalesce(get_user_documents.page_size, 50), 0)
$$;

CREATE OR REPLACE FUNCTION cleanup_old_documents() RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n     integer;
    total integer := 0;
BEGIN
    -- Soft delete (see the header). Children first, so that an optimization or research row
    -- never stays active longer than the resume or job it belongs to in one run.
    UPDATE optimization_results SET is_active = false, deleted_at = now(), updated_at = now()
     WHERE expires_at <= now() AND deleted_at IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    UPDATE research_results SET is_active = false, deleted_at = now(), updated_at = now()
     WHERE expires_at <= now() AND deleted_at IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    UPDATE job_documents SET is_active = false, deleted_at = now(), updated_at = now()
     WHERE expires_at <= now() AND deleted_at IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    UPDATE resume_documents SET is_active = false, deleted_at = now(), updated_at = now()
     WHERE expires_at <= now() AND deleted_at IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    RETURN total;
END
$$;
