-- 001_tasks.sql: background task queue and task metrics (already applied to production by hand).
--
-- Creates: tables tasks, task_metrics; their CHECK constraints (named, added only when missing);
--          indexes on tasks (user_id, created_at desc), (status, priority, created_at) for
--          pending/running work, (expires_at); on task_metrics (task_type, created_at desc).
-- Idempotent and safe on a database where an older hand-written version of this file ran:
-- missing columns are added (ADD COLUMN IF NOT EXISTS), missing constraints are added after a
-- catalog check (a constraint that exists under the same name is left as it is), indexes use
-- IF NOT EXISTS. Existing rows that violate a new constraint make the file fail (and roll back)
-- with the constraint named, rather than silently keeping bad data.
-- Undone by: rollback.rollback_all_migrations(true) (these are the application's live tables;
-- rollback_all_migrations() without the flag keeps them).
-- Requires: PostgreSQL 14+ (gen_random_uuid() is built in since 13).

CREATE TABLE IF NOT EXISTS tasks (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id               text NOT NULL,
    task_type             varchar(50) NOT NULL,
    status                varchar(20) NOT NULL DEFAULT 'pending',
    priority              integer DEFAULT 2,
    payload               jsonb NOT NULL,
    result_id             text,
    error_message         text,
    retry_count           integer DEFAULT 0,
    max_retries           integer DEFAULT 3,
    progress              integer DEFAULT 0,
    estimated_duration_ms integer,
    created_at            timestamptz DEFAULT now(),
    started_at            timestamptz,
    completed_at          timestamptz,
    expires_at            timestamptz DEFAULT now() + interval '7 days'
);

-- An older hand-applied table may lack later columns.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS priority integer DEFAULT 2;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS result_id text;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS error_message text;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS retry_count integer DEFAULT 0;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS max_retries integer DEFAULT 3;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS progress integer DEFAULT 0;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS estimated_duration_ms integer;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS created_at timestamptz DEFAULT now();
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS started_at timestamptz;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS completed_at timestamptz;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS expires_at timestamptz DEFAULT now() + interval '7 days';

DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT * FROM (VALUES
            ('tasks_status_check',
             $c$CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled'))$c$),
            ('tasks_priority_check', $c$CHECK (priority BETWEEN 1 AND 3)$c$),
            ('tasks_retry_count_check', $c$CHECK (retry_count >= 0 AND retry_count <= max_retries)$c$),
            ('tasks_max_retries_check', $c$CHECK (max_retries >= 0)$c$),
            ('tasks_progress_check', $c$CHECK (progress BETWEEN 0 AND 100)$c$)
        ) AS v(conname, def)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_constraint
                       WHERE conrelid = 'tasks'::regclass AND conname = c.conname) THEN
            EXECUTE format('ALTER TABLE tasks ADD CONSTRAINT %I %s', c.conname, c.def);
        END IF;
    END LOOP;
END
$$;

CREATE INDEX IF NOT EXISTS idx_tasks_user_created ON tasks (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_tasks_queue ON tasks (status, priority, created_at)
    WHERE status IN ('pending', 'running');
CREATE INDEX IF NOT EXISTS idx_tasks_expires_at ON tasks (expires_at);

CREATE TABLE IF NOT EXISTS task_metrics (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_type   varchar(50) NOT NULL,
    duration_ms integer NOT NULL,
    status      varchar(20) NOT NULL,
    error_type  varchar(100),
    worker_id   varchar(100),
    created_at  timestamptz DEFAULT now()
);

ALTER TABLE task_metrics ADD COLUMN IF NOT EXISTS error_type varchar(100);
ALTER TABLE task_metrics ADD COLUMN IF NOT EXISTS worker_id varchar(100);
ALTER TABLE task_metrics ADD COLUMN IF NOT EXISTS created_at timestamptz DEFAULT now();

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'task_metrics'::regclass AND conname = 'task_metrics_status_check') THEN
        ALTER TABLE task_metrics ADD CONSTRAINT task_metrics_status_check
            CHECK (status IN ('completed', 'failed', 'cancelled'));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'task_metrics'::regclass AND conname = 'task_metrics_duration_ms_check') THEN
        ALTER TABLE task_metrics ADD CONSTRAINT task_metrics_duration_ms_check CHECK (duration_ms >= 0);
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS idx_task_metrics_type_created ON task_metrics (task_type, created_at DESC);
