-- An older, hand-written version of 002: no bio column, a trigger under another name.
CREATE TABLE user_profiles (
    user_id text PRIMARY KEY,
    phone varchar(20),
    location varchar(255),
    title varchar(255),
    resume_id text,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now()
);
CREATE OR REPLACE FUNCTION update_updated_at_column() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at = NOW(); RETURN NEW; END $$;
CREATE TRIGGER trg_user_profiles_updated BEFORE UPDATE ON user_profiles
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
INSERT INTO user_profiles (user_id, phone) VALUES ('user_gV1wS2Jw', '+1 555 0100');
