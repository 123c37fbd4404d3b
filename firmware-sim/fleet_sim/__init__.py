"""Simulated hardware and vehicles for the fleet telemetry platform.

- ``route``: a deterministic vehicle driving a loop through a city;
- ``nmea`` / ``faults`` / ``sky``: the NMEA 0183 a GNSS receiver emits, and
  the damage real serial lines do to it;
- ``gps_pty``: that receiver on a pseudo-terminal, for the agent to open;
- ``fleet``: many vehicles speaking wire protocol v1 straight to the broker;
- ``oracle``: the ground-truth log fault tests compare the database with.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fleet-telemetry")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
