"""A private Mosquitto per test: the same broker the demo starts (simulators/broker.py)."""

from simulators.broker import MosquittoBroker, mosquitto_binary

__all__ = ["MosquittoBroker", "mosquitto_binary"]
