"""Sending the LP email by SMTP, at most once per report day (docs/rules.md, *Forensics and the LP
email*, and ``meta_supervisor/reports/lp_email_sent.jsonl`` in *File contract*). Standard library
``smtplib`` only, plus ``filelock`` (a project dependency) so two deliveries cannot race.

* :class:`SmtpSettings` — the server, the security mode, the credentials and the envelope;
  :meth:`SmtpSettings.from_env` reads them from ``SMTP_*`` and ``LP_EMAIL_*`` variables.
* :func:`send_message` — one message, with retries of temporary failures.
* :func:`record` / :func:`already_sent` — the outbox log.
* :func:`deliver` — both: no second email for a report day unless forced.

Decisions taken here:

* **TLS is verified.** ``starttls`` and ``ssl`` use ``ssl.create_default_context()`` (certificate
  and host name checked) unless a context is given; ``smtplib`` alone would not verify. With
  ``starttls``, a server that does not offer STARTTLS is a permanent failure: never a fall-back to
  clear text. ``none`` refuses credentials (they would cross the network in clear text).
* **Retries** (``retries`` more attempts after the first, waiting ``backoff_seconds · 2^(k−1)``
  before retry k): a refused, reset or timed-out connection, a server that disconnects before DATA,
  a TLS error other than a failed certificate check, and any 4xx reply (RFC 5321 §4.2.1: transient)
  — including a 4xx to the message itself, which means it was not accepted. **Permanent, reported
  at once**: a 5xx reply, an authentication failure (``SMTPAuthenticationError``, whatever its
  code), recipients refused with a 5xx, a certificate that fails verification, a missing STARTTLS
  or AUTH extension, and any other error.
* **The outcome can be unknown.** If the connection breaks after the DATA command was sent and
  before the server answered the end of the message, the server may have accepted it. That is
  neither retried nor recorded as failed: the result's status is ``unknown`` and the outbox keeps
  its ``sending`` entry, which forbids a resend until an operator forces one.
* **The outbox** (:data:`OUTBOX_PATH`, JSON Lines, appended and fsynced, never rewritten). Each
  attempt that reaches DATA writes ``sending`` before the DATA command (a crash from then on leaves
  that entry), then ``sent`` or ``failed`` after the server's answer. A delivery that fails before
  any DATA writes one ``failed`` entry. Entries: ``message_id``, ``report_day``, ``recipients``,
  ``time`` (UTC, wall clock), ``status``, and ``error`` (failed) or ``refused`` (recipients the
  server refused while accepting the others). A forced resend keeps the message's Message-ID, so
  mail clients that get it twice can tell it is the same message.
* **Secrets.** The password is never in a ``repr``, a log line, a result or an error text: every
  text built from a server reply or an exception goes through a filter that replaces the password
  (and its base64 forms, as AUTH PLAIN and LOGIN send it) with ``***``. ``smtplib`` debug output
  is never turned on.
* **Envelope.** MAIL FROM is the address in :attr:`SmtpSettings.sender`, RCPT TO the addresses in
  :attr:`SmtpSettings.recipients` (whatever the headers say); ``Bcc`` headers are never sent.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import os
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from filelock import FileLock

__all__ = [
    "OUTBOX_PATH",
    "SECURITY_MODES",
    "DeliveryError",
    "OutboxError",
    "SendResult",
    "SmtpSettings",
    "already_sent",
    "deliver",
    "outbox_path",
    "read_outbox",
    "record",
    "send_message",
]

log = logging.getLogger(__name__)

OUTBOX_PATH = Path("meta_supervisor/reports/lp_email_sent.jsonl")
"""The outbox log's path relative to the data root."""

SECURITY_MODES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
"""Submission with STARTTLS (RFC 6409), implicit TLS (RFC 8314), plain SMTP."""

STATUSES = ("sending", "sent", "failed")
"""Outbox entry statuses."""

_REDACTED = "***"


# --------------------------------------------------------------------------- settings


def _address(value: str) -> str:
    """The bare address in ``value`` (``Name <a@b>`` → ``a@b``), ``""`` when there is none."""
    address = parseaddr(value)[1]
    return address if "@" in address else ""


def _has_line_break(value: str) -> bool:
    return any(c in value for c in "\r\n\x00")


@dataclass(frozen=True, kw_only=True, repr=False)
class SmtpSettings:
    """How to reach the SMTP server and whom to write to.

    Attributes
    ----------
    host, port
        The server. ``port`` 1–65535.
    security
        ``"starttls"`` (plain connection upgraded by STARTTLS, usually port 587), ``"ssl"`` (implicit
        TLS, usually 465) or ``"none"`` (no TLS, usually 25: a local relay; no credentials allowed).
    user, password
        AUTH credentials, both or neither (``None``: no login).
    sender
        The ``From`` and the envelope sender, ``addr`` or ``Name <addr>``.
    recipients
        The envelope recipients (a tuple; a list is accepted), at least one.
    timeout_seconds
        Socket timeout of each connection, seconds (> 0).
    retries
        Further attempts after a temporary failure (>= 0).
    backoff_seconds
        Wait before the first retry, doubled for each next one, seconds (>= 0).

    Raises
    ------
    ValueError
        An invalid field; the message names it (:meth:`from_env` names the variable instead).
    """

    host: str
    port: int
    security: str = "starttls"
    user: str | None = None
    password: str | None = None
    sender: str
    recipients: tuple[str, ...]
    timeout_seconds: float = 30.0
    retries: int = 3
    backoff_seconds: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipients", tuple(self.recipients))
        if not self.host or not self.host.strip() or _has_line_break(self.host):
            raise ValueError("host must be a non-empty host name")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"port must be an integer from 1 to 65535, got {self.port!r}")
        if self.security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {', '.join(SECURITY_MODES)}, got {self.security!r}")
        if bool(self.user) != bool(self.password):
            raise ValueError("user and password go together: set both or neither")
        if self.user and self.security == "none":
            raise ValueError("credentials need TLS: security 'none' would send the password in clear text")
        if _has_line_break(self.sender) or not _address(self.sender):
            raise ValueError(f"sender must be an email address, got {self.sender!r}")
        if not self.recipients:
            raise ValueError("recipients must hold at least one address")
        for recipient in self.recipients:
            if not isinstance(recipient, str) or _has_line_break(recipient) or not _address(recipient):
                raise ValueError(f"recipients must be email addresses, got {recipient!r}")
        if not self.timeout_seconds > 0:
            raise ValueError(f"timeout_seconds must be positive, got {self.timeout_seconds!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {self.retries!r}")
        if not self.backoff_seconds >= 0:
            raise ValueError(f"backoff_seconds must be >= 0, got {self.backoff_seconds!r}")

    def __repr__(self) -> str:
        password = _REDACTED if self.password else None
        return (
            f"SmtpSettings(host={self.host!r}, port={self.port!r}, security={self.security!r}, "
            f"user={self.user!r}, password={password!r}, sender={self.sender!r}, "
            f"recipients={self.recipients!r}, timeout_seconds={self.timeout_seconds!r}, "
            f"retries={self.retries!r}, backoff_seconds={self.backoff_seconds!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SmtpSettings | None:
        """Settings from the environment (``os.environ`` by default), or ``None`` when ``SMTP_HOST``
        is unset or blank: email is not configured, the files are still written.

        ============== =============================================================
        SMTP_HOST      the server (required to send)
        SMTP_PORT      default 587 (starttls), 465 (ssl), 25 (none)
        SMTP_SECURITY  ``starttls`` (default), ``ssl`` or ``none`` (case-insensitive)
        SMTP_USER      login; with SMTP_PASSWORD (both or neither)
        SMTP_PASSWORD  kept as written (spaces included)
        LP_EMAIL_FROM  the sender, ``addr`` or ``Name <addr>`` (required)
        LP_EMAIL_TO    the recipients, comma-separated (at least one)
        ============== =============================================================

        Blank values count as unset; values other than the password are stripped.

        Raises
        ------
        ValueError
            A bad or missing value; the message names the variable (never shows the password).
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            return (env.get(name) or "").strip()

        host = get("SMTP_HOST")
        if not host:
            return None
        if _has_line_break(host) or any(c.isspace() for c in host):
            raise ValueError(f"SMTP_HOST must be a host name, got {host!r}")
        security = get("SMTP_SECURITY").lower() or "starttls"
        if security not in SECURITY_MODES:
            raise ValueError(
                f"SMTP_SECURITY must be one of {', '.join(SECURITY_MODES)}, got {get('SMTP_SECURITY')!r}"
            )
        port_text = get("SMTP_PORT")
        if port_text:
            try:
                port = int(port_text)
            except ValueError:
                raise ValueError(f"SMTP_PORT must be an integer from 1 to 65535, got {port_text!r}") from None
            if not 1 <= port <= 65535:
                raise ValueError(f"SMTP_PORT must be an integer from 1 to 65535, got {port_text!r}")
        else:
            port = DEFAULT_PORTS[security]
        user = get("SMTP_USER") or None
        password = env.get("SMTP_PASSWORD") or None
        if password is not None and not password.strip():
            password = None
        if user and not password:
            raise ValueError("SMTP_PASSWORD is required when SMTP_USER is set")
        if password and not user:
            raise ValueError("SMTP_USER is required when SMTP_PASSWORD is set")
        if user and security == "none":
            raise ValueError(
                "SMTP_SECURITY=none cannot be used with SMTP_USER: the password would cross the network "
                "in clear text; use starttls or ssl"
            )
        sender = get("LP_EMAIL_FROM")
        if not sender:
            raise ValueError("LP_EMAIL_FROM is required when SMTP_HOST is set")
        if _has_line_break(sender) or not _address(sender):
            raise ValueError(f"LP_EMAIL_FROM must be an email address, got {sender!r}")
        recipients = tuple(part.strip() for part in get("LP_EMAIL_TO").split(",") if part.strip())
        if not recipients:
            raise ValueError("LP_EMAIL_TO must list at least one address (comma-separated)")
        for recipient in recipients:
            if not _address(recipient):
                raise ValueError(f"LP_EMAIL_TO holds something that is not an email address: {recipient!r}")
        return cls(
            host=host,
            port=port,
            security=security,
            user=user,
            password=password,
            sender=sender,
            recipients=recipients,
        )

    def redact(self, text: str) -> str:
        """``text`` with the password, and the base64 forms AUTH LOGIN and PLAIN send, as ``***``."""
        if not self.password:
            return text
        secrets = {
            self.password,
            base64.b64encode(self.password.encode("utf-8")).decode("ascii"),
            base64.b64encode(f"\0{self.user or ''}\0{self.password}".encode()).decode("ascii"),
        }
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, _REDACTED)
        return text


# --------------------------------------------------------------------------- results


class OutboxError(RuntimeError):
    """The outbox could not be written before DATA, so the message was not sent (permanent)."""


class DeliveryError(RuntimeError):
    """The LP email was not delivered (:meth:`SendResult.raise_for_status`)."""


@dataclass(frozen=True)
class SendResult:
    """The outcome of :func:`send_message` or :func:`deliver`.

    Attributes
    ----------
    status
        ``"sent"`` (the server accepted the message), ``"failed"`` (it did not), ``"unknown"`` (the
        connection broke while the server had the message: it may have been accepted), or
        ``"skipped"`` (:func:`deliver` found it already sent, nothing was contacted).
    detail
        One sentence for people and logs (never holds the password).
    message_id
        The message's ``Message-ID`` header.
    attempts
        Connections made (0 when skipped).
    permanent
        For ``failed``: retrying would not help (a 5xx, an authentication failure …).
    refused
        Recipients the server refused while it accepted the others.
    """

    status: str
    detail: str
    message_id: str | None = None
    attempts: int = 0
    permanent: bool = False
    refused: tuple[str, ...] = ()

    @property
    def delivered(self) -> bool:
        """The server accepted the message in this call."""
        return self.status == "sent"

    def raise_for_status(self) -> SendResult:
        """``self`` when sent or skipped; :class:`DeliveryError` for failed and unknown."""
        if self.status in ("failed", "unknown"):
            raise DeliveryError(str(self))
        return self

    def __str__(self) -> str:
        return f"{self.status}: {self.detail}"


# --------------------------------------------------------------------------- sending


class _Journal:
    """Hooks around the DATA phase; :func:`deliver` writes them to the outbox."""

    def sending(self) -> None:  # before the DATA command
        pass

    def answered(self, status: str, error: str | None = None, refused: tuple[str, ...] = ()) -> None:
        pass  # after the server's answer to the message


class _Utf8(str):
    """A str whose ``encode`` is always UTF-8: ``smtplib.SMTP.auth`` encodes the credentials as
    ASCII (a non-ASCII password raises), while AUTH PLAIN and LOGIN carry UTF-8 (RFC 4616, 4954)."""

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return str.encode(self, "utf-8", errors)


class _DataHook:
    """Mixed into :class:`smtplib.SMTP`: calls the journal right before the DATA command, and
    remembers that DATA started (from then on a broken connection is an unknown outcome). Also
    sends AUTH credentials as UTF-8."""

    journal: _Journal
    data_started: bool = False

    def auth(self, mechanism: str, authobject: Callable[..., str | None], **kwargs: Any) -> tuple[int, bytes]:
        def utf8(*challenge: bytes) -> str | None:
            response = authobject(*challenge)
            return None if response is None else _Utf8(response)

        return super().auth(mechanism, utf8, **kwargs)  # type: ignore[misc]

    def data(self, msg: Any) -> tuple[int, bytes]:
        try:
            self.journal.sending()
        except Exception as exc:  # no outbox entry, no DATA: the message is not sent
            raise OutboxError(f"cannot write the outbox before sending: {exc}") from exc
        self.data_started = True
        return super().data(msg)  # type: ignore[misc]


class _SMTP(_DataHook, smtplib.SMTP):
    pass


class _SMTPSSL(_DataHook, smtplib.SMTP_SSL):
    pass


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return f"{code} {' '.join(text.split())}"


def _describe(exc: BaseException) -> str:
    """One line for an exception from ``smtplib``, ``ssl`` or a socket (not yet redacted)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        parts = [f"{rcpt}: {_reply(code, msg)}" for rcpt, (code, msg) in exc.recipients.items()]
        return "all recipients refused (" + "; ".join(parts) + ")"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__}: {_reply(exc.smtp_code, exc.smtp_error)}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _kind(exc: BaseException, data_started: bool) -> str:
    """``"temporary"``, ``"permanent"`` or ``"unknown"`` (see the module docstring)."""
    if isinstance(exc, smtplib.SMTPResponseException):  # the server answered
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return "permanent"
        return "temporary" if 400 <= exc.smtp_code < 500 else "permanent"
    if data_started:
        return "unknown"  # no answer to the message: it may have been accepted
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return "temporary" if codes and all(400 <= c < 500 for c in codes) else "permanent"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "permanent"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "temporary"
    if isinstance(exc, smtplib.SMTPException):  # an OSError too, so before OSError
        return "permanent"  # SMTPNotSupportedError (no STARTTLS or AUTH offered) and the like
    if isinstance(exc, OSError):
        return "temporary"  # refused, reset, timed out, DNS, TLS handshake broken
    return "permanent"


def _tls_context(ssl_context: ssl.SSLContext | None) -> ssl.SSLContext:
    return ssl_context if ssl_context is not None else ssl.create_default_context()


def _attempt(
    settings: SmtpSettings, message: EmailMessage, ssl_context: ssl.SSLContext | None, journal: _Journal
) -> dict[str, Any]:
    """One connection: connect, TLS, login, MAIL/RCPT, journal, DATA. Returns the refused
    recipients; raises what smtplib raises, with ``data_started`` set on the exception."""
    client: _SMTP | _SMTPSSL | None = None
    try:
        if settings.security == "ssl":
            client = _SMTPSSL(
                settings.host,
                settings.port,
                timeout=settings.timeout_seconds,
                context=_tls_context(ssl_context),
            )
        else:
            client = _SMTP(settings.host, settings.port, timeout=settings.timeout_seconds)
        client.journal = journal
        client.ehlo()
        if settings.security == "starttls":
            client.starttls(context=_tls_context(ssl_context))  # SMTPNotSupportedError if not offered
            client.ehlo()
        if settings.user:
            client.login(settings.user, settings.password or "")
        refused = client.send_message(
            message,
            from_addr=_address(settings.sender),
            to_addrs=[_address(r) for r in settings.recipients],
        )
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()  # the message is accepted: a failed goodbye changes nothing
        return refused
    except BaseException as exc:
        exc.data_started = bool(client is not None and client.data_started)  # type: ignore[attr-defined]
        raise
    finally:
        if client is not None:
            client.close()


def _send(
    settings: SmtpSettings,
    message: EmailMessage,
    *,
    ssl_context: ssl.SSLContext | None,
    sleep: Callable[[float], None],
    journal: _Journal,
) -> SendResult:
    message_id = message.get("Message-ID")
    where = f"{settings.host}:{settings.port} ({settings.security})"
    total = settings.retries + 1
    attempt = 0
    while True:
        attempt += 1
        try:
            refused = _attempt(settings, message, ssl_context, journal)
        except Exception as exc:
            data_started = getattr(exc, "data_started", False)
            kind = _kind(exc, data_started)
            error = settings.redact(_describe(exc))
            if data_started and kind != "unknown":
                journal.answered("failed", error=error)
            if kind == "unknown":
                detail = (
                    f"the connection to {where} broke during DATA, before the server answered the message "
                    f"({error}): it may have been delivered; not retried"
                )
                log.error("LP email %s: %s", message_id, detail)
                return SendResult("unknown", detail, message_id, attempt)
            if kind == "temporary" and attempt < total:
                wait = settings.backoff_seconds * 2 ** (attempt - 1)
                log.warning(
                    "LP email %s: attempt %d of %d to %s failed (temporary): %s; retrying in %.3g s",
                    message_id,
                    attempt,
                    total,
                    where,
                    error,
                    wait,
                )
                sleep(wait)
                continue
            if kind == "temporary":
                detail = f"{where} still failing after {attempt} attempts: {error}"
            else:
                detail = f"sending through {where} failed permanently (not retried): {error}"
            log.error("LP email %s: %s", message_id, detail)
            if not data_started:
                journal.answered("failed", error=detail)
            return SendResult("failed", detail, message_id, attempt, permanent=kind == "permanent")
        refused_list = tuple(sorted(refused))
        journal.answered("sent", refused=refused_list)
        detail = f"accepted by {where} for {len(settings.recipients) - len(refused_list)} recipient(s)"
        if refused_list:
            refusals = "; ".join(f"{r}: {_reply(*refused[r])}" for r in refused_list)
            detail += settings.redact(f"; refused: {refusals}")
        log.info("LP email %s: %s (attempt %d)", message_id, detail, attempt)
        return SendResult("sent", detail, message_id, attempt, refused=refused_list)


def send_message(
    settings: SmtpSettings,
    message: EmailMessage,
    *,
    ssl_context: ssl.SSLContext | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SendResult:
    """Send ``message`` through the server of ``settings`` with ``smtplib``, retrying temporary
    failures (see the module docstring), without the outbox (:func:`deliver` adds it).

    Parameters
    ----------
    ssl_context
        Verifies the server for ``starttls`` and ``ssl``; default :func:`ssl.create_default_context`
        (the system's CAs). Tests pass one that trusts their CA.
    sleep
        Called with the back-off in seconds before each retry.

    Returns a :class:`SendResult` (``sent``, ``failed`` or ``unknown``); a failure is returned, not
    raised (:meth:`SendResult.raise_for_status` raises).
    """
    return _send(settings, message, ssl_context=ssl_context, sleep=sleep, journal=_Journal())


# --------------------------------------------------------------------------- the outbox


def outbox_path(root: Path | str) -> Path:
    """``<root>/meta_supervisor/reports/lp_email_sent.jsonl``."""
    return Path(root) / OUTBOX_PATH


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def _day(report_day: dt.date | str) -> str:
    """``report_day`` as ``YYYY-MM-DD`` (a date, a datetime or such a string)."""
    if isinstance(report_day, dt.datetime):
        return report_day.date().isoformat()
    if isinstance(report_day, dt.date):
        return report_day.isoformat()
    try:
        return dt.date.fromisoformat(str(report_day).strip()).isoformat()
    except ValueError:
        raise ValueError(f"report_day must be a date YYYY-MM-DD, got {report_day!r}") from None


def record(root: Path | str, entry: Mapping[str, Any]) -> Path:
    """Append ``entry`` to the outbox as one JSON line (keys sorted, UTF-8) and fsync it.

    ``entry`` needs ``message_id``, ``report_day``, ``recipients``, ``status`` (one of
    :data:`STATUSES`); ``time`` defaults to now (UTC). The line is written with one ``write`` on an
    ``O_APPEND`` descriptor; if the file's last line was cut by a crash, a newline is written first
    so the new entry stands on its own line. Returns the outbox path.

    Raises
    ------
    ValueError
        A missing key or an unknown status.
    """
    entry = dict(entry)
    entry.setdefault("time", _now_iso())
    missing = [k for k in ("message_id", "report_day", "recipients", "time", "status") if k not in entry]
    if missing:
        raise ValueError(f"an outbox entry needs {missing}")
    if entry["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {entry['status']!r}")
    entry["report_day"] = _day(entry["report_day"])
    line = json.dumps(entry, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    path = outbox_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        data = line.encode("utf-8")
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as handle:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":
                    data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:  # the new directory entry survives a crash too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def read_outbox(root: Path | str) -> list[dict[str, Any]]:
    """The outbox entries in file order; ``[]`` without a file. A line that is not a JSON object
    (cut by a crash while it was written) is skipped with a warning: a ``sending`` entry is
    always fsynced before its DATA, so a cut line never hides a message that may have gone out."""
    path = outbox_path(root)
    if not path.exists():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            log.warning("%s line %d is not a JSON object; skipped", path, number)
            continue
        entries.append(entry)
    return entries


def already_sent(root: Path | str, report_day: dt.date | str) -> str | None:
    """The outbox status that forbids sending another email for ``report_day``, or ``None``.

    * ``"sent"`` — a message of that day was accepted by the server;
    * ``"sending"`` — a message's last ``sending`` entry has no later ``failed`` (nor ``sent``) for
      that message: the outcome is unknown (a crash or a broken connection during DATA), so the
      email may have gone out. Only a forced delivery sends again.

    ``"sent"`` wins when both apply.
    """
    day = _day(report_day)
    open_messages: dict[str, bool] = {}
    sent = False
    for entry in read_outbox(root):
        if str(entry.get("report_day")) != day:
            continue
        message_id = str(entry.get("message_id"))
        status = entry.get("status")
        if status == "sent":
            sent = True
            open_messages[message_id] = False
        elif status == "sending":
            open_messages[message_id] = True
        elif status == "failed":
            open_messages[message_id] = False
    if sent:
        return "sent"
    return "sending" if any(open_messages.values()) else None


class _Outbox(_Journal):
    def __init__(self, root: Path, day: str, message_id: str, recipients: list[str]):
        self.root, self.day, self.message_id, self.recipients = root, day, message_id, recipients

    def _entry(self, status: str, **more: Any) -> None:
        entry = {
            "message_id": self.message_id,
            "report_day": self.day,
            "recipients": self.recipients,
            "status": status,
            **{k: v for k, v in more.items() if v},
        }
        record(self.root, entry)

    def sending(self) -> None:
        self._entry("sending")

    def answered(self, status: str, error: str | None = None, refused: tuple[str, ...] = ()) -> None:
        self._entry(status, error=error, refused=list(refused))


def deliver(
    root: Path | str,
    report_day: dt.date | str,
    message: EmailMessage,
    settings: SmtpSettings,
    *,
    force: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    sleep: Callable[[float], None] = time.sleep,
    lock_timeout_seconds: float = 900.0,
) -> SendResult:
    """Send the LP email of ``report_day`` unless the outbox says it already went out.

    Under a file lock beside the outbox (so two runs cannot both send), :func:`already_sent` is
    read; when it names a status and ``force`` is false, nothing is contacted and the result is
    ``skipped: already sent …``. Otherwise :func:`send_message`'s logic runs with the outbox
    journal (``sending`` before DATA, ``sent``/``failed`` after the answer; see the module
    docstring).

    Parameters
    ----------
    root
        The data root (``META_PIPELINE_ROOT``).
    report_day
        The UTC day the email reports on (``date`` or ``YYYY-MM-DD``).
    message
        From :func:`meta_pipeline.reports.lp_email.build_message`; needs a ``Message-ID``.
    force
        Send even when the outbox has a ``sent`` or an open ``sending`` entry for the day.
    lock_timeout_seconds
        How long to wait for another delivery holding the lock.

    Raises
    ------
    ValueError
        The message has no ``Message-ID``, or ``report_day`` is not a date.
    filelock.Timeout
        Another delivery held the lock longer than ``lock_timeout_seconds``.
    OSError
        The outbox cannot be written (before DATA: then nothing was sent).
    """
    root = Path(root)
    day = _day(report_day)
    message_id = message.get("Message-ID")
    if not message_id:
        raise ValueError("the message needs a Message-ID header (build_message sets one)")
    path = outbox_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=lock_timeout_seconds):
        prior = already_sent(root, day)
        if prior is not None and not force:
            what = "was accepted by the server" if prior == "sent" else "may have gone out (outcome unknown)"
            detail = (
                f"already sent: the outbox has a {prior!r} entry for report day {day}, so its email "
                f"{what}; deliver with force to send again"
            )
            log.info("LP email %s: skipped, %s", message_id, detail)
            return SendResult("skipped", detail, str(message_id), 0)
        if prior is not None:
            log.warning("LP email %s: forced resend for %s (outbox status %r)", message_id, day, prior)
        journal = _Outbox(root, day, str(message_id), list(settings.recipients))
        return _send(settings, message, ssl_context=ssl_context, sleep=sleep, journal=journal)
