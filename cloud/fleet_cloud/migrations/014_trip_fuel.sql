-- Fuel estimate per trip: from MAF (mass air flow) when the vehicle reports it,
-- else from the fuel-level drop and the configured tank size.
ALTER TABLE trips ADD COLUMN fuel_l real;
ALTER TABLE trips ADD COLUMN fuel_source text CHECK (fuel_source IN ('maf', 'level'));
