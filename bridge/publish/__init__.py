"""Getting readings off the Pi without losing or doubling any (DESIGN.md section 3).

- :mod:`bridge.publish.codec` is the one place the wire format (docs/payload.md) is written
  and read, so the bridge, the CLI and the uploader cannot disagree about it.
- :mod:`bridge.publish.topics` names the MQTT topics (DESIGN.md section 9) in one place.
- :mod:`bridge.publish.outbox` is the durable, seq-numbered log every reading and run marker
  goes into before it is published; entries leave it only when the uploader acknowledges them,
  because a broker's PUBACK does not make a message safe (RELIABILITY.md).
"""
