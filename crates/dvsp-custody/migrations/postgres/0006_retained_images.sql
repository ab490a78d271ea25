-- Template migration (issue 12): enrollment images kept, sealed, for re-embedding with a new
-- model (`serve --retain-images`, `dvsp reembed`). Each image is sealed like a template
-- (`src/seal.rs`: its own data key, wrapped by the master key `key_id`; bound to the row's
-- id, gallery and subject) and goes with its subject. A template records the image it was
-- embedded from, so a re-embedding run knows what is left (resumable) and deleting the last
-- template of an image deletes the image.
CREATE TABLE enrollment_images (
    id TEXT PRIMARY KEY,
    gallery_id TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    data_key BYTEA NOT NULL,
    image BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (gallery_id, subject_id) REFERENCES subjects(gallery_id, id) ON DELETE CASCADE
);
CREATE INDEX enrollment_images_subject ON enrollment_images(gallery_id, subject_id);
CREATE INDEX enrollment_images_key ON enrollment_images(key_id);
ALTER TABLE templates ADD COLUMN image_id TEXT REFERENCES enrollment_images(id) ON DELETE SET NULL;
CREATE INDEX templates_image ON templates(image_id, model_id);

-- A promotion (or retirement) is announced to every replica at once; replicas also poll.
CREATE FUNCTION models_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('dvsp_models', NEW.id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER models_changed AFTER UPDATE OF state ON models
    FOR EACH ROW EXECUTE FUNCTION models_changed();
