-- Sessions (refresh-token families), revoked access tokens and API keys.
-- Secrets are random 256-bit values, so only their SHA-256 is stored: a fast
-- hash is enough (nothing to brute-force) and lookups stay one index probe.

-- One login = one session; every refresh token it ever gets belongs to it.
-- Revoking the session (logout, or a refresh token used twice) ends all of
-- them, and the access tokens that carry its id (claim "sid").
CREATE TABLE auth_sessions (
    id            uuid PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    revoked_why   text
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id);

CREATE TABLE refresh_tokens (
    token_sha256  bytea PRIMARY KEY,
    session_id    uuid NOT NULL REFERENCES auth_sessions ON DELETE CASCADE,
    issued_at     timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz  -- set when rotated; a second use is a theft signal
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Access tokens revoked before their expiry (logout); kept until they expire.
CREATE TABLE revoked_jtis (
    jti         text PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX revoked_jtis_expiry ON revoked_jtis (expires_at);

-- Keys for integrations: a tenant, a role, and the user who made them (the
-- key acts as that user in audit columns such as events.acknowledged_by).
CREATE TABLE api_keys (
    id           bigserial PRIMARY KEY,
    tenant_id    bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    created_by   bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('owner', 'manager', 'dispatcher', 'viewer', 'installer')),
    prefix       text NOT NULL,  -- the first characters, to tell keys apart in a list
    key_sha256   bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);
