-- Accelerometer peaks a device sent with a fix (fleet_wire.models.Imu), as
-- the JSON object it arrived in: few devices have an IMU, so one nullable
-- column costs nothing for the rest. Processing judges harsh braking,
-- acceleration and cornering on these peaks when present.
ALTER TABLE positions ADD COLUMN IF NOT EXISTS imu jsonb;
