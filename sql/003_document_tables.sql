-- 003_document_tables.sql: the four document tables and the document audit log.
--
-- Creates: domain percentage (numeric 0..100; 006 adds email and url next to it, but the score
--          columns below need it already); tables resume_documents, job_documents,
--          optimization_results, research_results (business content in parsed_data jsonb,
--          provenance in metadata jsonb, see schema.md) and document_audit_log; function
--          update_document_updated_at() and one BEFORE UPDATE trigger per document table;
--          indexes that back the foreign keys and the audit log's lookups.
--
-- updated_at on the document tables: update_document_updated_at() sets updated_at = now()
-- only when the UPDATE did not itself change updated_at, and never while the ETL is writing
-- (session setting etl.run_id non-empty). So the ETL keeps the source's timestamps (a migrated
-- row's updated_at is the ArangoDB document's), while an application UPDATE that does not
-- mention updated_at still bumps it. user_profiles keeps the classic update_updated_at_column()
-- of 002 (always now()), which this file does not change.
--
-- Decisions where schema.md is silent:
--  * optimization_results.parent_optimization_id is ON DELETE SET NULL (a child optimization
--    outlives a deleted parent instead of blocking the delete).
--  * status columns carry no value list: the source holds free-form statuses.
--  * document_audit_log has no foreign key to the documents: audit rows must outlive deletes.
--
-- Idempotent: CREATE ... IF NOT EXISTS, CREATE OR REPLACE, catalog checks before CREATE DOMAIN,
-- ADD CONSTRAINT and CREATE TRIGGER.
-- Undone by: rollback.drop_document_tables() (which first undoes 004..006, they depend on it).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                   WHERE t.typname = 'percentage' AND n.nspname = 'public') THEN
        CREATE DOMAIN public.percentage AS numeric
            CONSTRAINT percentage_range CHECK (VALUE >= 0 AND VALUE <= 100);
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS resume_documents (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       text NOT NULL,
    filename      varchar(255) NOT NULL,
    content_type  varchar(100),
    file_size     bigint,
    file_hash     text,
    status        varchar(50) NOT NULL DEFAULT 'pending',
    source        varchar(50) DEFAULT 'upload',
    task_id       text,
    error_message text,
    parsed_data   jsonb NOT NULL DEFAULT '{}',
    metadata      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    is_active     boolean NOT NULL DEFAULT true,
    expires_at    timestamptz,
    deleted_at    timestamptz
);

CREATE TABLE IF NOT EXISTS job_documents (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     text NOT NULL,
    title       varchar(500),
    company     varchar(255),
    location    varchar(255),
    remote_type varchar(50),
    job_url     text,
    source_url  text,
    status      varchar(50) NOT NULL DEFAULT 'pending',
    parsed_data jsonb NOT NULL DEFAULT '{}',
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    is_active   boolean NOT NULL DEFAULT true,
    expires_at  timestamptz,
    deleted_at  timestamptz
);

CREATE TABLE IF NOT EXISTS optimization_results (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                text NOT NULL,
    resume_id              uuid REFERENCES resume_documents (id) ON DELETE CASCADE,
    job_id                 uuid REFERENCES job_documents (id) ON DELETE SET NULL,
    parent_optimization_id uuid REFERENCES optimization_results (id) ON DELETE SET NULL,
    optimization_type      varchar(50) NOT NULL DEFAULT 'general',
    status                 varchar(50) NOT NULL DEFAULT 'pending',
    content                text,
    ats_score              percentage,
    keyword_match_score    percentage,
    task_id                text,
    parsed_data            jsonb NOT NULL DEFAULT '{}',
    metadata               jsonb NOT NULL DEFAULT '{}',
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    is_active              boolean NOT NULL DEFAULT true,
    expires_at             timestamptz,
    deleted_at             timestamptz
);

CREATE TABLE IF NOT EXISTS research_results (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     text NOT NULL,
    job_id      uuid REFERENCES job_documents (id) ON DELETE CASCADE,
    resume_id   uuid REFERENCES resume_documents (id) ON DELETE SET NULL,
    company     varchar(255),
    job_title   varchar(500),
    report_type varchar(50) DEFAULT 'company_research',
    content     text,
    status      varchar(50) NOT NULL DEFAULT 'pending',
    task_id     text,
    parsed_data jsonb NOT NULL DEFAULT '{}',
    metadata    jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    is_active   boolean NOT NULL DEFAULT true,
    expires_at  timestamptz,
    deleted_at  timestamptz
);

CREATE TABLE IF NOT EXISTS document_audit_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_type text NOT NULL,
    document_id   uuid NOT NULL,
    user_id       text,
    action        text NOT NULL,
    changes       jsonb NOT NULL DEFAULT '{}',
    run_id        text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'document_audit_log'::regclass
                   AND conname = 'document_audit_log_document_type_check') THEN
        ALTER TABLE document_audit_log ADD CONSTRAINT document_audit_log_document_type_check
            CHECK (document_type IN ('resume', 'job', 'optimization', 'research'));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'document_audit_log'::regclass
                   AND conname = 'document_audit_log_action_check') THEN
        ALTER TABLE document_audit_log ADD CONSTRAINT document_audit_log_action_check
            CHECK (action IN ('insert', 'update', 'delete', 'migrate', 'reconcile', 'rollback'));
    END IF;
END
$$;

-- Foreign keys are not indexed by PostgreSQL itself; cascades and joins need these.
CREATE INDEX IF NOT EXISTS idx_optimization_results_resume_id ON optimization_results (resume_id);
CREATE INDEX IF NOT EXISTS idx_optimization_results_job_id ON optimization_results (job_id);
CREATE INDEX IF NOT EXISTS idx_optimization_results_parent ON optimization_results (parent_optimization_id)
    WHERE parent_optimization_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_research_results_job_id ON research_results (job_id);
CREATE INDEX IF NOT EXISTS idx_research_results_resume_id ON research_results (resume_id);
CREATE INDEX IF NOT EXISTS idx_document_audit_log_document ON document_audit_log (document_type, document_id);
CREATE INDEX IF NOT EXISTS idx_document_audit_log_run_id ON document_audit_log (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_document_audit_log_user_created ON document_audit_log (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_document_audit_log_created_at ON document_audit_log (created_at);

CREATE OR REPLACE FUNCTION update_document_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Keep an updated_at the statement wrote itself, and everything the ETL writes.
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
       AND coalesce(current_setting('etl.run_id', true), '') = '' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['resume_documents', 'job_documents', 'optimization_results', 'research_results']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t::regclass
                       AND tgname = t || '_updated_at' AND NOT tgisinternal) THEN
            EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I FOR EACH ROW '
                           'EXECUTE FUNCTION update_document_updated_at()', t || '_updated_at', t);
        END IF;
    END LOOP;
END
$$;
