"""Remote configuration and commands, cloud side (docs/remote-config.md).

signing (the Ed25519 key), validation (keys and values), layering (tenant <
fleets < rollout stage < device), desired (versioned, signed documents),
rollouts (canary state machine), commands, intake (up/config and up/cmd from
ingest), control (the fleet-control MQTT client) and service (the background
task that publishes and advances everything).
"""
