-- 013_merge_update_first.sql: the merge core updates the rows that are already there with an
-- UPDATE, and upserts only the others.
--
-- 007's etl_merge_stage() merged the whole stage with one INSERT ... ON CONFLICT DO UPDATE.
-- PostgreSQL checks a proposed row (CHECK constraints: validate_document_data(), 006) before it
-- finds the conflict, then checks the updated row again: every update paid the validation
-- twice. `etl sync` applies mostly updates (a resume row's validation is ~0.25 ms); measured on
-- 5,000 mixed changes: validate_document_data() calls 7,554 -> 4,971 (one per row written),
-- PostgreSQL CPU of the apply -5% (docs/sync.md#measured). The result is the same: the same
-- value expressions (007's, with the stored row as `cur`), the same "unchanged rows are not
-- touched" comparison, the same actions returned; a row another writer inserts meanwhile still
-- takes 007's upsert. A migrate into empty tables has no row to update and is as before.
--
-- Replaces: etl_merge_stage() (007; callers and etl_prepare_stage() unchanged).
-- Creates: rollback.rollback_merge_update_first(): puts 007's body back, forgets 013 in
--   migration_history.
-- Undone by: rollback.rollback_merge_update_first() (`etl rollback all` runs it first).

CREATE OR REPLACE FUNCTION etl_merge_stage(p_document_type text, p_run_id text)
RETURNS TABLE (id uuid, action text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_table regclass := etl_document_table(p_document_type);
    v_stage regclass := etl_prepare_stage(p_document_type);
    v_cols  text;
    v_sel   text;
    v_set   text;
    v_old   text;
    v_new   text;
    v_ucols text;
    v_usel  text;
    v_cur   text;
    v_unew  text;
    r       record;
BEGIN
    IF coalesce(p_run_id, '') <> '' THEN
        PERFORM set_config('etl.run_id', p_run_id, true);  -- audit triggers: action 'migrate' + run id
    END IF;

    -- 0. One row per id (as 007).
    RETURN QUERY EXECUTE format(
        'DELETE FROM %s s USING %s later WHERE later.id = s.id AND later.ctid > s.ctid
         RETURNING s.id, ''superseded''::text', v_stage, v_stage);

    -- 1. Null references whose target row does not exist (as 007).
    FOR r IN
        SELECT v.col, v.ref
          FROM (VALUES ('resume_id', 'resume_documents'), ('job_id', 'job_documents'),
                       ('parent_optimization_id', 'optimization_results')) AS v(col, ref)
         WHERE EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = v_table AND a.attname = v.col AND NOT a.attisdropped)
    LOOP
        RETURN QUERY EXECUTE format(
            'UPDATE %s s SET %I = NULL
              WHERE s.%I IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM public.%I t WHERE t.id = s.%I) %s
             RETURNING s.id, %L::text',
            v_stage, r.col, r.col, r.ref, r.col,
            CASE WHEN r.col = 'parent_optimization_id'
                 THEN format('AND NOT EXISTS (SELECT 1 FROM %s o WHERE o.id = s.%I)', v_stage, r.col)
                 ELSE '' END,
            'dangling:' || r.col);
    END LOOP;

    -- 2. Column lists from the catalog: 007's, and the same value expressions without the id
    --    for the UPDATE of rows already there (v_usel: the new value; v_unew: its compared form).
    SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum),
           string_agg(x.expr, ', ' ORDER BY a.attnum),
           string_agg(format('%I = EXCLUDED.%I', a.attname, a.attname), ', ' ORDER BY a.attnum)
               FILTER (WHERE a.attname <> 'id'),
           string_agg(CASE WHEN a.attname = 'metadata' THEN $o$t.metadata - 'etl' - 'edges'$o$
                           ELSE format('t.%I', a.attname) END, ', ' ORDER BY a.attnum)
               FILTER (WHERE a.attname <> 'id'),
           string_agg(CASE WHEN a.attname = 'metadata' THEN $o$EXCLUDED.metadata - 'etl' - 'edges'$o$
                           ELSE format('EXCLUDED.%I', a.attname) END, ', ' ORDER BY a.attnum)
               FILTER (WHERE a.attname <> 'id'),
           string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) FILTER (WHERE a.attname <> 'id'),
           string_agg(x.expr, ', ' ORDER BY a.attnum) FILTER (WHERE a.attname <> 'id'),
           string_agg(CASE WHEN a.attname = 'metadata' THEN $o$cur.metadata - 'etl' - 'edges'$o$
                           ELSE format('cur.%I', a.attname) END, ', ' ORDER BY a.attnum)
               FILTER (WHERE a.attname <> 'id'),
           string_agg(CASE WHEN a.attname = 'metadata' THEN format('(%s) - %L - %L', x.expr, 'etl', 'edges')
                           ELSE x.expr END, ', ' ORDER BY a.attnum)
               FILTER (WHERE a.attname <> 'id')
      INTO v_cols, v_sel, v_set, v_old, v_new, v_ucols, v_usel, v_cur, v_unew
      FROM pg_attribute a
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      CROSS JOIN LATERAL (SELECT CASE
                WHEN a.attname = 'id' THEN 'coalesce(s.id, gen_random_uuid())'
                WHEN a.attname = 'metadata' THEN
                    $m$CASE WHEN cur.metadata ? 'edges'
                            THEN coalesce(s.metadata, cur.metadata, '{}'::jsonb)
                                 || jsonb_build_object('edges', cur.metadata -> 'edges')
                            ELSE coalesce(s.metadata, cur.metadata, '{}'::jsonb) END$m$
                WHEN a.attname = 'filename' AND v_table = 'public.resume_documents'::regclass THEN
                    $f$coalesce(s.filename, cur.filename, 'unknown')$f$
                WHEN a.attname = 'job_id' AND v_table = 'public.research_results'::regclass THEN
                    'coalesce(s.job_id, cur.job_id)'    -- keep an edge-provided job_id
                WHEN d.adbin IS NOT NULL THEN
                    format('coalesce(s.%I, cur.%I, %s)', a.attname, a.attname, pg_get_expr(d.adbin, d.adrelid))
                ELSE format('s.%I', a.attname) END AS expr) x
     WHERE a.attrelid = v_table AND a.attnum > 0 AND NOT a.attisdropped;

    -- 3a. Rows already there that differ: one UPDATE. As an upsert they would also be checked
    --     (CHECK constraints, row triggers) as the insert they are not, before the update.
    RETURN QUERY EXECUTE format(
        'UPDATE %s AS cur SET (%s) = ROW(%s) FROM %s s
          WHERE cur.id = s.id AND (%s) IS DISTINCT FROM (%s)
         RETURNING cur.id, ''updated''::text',
        v_table, v_ucols, v_usel, v_stage, v_cur, v_unew);

    -- 3b. The new rows: 007's upsert over the staged ids not in the table (a row another writer
    --     inserted meanwhile still takes the update branch).
    RETURN QUERY EXECUTE format(
        'INSERT INTO %s AS t (%s)
         SELECT %s FROM %s s LEFT JOIN %s cur ON cur.id = s.id WHERE cur.id IS NULL
         ON CONFLICT (id) DO UPDATE SET %s
         WHERE (%s) IS DISTINCT FROM (%s)
         RETURNING t.id, CASE WHEN t.xmax = 0 THEN ''inserted'' ELSE ''updated'' END',
        v_table, v_cols, v_sel, v_stage, v_table, v_set, v_old, v_new);

    EXECUTE format('TRUNCATE %s', v_stage);
END
$$;

CREATE OR REPLACE FUNCTION rollback.rollback_merge_update_first()
RETURNS SETOF text LANGUAGE plpgsql AS $rb$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_proc WHERE oid = to_regprocedure('public.etl_merge_stage(text,text)')
                                       AND prosrc LIKE '%v_ucols%') THEN  -- 013's body
        -- 007's body, word for word
        CREATE OR REPLACE FUNCTION public.etl_merge_stage(p_document_type text, p_run_id text)
        RETURNS TABLE (id uuid, action text)
        LANGUAGE plpgsql AS $$
        #variable_conflict use_column
        DECLARE
            v_table regclass := etl_document_table(p_document_type);
            v_stage regclass := etl_prepare_stage(p_document_type);
            v_cols  text;
            v_sel   text;
            v_set   text;
            v_old   text;
            v_new   text;
            r       record;
        BEGIN
            IF coalesce(p_run_id, '') <> '' THEN
                PERFORM set_config('etl.run_id', p_run_id, true);  -- audit triggers: action 'migrate' + run id
            END IF;

            -- 0. One row per id: a document staged twice (a repeated dump line) would make the upsert
            --    fail with "cannot affect row a second time". The last staged copy wins, as in ArangoDB;
            --    the earlier ones are reported as 'superseded'.
            RETURN QUERY EXECUTE format(
                'DELETE FROM %s s USING %s later WHERE later.id = s.id AND later.ctid > s.ctid
                 RETURNING s.id, ''superseded''::text', v_stage, v_stage);

            -- 1. Null references whose target row does not exist; report them.
            FOR r IN
                SELECT v.col, v.ref
                  FROM (VALUES ('resume_id', 'resume_documents'), ('job_id', 'job_documents'),
                               ('parent_optimization_id', 'optimization_results')) AS v(col, ref)
                 WHERE EXISTS (SELECT 1 FROM pg_attribute a
                                WHERE a.attrelid = v_table AND a.attname = v.col AND NOT a.attisdropped)
            LOOP
                RETURN QUERY EXECUTE format(
                    'UPDATE %s s SET %I = NULL
                      WHERE s.%I IS NOT NULL
                        AND NOT EXISTS (SELECT 1 FROM public.%I t WHERE t.id = s.%I) %s
                     RETURNING s.id, %L::text',
                    v_stage, r.col, r.col, r.ref, r.col,
                    CASE WHEN r.col = 'parent_optimization_id'   -- the parent may arrive in the same batch
                         THEN format('AND NOT EXISTS (SELECT 1 FROM %s o WHERE o.id = s.%I)', v_stage, r.col)
                         ELSE '' END,
                    'dangling:' || r.col);
            END LOOP;

            -- 2. Build the column lists from the catalog (same columns in stage and table).
            SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum),
                   string_agg(CASE
                        WHEN a.attname = 'id' THEN 'coalesce(s.id, gen_random_uuid())'
                        WHEN a.attname = 'metadata' THEN
                            $m$CASE WHEN cur.metadata ? 'edges'
                                    THEN coalesce(s.metadata, cur.metadata, '{}'::jsonb)
                                         || jsonb_build_object('edges', cur.metadata -> 'edges')
                                    ELSE coalesce(s.metadata, cur.metadata, '{}'::jsonb) END$m$
                        WHEN a.attname = 'filename' AND v_table = 'public.resume_documents'::regclass THEN
                            $f$coalesce(s.filename, cur.filename, 'unknown')$f$
                        WHEN a.attname = 'job_id' AND v_table = 'public.research_results'::regclass THEN
                            'coalesce(s.job_id, cur.job_id)'    -- keep an edge-provided job_id
                        WHEN d.adbin IS NOT NULL THEN
                            format('coalesce(s.%I, cur.%I, %s)', a.attname, a.attname, pg_get_expr(d.adbin, d.adrelid))
                        ELSE format('s.%I', a.attname) END, ', ' ORDER BY a.attnum),
                   string_agg(format('%I = EXCLUDED.%I', a.attname, a.attname), ', ' ORDER BY a.attnum)
                       FILTER (WHERE a.attname <> 'id'),
                   string_agg(CASE WHEN a.attname = 'metadata' THEN $o$t.metadata - 'etl' - 'edges'$o$
                                   ELSE format('t.%I', a.attname) END, ', ' ORDER BY a.attnum)
                       FILTER (WHERE a.attname <> 'id'),
                   string_agg(CASE WHEN a.attname = 'metadata' THEN $o$EXCLUDED.metadata - 'etl' - 'edges'$o$
                                   ELSE format('EXCLUDED.%I', a.attname) END, ', ' ORDER BY a.attnum)
                       FILTER (WHERE a.attname <> 'id')
              INTO v_cols, v_sel, v_set, v_old, v_new
              FROM pg_attribute a
              LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = v_table AND a.attnum > 0 AND NOT a.attisdropped;

            -- 3. One upsert for the whole stage; an unchanged row is not touched at all.
            RETURN QUERY EXECUTE format(
                'INSERT INTO %s AS t (%s)
                 SELECT %s FROM %s s LEFT JOIN %s cur ON cur.id = s.id
                 ON CONFLICT (id) DO UPDATE SET %s
                 WHERE (%s) IS DISTINCT FROM (%s)
                 RETURNING t.id, CASE WHEN t.xmax = 0 THEN ''inserted'' ELSE ''updated'' END',
                v_table, v_cols, v_sel, v_stage, v_table, v_set, v_old, v_new);

            EXECUTE format('TRUNCATE %s', v_stage);
        END
        $$;
        RETURN NEXT 'restored function etl_merge_stage (007)';
    END IF;
    IF to_regclass('public.migration_history') IS NOT NULL THEN
        DELETE FROM public.migration_history WHERE version = '013';
        IF FOUND THEN
            RETURN NEXT 'deleted migration_history 013';
        END IF;
    END IF;
END
$rb$;
