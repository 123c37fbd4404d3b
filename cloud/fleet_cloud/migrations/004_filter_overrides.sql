-- Per-device overrides of the ingest plausibility limits, e.g.
-- {"max_speed_kmh": 900} for a tracker on an aircraft, {"min_sats": 0} for a
-- receiver that does not report satellites. Keys: see fleet_cloud/ingest/filters.py.
ALTER TABLE devices ADD COLUMN filter_overrides jsonb;
