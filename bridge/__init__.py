"""chamber-bridge: instrument readings from growth chambers to the lab's analysis platform."""

__version__ = "0.1.0"
