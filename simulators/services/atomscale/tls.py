"""A throwaway CA and a server certificate it signed: the emulator serves HTTPS to clients that trust that CA only."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a server certificate it signed (PEM files)."""

    #: the CA's certificate: what a client trusts (``uploader.sink.ca_file``)
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_files(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")) -> TlsFiles:
    """Make a CA and a server certificate for ``hosts`` in ``directory`` with the ``openssl`` CLI.

    (The ``cryptography`` package would do it in-process, but it is not among the project's
    dependencies; ``openssl`` is on every machine that runs the tests.)"""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make a test certificate")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    names = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
    ext.write_text(f"subjectAltName={names}\nbasicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=chamber-bridge test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={hosts[0]}"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-set_serial", "2", "-days", "2",
         "-extfile", ext, "-out", cert],
    ):
        done = subprocess.run([openssl, *map(str, args)], capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")
    return TlsFiles(ca, cert, key)
