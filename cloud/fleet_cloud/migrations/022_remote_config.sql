-- Remote configuration and commands (issue 8; docs/remote-config.md).
--
-- Layers hold flat dotted-key documents (fleet_wire.remote.REMOTE_KEYS). A
-- device's desired config is tenant, then its fleet's ancestors root first,
-- then its fleet, then its own layer: the nearest layer wins per key. What a
-- device was last told is kept as the signed document itself, so a restart
-- republishes exactly the bytes that were signed.

CREATE TABLE config_layers (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    scope       text NOT NULL CHECK (scope IN ('tenant', 'fleet', 'device')),
    fleet_id    bigint REFERENCES fleets ON DELETE CASCADE,
    device_id   text REFERENCES devices ON DELETE CASCADE,
    document    jsonb NOT NULL DEFAULT '{}',
    version     integer NOT NULL DEFAULT 1,  -- +1 per change of this layer
    updated_by  bigint REFERENCES users ON DELETE SET NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((scope = 'tenant' AND fleet_id IS NULL AND device_id IS NULL)
        OR (scope = 'fleet' AND fleet_id IS NOT NULL AND device_id IS NULL)
        OR (scope = 'device' AND device_id IS NOT NULL AND fleet_id IS NULL))
);
CREATE UNIQUE INDEX config_layers_tenant ON config_layers (tenant_id) WHERE scope = 'tenant';
CREATE UNIQUE INDEX config_layers_fleet ON config_layers (fleet_id) WHERE scope = 'fleet';
CREATE UNIQUE INDEX config_layers_device ON config_layers (device_id) WHERE scope = 'device';

-- What each device should run: the signed ConfigDocument of its latest version.
-- published_version < version means the retained message is not yet on the broker.
CREATE TABLE device_config_desired (
    device_id          text PRIMARY KEY REFERENCES devices ON DELETE CASCADE,
    version            bigint NOT NULL CHECK (version >= 1),
    document           jsonb NOT NULL,        -- the flat config (ConfigDocument.config)
    signature          text NOT NULL,         -- ConfigDocument.sig
    issued_at          bigint NOT NULL,       -- ConfigDocument.issued_at (UTC ms)
    published_version  bigint NOT NULL DEFAULT 0,
    published_at       timestamptz
);
CREATE INDEX device_config_unpublished ON device_config_desired (device_id)
    WHERE published_version < version;

-- What each device last said on up/config (a ConfigReport).
CREATE TABLE device_config_reported (
    device_id       text PRIMARY KEY REFERENCES devices ON DELETE CASCADE,
    version         bigint NOT NULL,
    status          text NOT NULL CHECK (status IN ('applied', 'rejected', 'reverted')),
    reason          text,
    active_version  bigint NOT NULL,
    reported_at     timestamptz NOT NULL,  -- the device's clock (ConfigReport.t)
    received_at     timestamptz NOT NULL DEFAULT now()
);

-- A staged change to one fleet: canaries first, then the rest, or aborted.
-- While canary/waiting its changes apply to the canary members only; while
-- proceeding to every member; when done they are merged into the fleet layer.
CREATE TABLE config_rollouts (
    id                bigserial PRIMARY KEY,
    tenant_id         bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    fleet_id          bigint NOT NULL REFERENCES fleets ON DELETE CASCADE,
    changes           jsonb NOT NULL,
    canary_percent    real NOT NULL CHECK (canary_percent > 0 AND canary_percent <= 100),
    max_failures_percent real NOT NULL CHECK (max_failures_percent >= 0 AND max_failures_percent <= 100),
    wait_s            integer NOT NULL CHECK (wait_s > 0),
    state             text NOT NULL DEFAULT 'canary'
                      CHECK (state IN ('canary', 'waiting', 'proceeding', 'done', 'aborted')),
    reason            text,                   -- why aborted (or a note when done)
    devices_total     integer NOT NULL DEFAULT 0,
    canary_count      integer NOT NULL DEFAULT 0,
    applied_count     integer NOT NULL DEFAULT 0,
    failed_count      integer NOT NULL DEFAULT 0,
    created_by        bigint REFERENCES users ON DELETE SET NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    phase_started_at  timestamptz,            -- start of the current wait window
    finished_at       timestamptz
);
-- One rollout in flight per fleet: two would race over the same keys.
CREATE UNIQUE INDEX config_rollouts_active ON config_rollouts (fleet_id)
    WHERE state IN ('canary', 'waiting', 'proceeding');

CREATE TABLE config_rollout_members (
    rollout_id   bigint NOT NULL REFERENCES config_rollouts ON DELETE CASCADE,
    device_id    text NOT NULL REFERENCES devices ON DELETE CASCADE,
    phase        text NOT NULL CHECK (phase IN ('canary', 'rest')),
    version      bigint,                      -- desired version that carried the change
    -- unchanged: the change does not alter its config; cancelled: the rollout
    -- was aborted before it answered (neither counts as a failure).
    result       text CHECK (result IN ('applied', 'rejected', 'reverted', 'no_answer',
                                        'unchanged', 'cancelled')),
    reason       text,
    answered_at  timestamptz,
    PRIMARY KEY (rollout_id, device_id)
);
CREATE INDEX config_rollout_members_device ON config_rollout_members (device_id)
    WHERE result IS NULL;

-- Commands on down/cmd and their results from up/cmd.
CREATE TABLE device_commands (
    id           text PRIMARY KEY,
    device_id    text NOT NULL REFERENCES devices ON DELETE CASCADE,
    tenant_id    bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('locate', 'set_interval', 'restart', 'clear_outbox')),
    args         jsonb NOT NULL DEFAULT '{}',
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'sent', 'done', 'rejected', 'expired', 'failed')),
    message      text,
    result       jsonb,
    created_by   bigint REFERENCES users ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    sent_at      timestamptz,
    answered_at  timestamptz
);
CREATE INDEX device_commands_device ON device_commands (device_id, created_at DESC);
CREATE INDEX device_commands_open ON device_commands (expires_at) WHERE status IN ('pending', 'sent');
