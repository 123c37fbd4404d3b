-- Engine samples (typed OBD-II values, one row per fix that carried them) and
-- per-vehicle hourly/daily statistics.

CREATE TABLE engine_samples (
    device_id    text NOT NULL,
    boot_id      bigint NOT NULL,
    seq          bigint NOT NULL,
    sample_time  timestamptz NOT NULL,  -- fix time minus the value's age
    vehicle_id   bigint,
    rpm real, vss real, ect real, load real, tps real, fuel real, iat real, maf real, vbat real,
    run_s        integer,
    odo_km       double precision,
    ign          boolean,
    dtc          text[],
    PRIMARY KEY (device_id, boot_id, seq, sample_time)
);
CREATE INDEX engine_samples_vehicle_time ON engine_samples (vehicle_id, sample_time);

-- Great-circle distance in metres (mean Earth radius): statistics sum these
-- between consecutive fixes; never degrees.
CREATE FUNCTION fleet_distance_m(lat1 float8, lon1 float8, lat2 float8, lon2 float8)
RETURNS float8 LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$  -- NULL without a predecessor
    SELECT 2 * 6371008.8 * asin(sqrt(least(1,
        sin(radians(lat2 - lat1) / 2) ^ 2
        + cos(radians(lat1)) * cos(radians(lat2)) * sin(radians(lon2 - lon1) / 2) ^ 2)))
$$;

-- Statistics are a rollup the service keeps current (fleet_cloud/rollup.py):
-- distance needs each fix's predecessor in fix-time order, a window function
-- that TimescaleDB continuous aggregates cannot express, so both backends use
-- the same tables and the same queries.
CREATE TABLE vehicle_stats_hourly (
    vehicle_id     bigint NOT NULL,
    bucket         timestamptz NOT NULL,
    fixes          integer NOT NULL,
    distance_km    double precision NOT NULL,
    max_speed_kmh  real,
    avg_speed_kmh  real,
    moving_s       double precision NOT NULL,
    idle_s         double precision NOT NULL,
    PRIMARY KEY (vehicle_id, bucket)
);

CREATE VIEW vehicle_stats_daily AS
SELECT vehicle_id, date_trunc('day', bucket) AS bucket, sum(fixes)::integer AS fixes,
       sum(distance_km) AS distance_km, max(max_speed_kmh) AS max_speed_kmh,
       (sum(avg_speed_kmh * fixes) / nullif(sum(fixes), 0))::real AS avg_speed_kmh,
       sum(moving_s) AS moving_s, sum(idle_s) AS idle_s
FROM vehicle_stats_hourly GROUP BY 1, 2;

-- How far the rollup has read positions (by ingest_seq).
CREATE TABLE rollup_state (
    name       text PRIMARY KEY,
    last_seq   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
