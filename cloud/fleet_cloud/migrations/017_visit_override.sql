-- A dispatcher may settle a stop by hand (the customer cancelled, delivered by
-- another vehicle...). The derived status keeps being computed; the manual one
-- wins where set.
ALTER TABLE route_stops
    ADD COLUMN manual_status text CHECK (manual_status IN ('completed', 'skipped', 'failed')),
    ADD COLUMN manual_by bigint REFERENCES users ON DELETE SET NULL,
    ADD COLUMN manual_at timestamptz;
