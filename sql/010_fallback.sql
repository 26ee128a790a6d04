-- 010_fallback.sql: the way back after cutover. `etl fallback` replays the application's writes
-- to the migrated tables into ArangoDB (docs/sync.md, "Rollback after the switch").
--
-- Creates:
--  * etl_fallback_changes: one row per captured insert (I), update (U) or delete (D) of a row of
--      a migrated table, written by the trigger etl_fallback_capture (installed on each table by
--      `etl fallback arm` or by `etl cutover` on go, not here). The applier reads the rows it
--      can see (committed ones: a running transaction's rows appear when it commits, an aborted
--      one's never) and deletes them in the transaction that records what it did: there is no
--      position to pass, so a transaction that commits late is never skipped, and the table
--      holds only what is still to apply (its size is in `etl status`). xid (the writing
--      transaction) is for diagnosis. A delete keeps the row's key and metadata (old_row): the
--      document and edges to remove.
--  * etl_fallback_state: one row: when and by whom the capture was armed, the tables it covers,
--      the WAL position at the arm, and the applier's progress.
--  * etl_fallback_applied: changes applied per collection and operation (status and reports).
--  * etl_fallback_inflight: the documents a batch is writing (see below).
--  * etl_fallback_conflicts: documents changed in ArangoDB after the cutover: reported, not
--      overwritten (unless `--on-conflict overwrite`).
--  * etl_fallback_capture(): the trigger function. SECURITY DEFINER: the application's role
--      needs no privilege on etl_fallback_changes. It ignores etl's own writes (session setting
--      etl.run_id non-empty, as update_document_updated_at() of 003 does).
--  * rollback.rollback_fallback(): drops the triggers, the tables and the function and forgets
--      010 in migration_history.
-- Undone by: rollback.rollback_fallback().

CREATE TABLE IF NOT EXISTS etl_fallback_changes (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    table_name text NOT NULL,         -- schema-qualified: public.resume_documents, arango.task_results
    row_id     uuid NOT NULL,
    op         char(1) NOT NULL CONSTRAINT etl_fallback_changes_op_check CHECK (op IN ('I', 'U', 'D')),
    old_row    jsonb,                 -- D: {"key": ..., "metadata": ...} of the deleted row
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS etl_fallback_state (
    id            int PRIMARY KEY DEFAULT 1 CONSTRAINT etl_fallback_state_one CHECK (id = 1),
    mechanism     text NOT NULL,      -- 'trigger'
    armed_by      text NOT NULL,      -- the run that armed it (cutover or fallback-arm)
    armed_at      timestamptz NOT NULL DEFAULT now(),
    armed_lsn     pg_lsn,
    tables        text[] NOT NULL,
    applied_seq   bigint NOT NULL DEFAULT 0,  -- the highest change applied so far
    applied_at    timestamptz,                -- the commit time of the last apply
    last_change_at timestamptz,               -- when the last applied change was written
    caught_up_at  timestamptz,                -- last time nothing committed was left to apply
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS etl_fallback_applied (
    collection text NOT NULL,
    operation  text NOT NULL,         -- insert, update, unchanged, remove, conflict
    changes    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (collection, operation)
);

-- The documents a batch is about to write, committed before it writes them and emptied with
-- its commit: after a crash in between, a document whose _rev is not the row's is known to be
-- etl's own write, not a change made in ArangoDB (not a conflict).
CREATE TABLE IF NOT EXISTS etl_fallback_inflight (
    collection text NOT NULL,
    key        text NOT NULL,
    PRIMARY KEY (collection, key)
);

CREATE TABLE IF NOT EXISTS etl_fallback_conflicts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection   text NOT NULL,
    key          text NOT NULL,
    row_id       uuid,
    operation    text NOT NULL,       -- what the fallback wanted: write or remove
    expected_rev text,                -- the _rev the row's provenance names (null: none)
    found_rev    text,                -- ArangoDB's (null: the document is gone)
    overwritten  boolean NOT NULL DEFAULT false,
    run_id       text,
    detected_at  timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION public.etl_fallback_capture() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    t text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;
BEGIN
    IF coalesce(current_setting('etl.run_id', true), '') <> '' THEN
        RETURN NULL;  -- etl's own writes (the fallback's provenance, a forward sync)
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND NEW.id IS DISTINCT FROM OLD.id) THEN
        INSERT INTO public.etl_fallback_changes (table_name, row_id, op, old_row)
        VALUES (t, OLD.id, 'D', jsonb_build_object('key', to_jsonb(OLD) -> 'key', 'metadata', OLD.metadata));
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.id IS DISTINCT FROM OLD.id) THEN
        INSERT INTO public.etl_fallback_changes (table_name, row_id, op) VALUES (t, NEW.id, 'I');
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO public.etl_fallback_changes (table_name, row_id, op) VALUES (t, NEW.id, 'U');
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION rollback.rollback_fallback()
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    r record;
    t text;
BEGIN
    FOR r IN SELECT tgrelid::regclass::text AS tbl FROM pg_trigger
             WHERE tgname = 'etl_fallback_capture' AND NOT tgisinternal LOOP
        EXECUTE format('DROP TRIGGER etl_fallback_capture ON %s', r.tbl);
        RETURN NEXT 'dropped trigger etl_fallback_capture on ' || r.tbl;
    END LOOP;
    FOREACH t IN ARRAY ARRAY['etl_fallback_changes', 'etl_fallback_state', 'etl_fallback_applied',
                             'etl_fallback_inflight', 'etl_fallback_conflicts'] LOOP
        IF to_regclass('public.' || t) IS NOT NULL THEN
            EXECUTE format('DROP TABLE public.%I', t);
            RETURN NEXT 'dropped table ' || t;
        END IF;
    END LOOP;
    IF to_regprocedure('public.etl_fallback_capture()') IS NOT NULL THEN
        DROP FUNCTION public.etl_fallback_capture();
        RETURN NEXT 'dropped function etl_fallback_capture';
    END IF;
    IF to_regclass('public.migration_history') IS NOT NULL THEN
        DELETE FROM public.migration_history WHERE version = '010';
        IF FOUND THEN
            RETURN NEXT 'deleted migration_history 010';
        END IF;
    END IF;
END
$$;
