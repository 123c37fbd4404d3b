"""Remote configuration and commands, agent side (wire contract: fleet_wire.remote).

- ``durable``: atomic, fsynced state files;
- ``state``: what is remembered across restarts (applied/good config, command ids);
- ``config_keeper``: check, persist, apply, probation and revert of ``down/config``;
- ``commands``: ``down/cmd`` with expiry and once-only execution;
- ``runtime``: the running agent as remote config and commands see it;
- ``downlink``: the task tying them to the publisher's MQTT session.

docs/remote-config.md ("Agent side") describes the behaviour.
"""
