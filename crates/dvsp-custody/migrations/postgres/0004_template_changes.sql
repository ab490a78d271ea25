-- The change feed of templates, read by every replica's in-memory gallery index
-- (src/server/index/): every insert, update or delete of a template bumps its gallery's
-- version and records (gallery, version, template id), and notifies `dvsp_templates` on
-- commit. A replica applies the changes after the version it has by re-reading those
-- templates, so a missed notification is caught by the version alone (replicas also poll).
-- Writers of one gallery serialise on its row (the UPDATE's lock is held to commit), so
-- versions commit in order. The trigger is deferred to commit, so that lock is the last one
-- a transaction takes (taken at the write, it would deadlock against a concurrent enroll's
-- foreign-key lock or a renewal's row locks). Old changes are pruned by the replicas; one
-- whose version is behind the oldest kept change reloads the gallery.
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
CREATE FUNCTION templates_changed() RETURNS trigger AS $$
DECLARE
    g TEXT;
    t TEXT;
    v BIGINT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        g := OLD.gallery_id; t := OLD.id;
    ELSE
        g := NEW.gallery_id; t := NEW.id;
    END IF;
    UPDATE galleries SET version = version + 1 WHERE id = g RETURNING version INTO v;
    INSERT INTO template_changes (gallery_id, version, template_id, at)
    VALUES (g, v, t, (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT);
    PERFORM pg_notify('dvsp_templates', g);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE CONSTRAINT TRIGGER templates_changed AFTER INSERT OR UPDATE OR DELETE ON templates
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION templates_changed();

-- A revoked (or changed) API key is announced to every replica's key cache at once
-- (src/server/auth.rs; without it, the cache's half-second expiry).
CREATE FUNCTION api_keys_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('dvsp_keys', NEW.id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER api_keys_changed AFTER UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_keys_changed();
