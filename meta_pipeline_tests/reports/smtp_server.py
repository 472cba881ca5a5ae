"""A real SMTP server on loopback for the mailer's tests (aiosmtpd in a thread), with a test
certificate authority for STARTTLS and implicit TLS, AUTH with one user, and scripted answers.

Use :func:`smtp_server` as a context manager (test modules wrap it in their own fixture)::

    with smtp_server(tls=tls_files(tmp_path), starttls=True, auth=("lp", "secret")) as server:
        ... send to server.host, server.port, trusting server.client_context() ...
        server.handler.messages  # what the server accepted

Scripted answers (:class:`RecordingHandler.data_replies`): each DATA takes the next reply from the
list, then answers ``250 OK`` once the list is empty. A reply is an SMTP status line
(``"451 4.3.0 Try again later"``), or :data:`DROP` to accept the whole message (it is recorded in
``messages``) and then cut the connection without answering: the message arrived, and the client
cannot know it. Nothing here touches the
internet: the server binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DROP",
    "HOST",
    "Received",
    "RecordingHandler",
    "SmtpTestServer",
    "TlsFiles",
    "closed_port",
    "free_port",
    "smtp_server",
    "tls_files",
]

HOST = "127.0.0.1"
DROP = "DROP"
"""A DATA reply that reads the message, then closes the connection without answering."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """A port where nothing listens: connecting is refused at once (a server that is down)."""
    return free_port()


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a test CA and of a server certificate it signed for ``127.0.0.1`` and
    ``localhost``."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Verifies the server (certificate chain and host name) against the test CA only."""
        return ssl.create_default_context(cafile=str(self.ca_cert))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def tls_files(folder: Path) -> TlsFiles:
    """Create a CA and a server certificate (EC P-256, valid from a day ago for a week) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("meta-pipeline test CA"))
        .issuer_name(_name("meta-pipeline test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


# --------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class Received:
    """A message the server accepted: the envelope and the raw bytes (``\\r\\n`` line ends)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class RecordingHandler:
    """aiosmtpd handler: records accepted messages and AUTH logins, answers DATA as scripted."""

    data_replies: list[str] = field(default_factory=list)
    messages: list[Received] = field(default_factory=list)
    data_calls: int = 0
    logins: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        with self._lock:
            self.data_calls += 1
            reply = self.data_replies.pop(0) if self.data_replies else "250 OK"
        if reply == DROP or reply.startswith("250"):
            content = envelope.original_content or envelope.content
            with self._lock:
                self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(content)))
        if reply == DROP:
            server.transport.abort()  # the message arrived; the client never hears back
            return "250 OK"
        return reply


class _Authenticator:
    def __init__(self, handler: RecordingHandler, user: str, password: str):
        self.handler, self.user, self.password = handler, user.encode(), password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = auth_data.login == self.user and auth_data.password == self.password
        if ok:
            self.handler.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)


@dataclass
class SmtpTestServer:
    """A running server: where it listens, its handler, and a client TLS context that trusts it."""

    host: str
    port: int
    handler: RecordingHandler
    tls: TlsFiles | None = None

    def client_context(self) -> ssl.SSLContext:
        if self.tls is None:
            raise ValueError("this server has no TLS")
        return self.tls.client_context()


@contextlib.contextmanager
def smtp_server(
    handler: RecordingHandler | None = None,
    *,
    tls: TlsFiles | None = None,
    starttls: bool = False,
    implicit_tls: bool = False,
    auth: tuple[str, str] | None = None,
) -> Iterator[SmtpTestServer]:
    """Run an SMTP server on 127.0.0.1 and a free port for the block.

    Parameters
    ----------
    tls
        Certificate files (:func:`tls_files`); needed by ``starttls`` and ``implicit_tls``.
    starttls
        Offer STARTTLS and require it before MAIL (``require_starttls``).
    implicit_tls
        TLS from the first byte (SMTPS, what ``SMTP_SECURITY=ssl`` expects).
    auth
        ``(user, password)``: AUTH PLAIN/LOGIN accepting that pair only, required before MAIL and,
        with ``starttls``, offered only after STARTTLS (``auth_require_tls``).
    """
    handler = handler or RecordingHandler()
    if (starttls or implicit_tls) and tls is None:
        raise ValueError("starttls and implicit_tls need tls files")
    options: dict = {"hostname": HOST, "port": free_port(), "ready_timeout": 10.0}
    if starttls:
        options |= {"tls_context": tls.server_context(), "require_starttls": True}
    if implicit_tls:
        options["ssl_context"] = tls.server_context()
    if auth is not None:
        options |= {
            "authenticator": _Authenticator(handler, *auth),
            "auth_required": True,
            # over implicit TLS the whole session is encrypted; aiosmtpd only counts STARTTLS
            "auth_require_tls": not implicit_tls,
        }
    controller = Controller(handler, **options)
    controller.start()
    try:
        yield SmtpTestServer(HOST, options["port"], handler, tls)
    finally:
        controller.stop()
