"""``chamber-bridge demo``: the whole system on one machine playing one growth run (:mod:`.command`).

:func:`demo` is exported here because it is the entry point ``simulators.demo:demo``.
"""

from simulators.demo.command import demo

__all__ = ["demo"]
