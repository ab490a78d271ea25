-- Unlinkable, renewable templates: each gallery's features are stored multiplied by a secret
-- random orthogonal matrix (src/protect.rs). Its 32-byte secret, per epoch, is wrapped by a
-- master key of the template keyring like the data keys. A template's epoch says which
-- secret it is under; 0 is the identity (templates from before, until their gallery is
-- renewed with `dvsp galleries renew`).
CREATE TABLE gallery_secrets (
    gallery_id TEXT NOT NULL REFERENCES galleries(id),
    epoch BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    -- nonce || AES-256-GCM(master key, secret) || tag.
    secret BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (gallery_id, epoch)
);
ALTER TABLE templates ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
