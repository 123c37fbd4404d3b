-- With TimescaleDB: engine_samples becomes a hypertable too, and both get
-- native compression after 7 days (segmented by vehicle, ordered by time, the
-- way history is read). Retention is applied by fleet_cloud/retention.py from
-- FLEET_RETENTION_DAYS (add_retention_policy on TimescaleDB, batched deletes
-- on plain PostgreSQL). A no-op on plain PostgreSQL.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('engine_samples', 'sample_time',
                                  chunk_time_interval => interval '1 day',
                                  migrate_data => true, if_not_exists => true);
        EXECUTE 'ALTER TABLE positions SET (timescaledb.compress,
                 timescaledb.compress_segmentby = ''vehicle_id'',
                 timescaledb.compress_orderby = ''fix_time'')';
        EXECUTE 'ALTER TABLE engine_samples SET (timescaledb.compress,
                 timescaledb.compress_segmentby = ''vehicle_id'',
                 timescaledb.compress_orderby = ''sample_time'')';
        PERFORM add_compression_policy('positions', interval '7 days', if_not_exists => true);
        PERFORM add_compression_policy('engine_samples', interval '7 days', if_not_exists => true);
    END IF;
END
$$;
