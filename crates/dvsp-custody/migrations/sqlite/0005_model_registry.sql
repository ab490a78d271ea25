-- The model registry (issue 12): every model the admin retraining job or an operator
-- registered, its card as registered, its state, and the gate report that promoted or refused
-- it. The weights live in the models directory (`--models-dir`/<id>/). At most one model
-- serves at a time. Every admin action on a model is an event with who and when.
CREATE TABLE models (
    id TEXT PRIMARY KEY,
    card TEXT NOT NULL,
    card_sha256 TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('candidate', 'serving', 'retired')),
    registered_at BIGINT NOT NULL,
    registered_by TEXT NOT NULL,
    gate TEXT
);
CREATE UNIQUE INDEX models_one_serving ON models(state) WHERE state = 'serving';
CREATE TABLE model_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id TEXT NOT NULL REFERENCES models(id),
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    at BIGINT NOT NULL,
    detail TEXT
);
CREATE INDEX model_events_model ON model_events(model_id, seq);
