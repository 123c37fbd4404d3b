-- Late data waiting for re-evaluation. A backlog arrives in many batches; each
-- would re-evaluate the vehicle up to its watermark. Instead the earliest late
-- fix time is remembered here and the vehicle is re-evaluated once its late
-- data has been quiet for a settle period (FLEET_PROCESSING_LATE_SETTLE_S).
CREATE TABLE vehicle_reeval (
    vehicle_id  bigint PRIMARY KEY REFERENCES vehicles ON DELETE CASCADE,
    from_time   timestamptz NOT NULL,   -- earliest late fix not yet re-evaluated
    due_at      timestamptz NOT NULL
);
