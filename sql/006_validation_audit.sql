-- 006_validation_audit.sql: domains, JSONB validation, referential and business rules, audit.
--
-- Creates:
--  * domains email (practical address pattern), url (http/https); percentage is re-asserted
--    here but created by 003 (the score columns need it) and dropped with the tables;
--  * is_valid_email(text), validation_error(...), validate_document_data(...) and one CHECK
--    constraint <table>_document_valid per document table calling it. The validator accepts the
--    application's real shapes (source-data.md) and raises check_violation (23514) with a
--    message "<table>.<field>: <problem> (value: <first 80 chars>)" so the ETL's reject report
--    can show it;
--  * statement-level AFTER triggers with transition tables:
--      <table>_audit_insert / _audit_update / _audit_delete -> audit_document_changes()
--      <table>_user_exists_insert / _update                 -> check_document_user_exists()
--      optimization_results_parent_insert / _update         -> check_optimization_parent()
--    so a bulk load of 100k rows is checked and audited with a few set-based statements;
--  * unique index resume_documents_active_file_hash_key (business rule: no two active
--    resumes of one user with the same file_hash).
--
-- Validation rules (decisions where schema.md is silent are marked *):
--  * parsed_data and metadata must be JSON objects.
--  * {} is allowed for parsed_data; * a resume or job whose status is 'completed' must not be
--    empty (a completed parse produced content). Other statuses may be empty.
--  * list-valued fields must be arrays when present; * JSON null counts as absent.
--    resume: work_experience, experience, education, certifications, skills, technical_skills,
--    soft_skills, projects, languages, awards, publications; contact_info.links; and inside each
--    work_experience/experience entry: responsibilities, skills, achievements.
--    job: requirements, qualifications, benefits, skills, keywords, responsibilities,
--    preferred_qualifications, nice_to_have.
--  * contact_info must be an object when present; its email, when present and non-empty, must be
--    a string matching the email domain's pattern.
--  * job salary: salary_range/salary {min, max} or salary_min/salary_max: min <= max when both
--    are numbers.
--  * scores: the percentage columns (0..100, domain); * inside optimization parsed_data the
--    numeric keys ats_score, keyword_match_score, match_score, atsScore, keywordScore: 0..100.
--  * optimization parent: not itself, same user_id and same resume_id as the child.
--  * users: where a table public."user" exists (better-auth), every user_id must be one of its
--    ids; where it does not, the check is skipped.
--
-- Audit: action 'migrate' with run_id = current_setting('etl.run_id') when that is set and
-- non-empty (the ETL sets it transaction-locally), else 'insert'/'update'/'delete' with run_id
-- null. changes = {"op", "arango_id", "rev"} for inserts, {"op", "fields": [changed columns]}
-- for updates (updated_at excluded), {"op"} for deletes.
--
-- Function bodies name their objects with the schema (public.) because pg_restore runs with an
-- empty search_path while it re-validates CHECK constraints and fires triggers.
-- Idempotent: CREATE OR REPLACE, catalog checks before CREATE DOMAIN/ADD CONSTRAINT/CREATE
-- TRIGGER, CREATE ... IF NOT EXISTS.
-- Undone by: rollback.drop_validation_objects().

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                   WHERE t.typname = 'percentage' AND n.nspname = 'public') THEN
        CREATE DOMAIN public.percentage AS numeric
            CONSTRAINT percentage_range CHECK (VALUE >= 0 AND VALUE <= 100);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION is_valid_email(p text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$ SELECT length(p) <= 254
      AND p ~ '^[A-Za-z0-9.!#$%&''*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$' $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                   WHERE t.typname = 'email' AND n.nspname = 'public') THEN
        CREATE DOMAIN public.email AS text CONSTRAINT email_format CHECK (public.is_valid_email(VALUE));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                   WHERE t.typname = 'url' AND n.nspname = 'public') THEN
        CREATE DOMAIN public.url AS text
            CONSTRAINT url_format CHECK (VALUE ~* '^https?://[^\s/?#]+[^\s]*$');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION validation_error(p_table text, p_field text, p_value jsonb, p_problem text)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v text := coalesce(p_value::text, 'null');
BEGIN
    IF length(v) > 80 THEN
        v := left(v, 77) || '...';
    END IF;
    RAISE EXCEPTION '%.%: % (value: %)', p_table, p_field, p_problem, v
        USING ERRCODE = 'check_violation', TABLE = p_table, COLUMN = split_part(p_field, '.', 1);
END
$$;

CREATE OR REPLACE FUNCTION validate_document_data(p_table text, p_status text, p_data jsonb, p_metadata jsonb)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    k     text;
    v     jsonb;
    mn    jsonb;
    mx    jsonb;
    bad   record;
    lists text[];
BEGIN
    IF jsonb_typeof(p_data) IS DISTINCT FROM 'object' THEN
        RETURN public.validation_error(p_table, 'parsed_data', p_data, 'must be a JSON object');
    END IF;
    IF jsonb_typeof(p_metadata) IS DISTINCT FROM 'object' THEN
        RETURN public.validation_error(p_table, 'metadata', p_metadata, 'must be a JSON object');
    END IF;
    IF p_data = '{}'::jsonb THEN
        IF p_status = 'completed' AND p_table IN ('resume_documents', 'job_documents') THEN
            RETURN public.validation_error(p_table, 'parsed_data', p_data,
                                    'is empty but status is completed (empty only while not completed)');
        END IF;
        RETURN true;
    END IF;

    IF p_table = 'resume_documents' THEN
        lists := ARRAY['work_experience', 'experience', 'education', 'certifications', 'skills',
                       'technical_skills', 'soft_skills', 'projects', 'languages', 'awards', 'publications'];
    ELSIF p_table = 'job_documents' THEN
        lists := ARRAY['requirements', 'qualifications', 'benefits', 'skills', 'keywords',
                       'responsibilities', 'preferred_qualifications', 'nice_to_have'];
    ELSE
        lists := ARRAY[]::text[];
    END IF;
    FOREACH k IN ARRAY lists LOOP
        v := p_data -> k;
        IF v IS NOT NULL AND jsonb_typeof(v) NOT IN ('array', 'null') THEN
            RETURN public.validation_error(p_table, 'parsed_data.' || k, v, 'must be an array');
        END IF;
    END LOOP;

    IF p_table = 'resume_documents' THEN
        v := p_data -> 'contact_info';
        IF v IS NOT NULL AND jsonb_typeof(v) NOT IN ('object', 'null') THEN
            RETURN public.validation_error(p_table, 'parsed_data.contact_info', v, 'must be an object');
        END IF;
        IF jsonb_typeof(v) = 'object' THEN
            IF jsonb_typeof(v -> 'links') NOT IN ('array', 'null') THEN
                RETURN public.validation_error(p_table, 'parsed_data.contact_info.links', v -> 'links', 'must be an array');
            END IF;
            IF jsonb_typeof(v -> 'email') NOT IN ('null')
               AND (jsonb_typeof(v -> 'email') <> 'string'
                    OR (v ->> 'email' <> '' AND NOT public.is_valid_email(v ->> 'email'))) THEN
                RETURN public.validation_error(p_table, 'parsed_data.contact_info.email', v -> 'email',
                                        'is not a valid email address');
            END IF;
        END IF;
        FOREACH k IN ARRAY ARRAY['work_experience', 'experience'] LOOP
            IF jsonb_typeof(p_data -> k) = 'array' THEN
                SELECT a.ord, f.name, a.el -> f.name AS val INTO bad
                  FROM jsonb_array_elements(p_data -> k) WITH ORDINALITY AS a(el, ord)
                 CROSS JOIN (VALUES ('responsibilities'), ('skills'), ('achievements')) AS f(name)
                 WHERE jsonb_typeof(a.el) = 'object'
                   AND jsonb_typeof(a.el -> f.name) NOT IN ('array', 'null')
                 LIMIT 1;
                IF FOUND THEN
                    RETURN public.validation_error(p_table, format('parsed_data.%s[%s].%s', k, bad.ord - 1, bad.name),
                                            bad.val, 'must be an array');
                END IF;
            END IF;
        END LOOP;
    ELSIF p_table = 'job_documents' THEN
        v := coalesce(p_data -> 'salary_range', p_data -> 'salary');
        IF jsonb_typeof(v) = 'object' THEN
            mn := v -> 'min';
            mx := v -> 'max';
            k := CASE WHEN p_data ? 'salary_range' THEN 'parsed_data.salary_range' ELSE 'parsed_data.salary' END;
        ELSE
            mn := p_data -> 'salary_min';
            mx := p_data -> 'salary_max';
            v := jsonb_build_object('salary_min', mn, 'salary_max', mx);
            k := 'parsed_data.salary_min';
        END IF;
        IF jsonb_typeof(mn) = 'number' AND jsonb_typeof(mx) = 'number' AND mn::numeric > mx::numeric THEN
            RETURN public.validation_error(p_table, k, v, 'salary min is greater than max');
        END IF;
    ELSIF p_table = 'optimization_results' THEN
        FOREACH k IN ARRAY ARRAY['ats_score', 'keyword_match_score', 'match_score', 'atsScore', 'keywordScore'] LOOP
            v := p_data -> k;
            IF jsonb_typeof(v) = 'number' AND (v::numeric < 0 OR v::numeric > 100) THEN
                RETURN public.validation_error(p_table, 'parsed_data.' || k, v, 'score must be between 0 and 100');
            END IF;
        END LOOP;
    END IF;
    RETURN true;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['resume_documents', 'job_documents', 'optimization_results', 'research_results']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = t::regclass
                       AND conname = t || '_document_valid') THEN
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK '
                           '(validate_document_data(%L, status, parsed_data, metadata))',
                           t, t || '_document_valid', t);
        END IF;
    END LOOP;
END
$$;

CREATE UNIQUE INDEX IF NOT EXISTS resume_documents_active_file_hash_key
    ON resume_documents (user_id, file_hash)
    WHERE is_active AND deleted_at IS NULL AND file_hash IS NOT NULL;

-- Audit: one INSERT ... SELECT per statement over the transition table.
-- Transition tables have no statistics: the planner estimates one row each and joins OLD and
-- NEW with a nested loop, which made an UPDATE of 2,250 rows spend 2.3 s here (n^2). With
-- nested loops off for this function only, the join is a hash join: linear.
CREATE OR REPLACE FUNCTION audit_document_changes() RETURNS trigger
LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
    v_type text := TG_ARGV[0];
    v_run  text := nullif(current_setting('etl.run_id', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO public.document_audit_log (document_type, document_id, user_id, action, changes, run_id)
        SELECT v_type, n.id, n.user_id, CASE WHEN v_run IS NULL THEN 'insert' ELSE 'migrate' END,
               jsonb_strip_nulls(jsonb_build_object('op', 'insert',
                                                    'arango_id', n.metadata -> 'arango' -> '_id',
                                                    'rev', n.metadata -> 'arango' -> '_rev')),
               v_run
          FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO public.document_audit_log (document_type, document_id, user_id, action, changes, run_id)
        SELECT v_type, n.id, n.user_id, CASE WHEN v_run IS NULL THEN 'update' ELSE 'migrate' END,
               jsonb_strip_nulls(jsonb_build_object(
                   'op', 'update',
                   'rev', n.metadata -> 'arango' -> '_rev',
                   'fields', (SELECT coalesce(jsonb_agg(e.key ORDER BY e.key), '[]'::jsonb)
                                FROM jsonb_each(j.nj) e
                               WHERE e.key <> 'updated_at' AND e.value IS DISTINCT FROM j.oj -> e.key))),
               v_run
          FROM new_rows n
          JOIN old_rows o ON o.id = n.id
         CROSS JOIN LATERAL (SELECT to_jsonb(n) AS nj, to_jsonb(o) AS oj) j;
    ELSE
        INSERT INTO public.document_audit_log (document_type, document_id, user_id, action, changes, run_id)
        SELECT v_type, o.id, o.user_id, CASE WHEN v_run IS NULL THEN 'delete' ELSE 'migrate' END,
               jsonb_build_object('op', 'delete'), v_run
          FROM old_rows o;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION check_document_user_exists() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_user text;
BEGIN
    IF to_regclass('public."user"') IS NULL THEN
        RETURN NULL;  -- better-auth's table is not in this database: nothing to check against
    END IF;
    EXECUTE 'SELECT n.user_id FROM new_rows n
              WHERE NOT EXISTS (SELECT 1 FROM public."user" u WHERE u.id = n.user_id) LIMIT 1'
       INTO v_user;
    IF v_user IS NOT NULL THEN
        PERFORM public.validation_error(TG_TABLE_NAME, 'user_id', to_jsonb(v_user), 'no such user in table "user"');
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION check_optimization_parent() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.id, n.parent_optimization_id, n.user_id, n.resume_id,
           p.id AS p_id, p.user_id AS p_user_id, p.resume_id AS p_resume_id
      INTO bad
      FROM new_rows n
      LEFT JOIN public.optimization_results p ON p.id = n.parent_optimization_id
     WHERE n.parent_optimization_id IS NOT NULL
       AND (n.parent_optimization_id = n.id
            OR p.user_id IS DISTINCT FROM n.user_id
            OR p.resume_id IS DISTINCT FROM n.resume_id)
     LIMIT 1;
    IF FOUND THEN
        IF bad.parent_optimization_id = bad.id THEN
            PERFORM public.validation_error('optimization_results', 'parent_optimization_id',
                                     to_jsonb(bad.parent_optimization_id), 'an optimization cannot be its own parent');
        ELSIF bad.p_id IS NULL THEN
            RETURN NULL;  -- a missing parent is the foreign key's business, with its own message
        ELSIF bad.p_user_id IS DISTINCT FROM bad.user_id THEN
            PERFORM public.validation_error('optimization_results', 'parent_optimization_id',
                                     to_jsonb(bad.parent_optimization_id),
                                     format('parent belongs to user %s, not %s', bad.p_user_id, bad.user_id));
        ELSE
            PERFORM public.validation_error('optimization_results', 'parent_optimization_id',
                                     to_jsonb(bad.parent_optimization_id),
                                     format('parent is for resume %s, not %s', bad.p_resume_id, bad.resume_id));
        END IF;
    END IF;
    RETURN NULL;
END
$$;

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT t.tbl, t.doc_type, e.suffix, e.event, e.ref, f.kind, f.fn
          FROM (VALUES ('resume_documents', 'resume'), ('job_documents', 'job'),
                       ('optimization_results', 'optimization'), ('research_results', 'research')) AS t(tbl, doc_type)
         CROSS JOIN (VALUES ('insert', 'INSERT', 'REFERENCING NEW TABLE AS new_rows'),
                            ('update', 'UPDATE', 'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'),
                            ('delete', 'DELETE', 'REFERENCING OLD TABLE AS old_rows')) AS e(suffix, event, ref)
         CROSS JOIN (VALUES ('audit', 'audit_document_changes'), ('user_exists', 'check_document_user_exists'),
                            ('parent', 'check_optimization_parent')) AS f(kind, fn)
         WHERE (f.kind = 'audit'
                OR (f.kind = 'user_exists' AND e.suffix <> 'delete')
                OR (f.kind = 'parent' AND e.suffix <> 'delete' AND t.tbl = 'optimization_results'))
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = r.tbl::regclass AND NOT tgisinternal
                       AND tgname = format('%s_%s_%s', r.tbl, r.kind, r.suffix)) THEN
            EXECUTE format('CREATE TRIGGER %I AFTER %s ON %I %s FOR EACH STATEMENT EXECUTE FUNCTION %I(%L)',
                           format('%s_%s_%s', r.tbl, r.kind, r.suffix), r.event, r.tbl, r.ref, r.fn,
                           r.doc_type);
        END IF;
    END LOOP;
END
$$;
