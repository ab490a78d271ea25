CREATE TABLE subjects (
    id TEXT PRIMARY KEY,
    name TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE templates (
    id TEXT PRIMARY KEY,
    subject_id TEXT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    feature BYTEA NOT NULL,
    quality DOUBLE PRECISION,
    created_at BIGINT NOT NULL
);
CREATE INDEX templates_subject ON templates(subject_id);
CREATE INDEX templates_model ON templates(model_id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE verify_attempts (
    subject_id TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    count BIGINT NOT NULL
);
