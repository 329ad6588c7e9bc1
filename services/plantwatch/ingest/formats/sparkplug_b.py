"""sparkplug-b: Sparkplug B protobuf, read in the session of its edge node, not message by message.

A data message may name its metrics by alias only, and its sequence number means
something only after the ones before it: so the codec (`sparkplug.decode_payload`,
`sparkplug.encode_payload`) and the session rules (births, aliases, rebirth requests)
live in plantwatch.ingest.sparkplug, which the gateway and the simulator use directly.
Sensors read the metric named after them.
"""

from __future__ import annotations

from plantwatch.ingest.codecs import PayloadFormat


def default_field(sensor_type: str, sensor_name: str) -> str:
    return sensor_name


FORMAT = PayloadFormat("sparkplug-b", default_field)
