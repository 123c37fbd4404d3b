-- Planned routes of ordered stops (deliveries, customer visits). Visit status,
-- arrival/departure and ETA are derived by processing from the vehicle's fixes.

CREATE TABLE routes (
    id             bigserial PRIMARY KEY,
    tenant_id      bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    vehicle_id     bigint NOT NULL REFERENCES vehicles ON DELETE CASCADE,
    name           text NOT NULL,
    planned_start  timestamptz NOT NULL,   -- fixes outside [planned_start, planned_end] are not matched
    planned_end    timestamptz NOT NULL CHECK (planned_end > planned_start),
    corridor_m     real NOT NULL DEFAULT 500,  -- off the planned path by more: route_deviation
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX routes_vehicle_time ON routes (vehicle_id, planned_start);

CREATE TABLE route_stops (
    id            bigserial PRIMARY KEY,
    route_id      bigint NOT NULL REFERENCES routes ON DELETE CASCADE,
    seq           integer NOT NULL,
    name          text NOT NULL,
    lat           double precision NOT NULL,
    lon           double precision NOT NULL,
    radius_m      real NOT NULL DEFAULT 75,
    window_start  timestamptz,
    window_end    timestamptz,
    min_dwell_s   real NOT NULL DEFAULT 60,   -- inside this long: service in progress
    status        text NOT NULL DEFAULT 'planned'
                  CHECK (status IN ('planned', 'arrived', 'in_progress', 'completed', 'skipped', 'failed')),
    arrived_at    timestamptz,
    departed_at   timestamptz,
    eta           timestamptz,
    share_token   text NOT NULL UNIQUE,        -- read-only public tracking link of this delivery
    UNIQUE (route_id, seq)
);
