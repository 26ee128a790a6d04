-- 007_rollback_verification_core.sql: rollback functions, status and integrity checks, the
-- set-based migration core and the ETL's run bookkeeping tables.
--
-- Creates:
--  * tables etl_runs, etl_checkpoints, etl_batches, etl_rejects, etl_deferred_indexes, etl_work_units,
--    etl_pending_links (docs/design.md "Run bookkeeping" and "Parallel workers");
--    migration_history IF NOT EXISTS (normally the runner made it already; here so that the
--    functions below also work when this file is run by hand with psql);
--  * extension uuid-ossp where the server has it (optional: used only by etl_uuid5() so that a
--    bare document carrying an `_id` gets the same deterministic id the ETL computes);
--  * schema rollback: drop_validation_objects(), drop_helper_functions(), drop_document_tables(),
--    rollback_all_migrations(p_include_production boolean default false), each returning one
--    text row per action taken and deleting the matching migration_history rows; idempotent;
--  * check_migration_status(), verify_schema_integrity();
--  * the set-based core: etl_document_table(), etl_prepare_stage(), etl_merge_stage(),
--    migrate_arango_document(), etl_link_edges(), etl_uuid5().
--
-- Decisions where schema.md is silent:
--  * rollback_all_migrations() undoes 003..007 and keeps 001/002 (tasks, task_metrics,
--    user_profiles hold the live application's data, not migrated data); pass true to drop
--    those too. The rollback schema, check_migration_status() and verify_schema_integrity()
--    survive every rollback so that rollback stays re-runnable and status stays readable.
--  * drop_document_tables() first runs drop_validation_objects() and drop_helper_functions():
--    004..006 cannot exist without the tables.
--  * drop_helper_functions() removes 004's functions, 005's materialized views, functions and
--    indexes (by 005's index names, so an index an operator added survives). Extensions
--    pg_trgm/bloom are kept: other objects may use them.
--  * In the merge core a NULL in a column that has a table default means "the source has no
--    value": on insert the default applies (filename 'unknown'), on update the stored value is
--    kept. Columns without a default take the staged value, NULL included.
--  * etl_merge_stage() also returns (id, 'superseded') for an earlier copy of an id staged twice
--    in one batch (the last copy is merged); design.md's actions are otherwise unchanged.
--  * migrate_arango_document(): p_user_id, when not null, is the row's user_id (it overrides
--    a user_id inside a canonical object); the run id is the session's etl.run_id when set.
--
-- The core is pure set-based SQL: one UPDATE per reference column to null dangling references,
-- one INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE <differs> RETURNING (xmax = 0) for the
-- whole stage, one TRUNCATE. No per-row loop.
-- Undone by: rollback.rollback_all_migrations() (the run tables and the core functions).

CREATE TABLE IF NOT EXISTS migration_history (
    version         text PRIMARY KEY,
    name            text NOT NULL,
    checksum        text NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    applied_by      text NOT NULL DEFAULT current_user,
    duration_ms     integer,
    success         boolean NOT NULL DEFAULT true,
    execution_notes text
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'uuid-ossp') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'uuid-ossp not created (no privilege); bare documents with _id get random ids';
        END;
    END IF;
END
$$;

-- ---------------------------------------------------------------------------- run bookkeeping

CREATE TABLE IF NOT EXISTS etl_runs (
    run_id       text PRIMARY KEY,
    command      text NOT NULL,
    state        text NOT NULL CONSTRAINT etl_runs_state_check
                     CHECK (state IN ('running', 'finished', 'failed', 'interrupted')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    heartbeat_at timestamptz,
    source       text,
    target       text,
    options      jsonb,
    summary      jsonb,
    report_path  text,
    error        text,
    host         text,
    pid          integer
);
CREATE INDEX IF NOT EXISTS idx_etl_runs_command_started ON etl_runs (command, started_at DESC);

CREATE TABLE IF NOT EXISTS etl_checkpoints (
    run_id     text NOT NULL REFERENCES etl_runs (run_id) ON DELETE CASCADE,
    collection text NOT NULL,
    position   text,
    done       boolean NOT NULL DEFAULT false,
    batches    integer NOT NULL DEFAULT 0,
    read       bigint NOT NULL DEFAULT 0,
    inserted   bigint NOT NULL DEFAULT 0,
    updated    bigint NOT NULL DEFAULT 0,
    unchanged  bigint NOT NULL DEFAULT 0,
    rejected   bigint NOT NULL DEFAULT 0,
    unmapped   bigint NOT NULL DEFAULT 0,
    dangling   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, collection)
);

-- No primary key on (run_id, collection, seq): a batch retried after a crash may be recorded
-- again, and a timing log must not fail a load.
CREATE TABLE IF NOT EXISTS etl_batches (
    run_id     text NOT NULL,
    collection text NOT NULL,
    seq        integer NOT NULL,
    unit       integer,            -- the work unit of a parallel run (etl_work_units), else null
    docs       integer NOT NULL,
    nbytes     bigint,
    started_at timestamptz,
    seconds    double precision
);
CREATE INDEX IF NOT EXISTS idx_etl_batches_run ON etl_batches (run_id, collection, seq);

CREATE TABLE IF NOT EXISTS etl_rejects (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     text NOT NULL,
    collection text NOT NULL,
    key        text,
    document   text,
    reason     text NOT NULL,
    stage      text NOT NULL CONSTRAINT etl_rejects_stage_check CHECK (stage IN ('transform', 'load', 'link', 'unmapped')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_etl_rejects_run ON etl_rejects (run_id, collection);

-- ---------------------------------------------------------------------------- deferred index builds
-- etl migrate drops the non-unique secondary indexes of an EMPTY target table before a bulk
-- load and builds them once at the end (a GIN/trigram/full-text build over the whole table is
-- far cheaper than maintaining them row by row). Their definitions are kept here first, in the
-- same transaction as the DROP, so a crash can never lose one: every etl migrate, and
-- `etl migrate --resume`, rebuilds whatever this table still lists before it does anything else.
CREATE TABLE IF NOT EXISTS etl_deferred_indexes (
    index_name  text PRIMARY KEY,
    table_name  text NOT NULL,
    definition  text NOT NULL,
    run_id      text NOT NULL,
    deferred_at timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------- parallel workers
-- A parallel run (`etl migrate --workers N`, `etl worker --run ID`) is cut into work units:
-- key ranges (key_after, key_until] of a collection, found in the source's own key order, then
-- one 'finish' unit per collection (parent links that crossed ranges, the collection's
-- checkpoint), an 'index' unit per table whose indexes were deferred (built as soon as every
-- collection writing the table is done) and one 'final' unit (the report, the run's end). Workers on any machine claim
-- a unit with FOR UPDATE SKIP LOCKED and hold it by a lease; each batch commits with the unit's
-- position only while the worker still holds the lease, so a unit is never done twice, and a
-- dead worker's unit is claimed again, from its position, once the lease has expired.
CREATE TABLE IF NOT EXISTS etl_work_units (
    run_id      text NOT NULL REFERENCES etl_runs (run_id) ON DELETE CASCADE,
    unit_id     integer NOT NULL,
    collection  text NOT NULL,
    kind        text NOT NULL DEFAULT 'range'
                    CONSTRAINT etl_work_units_kind_check CHECK (kind IN ('range', 'finish', 'index', 'final')),
    key_after   text,            -- exclusive lower bound; null = the start of the collection
    key_until   text,            -- inclusive upper bound; null = the end
    needs       text[] NOT NULL DEFAULT '{}',  -- collections whose units must all be done first
    state       text NOT NULL DEFAULT 'pending'
                    CONSTRAINT etl_work_units_state_check CHECK (state IN ('pending', 'running', 'done', 'failed')),
    position    text,            -- the unit's checkpoint: the last committed key
    batches     integer NOT NULL DEFAULT 0,
    counts      jsonb NOT NULL DEFAULT '{}',
    worker      text,
    lease_until timestamptz,
    attempts    integer NOT NULL DEFAULT 0,
    error       text,
    started_at  timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (run_id, unit_id)
);

-- References to a parent row of the same table that was not loaded yet (later in the stream, or
-- in another worker's range): kept with the batch that found them, set when the collection ends.
CREATE TABLE IF NOT EXISTS etl_pending_links (
    run_id     text NOT NULL,
    table_name text NOT NULL,
    child_id   uuid NOT NULL,
    parent_id  uuid NOT NULL,
    PRIMARY KEY (run_id, table_name, child_id)
);

-- A database made before 'unmapped' joined the stages has the narrower check: widen it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'etl_rejects'::regclass
                   AND conname = 'etl_rejects_stage_check'
                   AND pg_get_constraintdef(oid) LIKE '%unmapped%') THEN
        ALTER TABLE etl_rejects DROP CONSTRAINT IF EXISTS etl_rejects_stage_check;
        ALTER TABLE etl_rejects ADD CONSTRAINT etl_rejects_stage_check
            CHECK (stage IN ('transform', 'load', 'link', 'unmapped'));
    END IF;
END
$$;

-- ---------------------------------------------------------------------------- set-based core

CREATE OR REPLACE FUNCTION etl_document_table(p_document_type text) RETURNS regclass
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_name text := CASE p_document_type
        WHEN 'resume' THEN 'resume_documents'
        WHEN 'job' THEN 'job_documents'
        WHEN 'optimization' THEN 'optimization_results'
        WHEN 'research' THEN 'research_results' END;
BEGIN
    IF v_name IS NULL THEN
        RAISE EXCEPTION 'unknown document type "%" (expected resume, job, optimization or research)',
            p_document_type USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF to_regclass('public.' || v_name) IS NULL THEN
        RAISE EXCEPTION 'table % does not exist (run etl apply-schema)', v_name USING ERRCODE = 'undefined_table';
    END IF;
    RETURN ('public.' || v_name)::regclass;
END
$$;

-- uuid5(ETL namespace, name), the same as etl/transform.py, or NULL when uuid-ossp is absent.
CREATE OR REPLACE FUNCTION etl_uuid5(p_name text) RETURNS uuid
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v uuid;
BEGIN
    IF p_name IS NULL OR to_regprocedure('uuid_generate_v5(uuid,text)') IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT uuid_generate_v5($1, $2)' INTO v USING '5b0e4f4a-7c1d-4e8a-9a3b-2f6d8c1e0a57'::uuid, p_name;
    RETURN v;
END
$$;

CREATE OR REPLACE FUNCTION etl_prepare_stage(p_document_type text) RETURNS regclass
LANGUAGE plpgsql AS $$
DECLARE
    v_table regclass;
    v_stage text := 'etl_stage_' || p_document_type;
    v_have  regclass;
BEGIN
    IF p_document_type = 'edge' THEN
        CREATE TEMP TABLE IF NOT EXISTS etl_stage_edge (edge_key text, target_id uuid, job_id uuid, edge jsonb);
        RETURN 'pg_temp.etl_stage_edge'::regclass;
    END IF;
    v_table := etl_document_table(p_document_type);
    v_have := to_regclass('pg_temp.' || v_stage);
    -- A stage made before the table changed (same session) would silently drop columns.
    IF v_have IS NOT NULL AND
       (SELECT count(*) FROM pg_attribute WHERE attrelid = v_have AND attnum > 0 AND NOT attisdropped)
       <> (SELECT count(*) FROM pg_attribute WHERE attrelid = v_table AND attnum > 0 AND NOT attisdropped) THEN
        EXECUTE format('DROP TABLE pg_temp.%I', v_stage);
        v_have := NULL;
    END IF;
    IF v_have IS NULL THEN
        EXECUTE format('CREATE TEMP TABLE %I AS SELECT * FROM %s WITH NO DATA', v_stage, v_table);
        v_have := to_regclass('pg_temp.' || v_stage);
    END IF;
    RETURN v_have;
END
$$;

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

CREATE OR REPLACE FUNCTION migrate_arango_document(p_user_id text, p_document_type text, p_arango_data jsonb)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_stage regclass;
    v_row   jsonb;
    v_id    uuid;
BEGIN
    IF jsonb_typeof(p_arango_data) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'migrate_arango_document: p_arango_data must be a JSON object, not %',
            coalesce(jsonb_typeof(p_arango_data), 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_stage := etl_prepare_stage(p_document_type);
    EXECUTE format('TRUNCATE %s', v_stage);  -- a one-row set, whatever the session staged before

    IF p_arango_data ? 'parsed_data' THEN   -- the canonical row of etl/transform.py
        v_row := p_arango_data;
        IF jsonb_typeof(v_row -> 'id') IS DISTINCT FROM 'string' THEN
            v_row := v_row || jsonb_build_object('id', coalesce(
                etl_uuid5(coalesce(v_row #>> '{metadata,arango,_id}', v_row ->> '_id')), gen_random_uuid()));
        END IF;
    ELSE                                    -- a bare content object becomes parsed_data
        v_row := jsonb_build_object('parsed_data', p_arango_data,
                                    'id', coalesce(etl_uuid5(p_arango_data ->> '_id'), gen_random_uuid()));
    END IF;
    IF p_user_id IS NOT NULL THEN
        v_row := v_row || jsonb_build_object('user_id', p_user_id);
    END IF;

    EXECUTE format('INSERT INTO %s SELECT * FROM jsonb_populate_record(NULL::%s, $1)', v_stage, v_stage)
        USING v_row;
    PERFORM 1 FROM etl_merge_stage(p_document_type, nullif(current_setting('etl.run_id', true), ''));
    RETURN (v_row ->> 'id')::uuid;
END
$$;

CREATE OR REPLACE FUNCTION etl_link_edges(p_run_id text)
RETURNS TABLE (edge_key text, target_id uuid, status text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF coalesce(p_run_id, '') <> '' THEN
        PERFORM set_config('etl.run_id', p_run_id, true);
    END IF;
    PERFORM etl_prepare_stage('edge');
    RETURN QUERY
    WITH src AS (
        SELECT e.edge_key, e.target_id, e.job_id, e.edge,
               EXISTS (SELECT 1 FROM research_results r WHERE r.id = e.target_id)
               AND EXISTS (SELECT 1 FROM job_documents j WHERE j.id = e.job_id) AS ok
          FROM pg_temp.etl_stage_edge e
    ), agg AS (
        SELECT s.target_id,
               (array_agg(s.job_id ORDER BY s.edge_key DESC))[1] AS job_id,  -- several edges: last key wins
               jsonb_object_agg(s.edge_key, coalesce(s.edge, '{}'::jsonb)) AS edges
          FROM src s WHERE s.ok
         GROUP BY s.target_id
    ), upd AS (
        UPDATE research_results r
           SET job_id = a.job_id,
               metadata = jsonb_set(r.metadata, '{edges}', coalesce(r.metadata -> 'edges', '{}'::jsonb) || a.edges)
          FROM agg a
         WHERE r.id = a.target_id
           AND (r.job_id IS DISTINCT FROM a.job_id
                OR EXISTS (SELECT 1 FROM jsonb_each(a.edges) x
                            WHERE r.metadata -> 'edges' -> x.key IS DISTINCT FROM x.value))
        RETURNING r.id
    )
    SELECT s.edge_key, s.target_id,
           CASE WHEN NOT s.ok THEN 'dangling'
                WHEN s.target_id IN (SELECT u.id FROM upd u) THEN 'linked'
                ELSE 'unchanged' END
      FROM src s;
    TRUNCATE pg_temp.etl_stage_edge;
END
$$;

-- ---------------------------------------------------------------------------- status

CREATE OR REPLACE FUNCTION check_migration_status()
RETURNS TABLE (version text, name text, applied boolean, applied_at timestamptz, checksum text,
               applied_by text, duration_ms integer, notes text)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(h.version, k.version), coalesce(h.name, k.name), h.version IS NOT NULL AND h.success,
           h.applied_at, h.checksum, h.applied_by, h.duration_ms, h.execution_notes
      FROM (VALUES ('001', 'tasks'), ('002', 'user_profiles'), ('003', 'document_tables'),
                   ('004', 'jsonb_helpers'), ('005', 'performance_indexes_views'), ('006', 'validation_audit'),
                   ('007', 'rollback_verification_core')) AS k(version, name)
      FULL JOIN migration_history h ON h.version = k.version
     ORDER BY 1
$$;

CREATE OR REPLACE FUNCTION verify_schema_integrity()
RETURNS TABLE ("check" text, status text, detail text)
LANGUAGE sql STABLE AS $verify$
WITH common(cols) AS (VALUES (
        'id:uuid,user_id:text,parsed_data:jsonb,metadata:jsonb,created_at:timestamp with time zone,'
        'updated_at:timestamp with time zone,is_active:boolean,expires_at:timestamp with time zone,'
        'deleted_at:timestamp with time zone,status:character varying(50)')),
spec(tbl, cols) AS (
    SELECT 'tasks', 'id:uuid,user_id:text,task_type:character varying(50),status:character varying(20),'
                    'priority:integer,payload:jsonb,result_id:text,error_message:text,retry_count:integer,'
                    'max_retries:integer,progress:integer,estimated_duration_ms:integer,'
                    'created_at:timestamp with time zone,started_at:timestamp with time zone,'
                    'completed_at:timestamp with time zone,expires_at:timestamp with time zone'
    UNION ALL SELECT 'task_metrics', 'id:uuid,task_type:character varying(50),duration_ms:integer,'
                    'status:character varying(20),error_type:character varying(100),'
                    'worker_id:character varying(100),created_at:timestamp with time zone'
    UNION ALL SELECT 'user_profiles', 'user_id:text,phone:character varying(20),location:character varying(255),'
                    'title:character varying(255),bio:text,resume_id:text,'
                    'created_at:timestamp with time zone,updated_at:timestamp with time zone'
    UNION ALL SELECT 'resume_documents', cols || ',filename:character varying(255),content_type:character varying(100),'
                    'file_size:bigint,file_hash:text,source:character varying(50),task_id:text,error_message:text' FROM common
    UNION ALL SELECT 'job_documents', cols || ',title:character varying(500),company:character varying(255),'
                    'location:character varying(255),remote_type:character varying(50),job_url:text,source_url:text' FROM common
    UNION ALL SELECT 'optimization_results', cols || ',resume_id:uuid,job_id:uuid,parent_optimization_id:uuid,'
                    'optimization_type:character varying(50),content:text,ats_score:percentage,'
                    'keyword_match_score:percentage,task_id:text' FROM common
    UNION ALL SELECT 'research_results', cols || ',job_id:uuid,resume_id:uuid,company:character varying(255),'
                    'job_title:character varying(500),report_type:character varying(50),content:text,task_id:text' FROM common
    UNION ALL SELECT 'document_audit_log', 'id:bigint,document_type:text,document_id:uuid,user_id:text,action:text,'
                    'changes:jsonb,run_id:text,created_at:timestamp with time zone'
    UNION ALL SELECT 'migration_history', 'version:text,name:text,checksum:text,applied_at:timestamp with time zone,'
                    'applied_by:text,duration_ms:integer,success:boolean,execution_notes:text'
    UNION ALL SELECT 'etl_runs', 'run_id:text,command:text,state:text,started_at:timestamp with time zone,'
                    'finished_at:timestamp with time zone,heartbeat_at:timestamp with time zone,source:text,'
                    'target:text,options:jsonb,summary:jsonb,report_path:text,error:text,host:text,pid:integer'
    UNION ALL SELECT 'etl_checkpoints', 'run_id:text,collection:text,position:text,done:boolean,batches:integer,read:bigint,'
                    'inserted:bigint,updated:bigint,unchanged:bigint,rejected:bigint,unmapped:bigint,'
                    'dangling:bigint,updated_at:timestamp with time zone'
    UNION ALL SELECT 'etl_batches', 'run_id:text,collection:text,seq:integer,unit:integer,docs:integer,nbytes:bigint,'
                    'started_at:timestamp with time zone,seconds:double precision'
    UNION ALL SELECT 'etl_rejects', 'id:bigint,run_id:text,collection:text,key:text,document:text,reason:text,stage:text,'
                    'created_at:timestamp with time zone'
    UNION ALL SELECT 'etl_deferred_indexes', 'index_name:text,table_name:text,definition:text,run_id:text,'
                    'deferred_at:timestamp with time zone'
    UNION ALL SELECT 'etl_work_units', 'run_id:text,unit_id:integer,collection:text,kind:text,key_after:text,'
                    'key_until:text,needs:text[],state:text,position:text,batches:integer,counts:jsonb,worker:text,'
                    'lease_until:timestamp with time zone,attempts:integer,error:text,'
                    'started_at:timestamp with time zone,finished_at:timestamp with time zone'
    UNION ALL SELECT 'etl_pending_links', 'run_id:text,table_name:text,child_id:uuid,parent_id:uuid'),
doc(tbl) AS (VALUES ('resume_documents'), ('job_documents'), ('optimization_results'), ('research_results')),
idx AS (  -- every index of this database's public tables, with its definition, for property checks
    SELECT c.relname AS tbl, i.relname AS name, pg_get_indexdef(x.indexrelid) AS def, am.amname AS am,
           x.indisunique AS uniq, x.indpred IS NOT NULL AS partial
      FROM pg_index x
      JOIN pg_class i ON i.oid = x.indexrelid
      JOIN pg_class c ON c.oid = x.indrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
      JOIN pg_am am ON am.oid = i.relam),
fn(name, ver) AS (VALUES
    ('update_updated_at_column', '002'), ('update_document_updated_at', '003'),
    ('jsonb_merge_deep', '004'), ('extract_skills', '004'), ('calculate_keyword_match', '004'),
    ('calculate_ats_score', '004'), ('search_documents', '004'), ('get_user_documents', '004'),
    ('cleanup_old_documents', '004'), ('jsonb_text_values', '004'), ('resume_search_vector', '004'),
    ('job_search_vector', '004'), ('resume_experience_text', '004'), ('resume_search_text', '004'),
    ('job_search_text', '004'), ('refresh_materialized_views', '005'), ('analyze_index_usage', '005'),
    ('is_valid_email', '006'), ('validation_error', '006'), ('validate_document_data', '006'),
    ('audit_document_changes', '006'), ('check_document_user_exists', '006'), ('check_optimization_parent', '006'),
    ('check_migration_status', '007'), ('verify_schema_integrity', '007'), ('etl_document_table', '007'),
    ('etl_uuid5', '007'), ('etl_prepare_stage', '007'), ('etl_merge_stage', '007'),
    ('migrate_arango_document', '007'), ('etl_link_edges', '007'),
    ('rollback.drop_validation_objects', '007'), ('rollback.drop_helper_functions', '007'),
    ('rollback.drop_document_tables', '007'), ('rollback.rollback_all_migrations', '007')),
trg(tbl, name) AS (
    SELECT 'user_profiles', NULL::text   -- any trigger calling update_updated_at_column (hand-applied names vary)
    UNION ALL SELECT d.tbl, d.tbl || '_updated_at' FROM doc d
    UNION ALL SELECT d.tbl, format('%s_audit_%s', d.tbl, e) FROM doc d, unnest(ARRAY['insert', 'update', 'delete']) e
    UNION ALL SELECT d.tbl, format('%s_user_exists_%s', d.tbl, e) FROM doc d, unnest(ARRAY['insert', 'update']) e
    UNION ALL SELECT 'optimization_results', 'optimization_results_parent_' || e FROM unnest(ARRAY['insert', 'update']) e),
named_idx(tbl, name) AS (VALUES
    ('tasks', 'idx_tasks_user_created'), ('tasks', 'idx_tasks_queue'), ('tasks', 'idx_tasks_expires_at'),
    ('task_metrics', 'idx_task_metrics_type_created'),
    ('optimization_results', 'idx_optimization_results_resume_id'),
    ('optimization_results', 'idx_optimization_results_job_id'),
    ('optimization_results', 'idx_optimization_results_parent'),
    ('research_results', 'idx_research_results_job_id'), ('research_results', 'idx_research_results_resume_id'),
    ('document_audit_log', 'idx_document_audit_log_document'), ('document_audit_log', 'idx_document_audit_log_run_id'),
    ('document_audit_log', 'idx_document_audit_log_user_created'),
    ('document_audit_log', 'idx_document_audit_log_created_at'),
    ('resume_documents', 'resume_documents_active_file_hash_key'),
    ('etl_rejects', 'idx_etl_rejects_run'), ('etl_batches', 'idx_etl_batches_run')),
prop(name, tbl, ok) AS (   -- 005's indexes, checked by what they do rather than by name
    SELECT format('index %s: GIN on parsed_data', d.tbl), d.tbl,
           EXISTS (SELECT 1 FROM idx WHERE idx.tbl = d.tbl AND am = 'gin' AND def ~ 'USING gin \(parsed_data( jsonb_path_ops)?\)')
      FROM doc d
    UNION ALL
    SELECT format('index %s: GIN on metadata', d.tbl), d.tbl,
           EXISTS (SELECT 1 FROM idx WHERE idx.tbl = d.tbl AND am = 'gin' AND def ~ 'USING gin \(metadata( jsonb_path_ops)?\)')
      FROM doc d
    UNION ALL
    SELECT format('index %s: (user_id, created_at DESC)', d.tbl), d.tbl,
           EXISTS (SELECT 1 FROM idx WHERE idx.tbl = d.tbl AND def LIKE '%(user_id, created_at DESC)%')
      FROM doc d
    UNION ALL
    SELECT format('index %s: (user_id, status)', d.tbl), d.tbl,
           EXISTS (SELECT 1 FROM idx WHERE idx.tbl = d.tbl AND def LIKE '%(user_id, status%')
      FROM doc d
    UNION ALL
    SELECT format('index %s: partial on active rows', d.tbl), d.tbl,
           EXISTS (SELECT 1 FROM idx WHERE idx.tbl = d.tbl AND partial AND def LIKE '%is_active%'
                   AND def LIKE '%deleted_at IS NULL%')
      FROM doc d
    UNION ALL
    SELECT format('index %s: full-text GIN', t), t,
           EXISTS (SELECT 1 FROM idx WHERE idx.tbl = t AND am = 'gin' AND (def LIKE '%to_tsvector%' OR def LIKE '%search_vector%'))
      FROM unnest(ARRAY['resume_documents', 'job_documents']) t
    UNION ALL
    SELECT format('index %s: trigram GIN', t), t,
           EXISTS (SELECT 1 FROM idx WHERE idx.tbl = t AND am IN ('gin', 'gist') AND def LIKE '%trgm_ops%')
      FROM unnest(ARRAY['resume_documents', 'job_documents']) t
    UNION ALL
    SELECT 'index: bloom (multi-column equality)', NULL, EXISTS (SELECT 1 FROM idx WHERE am = 'bloom'))
SELECT 'table ' || s.tbl,
       CASE WHEN to_regclass('public.' || s.tbl) IS NULL THEN 'missing' ELSE 'ok' END,
       CASE WHEN to_regclass('public.' || s.tbl) IS NULL THEN 'table does not exist' ELSE '' END
  FROM spec s
UNION ALL
SELECT format('column %s.%s', c.tbl, c.col),
       CASE WHEN a.attname IS NULL THEN 'missing' WHEN format_type(a.atttypid, a.atttypmod) <> c.typ THEN 'wrong' ELSE 'ok' END,
       CASE WHEN a.attname IS NULL THEN 'expected ' || c.typ
            WHEN format_type(a.atttypid, a.atttypmod) <> c.typ
            THEN format('expected %s, found %s', c.typ, format_type(a.atttypid, a.atttypmod)) ELSE c.typ END
  FROM (SELECT s.tbl, split_part(x, ':', 1) AS col, split_part(x, ':', 2) AS typ
          FROM spec s CROSS JOIN LATERAL unnest(string_to_array(s.cols, ',')) AS x) c
  LEFT JOIN pg_attribute a ON a.attrelid = to_regclass('public.' || c.tbl) AND a.attname = c.col AND NOT a.attisdropped
UNION ALL
SELECT 'function ' || f.name,
       CASE WHEN p.oid IS NULL THEN 'missing' ELSE 'ok' END,
       CASE WHEN p.oid IS NULL THEN 'migration ' || f.ver ELSE p.oid::regprocedure::text END
  FROM fn f
  LEFT JOIN LATERAL (
        SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = CASE WHEN f.name LIKE '%.%' THEN split_part(f.name, '.', 1) ELSE 'public' END
           AND p.proname = CASE WHEN f.name LIKE '%.%' THEN split_part(f.name, '.', 2) ELSE f.name END
         LIMIT 1) p ON true
UNION ALL
SELECT 'trigger ' || t.tbl || '.' || coalesce(t.name, '(update_updated_at_column)'),
       CASE WHEN g.oid IS NULL THEN 'missing' WHEN NOT g.enabled THEN 'wrong' ELSE 'ok' END,
       CASE WHEN g.oid IS NULL THEN '' WHEN NOT g.enabled THEN 'trigger is disabled' ELSE '' END
  FROM trg t
  LEFT JOIN LATERAL (
        SELECT g.oid, g.tgenabled <> 'D' AS enabled FROM pg_trigger g
         WHERE g.tgrelid = to_regclass('public.' || t.tbl) AND NOT g.tgisinternal
           AND (g.tgname = t.name OR (t.name IS NULL AND g.tgfoid = to_regprocedure('update_updated_at_column()')))
         LIMIT 1) g ON true
UNION ALL
SELECT format('index %s.%s', n.tbl, n.name),
       CASE WHEN i.name IS NULL THEN 'missing' ELSE 'ok' END, coalesce(i.def, '')
  FROM named_idx n LEFT JOIN idx i ON i.tbl = n.tbl AND i.name = n.name
UNION ALL
SELECT p.name, CASE WHEN p.ok THEN 'ok' ELSE 'missing' END, CASE WHEN p.ok THEN '' ELSE 'migration 005' END
  FROM prop p
UNION ALL
SELECT 'materialized view ' || v.name,
       CASE WHEN c.oid IS NULL THEN 'missing'
            WHEN NOT EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid AND x.indisunique AND x.indpred IS NULL)
            THEN 'wrong' ELSE 'ok' END,
       CASE WHEN c.oid IS NULL THEN 'migration 005'
            WHEN NOT EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid AND x.indisunique AND x.indpred IS NULL)
            THEN 'no unique index: REFRESH ... CONCURRENTLY impossible'
            ELSE CASE WHEN c.relispopulated THEN 'populated' ELSE 'not populated' END END
  FROM (VALUES ('user_document_stats'), ('top_skills_view'), ('recent_activity_view')) AS v(name)
  LEFT JOIN pg_class c ON c.oid = to_regclass('public.' || v.name) AND c.relkind = 'm'
UNION ALL
SELECT 'extension ' || e.name,
       CASE WHEN x.extname IS NOT NULL THEN 'ok' WHEN e.required THEN 'missing' ELSE 'ok' END,
       CASE WHEN x.extname IS NOT NULL THEN 'version ' || x.extversion
            WHEN e.required THEN 'required'
            ELSE 'optional, not installed (deterministic ids for bare documents with _id unavailable)' END
  FROM (VALUES ('pg_trgm', true), ('bloom', true), ('uuid-ossp', false)) AS e(name, required)
  LEFT JOIN pg_extension x ON x.extname = e.name
UNION ALL
SELECT 'domain ' || d.name,
       CASE WHEN t.oid IS NULL THEN 'missing' ELSE 'ok' END, coalesce(format_type(t.typbasetype, t.typtypmod), '')
  FROM (VALUES ('email'), ('url'), ('percentage')) AS d(name)
  LEFT JOIN pg_type t ON t.typname = d.name AND t.typtype = 'd'
       AND t.typnamespace = 'public'::regnamespace
UNION ALL
SELECT format('constraint %s.%s', k.tbl, k.name),
       CASE WHEN c.oid IS NULL THEN 'missing' WHEN NOT c.convalidated THEN 'wrong' ELSE 'ok' END,
       CASE WHEN c.oid IS NULL THEN '' WHEN NOT c.convalidated THEN 'not validated' ELSE pg_get_constraintdef(c.oid) END
  FROM (SELECT 'tasks', x FROM unnest(ARRAY['tasks_status_check', 'tasks_priority_check', 'tasks_retry_count_check',
                                            'tasks_progress_check']) x
        UNION ALL SELECT 'task_metrics', 'task_metrics_status_check'
        UNION ALL SELECT 'document_audit_log', 'document_audit_log_action_check'
        UNION ALL SELECT 'document_audit_log', 'document_audit_log_document_type_check'
        UNION ALL SELECT d.tbl, d.tbl || '_document_valid' FROM doc d) AS k(tbl, name)
  LEFT JOIN pg_constraint c ON c.conrelid = to_regclass('public.' || k.tbl) AND c.conname = k.name
$verify$;

-- ---------------------------------------------------------------------------- rollback

CREATE SCHEMA IF NOT EXISTS rollback;

-- 006: triggers, CHECK constraints, the unique index, validation/audit functions, domains.
CREATE OR REPLACE FUNCTION rollback.drop_validation_objects() RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT g.tgname, c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
         WHERE NOT g.tgisinternal AND c.relnamespace = 'public'::regnamespace
           AND g.tgfoid IN (SELECT p.oid FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
                             AND p.proname IN ('audit_document_changes', 'check_document_user_exists',
                                               'check_optimization_parent'))
    LOOP
        EXECUTE format('DROP TRIGGER %I ON public.%I', r.tgname, r.relname);
        RETURN NEXT format('dropped trigger %s on %s', r.tgname, r.relname);
    END LOOP;
    FOR r IN
        SELECT c.conname, t.relname FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
         WHERE t.relnamespace = 'public'::regnamespace
           AND t.relname IN ('resume_documents', 'job_documents', 'optimization_results', 'research_results')
           AND c.conname = t.relname || '_document_valid'
    LOOP
        EXECUTE format('ALTER TABLE public.%I DROP CONSTRAINT %I', r.relname, r.conname);
        RETURN NEXT format('dropped constraint %s on %s', r.conname, r.relname);
    END LOOP;
    IF to_regclass('public.resume_documents_active_file_hash_key') IS NOT NULL THEN
        DROP INDEX public.resume_documents_active_file_hash_key;
        RETURN NEXT 'dropped index resume_documents_active_file_hash_key';
    END IF;
    FOR r IN
        SELECT p.oid::regprocedure::text AS sig FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace
           AND p.proname IN ('audit_document_changes', 'check_document_user_exists', 'check_optimization_parent',
                             'validate_document_data', 'validation_error')
         ORDER BY p.proname = 'validation_error'   -- the validator calls it: drop it last
    LOOP
        EXECUTE format('DROP FUNCTION %s', r.sig);
        RETURN NEXT format('dropped function %s', r.sig);
    END LOOP;
    FOR r IN SELECT t.typname FROM pg_type t
              WHERE t.typnamespace = 'public'::regnamespace AND t.typtype = 'd' AND t.typname IN ('email', 'url')
    LOOP
        -- RESTRICT: a column some other schema object declared with these domains stops the
        -- rollback instead of being dropped with them.
        EXECUTE format('DROP DOMAIN public.%I', r.typname);
        RETURN NEXT format('dropped domain %s', r.typname);
    END LOOP;
    IF to_regprocedure('public.is_valid_email(text)') IS NOT NULL THEN
        DROP FUNCTION public.is_valid_email(text);
        RETURN NEXT 'dropped function is_valid_email(text)';
    END IF;
    IF to_regclass('public.migration_history') IS NOT NULL THEN
        DELETE FROM public.migration_history WHERE version = '006';
        IF FOUND THEN
            RETURN NEXT 'deleted migration_history 006';
        END IF;
    END IF;
END
$$;

-- 004 and 005: helper functions, materialized views, and 005's indexes (by name).
CREATE OR REPLACE FUNCTION rollback.drop_helper_functions() RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.relname FROM pg_class c
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'm'
           AND c.relname IN ('user_document_stats', 'top_skills_view', 'recent_activity_view')
    LOOP
        EXECUTE format('DROP MATERIALIZED VIEW public.%I', r.relname);
        RETURN NEXT format('dropped materialized view %s', r.relname);
    END LOOP;
    -- Collected first: a CASCADE below can drop a function a lazy cursor has not reached yet.
    FOR r IN
        SELECT unnest(array_agg(p.oid::regprocedure::text)) AS sig FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace
           AND p.proname IN ('jsonb_merge_deep', 'extract_skills', 'calculate_keyword_match', 'calculate_ats_score',
                             'search_documents', 'get_user_documents', 'cleanup_old_documents',
                             'refresh_materialized_views', 'analyze_index_usage', 'jsonb_text_values',
                             'resume_experience_text', 'resume_search_text', 'resume_search_vector',
                             'job_search_text', 'job_search_vector')
    LOOP
        -- CASCADE: 005's expression indexes and views are built on these functions (and an
        -- earlier CASCADE may already have taken a later one of this list).
        IF to_regprocedure(r.sig) IS NOT NULL THEN
            EXECUTE format('DROP FUNCTION %s CASCADE', r.sig);
            RETURN NEXT format('dropped function %s', r.sig);
        END IF;
    END LOOP;
    FOR r IN
        SELECT i.relname AS idx, t.relname AS tbl FROM pg_index x
          JOIN pg_class i ON i.oid = x.indexrelid
          JOIN pg_class t ON t.oid = x.indrelid
         WHERE t.relnamespace = 'public'::regnamespace
           AND t.relname IN ('resume_documents', 'job_documents', 'optimization_results', 'research_results',
                             'document_audit_log')
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
           -- 005's names (sql/005_performance_indexes_views.sql); an operator's own index survives.
           AND i.relname ~ ('^idx_(resume_documents|job_documents|optimization_results|research_results)_'
                            '(parsed_data_gin|metadata_gin|user_created|user_status|active_user_created|'
                            'expires_at|fts|filename_trgm|title_trgm|company_trgm|bloom)$')
    LOOP
        EXECUTE format('DROP INDEX public.%I', r.idx);
        RETURN NEXT format('dropped index %s on %s', r.idx, r.tbl);
    END LOOP;
    IF to_regclass('public.migration_history') IS NOT NULL THEN
        DELETE FROM public.migration_history WHERE version IN ('004', '005');
        IF FOUND THEN
            RETURN NEXT 'deleted migration_history 004, 005';
        END IF;
    END IF;
END
$$;

-- 003 (and, first, 004..006 which cannot exist without it).
CREATE OR REPLACE FUNCTION rollback.drop_document_tables() RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    RETURN QUERY SELECT * FROM rollback.drop_validation_objects();
    RETURN QUERY SELECT * FROM rollback.drop_helper_functions();
    FOREACH t IN ARRAY ARRAY['research_results', 'optimization_results', 'job_documents', 'resume_documents',
                             'document_audit_log']
    LOOP
        IF to_regclass('public.' || t) IS NOT NULL THEN
            EXECUTE format('DROP TABLE public.%I', t);
            RETURN NEXT 'dropped table ' || t;
        END IF;
    END LOOP;
    IF to_regprocedure('public.update_document_updated_at()') IS NOT NULL THEN
        DROP FUNCTION public.update_document_updated_at();
        RETURN NEXT 'dropped function update_document_updated_at()';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_type WHERE typnamespace = 'public'::regnamespace AND typname = 'percentage'
               AND typtype = 'd') THEN
        DROP DOMAIN public.percentage;   -- RESTRICT: fails rather than drop a column elsewhere
        RETURN NEXT 'dropped domain percentage';
    END IF;
    IF to_regclass('public.migration_history') IS NOT NULL THEN
        DELETE FROM public.migration_history WHERE version = '003';
        IF FOUND THEN
            RETURN NEXT 'deleted migration_history 003';
        END IF;
    END IF;
END
$$;

-- 003..007; with p_include_production also 001/002 (the live application's tables).
CREATE OR REPLACE FUNCTION rollback.rollback_all_migrations(p_include_production boolean DEFAULT false)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    r record;
    t text;
BEGIN
    RETURN QUERY SELECT * FROM rollback.drop_document_tables();
    FOR r IN
        SELECT p.oid::regprocedure::text AS sig FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace
           AND p.proname IN ('etl_merge_stage', 'migrate_arango_document', 'etl_link_edges', 'etl_prepare_stage',
                             'etl_document_table', 'etl_uuid5')
    LOOP
        EXECUTE format('DROP FUNCTION %s', r.sig);
        RETURN NEXT format('dropped function %s', r.sig);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['etl_work_units', 'etl_pending_links', 'etl_checkpoints', 'etl_batches', 'etl_rejects',
                             'etl_runs', 'etl_deferred_indexes'] LOOP
        IF to_regclass('public.' || t) IS NOT NULL THEN
            EXECUTE format('DROP TABLE public.%I', t);
            RETURN NEXT 'dropped table ' || t;
        END IF;
    END LOOP;
    IF to_regclass('public.migration_history') IS NOT NULL THEN
        DELETE FROM public.migration_history WHERE version = '007';
        IF FOUND THEN
            RETURN NEXT 'deleted migration_history 007 (rollback schema and status functions kept)';
        END IF;
    END IF;
    IF p_include_production THEN
        FOREACH t IN ARRAY ARRAY['task_metrics', 'tasks', 'user_profiles'] LOOP
            IF to_regclass('public.' || t) IS NOT NULL THEN
                EXECUTE format('DROP TABLE public.%I', t);
                RETURN NEXT 'dropped table ' || t;
            END IF;
        END LOOP;
        IF to_regprocedure('public.update_updated_at_column()') IS NOT NULL THEN
            DROP FUNCTION public.update_updated_at_column();
            RETURN NEXT 'dropped function update_updated_at_column()';
        END IF;
        IF to_regclass('public.migration_history') IS NOT NULL THEN
            DELETE FROM public.migration_history WHERE version IN ('001', '002');
            IF FOUND THEN
                RETURN NEXT 'deleted migration_history 001, 002';
            END IF;
        END IF;
    END IF;
END
$$;

