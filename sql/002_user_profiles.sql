-- 002_user_profiles.sql: user profiles and the shared updated_at trigger function
-- (already applied to production by hand).
--
-- Creates: table user_profiles (user_id is the TEXT id issued by better-auth; the "user" table
--          itself is not created here); function update_updated_at_column(); trigger
--          update_user_profiles_updated_at (BEFORE UPDATE, keeps updated_at current).
-- update_updated_at_column() keeps its classic production behaviour (always now() on UPDATE):
-- replacing it with different semantics would change a live application table. The document
-- tables of 003 use their own variant, update_document_updated_at(), which respects an
-- explicitly written updated_at (see 003's header).
-- Idempotent and safe over an older hand-applied version: ADD COLUMN IF NOT EXISTS, the trigger
-- is created only when the table has no trigger of that name or calling that function
-- (a hand-applied version may have named it differently).
-- Undone by: rollback.rollback_all_migrations(true) (live application table; kept otherwise).

CREATE TABLE IF NOT EXISTS user_profiles (
    user_id    text PRIMARY KEY,
    phone      varchar(20),
    location   varchar(255),
    title      varchar(255),
    bio        text,
    resume_id  text,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now()
);

ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS phone varchar(20);
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS location varchar(255);
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS title varchar(255);
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS bio text;
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS resume_id text;
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS created_at timestamptz DEFAULT now();
ALTER TABLE user_profiles ADD COLUMN IF NOT EXISTS updated_at timestamptz DEFAULT now();

CREATE OR REPLACE FUNCTION update_updated_at_column() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'user_profiles'::regclass AND NOT tgisinternal
                     AND (tgname = 'update_user_profiles_updated_at'
                          OR tgfoid = 'update_updated_at_column()'::regprocedure)) THEN
        CREATE TRIGGER update_user_profiles_updated_at
            BEFORE UPDATE ON user_profiles
            FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
    END IF;
END
$$;
