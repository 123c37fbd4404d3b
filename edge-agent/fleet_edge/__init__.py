"""In-vehicle edge agent of the fleet telemetry platform."""

__version__ = "0.1.0"
