"""Wire contract v1 of the fleet telemetry platform.

The one module the edge agent, the cloud and the simulator all import: topic
names, payload models, schema version and encoding. Depends on pydantic and
orjson only, so it costs a Raspberry Pi nothing more.
"""

from fleet_wire.codec import (
    CT_JSON,
    CT_JSON_ZLIB,
    MAX_PAYLOAD_BYTES,
    RejectedFix,
    WireError,
    decode_json,
    decode_model,
    decode_telemetry,
    encode_json,
    maybe_compress,
    telemetry_body,
)
from fleet_wire.models import (
    MAX_FIXES_PER_BATCH,
    SCHEMA_VERSION,
    Ack,
    Engine,
    Fix,
    Imu,
    OutboxHealth,
    Status,
    TelemetryBatch,
    seq_ranges,
)
from fleet_wire.topics import (
    INGEST_SUBSCRIPTION,
    Down,
    TopicError,
    Up,
    UpTopic,
    down_topic,
    is_valid_device_id,
    parse_up_topic,
    up_topic,
)

__all__ = [
    "CT_JSON",
    "CT_JSON_ZLIB",
    "INGEST_SUBSCRIPTION",
    "MAX_FIXES_PER_BATCH",
    "MAX_PAYLOAD_BYTES",
    "SCHEMA_VERSION",
    "Ack",
    "Down",
    "Engine",
    "Fix",
    "Imu",
    "OutboxHealth",
    "RejectedFix",
    "Status",
    "TelemetryBatch",
    "TopicError",
    "Up",
    "UpTopic",
    "WireError",
    "decode_json",
    "decode_model",
    "decode_telemetry",
    "down_topic",
    "encode_json",
    "is_valid_device_id",
    "maybe_compress",
    "parse_up_topic",
    "seq_ranges",
    "telemetry_body",
    "up_topic",
]
