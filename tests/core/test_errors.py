"""Every error the project raises on purpose is a BridgeError, so the CLI turns each into one line."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import bridge
from bridge.errors import BridgeError

#: signals inside one module, never raised to a caller: a private passphrase callback's, and the
#: two the bounded HTTP transport raises *as httpcore's own* so httpx maps them like its errors
INTERNAL = {"bridge.config.models._NeedsPassphrase", "bridge.uploader.sinks.bounded_http.DeadlineExceeded",
            "bridge.uploader.sinks.bounded_http.Aborted"}


def test_every_project_exception_class_is_under_bridge_error() -> None:
    outside = []
    for info in pkgutil.walk_packages(bridge.__path__, "bridge."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == info.name
                    and not issubclass(value, BridgeError)):
                outside.append(f"{info.name}.{name}")
    assert sorted(set(outside) - INTERNAL) == []
