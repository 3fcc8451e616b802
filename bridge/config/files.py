"""The files a config names, checked where the service runs: TLS files load, secrets are private.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from bridge.config.loading import shown
from bridge.config.models import AtomscaleSinkConfig, Config
from bridge.errors import ConfigError, ConfigProblem

log = logging.getLogger("bridge.config")


def secret_files(config: Config) -> list[tuple[str, Path]]:
    """(key path, file) of every secret file the config names."""
    found: list[tuple[str, Path | None]] = [("mqtt.password_file", config.mqtt.password_file)]
    tls = config.mqtt.tls
    if tls is not None:
        found += [("mqtt.tls.key_file", tls.key_file), ("mqtt.tls.key_password_file", tls.key_password_file)]
    sink = config.uploader.sink
    if isinstance(sink, AtomscaleSinkConfig):
        found.append(("uploader.sink.api_key_file", sink.api_key_file))
    return [(key, path) for key, path in found if path is not None]


def loose_permissions(path: Path) -> str | None:
    """Why the secret file ``path`` is open to others than its owner, or None if it is not.

    Any access by other users and write access by the group are refused. Group read is refused
    too, except on a file root owns: ``root:chamber-bridge 0640`` (deploy/pi) is root giving the
    service's group exactly that. A missing file is not judged here: it is named when read.
    """
    try:
        st = path.stat()
    except (OSError, ValueError):
        return None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007:
        who = "open to every user"
    elif mode & 0o020:
        who = "writable by its group"
    elif mode & 0o050 and st.st_uid != 0:
        who = "readable by its group"
    else:
        return None
    return f"{path} is {who} (mode {mode:04o})"


def file_problems(config: Config) -> tuple[list[ConfigProblem], list[ConfigProblem]]:
    """(errors, warnings) about the files the config names: TLS files load, secrets are private.

    The TLS files are loaded exactly as the MQTT client loads them (:meth:`TlsConfig.ssl_context`), and
    the Atomscale sink's CA as the sink does (:meth:`AtomscaleSinkConfig.ssl_context`).
    Loose secret permissions are errors unless ``allow_loose_secret_permissions`` makes them warnings.
    """
    errors: list[ConfigProblem] = []
    warnings: list[ConfigProblem] = []
    for key, path in secret_files(config):
        why = loose_permissions(path)
        if why is None:
            continue
        if config.allow_loose_secret_permissions:
            warnings.append(ConfigProblem(key, f"{why}; accepted because allow_loose_secret_permissions is true"))
        else:
            errors.append(ConfigProblem(key, f"{why}; run chmod 600 {path} (or 640 owned by root and the "
                                             "service's group), or set allow_loose_secret_permissions: true"))
    if config.mqtt.tls is not None:
        try:
            config.mqtt.tls.ssl_context()
        except ConfigError as exc:
            errors.extend(exc.problems)
    if isinstance(config.uploader.sink, AtomscaleSinkConfig):
        try:
            config.uploader.sink.ssl_context()
        except ConfigError as exc:
            errors.extend(exc.problems)
    return shown(errors), shown(warnings)


def check_files(config: Config, source: str = "") -> None:
    """Raise ConfigError for the problems of :func:`file_problems`; log its warnings."""
    errors, warnings = file_problems(config)
    for warning in warnings:
        log.warning("%s%s", f"{source}: " if source else "", warning)
    if errors:
        raise ConfigError(errors, source)
