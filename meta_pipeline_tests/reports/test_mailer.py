"""The mailer against a real SMTP server on loopback (aiosmtpd): what arrives, STARTTLS with a
test CA and AUTH, implicit TLS, no secret in logs, reprs or errors, retries of temporary failures
only, and at most one email per report day (the outbox), a lost answer to DATA included."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import logging
import threading
from pathlib import Path

import pytest

from meta_pipeline.reports.lp_email import build_message, render_lp_email
from meta_pipeline.reports.mailer import (
    DEFAULT_PORTS,
    DeliveryError,
    SendResult,
    SmtpSettings,
    already_sent,
    deliver,
    outbox_path,
    read_outbox,
    record,
    send_message,
)
from meta_pipeline_tests.reports.smtp_server import (
    DROP,
    RecordingHandler,
    closed_port,
    smtp_server,
    tls_files,
)

USER = "lp-bot"
PASSWORD = "s3cr3t pass-Wörd"  # a space and a non-ASCII letter: AUTH PLAIN sends UTF-8
SCRIPT = "<script>alert(1)</script>"
DAY = "2024-03-02"
PNG = b"\x89PNG\r\n\x1a\nchart"
SENDER = "LP Desk <lp@example.com>"
RECIPIENTS = ("alice@example.com", "bob@example.org")


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server():
    with smtp_server() as running:
        yield running


@pytest.fixture
def secure_server(tls):
    with smtp_server(tls=tls, starttls=True, auth=(USER, PASSWORD)) as running:
        yield running


class Sleeps(list):
    """An injected ``sleep``: records the back-off instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def settings_for(server=None, **overrides) -> SmtpSettings:
    values = {
        "host": "127.0.0.1",
        "port": server.port if server is not None else closed_port(),
        "security": "none",
        "sender": SENDER,
        "recipients": RECIPIENTS,
        "timeout_seconds": 5.0,
        "retries": 2,
        "backoff_seconds": 0.5,
    } | overrides
    return SmtpSettings(**values)


def lp_report() -> dict:
    return {
        "meta": {"generated_at": "2024-03-02T07:10:00Z"},
        "fleet": {"portfolio_pnl_bps": 42.5, "portfolio_max_drawdown_bps": 12.0, "trades": 9},
        "agents": {
            SCRIPT: {"decision": "PROMOTE", "pnl_sum_bps": 40.0, "label": "KEEP"},
            "evil\r\nBcc: victim@example.com": {"decision": "KILL", "pnl_sum_bps": -3.0},
        },
        "allocation": {"weights": {SCRIPT: 1.0}},
    }


def lp_message(message_id: str = "<lp-2024-03-02@example.com>"):
    mail = render_lp_email(lp_report(), equity_png=PNG)
    return mail, build_message(mail, sender=SENDER, recipients=list(RECIPIENTS), message_id=message_id)


def received(server, index: int = -1) -> email.message.EmailMessage:
    return email.message_from_bytes(server.handler.messages[index].data, policy=email.policy.default)


def statuses(root: Path) -> list[str]:
    return [entry["status"] for entry in read_outbox(root)]


def assert_no_secret(*texts: str) -> None:
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    for text in texts:
        assert PASSWORD not in text and encoded not in text and plain not in text


# --------------------------------------------------------------------------- what arrives


def test_the_message_arrives_with_its_parts_and_the_inline_chart(server):
    mail, message = lp_message()
    result = send_message(settings_for(server), message)
    assert result.status == "sent" and result.delivered and result.attempts == 1
    assert str(result).startswith("sent: accepted by 127.0.0.1")

    [got] = server.handler.messages
    assert got.mail_from == "lp@example.com" and got.rcpt_tos == list(RECIPIENTS)
    parsed = received(server)
    assert parsed["Subject"] == "[LP Daily] PnL 42.50 bps | DD 12.00 bps"
    assert parsed["From"] == SENDER and parsed["Message-ID"] == "<lp-2024-03-02@example.com>"
    assert [a.addr_spec for a in parsed["To"].addresses] == list(RECIPIENTS)
    assert "Bcc" not in parsed

    # on the wire lines end in CRLF (RFC 5322)
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = parsed.get_body(("html",)).get_content().replace("\r\n", "\n")
    assert text == mail.text and html == mail.html
    assert f"- PROMOTE: {SCRIPT}" in text  # the text body shows the name as written
    assert "- KILL/RETIRE: evil␍␊Bcc: victim@example.com" in text  # on one line
    assert SCRIPT not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    [image] = [part for part in parsed.walk() if part.get_content_type() == "image/png"]
    assert image.get_content() == PNG
    assert image["Content-ID"] == f"<{mail.image_cid}>" and f'src="cid:{mail.image_cid}"' in html


def test_starttls_with_auth_and_no_secret_anywhere(secure_server, caplog):
    caplog.set_level(logging.DEBUG)
    settings = settings_for(secure_server, security="starttls", user=USER, password=PASSWORD)
    _, message = lp_message()
    result = send_message(settings, message, ssl_context=secure_server.client_context())
    assert result.status == "sent", str(result)
    assert secure_server.handler.logins == [USER] and len(secure_server.handler.messages) == 1
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings) and "***" in repr(settings)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("meta_pipeline")]
    assert ours  # the mailer did log
    assert_no_secret(str(result), repr(result), *ours)
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)  # the server's logs too


def test_a_wrong_password_is_permanent_and_never_shown(secure_server, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-" + PASSWORD
    settings = settings_for(secure_server, security="starttls", user=USER, password=wrong)
    sleeps = Sleeps()
    result = send_message(settings, lp_message()[1], ssl_context=secure_server.client_context(), sleep=sleeps)
    assert result.status == "failed" and result.permanent and result.attempts == 1 and sleeps == []
    assert "SMTPAuthenticationError: 535" in result.detail
    assert secure_server.handler.messages == []
    texts = [str(result), repr(settings), *(r.getMessage() for r in caplog.records)]
    assert all(wrong not in t and base64.b64encode(wrong.encode()).decode() not in t for t in texts)
    with pytest.raises(DeliveryError) as raised:
        result.raise_for_status()
    assert wrong not in str(raised.value)


def test_the_server_certificate_is_verified_by_default(secure_server):
    # no ssl_context: the system's CAs, which do not know the test CA
    settings = settings_for(secure_server, security="starttls", user=USER, password=PASSWORD)
    result = send_message(settings, lp_message()[1], sleep=Sleeps())
    assert result.status == "failed" and result.permanent and "CERTIFICATE_VERIFY_FAILED" in result.detail
    assert secure_server.handler.messages == [] and secure_server.handler.logins == []


def test_starttls_is_never_skipped(server):
    # a server that does not offer STARTTLS: fail, do not send in clear text
    result = send_message(settings_for(server, security="starttls"), lp_message()[1], sleep=Sleeps())
    assert result.status == "failed" and result.permanent and "STARTTLS" in result.detail
    assert server.handler.data_calls == 0


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_with_auth(tls):
    with smtp_server(tls=tls, implicit_tls=True, auth=(USER, PASSWORD)) as running:
        settings = settings_for(running, security="ssl", user=USER, password=PASSWORD)
        result = send_message(settings, lp_message()[1], ssl_context=running.client_context())
        assert result.status == "sent", str(result)
        assert running.handler.logins == [USER] and len(running.handler.messages) == 1


# --------------------------------------------------------------------------- retries


def test_a_server_that_is_down_is_retried_then_fails_clearly(tmp_path):
    sleeps = Sleeps()
    settings = settings_for(None, retries=2, backoff_seconds=0.5)
    result = deliver(tmp_path, DAY, lp_message()[1], settings, sleep=sleeps)
    assert result.status == "failed" and not result.permanent and result.attempts == 3
    assert sleeps == [0.5, 1.0]
    assert "still failing after 3 attempts" in result.detail and "Connection refused" in result.detail
    assert statuses(tmp_path) == ["failed"]  # no DATA ever started
    assert already_sent(tmp_path, DAY) is None


def test_a_4xx_answer_is_retried_and_then_sent(tmp_path):
    handler = RecordingHandler(data_replies=["451 4.3.0 Try again later"])
    sleeps = Sleeps()
    with smtp_server(handler) as running:
        result = deliver(tmp_path, DAY, lp_message()[1], settings_for(running), sleep=sleeps)
    assert result.status == "sent" and result.attempts == 2 and sleeps == [0.5]
    assert handler.data_calls == 2 and len(handler.messages) == 1
    assert statuses(tmp_path) == ["sending", "failed", "sending", "sent"]
    failed = read_outbox(tmp_path)[1]
    assert "451 4.3.0 Try again later" in failed["error"]
    assert already_sent(tmp_path, DAY) == "sent"


def test_a_5xx_answer_is_not_retried(tmp_path):
    handler = RecordingHandler(data_replies=["554 5.7.1 Message rejected"])
    sleeps = Sleeps()
    with smtp_server(handler) as running:
        result = deliver(tmp_path, DAY, lp_message()[1], settings_for(running), sleep=sleeps)
    assert result.status == "failed" and result.permanent and result.attempts == 1 and sleeps == []
    assert "554 5.7.1 Message rejected" in result.detail
    assert handler.data_calls == 1 and handler.messages == []
    assert statuses(tmp_path) == ["sending", "failed"]
    assert already_sent(tmp_path, DAY) is None  # refused for sure: a later run may try again


# --------------------------------------------------------------------------- once per report day


def test_no_second_email_for_the_same_report_day_unless_forced(tmp_path, server):
    settings = settings_for(server)
    first = deliver(tmp_path, DAY, lp_message()[1], settings)
    assert first.status == "sent"
    again = deliver(tmp_path, DAY, lp_message("<another@example.com>")[1], settings)
    assert again.status == "skipped" and again.attempts == 0
    assert str(again).startswith("skipped: already sent")
    assert len(server.handler.messages) == 1

    other_day = deliver(tmp_path, "2024-03-03", lp_message("<next@example.com>")[1], settings)
    assert other_day.status == "sent" and len(server.handler.messages) == 2

    forced = deliver(tmp_path, DAY, lp_message()[1], settings, force=True)
    assert forced.status == "sent" and len(server.handler.messages) == 3
    entries = read_outbox(tmp_path)
    assert [(e["report_day"], e["status"]) for e in entries] == [
        (DAY, "sending"),
        (DAY, "sent"),
        ("2024-03-03", "sending"),
        ("2024-03-03", "sent"),
        (DAY, "sending"),
        (DAY, "sent"),
    ]
    assert all(e["recipients"] == list(RECIPIENTS) for e in entries)
    assert entries[0]["message_id"] == "<lp-2024-03-02@example.com>"
    assert entries[0]["time"].endswith("Z")


def test_a_connection_lost_during_data_is_an_unknown_outcome_and_blocks_a_resend(tmp_path):
    handler = RecordingHandler(data_replies=[DROP])
    sleeps = Sleeps()
    with smtp_server(handler) as running:
        settings = settings_for(running)
        result = deliver(tmp_path, DAY, lp_message()[1], settings, sleep=sleeps)
        assert result.status == "unknown" and result.attempts == 1 and sleeps == []  # never retried
        assert "may have been delivered" in result.detail
        assert len(handler.messages) == 1  # it did arrive
        assert statuses(tmp_path) == ["sending"]
        assert already_sent(tmp_path, DAY) == "sending"

        again = deliver(tmp_path, DAY, lp_message()[1], settings)
        assert again.status == "skipped" and "outcome unknown" in again.detail
        assert handler.data_calls == 1  # nothing was contacted

        with pytest.raises(DeliveryError):
            result.raise_for_status()
        forced = deliver(tmp_path, DAY, lp_message()[1], settings, force=True)
        assert forced.status == "sent" and len(handler.messages) == 2
    assert already_sent(tmp_path, DAY) == "sent"


def test_a_crash_after_sending_leaves_the_day_blocked(tmp_path):
    entry = {"message_id": "<m1@x>", "report_day": DAY, "recipients": ["a@x.org"]}
    record(tmp_path, entry | {"status": "sending"})
    assert already_sent(tmp_path, DAY) == "sending"  # the process died during DATA
    record(tmp_path, entry | {"status": "failed", "error": "451"})
    assert already_sent(tmp_path, DAY) is None  # the server said no
    record(tmp_path, entry | {"status": "sending"})
    assert already_sent(tmp_path, DAY) == "sending"  # the retry's outcome is unknown again
    record(tmp_path, {"message_id": "<m2@x>", "report_day": DAY, "recipients": [], "status": "failed"})
    assert already_sent(tmp_path, DAY) == "sending"  # another message's failure changes nothing
    assert already_sent(tmp_path, "2024-03-01") is None


def test_a_line_cut_by_a_crash_is_skipped_and_the_next_entry_stands_alone(tmp_path, caplog):
    entry = {"message_id": "<m@x>", "report_day": DAY, "recipients": ["a@x.org"], "status": "sending"}
    path = record(tmp_path, entry)
    with open(path, "ab") as handle:
        handle.write(b'{"message_id": "<m@x>", "status": "se')  # cut mid-write
    record(tmp_path, entry | {"status": "sent"})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["status"] == "sent"
    assert statuses(tmp_path) == ["sending", "sent"]
    assert "not a JSON object" in caplog.text
    assert already_sent(tmp_path, DAY) == "sent"


def test_record_refuses_an_incomplete_entry(tmp_path):
    with pytest.raises(ValueError, match="needs"):
        record(tmp_path, {"message_id": "<m@x>", "status": "sent"})
    with pytest.raises(ValueError, match="status"):
        record(tmp_path, {"message_id": "<m@x>", "report_day": DAY, "recipients": [], "status": "done"})
    with pytest.raises(ValueError, match="report_day"):
        already_sent(tmp_path, "yesterday")
    assert not outbox_path(tmp_path).exists()


def test_two_deliveries_at_once_send_one_email(tmp_path, server):
    settings = settings_for(server)
    results: list[SendResult] = []
    threads = [
        threading.Thread(target=lambda: results.append(deliver(tmp_path, DAY, lp_message()[1], settings)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.status for r in results) == ["sent", "skipped", "skipped", "skipped"]
    assert len(server.handler.messages) == 1


def test_deliver_needs_a_message_id(tmp_path, server):
    _, message = lp_message()
    del message["Message-ID"]
    with pytest.raises(ValueError, match="Message-ID"):
        deliver(tmp_path, DAY, message, settings_for(server))


# --------------------------------------------------------------------------- settings


ENV = {
    "SMTP_HOST": "smtp.example.com",
    "SMTP_USER": USER,
    "SMTP_PASSWORD": PASSWORD,
    "LP_EMAIL_FROM": SENDER,
    "LP_EMAIL_TO": " alice@example.com, Bob <bob@example.org> ,",
}


def test_from_env_reads_every_variable():
    settings = SmtpSettings.from_env(ENV | {"SMTP_PORT": "2525", "SMTP_SECURITY": "SSL"})
    assert settings == SmtpSettings(
        host="smtp.example.com",
        port=2525,
        security="ssl",
        user=USER,
        password=PASSWORD,
        sender=SENDER,
        recipients=("alice@example.com", "Bob <bob@example.org>"),
    )
    assert (settings.timeout_seconds, settings.retries, settings.backoff_seconds) == (30.0, 3, 2.0)
    assert_no_secret(repr(settings), str(settings))


@pytest.mark.parametrize(("security", "port"), [("starttls", 587), ("ssl", 465), ("none", 25)])
def test_from_env_default_port_follows_security(security, port):
    env = ENV | {"SMTP_SECURITY": security}
    if security == "none":  # no credentials in clear text
        env = {k: v for k, v in env.items() if k not in ("SMTP_USER", "SMTP_PASSWORD")}
    assert SmtpSettings.from_env(env).port == DEFAULT_PORTS[security] == port
    assert SmtpSettings.from_env(ENV).security == "starttls"  # the default


@pytest.mark.parametrize("host", [None, "", "   "])
def test_from_env_without_a_host_is_not_configured(host):
    env = {k: v for k, v in ENV.items() if k != "SMTP_HOST"}
    if host is not None:
        env["SMTP_HOST"] = host
    assert SmtpSettings.from_env(env) is None
    assert SmtpSettings.from_env({}) is None


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"SMTP_PORT": "abc"}, "SMTP_PORT"),
        ({"SMTP_PORT": "0"}, "SMTP_PORT"),
        ({"SMTP_PORT": "70000"}, "SMTP_PORT"),
        ({"SMTP_PORT": "5.5"}, "SMTP_PORT"),
        ({"SMTP_SECURITY": "tls"}, "SMTP_SECURITY"),
        ({"SMTP_SECURITY": "none"}, "SMTP_SECURITY"),  # with credentials: clear text
        ({"SMTP_PASSWORD": ""}, "SMTP_PASSWORD"),
        ({"SMTP_USER": " "}, "SMTP_USER"),
        ({"LP_EMAIL_FROM": ""}, "LP_EMAIL_FROM"),
        ({"LP_EMAIL_FROM": "not an address"}, "LP_EMAIL_FROM"),
        ({"LP_EMAIL_TO": " , "}, "LP_EMAIL_TO"),
        ({"LP_EMAIL_TO": "alice@example.com, bob"}, "LP_EMAIL_TO"),
        ({"SMTP_HOST": "smtp.example.com\r\nX: y"}, "SMTP_HOST"),
    ],
)
def test_from_env_names_the_bad_variable(change, variable):
    with pytest.raises(ValueError, match=variable) as raised:
        SmtpSettings.from_env(ENV | change)
    assert_no_secret(str(raised.value))


def test_settings_validate_their_fields():
    good = settings_for(None)
    with pytest.raises(ValueError, match="security"):
        settings_for(None, security="tls")
    with pytest.raises(ValueError, match="port"):
        settings_for(None, port=0)
    with pytest.raises(ValueError, match="recipients"):
        settings_for(None, recipients=())
    with pytest.raises(ValueError, match="together"):
        settings_for(None, security="starttls", user=USER)
    with pytest.raises(ValueError, match="retries"):
        settings_for(None, retries=-1)
    assert settings_for(None, recipients=["a@example.com"]).recipients == ("a@example.com",)
    assert good.password is None and "password=None" in repr(good)


def test_redact_hides_the_password_and_its_base64_forms():
    settings = settings_for(None, security="starttls", user=USER, password=PASSWORD)
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    login = base64.b64encode(PASSWORD.encode()).decode()
    text = settings.redact(f"x {PASSWORD} y {plain} z {login}")
    assert text == "x *** y *** z ***"
