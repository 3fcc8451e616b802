"""The ``scpi`` driver: any instrument answering text queries over a VISA resource.

A query table in the config (:mod:`bridge.drivers.common.query_table`), one channel per query,
sent through a VISA resource (``TCPIP::host::port::SOCKET``, ``ASRL...``, ``@sim``) with the
resync of :mod:`bridge.drivers.common.visa_session`.
"""

from __future__ import annotations

import logging

from bridge.drivers.common.baseline import Baseline, BaselineReader, idn_fields
from bridge.drivers.common.query_table import QueryTableDriver, QueryTableOptions
from bridge.drivers.common.visa_session import VisaSession, VisaSessionOptions
from bridge.drivers.registry import register_driver
from bridge.transports.visa import VisaTransport

log = logging.getLogger("bridge.drivers.scpi")


class ScpiOptions(QueryTableOptions, VisaSessionOptions):
    #: query whose fixed answer resynchronises the dialogue after a failure; null: none (then a
    #: late reply after a timeout can be taken for the next one)
    sync_command: str | None = "*IDN?"



@register_driver("scpi")
class ScpiText(QueryTableDriver[VisaTransport, ScpiOptions]):
    """Text queries over VISA, one channel per query."""

    transports = ("visa",)
    Options = ScpiOptions
    summary = "any instrument answering text queries over VISA, from a query table in config"

    def __init__(self, transport: VisaTransport, options: ScpiOptions, instrument: str) -> None:
        super().__init__(transport, options, instrument)
        self.session = VisaSession(transport, instrument, options, options.sync_command, log)
        #: the sync query's answer at connect (``*IDN?``: the identity), None without one
        self.identity: str | None = None

    def connect(self) -> None:
        self.identity = self.session.identify()
        if self.identity is not None:
            log.info("%s: %s -> %s", self.instrument, self.session.sync_command, self.identity)

    def baseline(self) -> Baseline:
        """With ``sync_command: "*IDN?"`` (the default), its answer asked again as the identity
        (maker, model, serial, firmware); otherwise nothing (the config's ``identity:`` may say it)."""
        reader = BaselineReader(self.instrument)
        command = self.options.sync_command
        if command is not None and command.strip().upper() == "*IDN?":
            reply = reader.ask(command, lambda: self.session.query(command))
            if reply is not None:
                reader.set_identity(**idn_fields(reply))
        return reader.result()

    def ask(self, command: str) -> str:
        return self.session.query(command)

    def reply_failed(self) -> None:
        self.session.invalidate()
