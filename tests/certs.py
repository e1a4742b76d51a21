"""A throwaway CA with a server and a client certificate, made with the openssl command (the
test environment has no ``cryptography`` package), for real TLS handshakes in tests."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

KEY_PASSWORD = "key-secret"


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: The client key again, encrypted with :data:`KEY_PASSWORD`.
    client_key_encrypted: Path


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _signed(d: Path, name: str, cn: str, usage: str) -> None:
    _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    (d / f"{name}.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
         cwd=d)


def make_certs(d: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate."""
    if shutil.which("openssl") is None:
        import pytest

        pytest.skip("no openssl command to make test certificates with")
    d.mkdir(parents=True, exist_ok=True)
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=streamrec test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _signed(d, "server", "localhost", "serverAuth")
    _signed(d, "client", "alice", "clientAuth")
    _run("pkey", "-in", "client.key", "-aes256", "-passout", f"pass:{KEY_PASSWORD}",
         "-out", "client-encrypted.key", cwd=d)
    return Certs(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt",
                 d / "client.key", d / "client-encrypted.key")
