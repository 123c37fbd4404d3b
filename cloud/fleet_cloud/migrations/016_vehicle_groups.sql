-- Vehicle groups (across fleets: "refrigerated", "night shift"...), so a
-- geofence can be attached to a fleet, a group or a single vehicle.
CREATE TABLE vehicle_groups (
    id         bigserial PRIMARY KEY,
    tenant_id  bigint NOT NULL REFERENCES tenants ON DELETE CASCADE,
    name       text NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE TABLE vehicle_group_members (
    group_id    bigint NOT NULL REFERENCES vehicle_groups ON DELETE CASCADE,
    vehicle_id  bigint NOT NULL REFERENCES vehicles ON DELETE CASCADE,
    PRIMARY KEY (group_id, vehicle_id)
);
CREATE INDEX vehicle_group_members_vehicle ON vehicle_group_members (vehicle_id);
-- No cascade: deleting a group in use is refused (it would silently drop or widen geofences).
ALTER TABLE geofences ADD COLUMN group_id bigint REFERENCES vehicle_groups;
