-- 008_change_capture.sql: where `etl sync` stands in ArangoDB's write-ahead log, and what it did.
--
-- Creates:
--  * etl_wal_positions: one row per WAL position a run recorded or follows.
--      kind 'mark'    `etl sync mark` (before arangodump): tick read and pinned, nothing else;
--      kind 'migrate' a migrate run's start: from a live ArangoDB the tick read before its first
--                     read; from a dump the mark it was linked to, or --from-tick;
--      kind 'follow'  the follower: `etl sync` keeps its cursor (from_tick, last_scanned) here,
--                     committed in the same transaction as the changes it covers.
--    Ticks are numeric(20,0): WAL ticks are unsigned 64-bit integers (bigint would overflow).
--  * etl_sync_applied: changes applied by the follower per collection and operation
--    (insert, update, unchanged, remove, reject, skipped), for `etl status` and the reports.
--  * document_audit_log_action_check also allows 'cutover' (etl cutover's entries: one per
--    document type, document_id the nil uuid, the verdict, final tick and freeze in `changes`);
--    document_audit_log_document_type_check also allows a generic table's document type, its
--    schema-qualified name ("arango.task_results"), so reconcile audits generic tables too.
--  * rollback.rollback_change_capture(): drops both tables, deletes the cutover entries and
--    the generic tables' entries, puts both checks of 003 back and forgets 008 in
--    migration_history.
-- No foreign key to etl_runs: rollback.rollback_all_migrations() (007) drops etl_runs without
-- CASCADE, and these rows outlive the runs that made them anyway.
-- Undone by: rollback.rollback_change_capture().

CREATE TABLE IF NOT EXISTS etl_wal_positions (
    run_id         text PRIMARY KEY,
    kind           text NOT NULL CONSTRAINT etl_wal_positions_kind_check
                       CHECK (kind IN ('mark', 'migrate', 'follow')),
    base_run_id    text,             -- follow: the migrate run whose copy it follows
    database_name  text,             -- the ArangoDB database
    server_id      text,             -- /_api/wal/lastTick server.serverId; another id = another server
    server_version text,
    syncer_id      text,             -- the WAL registration (arangodb-wal.md 4.4)
    start_tick     numeric(20, 0) NOT NULL,
    from_tick      numeric(20, 0) NOT NULL,
    last_scanned   numeric(20, 0) NOT NULL DEFAULT 0,
    server_tick    numeric(20, 0),   -- the server's last tick, as of the last response
    collections    jsonb,            -- cuid -> collection name at the start: a collection dropped
                                     -- or renamed later is still known by its copy-time name
    caught_up_at   timestamptz,      -- last time the follower had read everything there was
    applied_at     timestamptz,      -- last time a change was applied
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_etl_wal_positions_kind ON etl_wal_positions (kind, created_at DESC);

CREATE TABLE IF NOT EXISTS etl_sync_applied (
    run_id     text NOT NULL,        -- the follow position's run_id
    collection text NOT NULL,
    operation  text NOT NULL,
    changes    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, collection, operation)
);

ALTER TABLE document_audit_log DROP CONSTRAINT IF EXISTS document_audit_log_action_check;
ALTER TABLE document_audit_log ADD CONSTRAINT document_audit_log_action_check
    CHECK (action IN ('insert', 'update', 'delete', 'migrate', 'reconcile', 'rollback', 'cutover'));
ALTER TABLE document_audit_log DROP CONSTRAINT IF EXISTS document_audit_log_document_type_check;
ALTER TABLE document_audit_log ADD CONSTRAINT document_audit_log_document_type_check
    CHECK (document_type IN ('resume', 'job', 'optimization', 'research')
           OR document_type ~ '^[a-z_][a-z0-9_$]*[.][a-z_][a-z0-9_$]*$');

CREATE OR REPLACE FUNCTION rollback.rollback_change_capture()
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['etl_sync_applied', 'etl_wal_positions'] LOOP
        IF to_regclass('public.' || t) IS NOT NULL THEN
            EXECUTE format('DROP TABLE public.%I', t);
            RETURN NEXT 'dropped table ' || t;
        END IF;
    END LOOP;
    IF to_regclass('public.document_audit_log') IS NOT NULL THEN
        DELETE FROM public.document_audit_log
         WHERE action = 'cutover' OR document_type NOT IN ('resume', 'job', 'optimization', 'research');
        ALTER TABLE public.document_audit_log DROP CONSTRAINT IF EXISTS document_audit_log_action_check;
        ALTER TABLE public.document_audit_log ADD CONSTRAINT document_audit_log_action_check
            CHECK (action IN ('insert', 'update', 'delete', 'migrate', 'reconcile', 'rollback'));
        ALTER TABLE public.document_audit_log DROP CONSTRAINT IF EXISTS document_audit_log_document_type_check;
        ALTER TABLE public.document_audit_log ADD CONSTRAINT document_audit_log_document_type_check
            CHECK (document_type IN ('resume', 'job', 'optimization', 'research'));
        RETURN NEXT 'document_audit_log: cutover and generic entries deleted, checks of 003 restored';
    END IF;
    IF to_regclass('public.migration_history') IS NOT NULL THEN
        DELETE FROM public.migration_history WHERE version = '008';
        IF FOUND THEN
            RETURN NEXT 'deleted migration_history 008';
        END IF;
    END IF;
END
$$;
