"""The pieces of the poller (:mod:`bridge.poller` is the public entry): what a bus is
(:mod:`.bus`), when to read (:mod:`.schedule`), whether an instrument is available
(:mod:`.health`), and the thread that polls one bus (:mod:`.bus_poller`)."""
