-- An older, hand-written version of 001 as it was applied to production: no CHECK constraints,
-- no max_retries/progress/estimated_duration_ms/expires_at columns, no indexes. Used by
-- tests/test_schema.py to prove that sql/001 is safe over it (and that --baseline works).
CREATE TABLE tasks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id text NOT NULL,
    task_type varchar(50) NOT NULL,
    status varchar(20) NOT NULL DEFAULT 'pending',
    priority integer DEFAULT 2,
    payload jsonb NOT NULL,
    result_id text,
    error_message text,
    retry_count integer DEFAULT 0,
    created_at timestamptz DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz
);
CREATE TABLE task_metrics (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_type varchar(50),
    duration_ms integer NOT NULL,
    status varchar(20),
    created_at timestamptz DEFAULT now()
);
INSERT INTO tasks (user_id, task_type, status, payload) VALUES ('user_gV1wS2Jw', 'parse_resume', 'completed', '{}');
