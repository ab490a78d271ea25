-- The change feed of templates, read by every replica's in-memory gallery index
-- (src/server/index/): every insert, update or delete of a template bumps its gallery's
-- version and records (gallery, version, template id). A replica applies the changes after
-- the version it has by re-reading those templates, so a missed notification is caught by
-- the version alone. Writers of one gallery serialise on its row, so versions commit in order.
-- Old changes are pruned by the replicas; one whose version is behind the oldest kept
-- change reloads the gallery.
ALTER TABLE galleries ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
-- The index loads a gallery's templates of one model in id order, a page at a time.
DROP INDEX templates_model;
CREATE INDEX templates_gallery_model_id ON templates(gallery_id, model_id, id);
CREATE TABLE template_changes (
    gallery_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    template_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (gallery_id, version)
);
CREATE INDEX template_changes_at ON template_changes(at);
CREATE TRIGGER templates_changed_insert AFTER INSERT ON templates
BEGIN
    UPDATE galleries SET version = version + 1 WHERE id = NEW.gallery_id;
    INSERT INTO template_changes (gallery_id, version, template_id, at)
    SELECT id, version, NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    FROM galleries WHERE id = NEW.gallery_id;
END;
CREATE TRIGGER templates_changed_update AFTER UPDATE ON templates
BEGIN
    UPDATE galleries SET version = version + 1 WHERE id = NEW.gallery_id;
    INSERT INTO template_changes (gallery_id, version, template_id, at)
    SELECT id, version, NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    FROM galleries WHERE id = NEW.gallery_id;
END;
CREATE TRIGGER templates_changed_delete AFTER DELETE ON templates
BEGIN
    UPDATE galleries SET version = version + 1 WHERE id = OLD.gallery_id;
    INSERT INTO template_changes (gallery_id, version, template_id, at)
    SELECT id, version, OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    FROM galleries WHERE id = OLD.gallery_id;
END;
