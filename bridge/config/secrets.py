"""Files a config names that hold secrets or certificates: read within bounds, never inline.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
)

from bridge.errors import ConfigError, ConfigProblem
from bridge.names import printable

log = logging.getLogger("bridge.config")


INLINE_SECRET = "secrets are never written inline; use {file} or {env}"
#: a secret file is one line (a password, an API key, a passphrase); past this it is not one
SECRET_MAX_BYTES = 64 * 1024
#: a CA bundle, a certificate or a key (the system's whole CA bundle is about 200 kB)
TLS_FILE_MAX_BYTES = 1024 * 1024


def _plain_path(path: Path) -> Path:
    """A path with a NUL or a control character is refused here, not by a traceback from os.stat later."""
    text = str(path)
    if printable(text, len(text) + 1) != text:
        raise ValueError(f"a path must not contain control characters, got {printable(repr(text), 120)}")
    return path


#: every path of the config: checked for control characters when the config is read
FilePath = Annotated[Path, AfterValidator(_plain_path)]


def regular_file(path: Path, what: str, max_bytes: int) -> os.stat_result:
    """Stat a file the config names: it must be a regular file of at most ``max_bytes``.

    A config naming ``/dev/zero``, a FIFO or a directory must get a one-line error, not a read
    that never ends (OpenSSL reads a PEM file until it finds a header).
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError([ConfigProblem(what, f"cannot read {path}: {exc.strerror}")]) from exc
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError([ConfigProblem(what, f"{path} is not a regular file")])
    if st.st_size > max_bytes:
        raise ConfigError([ConfigProblem(what, f"{path} is {st.st_size} bytes; at most {max_bytes} are expected")])
    return st


def read_secret(file: Path | None, env: str | None, what: str) -> str | None:
    """Read a secret from a file (Docker/systemd secrets) or an environment variable.

    The read is bounded: a config naming ``/dev/zero`` or a log file must not hang or fill memory.
    """
    if file is not None:
        regular_file(file, what, SECRET_MAX_BYTES)
        try:
            with file.open("rb") as f:
                data = f.read(SECRET_MAX_BYTES + 1)
        except OSError as exc:
            raise ConfigError([ConfigProblem(what, f"cannot read {file}: {exc.strerror}")]) from exc
        if len(data) > SECRET_MAX_BYTES:
            raise ConfigError([ConfigProblem(what, f"{file} is over {SECRET_MAX_BYTES} bytes: not a secret")])
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise ConfigError([ConfigProblem(what, f"{file} is not UTF-8 text")]) from exc
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError([ConfigProblem(what, f"environment variable {env} is not set")])
        return value
    return None
