"""GPS input: NMEA 0183 from a serial receiver, turned into typed fixes."""

from fleet_edge.gps.fix import GpsFix, NoFix

__all__ = ["GpsFix", "NoFix"]
