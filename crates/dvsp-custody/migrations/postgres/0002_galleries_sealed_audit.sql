-- Galleries (tenants), sealed templates, key roles, gallery and score policy, the audit trail.
-- Existing subjects and templates move into the gallery `default`; existing templates keep
-- their plaintext feature with key_id NULL until `dvsp db rotate-key` seals them (the server
-- refuses to start while any is left).
CREATE TABLE galleries (
    id TEXT PRIMARY KEY,
    name TEXT,
    created_at BIGINT NOT NULL
);
INSERT INTO galleries (id, name, created_at)
VALUES ('default', 'default', (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT);

ALTER TABLE templates DROP CONSTRAINT templates_subject_id_fkey;
ALTER TABLE subjects ADD COLUMN gallery_id TEXT NOT NULL DEFAULT 'default' REFERENCES galleries(id);
ALTER TABLE subjects ALTER COLUMN gallery_id DROP DEFAULT;
ALTER TABLE subjects DROP CONSTRAINT subjects_pkey;
ALTER TABLE subjects ADD PRIMARY KEY (gallery_id, id);

ALTER TABLE templates ADD COLUMN gallery_id TEXT NOT NULL DEFAULT 'default';
ALTER TABLE templates ALTER COLUMN gallery_id DROP DEFAULT;
-- The master key wrapping data_key; NULL: a plaintext feature from before 0002.
ALTER TABLE templates ADD COLUMN key_id TEXT;
-- nonce || AES-256-GCM(master key, data key) || tag.
ALTER TABLE templates ADD COLUMN data_key BYTEA;
ALTER TABLE templates ADD FOREIGN KEY (gallery_id, subject_id)
    REFERENCES subjects(gallery_id, id) ON DELETE CASCADE;
DROP INDEX templates_subject;
DROP INDEX templates_model;
CREATE INDEX templates_subject ON templates(gallery_id, subject_id);
CREATE INDEX templates_model ON templates(gallery_id, model_id);
CREATE INDEX templates_key ON templates(key_id);

-- Roles become sets: the old ordered roles keep what they allowed.
ALTER TABLE api_keys RENAME COLUMN role TO roles;
UPDATE api_keys SET roles = 'verify,identify,read' WHERE roles = 'verify';
UPDATE api_keys SET roles = 'verify,identify,read,enroll' WHERE roles = 'enroll';
-- Admin keys stay global; the others belong to `default`. Existing keys keep full scores;
-- new keys get decisions only unless created otherwise.
ALTER TABLE api_keys ADD COLUMN gallery_id TEXT REFERENCES galleries(id);
UPDATE api_keys SET gallery_id = 'default' WHERE roles <> 'admin';
ALTER TABLE api_keys ADD COLUMN scores TEXT NOT NULL DEFAULT 'full';

CREATE TABLE audit_log (
    seq BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    request_id TEXT,
    key_id TEXT,
    gallery_id TEXT,
    action TEXT NOT NULL,
    subject_id TEXT,
    outcome TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log(at);
CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
