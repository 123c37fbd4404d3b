-- Use TimescaleDB when the server has it: positions becomes a hypertable.
-- On plain PostgreSQL this is a no-op and positions stays a BRIN-indexed
-- table; the same queries serve both.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXCEPTION WHEN OTHERS THEN
            -- Installed but not in shared_preload_libraries: stay plain.
            RAISE NOTICE 'timescaledb present but not loadable (%); using plain PostgreSQL', SQLERRM;
            RETURN;
        END;
        PERFORM create_hypertable('positions', 'fix_time',
                                  chunk_time_interval => interval '1 day',
                                  migrate_data => true, if_not_exists => true);
    END IF;
END
$$;
