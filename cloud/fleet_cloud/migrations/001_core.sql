-- Core schema: tenants, users, fleets, vehicles, devices, positions, dead letters.
-- Plain PostgreSQL; 002 upgrades positions to a hypertable when TimescaleDB exists.

CREATE TABLE tenants (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    email         text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('owner', 'manager', 'dispatcher', 'viewer', 'installer')),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE fleets (
    id         bigserial PRIMARY KEY,
    tenant_id  bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    parent_id  bigint REFERENCES fleets ON DELETE SET NULL,
    name       text NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE vehicles (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    fleet_id    bigint REFERENCES fleets ON DELETE SET NULL,
    name        text NOT NULL,
    plate       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- A device is the unit in the vehicle; its id is its MQTT identity.
CREATE TABLE devices (
    device_id   text PRIMARY KEY CHECK (device_id ~ '^[a-z0-9][a-z0-9-]{2,63}$'),
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    vehicle_id  bigint UNIQUE REFERENCES vehicles ON DELETE SET NULL,
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per fix. The key makes a retransmitted fix a no-op: (device, boot,
-- seq) names a fix; fix_time is in the key because a hypertable's (and a
-- partitioned table's) unique keys must contain the partitioning column, and a
-- retransmission carries the same fix_time.
CREATE TABLE positions (
    device_id     text NOT NULL,
    boot_id       bigint NOT NULL,
    seq           bigint NOT NULL,
    fix_time      timestamptz NOT NULL,
    recv_time     timestamptz NOT NULL,
    vehicle_id    bigint,    -- NULL while the device is not assigned to a vehicle
    lat           double precision NOT NULL,
    lon           double precision NOT NULL,
    speed         real,      -- km/h
    heading       real,      -- degrees
    altitude      real,      -- metres
    hdop          real,
    sats          smallint,
    fix_type      smallint,  -- 2 = 2D, 3 = 3D
    engine        jsonb,     -- wire Engine object, as sent
    filter_reason text,      -- NULL = accepted; else why a plausibility filter flagged it
    PRIMARY KEY (device_id, boot_id, seq, fix_time)
);
CREATE INDEX positions_vehicle_time ON positions (vehicle_id, fix_time);
CREATE INDEX positions_time_brin ON positions USING brin (fix_time);

-- Messages that could not be used, with the reason, so a broken device or a
-- schema mismatch is visible and never blocks the stream.
CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    device_id    text,
    topic        text NOT NULL,
    reason       text NOT NULL,
    detail       text,
    payload      bytea
);
CREATE INDEX dead_letters_received ON dead_letters (received_at);

-- Latest status message of each device (its retained up/status).
CREATE TABLE device_status (
    device_id   text PRIMARY KEY REFERENCES devices ON DELETE CASCADE,
    online      boolean NOT NULL,
    status      jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
