-- 011_audit_update_by_column.sql: a cheaper audit of UPDATEs, with the same audit rows.
--
-- 006's audit_document_changes() found the changed fields of an UPDATE by turning each new and
-- old row into jsonb (to_jsonb(row): a copy of parsed_data and metadata per row and side) and
-- comparing them key by key. That was 338-633 ms per 500 resume rows, a quarter of the cost of
-- `etl sync` applying updates (docs/performance.md, "Change apply"). This version compares the
-- columns one by one with the same comparison (to_jsonb(new.col) IS DISTINCT FROM
-- to_jsonb(old.col): what comparing the two rows' jsonb key by key did), in a statement built
-- from the table's columns; 50 ms per 500 rows. INSERT and DELETE are as in 006.
--
-- Replaces: audit_document_changes() (006; the triggers keep calling it by name).
-- Creates: rollback.rollback_audit_update_by_column(): puts 006's body back, forgets 011 in
--   migration_history.
-- Undone by: rollback.rollback_audit_update_by_column().

CREATE OR REPLACE FUNCTION audit_document_changes() RETURNS trigger
LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
    v_type   text := TG_ARGV[0];
    v_run    text := nullif(current_setting('etl.run_id', true), '');
    v_fields text;
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
        -- the names of the changed columns (updated_at aside), sorted as text, as 006's
        -- jsonb_agg(key ORDER BY key) over the rows' jsonb gave them
        SELECT 'ARRAY[' || string_agg(format('CASE WHEN to_jsonb(n.%1$I) IS DISTINCT FROM to_jsonb(o.%1$I)'
                                             ' THEN %1$L END', a.attname), ', ' ORDER BY a.attnum) || ']::text[]'
          INTO v_fields
          FROM pg_attribute a
         WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> 'updated_at';
        EXECUTE format(
            'INSERT INTO public.document_audit_log (document_type, document_id, user_id, action, changes, run_id)
             SELECT $1, n.id, n.user_id, CASE WHEN $2 IS NULL THEN ''update'' ELSE ''migrate'' END,
                    jsonb_strip_nulls(jsonb_build_object(
                        ''op'', ''update'',
                        ''rev'', n.metadata -> ''arango'' -> ''_rev'',
                        ''fields'', (SELECT coalesce(jsonb_agg(f.k ORDER BY f.k), ''[]''::jsonb)
                                     FROM unnest(%s) AS f(k) WHERE f.k IS NOT NULL))),
                    $2
               FROM new_rows n
               JOIN old_rows o ON o.id = n.id', coalesce(v_fields, 'ARRAY[]::text[]'))
        USING v_type, v_run;
    ELSE
        INSERT INTO public.document_audit_log (document_type, document_id, user_id, action, changes, run_id)
        SELECT v_type, o.id, o.user_id, CASE WHEN v_run IS NULL THEN 'delete' ELSE 'migrate' END,
               jsonb_build_object('op', 'delete'), v_run
          FROM old_rows o;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION rollback.rollback_audit_update_by_column()
RETURNS SETOF text LANGUAGE plpgsql AS $rb$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_proc WHERE oid = to_regprocedure('public.audit_document_changes()')
                                       AND prosrc LIKE '%v_fields%') THEN  -- 011's body
        -- 006's body, word for word
        CREATE OR REPLACE FUNCTION public.audit_document_changes() RETURNS trigger
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
        RETURN NEXT 'restored function audit_document_changes (006)';
    END IF;
    IF to_regclass('public.migration_history') IS NOT NULL THEN
        DELETE FROM public.migration_history WHERE version = '011';
        IF FOUND THEN
            RETURN NEXT 'deleted migration_history 011';
        END IF;
    END IF;
END
$rb$;
