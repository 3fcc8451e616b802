"""A throwaway certificate authority for TLS tests, made with the ``openssl`` command line.

:func:`make_pki` writes a CA, a server certificate for 127.0.0.1 (or only for the names given),
and a client certificate whose key exists both plain and encrypted with a passphrase file.
:func:`tls_broker` is a private Mosquitto with a TLS listener using that server certificate, beside
its plain one. Elliptic-curve keys, so a PKI takes a fraction of a second.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.mosquitto import MosquittoBroker
from tests.helpers.net import free_port

PASSPHRASE = "correct horse battery staple"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: the client key encrypted with :data:`PASSPHRASE`, which is in ``passphrase_file`` (mode 0600)
    client_key_encrypted: Path
    passphrase_file: Path


def openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        pytest.skip("the openssl command is not installed (Debian package openssl)")
    return found


def _run(*args: str, cwd: Path) -> None:
    subprocess.run([openssl(), *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _signed(directory: Path, name: str, subject: str, extensions: str) -> None:
    """``name.key`` and ``name.crt`` signed by ``ca.key``."""
    _run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=directory)
    (directory / f"{name}.ext").write_text(extensions + "\n")
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext", cwd=directory)
    (directory / f"{name}.key").chmod(0o600)


def make_pki(directory: Path, server_names: str = "IP:127.0.0.1,DNS:localhost") -> Pki:
    """A CA and certificates signed by it in ``directory``; ``server_names`` is the server's subjectAltName."""
    directory.mkdir(parents=True, exist_ok=True)
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", f"/CN=test CA {directory.name}",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         cwd=directory)
    _signed(directory, "server", "/CN=test broker", f"subjectAltName={server_names}\nextendedKeyUsage=serverAuth")
    _signed(directory, "client", "/CN=test client", "extendedKeyUsage=clientAuth")
    passphrase = directory / "client.pass"
    passphrase.write_text(PASSPHRASE + "\n")
    passphrase.chmod(0o600)
    _run("pkey", "-in", "client.key", "-out", "client.enc.key", "-aes-256-cbc", "-passout", f"file:{passphrase}",
         cwd=directory)
    (directory / "client.enc.key").chmod(0o600)
    return Pki(ca=directory / "ca.crt", server_cert=directory / "server.crt", server_key=directory / "server.key",
               client_cert=directory / "client.crt", client_key=directory / "client.key",
               client_key_encrypted=directory / "client.enc.key", passphrase_file=passphrase)


def tls_broker(workdir: Path, pki: Pki) -> tuple[MosquittoBroker, int]:
    """A private Mosquitto (not started) with a TLS listener on the returned port besides its plain one."""
    port = free_port()
    extra = (f"listener {port} 127.0.0.1\n"
             f"certfile {pki.server_cert}\n"
             f"keyfile {pki.server_key}\n")
    return MosquittoBroker(workdir, extra_config=extra), port
