"""The ``lp_email`` asset against a real SMTP server on loopback: sent once per report day, files
always written, a server that is down fails the check and nothing else, the password nowhere."""

from __future__ import annotations

import email
import email.policy
import json

import dagster as dg
import pytest

from meta_pipeline import names
from meta_pipeline.defs.reports import CHECK_DELIVERED, lp_email_asset
from meta_pipeline.defs.resources import DataRoot, LpMailer, lp_mailer_from_env
from meta_pipeline_tests.reports.smtp_server import closed_port, smtp_server, tls_files

HOSTILE = "<script>alert(1)</script>"
PASSWORD = "s3cr3t-pa55"


def write_report(root):
    report = {
        "meta": {"generated_at": "2026-11-30T07:10:00Z", "severity": "low"},
        "fleet": {
            "trades": 12,
            "portfolio_pnl_bps": 321.5,
            "portfolio_hit_rate": 0.6,
            "portfolio_max_drawdown_bps": 40.0,
        },
        "agents": {
            HOSTILE: {"decision": "PROMOTE", "label": "KEEP", "pnl_sum_bps": 300.0, "hit_rate": 0.6},
            "b": {"decision": "KILL", "label": "WATCH", "pnl_sum_bps": -200.0, "hit_rate": 0.3},
        },
        "allocation": {"weights": {HOSTILE: 1.0}, "confidence_state": {}},
    }
    path = root / names.META_REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))


def run(root, mailer: LpMailer, force: bool = False, instance=None):
    return dg.materialize(
        [lp_email_asset],
        resources={"data_root": DataRoot(root=str(root)), "lp_mailer": mailer},
        run_config={"ops": {names.LP_EMAIL: {"config": {"force": force}}}},
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def check(result):
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CHECK_DELIVERED
    return evaluation


def files(root):
    folder = root / "meta_supervisor" / "reports"
    return {
        n: (folder / n).read_text()
        for n in ("lp_email_subject.txt", "lp_email_text.txt", "lp_email_html.html")
    }


def test_not_configured_writes_the_files_and_says_not_sent(tmp_path):
    write_report(tmp_path)
    result = run(tmp_path, LpMailer())
    assert result.success and check(result).passed
    meta = result.asset_materializations_for_node(names.LP_EMAIL)[0].metadata
    assert meta["status"].value == "written, not sent"
    written = files(tmp_path)
    assert written["lp_email_subject.txt"].startswith("[LP Daily] PnL 321.50 bps | DD 40.00 bps")
    assert "&lt;script&gt;" in written["lp_email_html.html"] and HOSTILE not in written["lp_email_html.html"]


def test_sent_once_per_day_then_again_only_with_force(tmp_path):
    write_report(tmp_path)
    with smtp_server() as server:
        mailer = LpMailer(host=server.host, port=server.port, security="none", sender="pipeline@example.com",
                          recipients="lp1@example.com, lp2@example.com")  # fmt: skip
        first = run(tmp_path, mailer)
        assert first.success and check(first).passed
        assert len(server.handler.messages) == 1
        received = server.handler.messages[0]
        assert sorted(received.rcpt_tos) == ["lp1@example.com", "lp2@example.com"]
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        assert message["Subject"].startswith("[LP Daily] PnL 321.50 bps")
        html = message.get_body(("html",)).get_content()
        assert "&lt;script&gt;" in html and HOSTILE not in html
        second = run(tmp_path, mailer)
        assert check(second).passed and "already sent" in check(second).description
        assert len(server.handler.messages) == 1  # no resend on the same day
        forced = run(tmp_path, mailer, force=True)
        assert check(forced).passed and len(server.handler.messages) == 2
    outbox = [
        json.loads(line)
        for line in (tmp_path / "meta_supervisor/reports/lp_email_sent.jsonl").read_text().splitlines()
    ]
    assert [e["status"] for e in outbox] == ["sending", "sent", "sending", "sent"]


def test_server_down_fails_the_check_not_the_run_and_the_files_are_written(tmp_path):
    write_report(tmp_path)
    mailer = LpMailer(host="127.0.0.1", port=closed_port(), security="none", sender="p@example.com",
                      recipients="lp@example.com", retries=1, backoff_seconds=0.0, timeout_seconds=2)  # fmt: skip
    result = run(tmp_path, mailer)
    assert result.success  # the asset is materialized; the failure is the check's
    evaluation = check(result)
    assert not evaluation.passed and "failed" in (evaluation.description or "")
    assert files(tmp_path)["lp_email_subject.txt"]


def test_starttls_with_auth_and_the_password_is_nowhere(tmp_path, monkeypatch, caplog):
    write_report(tmp_path)
    tls = tls_files(tmp_path / "tls")
    with smtp_server(tls=tls, starttls=True, auth=("lp-bot", PASSWORD)) as server:
        environ = {
            "SMTP_HOST": server.host,
            "SMTP_PORT": str(server.port),
            "SMTP_SECURITY": "starttls",
            "SMTP_USER": "lp-bot",
            "SMTP_PASSWORD": PASSWORD,
            "SMTP_CA_FILE": str(tls.ca_cert),
            "LP_EMAIL_FROM": "Pipeline <pipeline@example.com>",
            "LP_EMAIL_TO": "lp@example.com",
        }
        for key, value in environ.items():
            monkeypatch.setenv(key, value)
        mailer = lp_mailer_from_env(environ)
        instance = dg.DagsterInstance.ephemeral()
        result = run(tmp_path, mailer, instance=instance)
        assert check(result).passed, check(result).description
        assert server.handler.logins == ["lp-bot"]
    assert PASSWORD not in repr(mailer)  # bound as an EnvVar, not a literal
    logs = instance.all_logs(result.run_id)
    everything = " ".join(str(entry) for entry in logs) + caplog.text
    assert PASSWORD not in everything
    for path in (tmp_path / "meta_supervisor").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_a_bad_smtp_variable_names_itself():
    with pytest.raises(ValueError, match="SMTP_SECURITY"):
        lp_mailer_from_env(
            {"SMTP_HOST": "mail", "SMTP_SECURITY": "tls13", "LP_EMAIL_FROM": "a@b.c", "LP_EMAIL_TO": "d@e.f"}
        )
