"""Driving an emulator in another process (``chamber-bridge simulate atomscale``) through its admin endpoints."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class RemoteControl:
    """Drives an emulator in another process through its admin endpoints (stdlib only)."""

    def __init__(self, url: str, timeout: float = 5.0, ca_file: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        #: for an emulator serving HTTPS (``--tls``): the CA it was made with
        self._context = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout, context=self._context) as response:
            return json.loads(response.read())

    def add_fault(self, kind: str, **options: Any) -> Any:
        return self._call("POST", "/_emulator/faults", {"kind": kind, **options})

    def clear_faults(self) -> Any:
        return self._call("DELETE", "/_emulator/faults")

    def set_keys(self, keys: Iterable[str]) -> Any:
        return self._call("POST", "/_emulator/keys", {"keys": list(keys)})

    def state(self) -> Any:
        return self._call("GET", "/_emulator/state")

    def requests(self) -> Any:
        return self._call("GET", "/_emulator/requests")
