"""The wire: every MQTT payload and topic, checked where it arrives, and the MQTT client helper.

Shared by both sides: the bridge (``bridge.edge``), the uploader (``bridge.uploader``) and the
command line. ``contract`` is the versioned message schema, checked where a message arrives
(docs/payload.md); ``topics`` the topic names; ``mqtt`` the paho client with its guards;
``request`` the one-shot request a CLI command sends to a site's bridge.
"""
