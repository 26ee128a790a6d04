-- 014_search_tables.sql: the full-text vectors are kept in search tables, recomputed only when
-- the text they are built from changes.
--
-- 005 indexed resumes and jobs with expression indexes (GIN over resume_search_vector(parsed_data)
-- and job_search_vector(title, company, parsed_data)). PostgreSQL re-evaluates an index
-- expression on every update that is not HOT, and no update of a document row is HOT (status,
-- metadata and user_id are indexed): a change of a resume's status re-tokenised the whole resume,
-- 0.9 ms of the 1.1 ms its update cost (EXPLAIN ANALYZE of 350 status updates: 372 ms with the
-- expression index, 65 ms without it). The application pays this on its updates as `etl sync` does.
--
-- Now each vector is a row of resume_documents_search / job_documents_search, written by a
-- statement-level trigger only where the row is new or a digest of its text differs from the
-- stored one, and indexed there (GIN). search_documents() reads the vectors from these tables;
-- its results are unchanged (the same vectors, ranks and snippets). The document tables keep
-- their columns: nothing the application reads or writes changes.
--
-- Creates: resume_documents_search, job_documents_search (id, text_md5, search_vector) with GIN
--   indexes idx_resume_documents_search_vector and idx_job_documents_search_vector;
--   etl_search_vectors(): the trigger function (SECURITY DEFINER: a role that writes documents
--   needs no rights on the search tables); etl_fill_search_vectors(table): every missing or
--   outdated vector of a table, set-based (a first load into empty tables defers the vectors
--   with the search index: etl/indexes.py lists the index in etl_deferred_indexes, the trigger
--   skips them while it is listed, the index's build fills them first); triggers <t>_search_insert|update|delete|truncate
--   on resume_documents and job_documents, ENABLE ALWAYS (a replica-role session, e.g. logical
--   replication's apply, keeps the vectors current too);
--   verify_schema_integrity(): 007's checks (now verify_schema_integrity_core()), with "full-text
--   GIN" satisfied by the search table's index;
--   rollback.rollback_search_tables(restore_indexes boolean DEFAULT true).
-- Replaces: search_documents() (004; same signature and results).
-- Drops: idx_resume_documents_fts, idx_job_documents_fts (005).
-- Undone by: rollback.rollback_search_tables(): 005's expression indexes and 004's
--   search_documents() back, the search tables, triggers and function gone, 007's
--   verify_schema_integrity() back, 014 forgotten in migration_history.

CREATE TABLE IF NOT EXISTS resume_documents_search (
    id            uuid PRIMARY KEY,  -- resume_documents.id (kept by the trigger, no FK check per row)
    text_md5      text NOT NULL,     -- md5 of the text the vector is built from
    search_vector tsvector
);
CREATE TABLE IF NOT EXISTS job_documents_search (
    id            uuid PRIMARY KEY,  -- job_documents.id
    text_md5      text NOT NULL,
    search_vector tsvector
);

-- One function for both tables and every event. A row's vector is (re)computed where the row
-- has none or its digest differs: new rows, changed text, and a row whose vector is missing
-- (written while the triggers were disabled) heals on its next update. The digest of a resume
-- is md5(parsed_data::text); of a job, of (title, company, parsed_data). Equal jsonb values
-- have equal text; a value that compares equal with another spelling (1.0, 1.00) only costs a
-- recomputation.
-- Each statement reaches the search table by its primary key only (a correlated subquery, or
-- = ANY of an array): as joins, the planner hashed the whole search table for every statement
-- (30 ms per merge statement at 22k resumes, growing with the table).
CREATE OR REPLACE FUNCTION etl_search_vectors() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    v_gone uuid[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE format('TRUNCATE %I', TG_TABLE_NAME || '_search');
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        SELECT array_agg(o.id) INTO v_gone FROM old_rows o;
    ELSIF TG_OP = 'UPDATE' THEN  -- rows whose id changed
        SELECT array_agg(g.id) INTO v_gone FROM (SELECT id FROM old_rows EXCEPT SELECT id FROM new_rows) g;
    END IF;
    IF v_gone IS NOT NULL THEN
        EXECUTE format('DELETE FROM %I WHERE id = ANY ($1)', TG_TABLE_NAME || '_search') USING v_gone;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN NULL;
    END IF;
    -- The first load into empty tables (etl/indexes.py) drops the search table's index with the
    -- document table's and lists it in etl_deferred_indexes: the vectors are then computed with
    -- its rebuild (etl_fill_search_vectors(), on a connection of their own), not row by row.
    IF to_regclass('public.etl_deferred_indexes') IS NOT NULL AND EXISTS (
           SELECT 1 FROM public.etl_deferred_indexes d
            WHERE position(' ON public.' || TG_TABLE_NAME || '_search USING ' IN d.definition) > 0) THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'resume_documents' THEN
        INSERT INTO resume_documents_search AS s (id, text_md5, search_vector)
        SELECT n.id, x.digest, resume_search_vector(n.parsed_data)
          FROM new_rows n
         CROSS JOIN LATERAL (SELECT md5(coalesce(n.parsed_data::text, ''))) AS x(digest)
         WHERE x.digest IS DISTINCT FROM (SELECT c.text_md5 FROM resume_documents_search c WHERE c.id = n.id)
        ON CONFLICT (id) DO UPDATE SET text_md5 = EXCLUDED.text_md5, search_vector = EXCLUDED.search_vector;
    ELSE
        INSERT INTO job_documents_search AS s (id, text_md5, search_vector)
        SELECT n.id, x.digest, job_search_vector(n.title, n.company, n.parsed_data)
          FROM new_rows n
         CROSS JOIN LATERAL (SELECT md5(jsonb_build_array(n.title, n.company, n.parsed_data)::text)) AS x(digest)
         WHERE x.digest IS DISTINCT FROM (SELECT c.text_md5 FROM job_documents_search c WHERE c.id = n.id)
        ON CONFLICT (id) DO UPDATE SET text_md5 = EXCLUDED.text_md5, search_vector = EXCLUDED.search_vector;
    END IF;
    RETURN NULL;
END
$$;

-- Every vector of a table that is missing or out of date, set-based (after a load that deferred
-- them, and for an operator who disabled the triggers); returns how many were written.
CREATE OR REPLACE FUNCTION etl_fill_search_vectors(p_table regclass) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    v_n bigint;
BEGIN
    IF p_table = 'public.resume_documents'::regclass THEN
        INSERT INTO resume_documents_search AS s (id, text_md5, search_vector)
        SELECT r.id, x.digest, resume_search_vector(r.parsed_data)
          FROM resume_documents r
         CROSS JOIN LATERAL (SELECT md5(coalesce(r.parsed_data::text, ''))) AS x(digest)
         WHERE x.digest IS DISTINCT FROM (SELECT c.text_md5 FROM resume_documents_search c WHERE c.id = r.id)
        ON CONFLICT (id) DO UPDATE SET text_md5 = EXCLUDED.text_md5, search_vector = EXCLUDED.search_vector;
    ELSIF p_table = 'public.job_documents'::regclass THEN
        INSERT INTO job_documents_search AS s (id, text_md5, search_vector)
        SELECT j.id, x.digest, job_search_vector(j.title, j.company, j.parsed_data)
          FROM job_documents j
         CROSS JOIN LATERAL (SELECT md5(jsonb_build_array(j.title, j.company, j.parsed_data)::text)) AS x(digest)
         WHERE x.digest IS DISTINCT FROM (SELECT c.text_md5 FROM job_documents_search c WHERE c.id = j.id)
        ON CONFLICT (id) DO UPDATE SET text_md5 = EXCLUDED.text_md5, search_vector = EXCLUDED.search_vector;
    ELSE
        RAISE EXCEPTION '% has no search table', p_table;
    END IF;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['resume_documents', 'job_documents'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %1$I ON %2$I', t || '_search_insert', t);
        EXECUTE format('CREATE TRIGGER %1$I AFTER INSERT ON %2$I REFERENCING NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION etl_search_vectors()', t || '_search_insert', t);
        EXECUTE format('DROP TRIGGER IF EXISTS %1$I ON %2$I', t || '_search_update', t);
        EXECUTE format('CREATE TRIGGER %1$I AFTER UPDATE ON %2$I
                        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION etl_search_vectors()', t || '_search_update', t);
        EXECUTE format('DROP TRIGGER IF EXISTS %1$I ON %2$I', t || '_search_delete', t);
        EXECUTE format('CREATE TRIGGER %1$I AFTER DELETE ON %2$I REFERENCING OLD TABLE AS old_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION etl_search_vectors()', t || '_search_delete', t);
        EXECUTE format('DROP TRIGGER IF EXISTS %1$I ON %2$I', t || '_search_truncate', t);
        EXECUTE format('CREATE TRIGGER %1$I AFTER TRUNCATE ON %2$I
                        FOR EACH STATEMENT EXECUTE FUNCTION etl_search_vectors()', t || '_search_truncate', t);
        -- fire in replica-role sessions too
        EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER %I', t, t || '_search_insert');
        EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER %I', t, t || '_search_update');
        EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER %I', t, t || '_search_delete');
        EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER %I', t, t || '_search_truncate');
    END LOOP;
END
$$;

-- The vectors of the rows already there (what building 005's index computed).
SELECT etl_fill_search_vectors('public.resume_documents'), etl_fill_search_vectors('public.job_documents');

-- Short pending lists (GIN fastupdate): every search scans the whole list, and the planner
-- prices it in. With the default 4 MB, a search of 10k resumes read the search table
-- sequentially (5.8 ms; 0.1 ms through the index). Flushing the list costs more per row the
-- shorter it is: 400 real-shaped resume vectors (4 kB each) took 200-365 ms to insert with
-- 64 kB, 80-85 ms with 1 MB, 55-86 ms with 4 MB; jobs' vectors are small and few.
CREATE INDEX IF NOT EXISTS idx_resume_documents_search_vector
    ON resume_documents_search USING gin (search_vector) WITH (gin_pending_list_limit = 1024);
CREATE INDEX IF NOT EXISTS idx_job_documents_search_vector
    ON job_documents_search USING gin (search_vector) WITH (gin_pending_list_limit = 64);
DROP INDEX IF EXISTS idx_resume_documents_fts;
DROP INDEX IF EXISTS idx_job_documents_fts;

-- 004's search_documents() with the vectors read from the search tables: a single inlinable
-- SELECT as before, so the planner folds the query and uses the search tables' GIN indexes.
CREATE OR REPLACE FUNCTION search_documents(query text, doc_type text DEFAULT NULL,
                                            user_id text DEFAULT NULL, max_results int DEFAULT 20)
RETURNS TABLE (document_type text, document_id uuid, user_id text, title text, rank real,
               snippet text)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
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
               ts_rank(v.search_vector,
                       websearch_to_tsquery('english'::regconfig, search_documents.query)) AS rank
        FROM resume_documents AS r
        JOIN resume_documents_search AS v ON v.id = r.id
        WHERE (search_documents.doc_type IS NULL OR search_documents.doc_type = 'resume')
          AND (search_documents.user_id IS NULL OR r.user_id = search_documents.user_id)
          AND r.is_active AND r.deleted_at IS NULL
          AND (r.expires_at IS NULL OR r.expires_at > now())
          AND v.search_vector @@ websearch_to_tsquery('english'::regconfig, search_documents.query)
        UNION ALL
        SELECT 'job'::text, j.id, j.user_id,
               coalesce(nullif(j.title, ''), j.company)::text,
               j.title::text, j.company::text, j.parsed_data, j.created_at,
               ts_rank(v.search_vector,
                       websearch_to_tsquery('english'::regconfig, search_documents.query))
        FROM job_documents AS j
        JOIN job_documents_search AS v ON v.id = j.id
        WHERE (search_documents.doc_type IS NULL OR search_documents.doc_type = 'job')
          AND (search_documents.user_id IS NULL OR j.user_id = search_documents.user_id)
          AND j.is_active AND j.deleted_at IS NULL
          AND (j.expires_at IS NULL OR j.expires_at > now())
          AND v.search_vector @@ websearch_to_tsquery('english'::regconfig, search_documents.query)
        ORDER BY rank DESC, created_at DESC, document_id
        LIMIT greatest(coalesce(search_documents.max_results, 20), 0)
    ) AS h
    ORDER BY h.rank DESC, h.created_at DESC, h.document_id
$$;

-- 007's checks look for the full-text GIN index on the document table itself; it is on the
-- search table now. 007's function keeps its body under another name and this one corrects
-- those two checks.
DO $$
BEGIN
    IF to_regprocedure('public.verify_schema_integrity_core()') IS NULL THEN
        ALTER FUNCTION public.verify_schema_integrity() RENAME TO verify_schema_integrity_core;
    END IF;
END
$$;
CREATE OR REPLACE FUNCTION verify_schema_integrity()
RETURNS TABLE ("check" text, status text, detail text)
LANGUAGE sql STABLE AS $$
    SELECT v."check",
           CASE WHEN s.tbl IS NULL THEN v.status WHEN s.ok THEN 'ok' ELSE 'missing' END,
           CASE WHEN s.tbl IS NULL THEN v.detail WHEN s.ok THEN 'on ' || s.tbl || '_search'
                ELSE 'migration 014' END
      FROM verify_schema_integrity_core() v
      LEFT JOIN LATERAL (
            SELECT t.tbl, EXISTS (
                       SELECT 1 FROM pg_index x
                         JOIN pg_class i ON i.oid = x.indexrelid
                         JOIN pg_am am ON am.oid = i.relam AND am.amname = 'gin'
                        WHERE x.indrelid = to_regclass('public.' || t.tbl || '_search')
                          AND pg_get_indexdef(x.indexrelid) LIKE '%search_vector%') AS ok
              FROM (VALUES ('resume_documents'), ('job_documents')) t(tbl)
             WHERE v."check" = format('index %s: full-text GIN', t.tbl)) s ON true
$$;

-- restore_indexes => false: 005's expression indexes are not rebuilt (etl rollback passes it when
-- it drops 004's functions or the tables next, which would drop them again).
CREATE OR REPLACE FUNCTION rollback.rollback_search_tables(restore_indexes boolean DEFAULT true)
RETURNS SETOF text LANGUAGE plpgsql AS $rb$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['resume_documents', 'job_documents'] LOOP
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('public.' || t)
                                             AND tgname LIKE t || '\_search\_%') THEN
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON public.%I', t || '_search_insert', t);
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON public.%I', t || '_search_update', t);
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON public.%I', t || '_search_delete', t);
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON public.%I', t || '_search_truncate', t);
            RETURN NEXT format('dropped the search triggers of %s', t);
        END IF;
        IF to_regclass('public.' || t || '_search') IS NOT NULL THEN
            EXECUTE format('DROP TABLE public.%I', t || '_search');
            RETURN NEXT format('dropped table %s_search', t);
        END IF;
    END LOOP;
    IF to_regprocedure('public.etl_search_vectors()') IS NOT NULL THEN
        DROP FUNCTION public.etl_search_vectors();
        RETURN NEXT 'dropped function etl_search_vectors()';
    END IF;
    IF to_regprocedure('public.etl_fill_search_vectors(regclass)') IS NOT NULL THEN
        DROP FUNCTION public.etl_fill_search_vectors(regclass);
        RETURN NEXT 'dropped function etl_fill_search_vectors(regclass)';
    END IF;
    IF to_regclass('public.etl_deferred_indexes') IS NOT NULL THEN  -- a search index deferred by a load
        DELETE FROM public.etl_deferred_indexes WHERE definition LIKE '% ON public.%\_search USING %';
    END IF;
    IF restore_indexes AND to_regclass('public.resume_documents') IS NOT NULL
       AND to_regclass('public.idx_resume_documents_fts') IS NULL
       AND to_regprocedure('public.resume_search_vector(jsonb)') IS NOT NULL THEN
        CREATE INDEX IF NOT EXISTS idx_resume_documents_fts
            ON public.resume_documents USING gin (public.resume_search_vector(parsed_data));
        RETURN NEXT 'created index idx_resume_documents_fts';
    END IF;
    IF restore_indexes AND to_regclass('public.job_documents') IS NOT NULL
       AND to_regclass('public.idx_job_documents_fts') IS NULL
       AND to_regprocedure('public.job_search_vector(text,text,jsonb)') IS NOT NULL THEN
        CREATE INDEX IF NOT EXISTS idx_job_documents_fts
            ON public.job_documents USING gin (public.job_search_vector(title, company, parsed_data));
        RETURN NEXT 'created index idx_job_documents_fts';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_proc WHERE oid = to_regprocedure('public.search_documents(text,text,text,integer)')
                                       AND prosrc LIKE '%resume_documents_search%') THEN  -- 014's body
        -- 004's body, word for word
        CREATE OR REPLACE FUNCTION public.search_documents(query text, doc_type text DEFAULT NULL,
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
        RETURN NEXT 'restored search_documents() of 004';
    END IF;
    IF to_regprocedure('public.verify_schema_integrity_core()') IS NOT NULL THEN
        DROP FUNCTION IF EXISTS public.verify_schema_integrity();
        ALTER FUNCTION public.verify_schema_integrity_core() RENAME TO verify_schema_integrity;
        RETURN NEXT 'restored verify_schema_integrity() of 007';
    END IF;
    IF to_regclass('public.migration_history') IS NOT NULL THEN
        DELETE FROM public.migration_history WHERE version = '014';
        IF FOUND THEN
            RETURN NEXT 'deleted migration_history 014';
        END IF;
    END IF;
END
$rb$;
