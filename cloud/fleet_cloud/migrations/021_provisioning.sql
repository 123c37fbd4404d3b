-- Claim tokens: how an installer commissions a unit without a person at a desk.
-- A manager (or the installer) asks for a one-time, expiring token for a
-- vehicle; the unit redeems it once (POST /api/v1/provision) and receives its
-- device id, broker credentials, CA and initial config. Only a SHA-256 of the
-- token is stored: tokens are 256-bit random values, so a fast hash is enough
-- and a redemption is one index probe.
CREATE TABLE device_claims (
    id             bigserial PRIMARY KEY,
    tenant_id      bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    vehicle_id     bigint NOT NULL REFERENCES vehicles ON DELETE CASCADE,
    token_sha256   bytea NOT NULL UNIQUE,
    -- The device id to issue when given at creation; otherwise set on use
    -- (the vehicle's current device, or one derived from the vehicle's name).
    device_id      text CHECK (device_id ~ '^[a-z0-9][a-z0-9-]{2,63}$'),
    created_by     bigint REFERENCES users ON DELETE SET NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    used_at        timestamptz,
    -- The random id the unit keeps in its state directory: the same unit may
    -- redeem its token again (a re-run of the installer's command), another may not.
    used_by        text,
    used_hostname  text,
    used_agent     text,
    CHECK ((used_at IS NULL) = (used_by IS NULL)),
    CHECK (expires_at > created_at)
);
CREATE INDEX device_claims_vehicle ON device_claims (vehicle_id, created_at DESC);
CREATE INDEX device_claims_tenant ON device_claims (tenant_id, created_at DESC);
