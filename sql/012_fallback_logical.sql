-- 012_fallback_logical.sql: `etl fallback` by logical decoding where the server allows it
-- (wal_level = logical and a role with REPLICATION or superuser; docs/sync.md, "Rollback after
-- the switch"). The capture is then a replication slot (test_decoding) instead of triggers; the
-- applier moves each committed transaction's changes from the slot into etl_fallback_changes
-- (the same table the triggers write) and advances the slot once they are committed there.
--
-- Changes:
--  * etl_fallback_state.slot_name: the slot of the 'logical' mechanism (null with triggers).
--  * etl_fallback_state.pumped_lsn: the commit LSN of the last transaction moved from the slot
--      into etl_fallback_changes, written with them: after a crash between that commit and the
--      slot's advance, transactions up to it are not moved twice.
--  * rollback.rollback_fallback(): also drops the slot and puts the tables' REPLICA IDENTITY back
--      to DEFAULT (the logical arm sets FULL: a delete must carry the row's key and metadata).
-- Undone by: rollback.rollback_fallback().

ALTER TABLE etl_fallback_state ADD COLUMN IF NOT EXISTS slot_name text;
ALTER TABLE etl_fallback_state ADD COLUMN IF NOT EXISTS pumped_lsn pg_lsn;

CREATE OR REPLACE FUNCTION rollback.rollback_fallback()
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    r record;
    t text;
BEGIN
    FOR r IN SELECT slot_name FROM pg_replication_slots
             WHERE database = current_database() AND slot_name LIKE 'etl\_fallback\_%' LOOP
        PERFORM pg_drop_replication_slot(r.slot_name);
        RETURN NEXT 'dropped replication slot ' || r.slot_name;
    END LOOP;
    IF to_regclass('public.etl_fallback_state') IS NOT NULL THEN
        FOR r IN SELECT c.oid::regclass::text AS tbl
                 FROM etl_fallback_state s, unnest(s.tables) AS u(name)
                 JOIN pg_class c ON c.oid = to_regclass(u.name)
                 WHERE s.mechanism = 'logical' AND c.relreplident = 'f' LOOP
            EXECUTE format('ALTER TABLE %s REPLICA IDENTITY DEFAULT', r.tbl);
            RETURN NEXT 'replica identity default on ' || r.tbl;
        END LOOP;
    END IF;
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
        DELETE FROM public.migration_history WHERE version IN ('010', '012');
        IF FOUND THEN
            RETURN NEXT 'deleted migration_history 010, 012';
        END IF;
    END IF;
END
$$;
