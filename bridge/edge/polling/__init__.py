"""The pieces of the poller (:mod:`bridge.edge.polling.pollers` is the public entry): what a bus is
(:mod:`.bus`), when to read (:mod:`.schedule`), whether an instrument is available
(:mod:`.availability`), and the thread that polls one bus (:mod:`.bus_poller`)."""
