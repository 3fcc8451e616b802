"""The names and texts the project accepts from outside, in one place (docs/security.md).

Sites, instruments, channels and flows become MQTT topic levels and folders of the local
store, and run names, samples and tags are printed on terminals: one hostile character (a
``/``, a ``..``, a newline, an ANSI escape) would turn a name into a path outside the store, a
wildcard topic or a forged line on an operator's screen. So every such value is checked here,
by the config, the wire contract and the store alike, and printing always goes through
:func:`printable`.

This module is core: it imports nothing of the project.
"""

from __future__ import annotations

import re
import secrets
from typing import Final

#: sites, instruments, channels, flows: a topic level and a file name on every file system
NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_MAX: Final = 64
_NAME: Final = re.compile(NAME_PATTERN)

#: site names that collide with the system's own topic (``{prefix}/uploader/status``) or with the
#: broker logins of its services (a bridge's login is its site: deploy/mosquitto/acl)
RESERVED_SITES: Final = frozenset({"uploader", "operator", "monitor"})

#: run ids: 32 lowercase hex digits, made only by the bridge (:func:`new_run_id`)
RUN_ID_PATTERN: Final = r"^[0-9a-f]{32}$"
_RUN_ID: Final = re.compile(RUN_ID_PATTERN)

#: free texts an operator types (run names, samples, tags, reasons): at most this many characters
TEXT_MAX: Final = 200
#: tags on one run, at most
TAGS_MAX: Final = 32

# C0 and C1 controls, DEL, and the Unicode line/paragraph separators and bidi overrides, which
# reorder or hide what a terminal shows
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def is_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def check_name(value: object, what: str) -> str:
    """``value`` if it is a valid name, else ValueError naming ``what`` and the rule."""
    if not is_name(value):
        raise ValueError(f"{what} must be 1-{NAME_MAX} characters of letters, digits, '_', '.', '-' starting "
                         f"with a letter or digit, got {printable(repr(value), 80)}")
    assert isinstance(value, str)
    return value


def check_site(value: object, what: str = "site") -> str:
    site = check_name(value, what)
    if site in RESERVED_SITES:
        raise ValueError(f"{what} {site!r} is reserved: {', '.join(sorted(RESERVED_SITES))} are the logins and "
                         f"topics of the system's own services")
    return site


def is_run_id(value: object) -> bool:
    return isinstance(value, str) and _RUN_ID.fullmatch(value) is not None


def new_run_id() -> str:
    """A fresh run id (128 random bits as 32 lowercase hex digits)."""
    return secrets.token_hex(16)


def check_text(value: object, what: str, max_length: int = TEXT_MAX) -> str:
    """A free text: a string of 1..``max_length`` characters with no control characters."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    if len(value) > max_length:
        raise ValueError(f"{what} is {len(value)} characters long; at most {max_length} are allowed")
    bad = _CONTROL.search(value)
    if bad is not None:
        raise ValueError(f"{what} must not contain control characters (found {bad.group()!r})")
    return value


def check_tags(value: object, what: str = "tags") -> list[str]:
    """A list of at most :data:`TAGS_MAX` tags, each a :func:`check_text` of at most 64 characters."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"{what} must be a list of strings, got {type(value).__name__}")
    if len(value) > TAGS_MAX:
        raise ValueError(f"{what}: {len(value)} tags; at most {TAGS_MAX} are allowed")
    return [check_text(tag, f"{what}[{n}]", 64) for n, tag in enumerate(value)]


def printable(text: object, max_length: int = 500) -> str:
    """``text`` made safe for a terminal or a log line: controls escaped, long texts cut with '…'."""
    s = text if isinstance(text, str) else str(text)
    s = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), s)
    return s if len(s) <= max_length else s[:max_length - 1] + "…"
