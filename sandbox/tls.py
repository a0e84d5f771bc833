"""A locally made certificate authority and server certificate, so clients verify TLS for real."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TlsFiles:
    ca_path: Path  # what a client's requests.Session.verify points at
    cert_path: Path
    key_path: Path


def make_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """Write ca.pem, server.pem and server-key.pem into `directory` (fresh each start)."""
    directory.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA(organization_name="optout-sync sandbox")
    names = tuple(dict.fromkeys((*hosts, "127.0.0.1", "localhost")))
    server = authority.issue_cert(*names)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    authority.cert_pem.write_to_path(str(files.ca_path))
    server.private_key_pem.write_to_path(str(files.key_path))
    files.key_path.chmod(0o600)
    server.cert_chain_pems[0].write_to_path(str(files.cert_path))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(files.cert_path), append=True)
    return files
