-- 009_sync_verification.sql: the follower's continuous verification of the keys it applies.
--
-- Creates:
--  * etl_sync_pending: each key the follower applied and has not verified yet (collection, _key,
--    the tick of its last change), written in the same transaction as the change, so that a
--    crash loses no key to verify. A verification that finds the row equal to the source
--    deletes it; one that finds a difference keeps it with the differing fields (the source may
--    have moved on since: the next check, or the cutover's, decides).
--  * etl_sync_verified: per collection, how many keys were verified, the first and last time,
--    and the keys still differing at the last check (`etl status`, the cutover's report).
--  * etl_sync_lag: the follower's lag (commit in ArangoDB to row in PostgreSQL) over its last
--    changes, p50/p99/max in milliseconds (`etl status`).
--  * idx_etl_rejects_collection_key: the rejects of given keys (the verifier, the follower's edge
--    apply and every batch's forgetting of rejects look them up by key; without it each lookup
--    scans etl_rejects). A hash index: a reject's key can be any length (an invalid key is kept
--    as read), and a btree refuses entries over a third of a page.
--  * rollback.rollback_sync_verification(): drops the three tables and the index, forgets 009 in
--    migration_history.
-- Undone by: rollback.rollback_sync_verification().

CREATE TABLE IF NOT EXISTS etl_sync_pending (
    collection text NOT NULL,
    key        text NOT NULL,
    tick       numeric(20, 0) NOT NULL,  -- the key's last applied change
    checks     integer NOT NULL DEFAULT 0,  -- verifications that found a difference
    fields     text[],                   -- the differing fields (or why) at the last check
    checked_at timestamptz,
    PRIMARY KEY (collection, key)
);

CREATE TABLE IF NOT EXISTS etl_sync_verified (
    collection        text PRIMARY KEY,
    keys_verified     bigint NOT NULL DEFAULT 0,
    first_verified_at timestamptz,
    last_verified_at  timestamptz,
    last_tick         numeric(20, 0)     -- the newest change verified
);

CREATE TABLE IF NOT EXISTS etl_sync_lag (
    run_id     text PRIMARY KEY,        -- the follow position's run_id
    changes    bigint NOT NULL,         -- changes the figures are over (the latest ones)
    p50_ms     numeric NOT NULL,
    p99_ms     numeric NOT NULL,
    max_ms     numeric NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_etl_rejects_collection_key ON etl_rejects USING hash (key);

CREATE OR REPLACE FUNCTION rollback.rollback_sync_verification()
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['etl_sync_pending', 'etl_sync_verified', 'etl_sync_lag'] LOOP
        IF to_regclass('public.' || t) IS NOT NULL THEN
            EXECUTE format('DROP TABLE public.%I', t);
            RETURN NEXT 'dropped table ' || t;
        END IF;
    END LOOP;
    IF to_regclass('public.idx_etl_rejects_collection_key') IS NOT NULL THEN
        DROP INDEX public.idx_etl_rejects_collection_key;
        RETURN NEXT 'dropped index idx_etl_rejects_collection_key';
    END IF;
    IF to_regclass('public.migration_history') IS NOT NULL THEN
        DELETE FROM public.migration_history WHERE version = '009';
        IF FOUND THEN
            RETURN NEXT 'deleted migration_history 009';
        END IF;
    END IF;
END
$$;
