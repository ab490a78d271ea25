-- Galleries (tenants), sealed templates, key roles, gallery and score policy, the audit trail.
-- Existing subjects and templates move into the gallery `default`; existing templates keep
-- their plaintext feature with key_id NULL until `dvsp db rotate-key` seals them (the server
-- refuses to start while any is left). Tables are rebuilt (SQLite cannot change a primary
-- key): templates are copied before the old tables are dropped, so nothing is lost.
CREATE TABLE galleries (
    id TEXT PRIMARY KEY,
    name TEXT,
    created_at BIGINT NOT NULL
);
INSERT INTO galleries (id, name, created_at)
VALUES ('default', 'default', CAST(strftime('%s', 'now') AS INTEGER) * 1000);

CREATE TABLE subjects_v2 (
    gallery_id TEXT NOT NULL REFERENCES galleries(id),
    id TEXT NOT NULL,
    name TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (gallery_id, id)
);
INSERT INTO subjects_v2 (gallery_id, id, name, created_at)
SELECT 'default', id, name, created_at FROM subjects;

CREATE TABLE templates_v2 (
    id TEXT PRIMARY KEY,
    gallery_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    -- The master key wrapping data_key; NULL: a plaintext feature from before 0002.
    key_id TEXT,
    -- nonce || AES-256-GCM(master key, data key) || tag.
    data_key BLOB,
    -- nonce || AES-256-GCM(data key, feature) || tag (plaintext f32 while key_id is NULL).
    feature BLOB NOT NULL,
    quality DOUBLE PRECISION,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (gallery_id, subject_id) REFERENCES subjects_v2(gallery_id, id) ON DELETE CASCADE
);
INSERT INTO templates_v2 (id, gallery_id, subject_id, model_id, feature, quality, created_at)
SELECT id, 'default', subject_id, model_id, feature, quality, created_at FROM templates;

DROP TABLE templates;
DROP TABLE subjects;
ALTER TABLE subjects_v2 RENAME TO subjects;
ALTER TABLE templates_v2 RENAME TO templates;
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
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    request_id TEXT,
    key_id TEXT,
    gallery_id TEXT,
    action TEXT NOT NULL,
    subject_id TEXT,
    outcome TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log(at);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
