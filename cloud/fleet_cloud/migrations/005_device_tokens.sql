-- HTTP device credentials (phones, third-party trackers that cannot speak
-- MQTT). Only a SHA-256 of each token is stored: tokens are 256-bit random
-- values, so a fast hash is enough and lookups stay cheap on the ingest path.
CREATE TABLE device_tokens (
    id           bigserial PRIMARY KEY,
    device_id    text NOT NULL REFERENCES devices ON DELETE CASCADE,
    token_sha256 bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE INDEX device_tokens_device ON device_tokens (device_id);
