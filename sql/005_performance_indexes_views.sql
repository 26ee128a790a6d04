-- 005_performance_indexes_views.sql: indexes, materialized views and their maintenance functions.
--
-- Creates (every object IF NOT EXISTS / CREATE OR REPLACE):
--   extensions pg_trgm, bloom (required: the file stops with a message naming a missing one)
--   on each of resume_documents, job_documents, optimization_results, research_results (<t>):
--     idx_<t>_parsed_data_gin   GIN (parsed_data jsonb_path_ops)   containment (@>, @?, @@)
--     idx_<t>_metadata_gin      GIN (metadata)  default jsonb_ops: containment AND key existence
--                               (?, ?|, ?&), e.g. metadata ? 'extra' or metadata->'arango' lookups
--     idx_<t>_user_created      btree (user_id, created_at DESC)
--     idx_<t>_user_status       btree (user_id, status)
--     idx_<t>_active_user_created  btree (user_id, created_at DESC)
--                               WHERE is_active AND deleted_at IS NULL   (get_user_documents)
--     idx_<t>_expires_at        btree (expires_at)
--                               WHERE deleted_at IS NULL AND expires_at IS NOT NULL
--                               (cleanup_old_documents)
--   idx_resume_documents_fts    GIN (resume_search_vector(parsed_data))
--   idx_job_documents_fts       GIN (job_search_vector(title, company, parsed_data))
--   idx_resume_documents_filename_trgm  GIN (filename gin_trgm_ops)
--   idx_job_documents_title_trgm        GIN (title gin_trgm_ops)
--   idx_job_documents_company_trgm      GIN (company gin_trgm_ops)
--   idx_job_documents_bloom     bloom (company, location, remote_type, status)
--   materialized views, each with a unique index (needed for REFRESH ... CONCURRENTLY):
--     user_document_stats   unique index user_document_stats_user_id_key (user_id)
--     top_skills_view       unique index top_skills_view_skill_key (skill)
--     recent_activity_view  unique index recent_activity_view_user_action_key (user_id, action)
--   functions refresh_materialized_views()
--               returns table(view_name text, concurrent boolean, duration_ms numeric,
--                             row_count bigint)
--             analyze_index_usage()
--               returns table(table_name text, index_name text, index_scans bigint,
--                             index_size_bytes bigint, index_size text, unused boolean)
-- Undone by: rollback.drop_helper_functions() (drops these views, functions and indexes
-- together with 004's functions; the extensions stay, other objects may use them).
--
-- Decisions:
--  * Full text: the GIN indexes are over the very expressions search_documents (004) filters
--    on, so the planner uses them; they are not partial, so other queries (any is_active) can
--    use them too. Partial indexes cover the hot paths for active rows instead: "unexpired"
--    cannot be part of an index predicate (now() is not immutable), so the active partial
--    index has is_active AND deleted_at IS NULL and the expiry test is a filter.
--  * The full composites (user_id, created_at DESC) and (user_id, status) serve the queries
--    that include inactive rows (ETL reconciliation, admin, per-status counts).
--  * bloom on job_documents (company, location, remote_type, status): ad-hoc equality filters
--    on any subset of these four low-selectivity columns are served by one small index instead
--    of a btree per combination. bloom has operator classes for int4 and text only; varchar
--    columns are binary-compatible with text, so no casts are needed. Signature length 80
--    bits, 2 bits per column (the defaults).
--  * Trigram GIN indexes serve similarity (%, similarity()) and ILIKE '%...%' searches on job
--    title/company and resume filename.
--  * Materialized views count active, not deleted rows (is_active AND deleted_at IS NULL).
--    user_document_stats: per user, counts per document type, total, last activity
--    (latest created_at/updated_at) and average optimization ats_score (2 decimals).
--    top_skills_view: skill = lower-cased name, display_name = its most common spelling, and
--    how many resumes / jobs list it (extract_skills already de-duplicates per document).
--    recent_activity_view: document_audit_log of the last 30 days (as of the refresh) per user
--    and action: events, distinct documents, first and last time; audit rows without a user
--    are grouped under user_id ''.
--  * The views are created WITH DATA (cheap on an empty database); refresh_materialized_views()
--    refreshes CONCURRENTLY a view that is populated (readers are not blocked) and plainly one
--    that is not, and reports each view's time in milliseconds.
--  * analyze_index_usage(): every index of the current database's user tables, with scans
--    since the statistics were reset; unused = no scans and not backing a primary key or
--    unique constraint (those enforce rules even when never scanned).

DO $$
DECLARE
    ext text;
BEGIN
    FOREACH ext IN ARRAY ARRAY['pg_trgm', 'bloom'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = ext) THEN
            RAISE EXCEPTION 'required PostgreSQL extension "%" is not available on this server', ext
                USING HINT = 'install the server''s contrib modules (e.g. the postgresql-contrib package)';
        END IF;
    END LOOP;
END
$$;

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS bloom;

-- Indexes common to the four document tables.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['resume_documents', 'job_documents', 'optimization_results', 'research_results'] LOOP
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I USING gin (parsed_data jsonb_path_ops)',
                       'idx_' || t || '_parsed_data_gin', t);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I USING gin (metadata)',
                       'idx_' || t || '_metadata_gin', t);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (user_id, created_at DESC)',
                       'idx_' || t || '_user_created', t);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (user_id, status)',
                       'idx_' || t || '_user_status', t);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (user_id, created_at DESC) '
                       'WHERE is_active AND deleted_at IS NULL',
                       'idx_' || t || '_active_user_created', t);
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (expires_at) '
                       'WHERE deleted_at IS NULL AND expires_at IS NOT NULL',
                       'idx_' || t || '_expires_at', t);
    END LOOP;
END
$$;

-- Full text (the expressions of 004's search_documents).
CREATE INDEX IF NOT EXISTS idx_resume_documents_fts
    ON resume_documents USING gin (resume_search_vector(parsed_data));
CREATE INDEX IF NOT EXISTS idx_job_documents_fts
    ON job_documents USING gin (job_search_vector(title, company, parsed_data));

-- Trigram similarity.
CREATE INDEX IF NOT EXISTS idx_resume_documents_filename_trgm
    ON resume_documents USING gin (filename gin_trgm_ops);
CREATE INDEX IF NOT EXISTS idx_job_documents_title_trgm
    ON job_documents USING gin (title gin_trgm_ops);
CREATE INDEX IF NOT EXISTS idx_job_documents_company_trgm
    ON job_documents USING gin (company gin_trgm_ops);

-- Multi-column equality on any subset of the four columns.
CREATE INDEX IF NOT EXISTS idx_job_documents_bloom
    ON job_documents USING bloom (company, location, remote_type, status)
    WITH (length = 80, col1 = 2, col2 = 2, col3 = 2, col4 = 2);

CREATE MATERIALIZED VIEW IF NOT EXISTS user_document_stats AS
SELECT d.user_id,
       count(*) FILTER (WHERE d.document_type = 'resume')       AS resume_count,
       count(*) FILTER (WHERE d.document_type = 'job')          AS job_count,
       count(*) FILTER (WHERE d.document_type = 'optimization') AS optimization_count,
       count(*) FILTER (WHERE d.document_type = 'research')     AS research_count,
       count(*)                                                 AS total_documents,
       max(greatest(d.created_at, d.updated_at))                AS last_activity_at,
       round(avg(d.ats_score), 2)                               AS avg_ats_score
  FROM (SELECT 'resume'::text AS document_type, r.user_id, r.created_at, r.updated_at,
               NULL::numeric AS ats_score
          FROM resume_documents r WHERE r.is_active AND r.deleted_at IS NULL
        UNION ALL
        SELECT 'job', j.user_id, j.created_at, j.updated_at, NULL
          FROM job_documents j WHERE j.is_active AND j.deleted_at IS NULL
        UNION ALL
        SELECT 'optimization', o.user_id, o.created_at, o.updated_at, o.ats_score::numeric
          FROM optimization_results o WHERE o.is_active AND o.deleted_at IS NULL
        UNION ALL
        SELECT 'research', s.user_id, s.created_at, s.updated_at, NULL
          FROM research_results s WHERE s.is_active AND s.deleted_at IS NULL) AS d
 GROUP BY d.user_id
WITH DATA;

CREATE UNIQUE INDEX IF NOT EXISTS user_document_stats_user_id_key ON user_document_stats (user_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS top_skills_view AS
SELECT lower(s.skill)                                   AS skill,
       mode() WITHIN GROUP (ORDER BY s.skill)           AS display_name,
       count(*) FILTER (WHERE s.document_type = 'resume') AS resume_count,
       count(*) FILTER (WHERE s.document_type = 'job')    AS job_count,
       count(*)                                         AS total_count
  FROM (SELECT 'resume'::text AS document_type, x.skill
          FROM resume_documents r CROSS JOIN LATERAL unnest(extract_skills(r.parsed_data)) AS x(skill)
         WHERE r.is_active AND r.deleted_at IS NULL
        UNION ALL
        SELECT 'job', x.skill
          FROM job_documents j CROSS JOIN LATERAL unnest(extract_skills(j.parsed_data)) AS x(skill)
         WHERE j.is_active AND j.deleted_at IS NULL) AS s
 GROUP BY lower(s.skill)
WITH DATA;

CREATE UNIQUE INDEX IF NOT EXISTS top_skills_view_skill_key ON top_skills_view (skill);

CREATE MATERIALIZED VIEW IF NOT EXISTS recent_activity_view AS
SELECT coalesce(a.user_id, '')         AS user_id,
       a.action,
       count(*)                        AS event_count,
       count(DISTINCT a.document_id)   AS document_count,
       min(a.created_at)               AS first_at,
       max(a.created_at)               AS last_at
  FROM document_audit_log a
 WHERE a.created_at >= now() - interval '30 days'
 GROUP BY coalesce(a.user_id, ''), a.action
WITH DATA;

CREATE UNIQUE INDEX IF NOT EXISTS recent_activity_view_user_action_key
    ON recent_activity_view (user_id, action);

CREATE OR REPLACE FUNCTION refresh_materialized_views()
RETURNS TABLE (view_name text, concurrent boolean, duration_ms numeric, row_count bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v       text;
    started timestamptz;
BEGIN
    FOREACH v IN ARRAY ARRAY['user_document_stats', 'top_skills_view', 'recent_activity_view'] LOOP
        view_name := v;
        -- CONCURRENTLY needs a populated view (and the unique index this file creates).
        SELECT m.ispopulated INTO concurrent
          FROM pg_matviews m
         WHERE m.matviewname = v AND m.schemaname = current_schema();
        IF concurrent IS NULL THEN
            RAISE EXCEPTION 'materialized view %.% does not exist (apply sql/005)', current_schema(), v;
        END IF;
        started := clock_timestamp();
        IF concurrent THEN
            EXECUTE format('REFRESH MATERIALIZED VIEW CONCURRENTLY %I', v);
        ELSE
            EXECUTE format('REFRESH MATERIALIZED VIEW %I', v);
        END IF;
        duration_ms := round((extract(epoch FROM clock_timestamp() - started) * 1000)::numeric, 3);
        EXECUTE format('SELECT count(*) FROM %I', v) INTO row_count;
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION analyze_index_usage()
RETURNS TABLE (table_name text, index_name text, index_scans bigint, index_size_bytes bigint,
               index_size text, unused boolean)
LANGUAGE sql STABLE AS $$
    SELECT s.relname::text,
           s.indexrelname::text,
           s.idx_scan,
           pg_relation_size(s.indexrelid),
           pg_size_pretty(pg_relation_size(s.indexrelid)),
           s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary
      FROM pg_stat_user_indexes s
      JOIN pg_index i ON i.indexrelid = s.indexrelid
     ORDER BY (s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary) DESC,
              pg_relation_size(s.indexrelid) DESC, 1, 2
$$;
