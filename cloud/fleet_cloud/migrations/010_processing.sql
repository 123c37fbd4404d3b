-- Processing stage (geofences, events, trips): its checkpoint, per-vehicle
-- state, and what it derives. See docs/events.md.

-- Where the follower is in positions.ingest_seq. Every seq <= high_seq was
-- either processed or is listed in holes (a gap not seen yet: an ingest
-- transaction still in flight, or a value consumed by ON CONFLICT DO NOTHING
-- or a rollback that will never appear). holes: [[lo, hi, first_seen_ms,
-- xmax_at_first_seen], ...]; a hole is final once it is older than the grace
-- period AND every transaction running when it was first seen has ended.
CREATE TABLE processing_checkpoint (
    name        text PRIMARY KEY,
    high_seq    bigint NOT NULL DEFAULT 0,
    holes       jsonb NOT NULL DEFAULT '[]',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Evaluator state of a vehicle after its newest processed fix (the watermark),
-- plus snapshots at earlier fix times so late fixes re-evaluate only the
-- window they touch.
CREATE TABLE vehicle_proc_state (
    vehicle_id  bigint PRIMARY KEY REFERENCES vehicles ON DELETE CASCADE,
    watermark   timestamptz NOT NULL,
    state       jsonb NOT NULL,
    last_recv   timestamptz,            -- newest receive time of its data (inactivity)
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE vehicle_state_snapshots (
    vehicle_id  bigint NOT NULL REFERENCES vehicles ON DELETE CASCADE,
    upto        timestamptz NOT NULL,   -- state after every fix with fix_time <= upto
    state       jsonb NOT NULL,
    PRIMARY KEY (vehicle_id, upto)
);

CREATE TABLE geofences (
    id            bigserial PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    name          text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('circle', 'polygon', 'corridor')),
    geometry      jsonb NOT NULL,          -- GeoJSON geometry, WGS84 lon/lat
    radius_m      double precision,        -- circle
    width_m       double precision,        -- corridor (full width)
    speed_limit_kmh real,
    hysteresis_m  real NOT NULL DEFAULT 15,
    min_dwell_s   real NOT NULL DEFAULT 10,  -- a transition must hold this long
    dwell_alert_s real,                      -- fire geofence_dwell when inside longer
    fleet_id      bigint REFERENCES fleets ON DELETE CASCADE,   -- NULL: whole tenant
    vehicle_id    bigint REFERENCES vehicles ON DELETE CASCADE, -- NULL: whole fleet/tenant
    active_hours  jsonb,                     -- {"days": [0..6], "start": "HH:MM", "end": "HH:MM", "tz": "..."}
    severity      text NOT NULL DEFAULT 'info' CHECK (severity IN ('info', 'warning', 'critical')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX geofences_tenant ON geofences (tenant_id);

-- Rule settings per tenant, optionally per vehicle (vehicle row wins).
CREATE TABLE event_rules (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    vehicle_id  bigint REFERENCES vehicles ON DELETE CASCADE,
    type        text NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    severity    text CHECK (severity IN ('info', 'warning', 'critical')),
    params      jsonb NOT NULL DEFAULT '{}',
    UNIQUE NULLS NOT DISTINCT (tenant_id, vehicle_id, type)
);

-- One row per event. (vehicle, type, rule_key, fix_key) is the idempotency
-- key: a replayed or re-evaluated fix can never store an event twice.
CREATE TABLE events (
    id              bigserial PRIMARY KEY,
    tenant_id       bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    vehicle_id      bigint NOT NULL REFERENCES vehicles ON DELETE CASCADE,
    type            text NOT NULL,
    rule_key        text NOT NULL DEFAULT '',   -- e.g. the geofence id
    fix_key         text NOT NULL,              -- device:boot:seq of the fix, or another stable origin
    fix_time        timestamptz NOT NULL,
    decided_time    timestamptz NOT NULL,         -- fix time of the fix that settled it (>= fix_time)
    detected_at     timestamptz NOT NULL DEFAULT now(),
    severity        text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    late            boolean NOT NULL DEFAULT false,   -- found only after newer fixes were processed
    throttled       boolean NOT NULL DEFAULT false,   -- over the per-rule alert budget: stored, not notified
    retracted_at    timestamptz,                      -- a re-evaluation no longer finds it
    lat             double precision,
    lon             double precision,
    geofence_id     bigint REFERENCES geofences ON DELETE SET NULL,
    details         jsonb NOT NULL DEFAULT '{}',
    acknowledged_at timestamptz,
    acknowledged_by bigint REFERENCES users ON DELETE SET NULL,
    UNIQUE (vehicle_id, type, rule_key, fix_key)
);
CREATE INDEX events_tenant_time ON events (tenant_id, fix_time DESC);
CREATE INDEX events_vehicle_time ON events (vehicle_id, fix_time);

CREATE TABLE trips (
    vehicle_id    bigint NOT NULL REFERENCES vehicles ON DELETE CASCADE,
    start_time    timestamptz NOT NULL,
    end_time      timestamptz,              -- NULL while the trip is open
    start_lat     double precision NOT NULL,
    start_lon     double precision NOT NULL,
    end_lat       double precision,
    end_lon       double precision,
    distance_m    double precision NOT NULL,
    max_speed     real NOT NULL,
    start_reason  text NOT NULL,
    end_reason    text,
    odometer_start_km double precision,
    odometer_end_km   double precision,
    idle_s        double precision NOT NULL DEFAULT 0,
    overspeed_s   double precision NOT NULL DEFAULT 0,
    harsh_count   integer NOT NULL DEFAULT 0,
    score         real,                     -- driver behaviour 0..100
    decided_time  timestamptz NOT NULL,     -- fix time of the fix that last shaped this row
    PRIMARY KEY (vehicle_id, start_time)
);

CREATE TABLE stops (
    vehicle_id    bigint NOT NULL REFERENCES vehicles ON DELETE CASCADE,
    start_time    timestamptz NOT NULL,
    end_time      timestamptz,
    lat           double precision NOT NULL,
    lon           double precision NOT NULL,
    start_reason  text NOT NULL,
    end_reason    text,
    engine_on_s   double precision NOT NULL DEFAULT 0,
    decided_time  timestamptz NOT NULL,
    PRIMARY KEY (vehicle_id, start_time)
);

-- Device online/offline as last evaluated (wall-clock driven, outside the fix replay).
CREATE TABLE device_presence (
    vehicle_id  bigint PRIMARY KEY REFERENCES vehicles ON DELETE CASCADE,
    online      boolean NOT NULL,
    since       timestamptz NOT NULL,
    reason      text NOT NULL
);
