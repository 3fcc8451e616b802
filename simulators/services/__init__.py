"""What the system talks to besides instruments: MQTT brokers (:mod:`.broker`) and the Atomscale API emulator
(:mod:`.atomscale`)."""
