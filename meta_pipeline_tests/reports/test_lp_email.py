"""The LP email's content: the app's sections and lines, the PnL labelled as a sum of trade bps,
hostile names shown as text (HTML) and on one line (text, subject), the MIME structure with the
chart inline by Content-ID, and the three files."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from meta_pipeline.reports.charts import equity_chart_png
from meta_pipeline.reports.lp_email import (
    DISCLAIMER,
    HTML_PATH,
    IMAGE_PATH,
    PNL_LABEL,
    SUBJECT_PATH,
    TEXT_PATH,
    LpEmail,
    build_message,
    render_lp_email,
    write_lp_email_files,
)
from meta_pipeline.reports.meta_report import build_meta_report

SCRIPT = "<script>alert(1)</script>"
FAKE_LINE = "evil\r\n- KILL/RETIRE: nobody\nGenerated: never"
PNG = b"\x89PNG\r\n\x1a\nnot really a png"


def report(**overrides):
    agents = {
        "alpha": {
            "decision": "PROMOTE",
            "label": "KEEP",
            "pnl_sum_bps": 120.0,
            "hit_rate": 0.6,
            "error_rate": 0.01,
            "avg_latency_ms": 850.4,
            "cost_usd": 1.234567,
            "trades": 30,
        },
        "beta": {"decision": "HOLD", "label": "WATCH", "pnl_sum_bps": 10.5, "hit_rate": 0.5},
        "gamma": {"decision": "KILL", "label": "KEEP", "pnl_sum_bps": -80.0, "error_rate": 0.4},
        "delta": {"decision": "RETIRE", "label": "RETIRE", "pnl_sum_bps": -200.0},
        "omega": {"decision": "KILLED", "label": "RETIRE", "pnl_sum_bps": None},
    }
    args = {
        "generated_at": "2024-03-02T07:10:00Z",
        "fleet": {"pnl_bps": -149.5, "hit_rate": 0.52, "max_drawdown_bps": 310.25, "trades": 61},
        "agents": agents,
        "weights": {"alpha": 0.75, "beta": 0.25},
        "confidence_state": {},
    } | overrides
    return build_meta_report(**args)


class Html(HTMLParser):
    """Tags and text of an HTML document, as a browser's tokenizer sees them."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.texts: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.texts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def tag_names(self) -> list[str]:
        return [t for t, _ in self.tags]


def table_cells(html: str) -> list[list[str]]:
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html, flags=re.S)
    return [[Html(c).text for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, flags=re.S)] for row in rows]


# --------------------------------------------------------------------------- content


def test_text_body_keeps_the_apps_sections_and_labels_the_pnl():
    mail = render_lp_email(report(), equity_png=None)
    assert mail.subject == "[LP Daily] PnL -149.50 bps | DD 310.25 bps"
    assert mail.text == (
        "[LP Daily] PnL -149.50 bps | DD 310.25 bps\n"
        "Generated: 2024-03-02T07:10:00Z\n"
        "\n"
        "PORTFOLIO\n"
        "- Trades: 61\n"
        f"- PnL (bps): -149.50, {PNL_LABEL}\n"
        "- Hit rate: 0.520\n"
        "- Max DD (bps): 310.25\n"
        "\n"
        "DECISIONS\n"
        "- PROMOTE: alpha\n"
        "- KILL/RETIRE: delta, gamma\n"
        "\n"
        "ALLOCATION (top)\n"
        "- alpha: 0.7500\n"
        "- beta: 0.2500\n"
        "\n"
        f"{DISCLAIMER}\n"
    )
    assert PNL_LABEL == "the sum of trade bps across all matured 24 h trades (not a return on capital)"


def test_html_body_has_the_sections_the_top_agents_table_and_the_note():
    mail = render_lp_email(report(), equity_png=None)
    page = Html(mail.html)
    text = " ".join(page.text.split())
    assert "<h2>LP Daily Performance</h2>" in mail.html
    for heading in ("Portfolio", "Decisions", "Allocation (top)", "Top Agents"):
        assert f"<h3>{heading}</h3>" in mail.html
    assert "Generated: 2024-03-02T07:10:00Z" in text
    assert f"PnL (bps): -149.50 — {PNL_LABEL}" in text
    assert "Trades: 61" in text and "Hit rate: 0.520" in text and "Max DD (bps): 310.25" in text
    assert "PROMOTE: alpha" in text and "KILL/RETIRE: delta, gamma" in text
    assert "alpha: 0.7500" in text and "beta: 0.2500" in text
    assert text.endswith(DISCLAIMER)
    assert "img" not in page.tag_names()  # no chart given

    rows = table_cells(mail.html)
    assert rows[0] == ["Agent", "Decision", "PnL bps", "Hit", "Err", "Latency ms", "Cost", "Retire"]
    assert rows[1] == ["alpha", "PROMOTE", "120.00", "0.600", "0.010", "850", "$1.2346", "KEEP"]
    # by PnL descending, a missing PnL last; missing figures read n/a
    assert [r[0] for r in rows[1:]] == ["alpha", "beta", "gamma", "delta", "omega"]
    assert rows[5] == ["omega", "KILLED", "n/a", "n/a", "n/a", "n/a", "n/a", "RETIRE"]


def test_top_15_agents_and_top_10_weights_with_a_count_of_the_rest():
    agents = {f"a{i:02d}": {"decision": "HOLD", "pnl_sum_bps": float(i)} for i in range(20)}
    weights = {f"a{i:02d}": 1.0 / 12 for i in range(12)}
    mail = render_lp_email(report(agents=agents, weights=weights), equity_png=None)
    rows = table_cells(mail.html)[1:]
    assert [r[0] for r in rows] == [f"a{i:02d}" for i in range(19, 4, -1)]
    assert "and 5 more agents" in Html(mail.html).text
    allocation = [line for line in mail.text.splitlines() if re.fullmatch(r"- a\d\d: .*", line)]
    assert allocation == [f"- a{i:02d}: 0.0833" for i in range(10)]  # equal weights: by name
    assert "- ... and 2 more" in mail.text


def test_an_empty_report_renders_with_n_a_and_none():
    mail = render_lp_email({}, equity_png=None)
    assert mail.subject == "[LP Daily] PnL n/a bps | DD n/a bps"
    assert "- Trades: n/a" in mail.text and "Generated: n/a" in mail.text
    assert "- PROMOTE: None" in mail.text and "- KILL/RETIRE: None" in mail.text
    assert "- None (no agent qualifies for capital)" in mail.text
    assert "No agents yet." in mail.html


def test_negative_zero_is_written_as_zero():
    mail = render_lp_email(report(fleet={"pnl_bps": -0.001, "max_drawdown_bps": 0.0}), equity_png=None)
    assert mail.subject == "[LP Daily] PnL 0.00 bps | DD 0.00 bps"


# --------------------------------------------------------------------------- names are data


def test_a_script_name_is_text_in_html_and_as_written_in_the_text_body():
    agents = {SCRIPT: {"decision": "PROMOTE", "label": "KEEP", "pnl_sum_bps": 5.0}}
    mail = render_lp_email(report(agents=agents, weights={SCRIPT: 1.0}), equity_png=PNG)
    page = Html(mail.html)
    assert "script" not in page.tag_names()
    assert SCRIPT not in mail.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html
    assert page.text.count(SCRIPT) == 3  # decisions, allocation, table: shown as text
    assert f"- PROMOTE: {SCRIPT}" in mail.text and f"- {SCRIPT}: 1.0000" in mail.text  # not escaped
    assert "&lt;" not in mail.text


@pytest.mark.parametrize("hostile", [FAKE_LINE, "a\u2028b\u2029c\x85d\x00e\x1b[31m", 'x" onerror="alert(1)'])
def test_a_name_cannot_add_a_line_or_an_attribute(hostile):
    def mail_for(name):
        agents = {name: {"decision": "KILL", "label": "RETIRE", "pnl_sum_bps": -1.0}}
        return render_lp_email(report(agents=agents, weights={name: 1.0}, generated_at=name), equity_png=PNG)

    mail = mail_for(hostile)
    lines = mail.text.splitlines()
    assert len(lines) == len(mail_for("plain").text.splitlines())
    assert sum(line.startswith("- KILL/RETIRE:") for line in lines) == 1
    assert sum(line.startswith("Generated:") for line in lines) == 1
    assert not any(c in mail.text for c in "\r\x00\x1b\x85\u2028\u2029")
    page = Html(mail.html)
    assert all(
        set(attrs) <= {"src", "alt", "width", "height", "style"} for t, attrs in page.tags if t == "img"
    )
    assert not any("onerror" in attrs for _, attrs in page.tags)
    assert "\n" not in mail.subject and "\r" not in mail.subject


def test_the_subject_is_one_line_whatever_the_report_holds():
    hostile = report()
    hostile["fleet"]["portfolio_pnl_bps"] = "1\r\nBcc: victim@example.com"
    hostile["fleet"]["portfolio_max_drawdown_bps"] = float("nan")
    mail = render_lp_email(hostile, equity_png=None)
    assert mail.subject == "[LP Daily] PnL n/a bps | DD n/a bps"
    message = build_message(mail, sender="lp@example.com", recipients=["a@example.com"])
    assert "Bcc" not in message and message["Subject"] == mail.subject


def test_a_long_name_is_cut():
    name = "n" * 500
    mail = render_lp_email(
        report(agents={name: {"decision": "PROMOTE", "pnl_sum_bps": 1.0}}), equity_png=None
    )
    assert f"- PROMOTE: {'n' * 99}…" in mail.text and "n" * 101 not in mail.html


# --------------------------------------------------------------------------- the MIME message


def parsed(message) -> email.message.EmailMessage:
    return email.message_from_bytes(message.as_bytes(), policy=email.policy.default)


def test_message_is_alternative_text_then_related_html_with_the_inline_chart():
    curve = pd.DataFrame(
        {
            "exit_ts": pd.date_range("2024-03-01", periods=5, freq="6h", tz="UTC"),
            "cum_pnl_bps": np.cumsum([5.0, -3.0, 8.0, -20.0, 4.0]),
            "drawdown_bps": [0.0, 3.0, 0.0, 20.0, 16.0],
        }
    )
    png = equity_chart_png(curve)
    mail = render_lp_email(
        report(agents={SCRIPT: {"decision": "PROMOTE", "pnl_sum_bps": 1.0}}), equity_png=png
    )
    when = dt.datetime(2024, 3, 2, 7, 10, tzinfo=dt.UTC)
    message = parsed(
        build_message(
            mail,
            sender="LP Desk <lp@example.com>",
            recipients=["a@example.com", "B <b@example.org>"],
            message_id="<lp-2024-03-02@example.com>",
            date=when,
        )
    )
    assert message["Subject"] == mail.subject
    assert message["From"] == "LP Desk <lp@example.com>"
    assert [a.addr_spec for a in message["To"].addresses] == ["a@example.com", "b@example.org"]
    assert message["Message-ID"] == "<lp-2024-03-02@example.com>"
    assert message["Date"].datetime == when
    assert message["Auto-Submitted"] == "auto-generated"

    assert message.get_content_type() == "multipart/alternative"
    text_part, related = message.get_payload()
    assert text_part.get_content_type() == "text/plain" and text_part.get_content() == mail.text
    assert related.get_content_type() == "multipart/related"
    html_part, image_part = related.get_payload()
    assert html_part.get_content_type() == "text/html" and html_part.get_content() == mail.html
    assert image_part.get_content_type() == "image/png"
    assert image_part.get_content() == png
    assert image_part["Content-ID"] == f"<{mail.image_cid}>"
    assert image_part.get_content_disposition() == "inline"
    srcs = [attrs["src"] for tag, attrs in Html(html_part.get_content()).tags if tag == "img"]
    assert srcs == [f"cid:{mail.image_cid}"]
    assert "data:" not in mail.html
    # the body (the preferred alternative) a client shows is the HTML; it is 7-bit clean on the wire
    assert message.get_body(("html", "plain")) is html_part
    assert all(
        b < 0x80 for b in build_message(mail, sender="lp@example.com", recipients=["a@x.org"]).as_bytes()
    )


def test_message_without_a_chart_has_the_html_directly():
    mail = render_lp_email(report(), equity_png=None)
    message = parsed(build_message(mail, sender="lp@example.com", recipients=["a@example.com"]))
    assert [p.get_content_type() for p in message.get_payload()] == ["text/plain", "text/html"]
    assert mail.image is None and mail.image_cid is None
    assert re.fullmatch(r"<[^<>@\s]+@example\.com>", message["Message-ID"])


def test_message_refuses_no_recipient_and_a_header_injection():
    mail = render_lp_email(report(), equity_png=None)
    with pytest.raises(ValueError, match="recipient"):
        build_message(mail, sender="lp@example.com", recipients=[" "])
    with pytest.raises(ValueError):
        build_message(mail, sender="lp@example.com\r\nBcc: x@example.com", recipients=["a@example.com"])


def test_the_content_id_depends_on_the_image_only():
    first = render_lp_email(report(), equity_png=PNG)
    assert first == render_lp_email(report(), equity_png=PNG)  # deterministic
    assert render_lp_email({}, equity_png=PNG).image_cid == first.image_cid
    assert render_lp_email(report(), equity_png=PNG + b"x").image_cid != first.image_cid


# --------------------------------------------------------------------------- files


def test_files_are_written_and_the_html_file_refers_to_the_png_beside_it(tmp_path):
    mail = render_lp_email(report(), equity_png=PNG)
    paths = write_lp_email_files(tmp_path, mail)
    assert paths == [
        tmp_path / HTML_PATH,
        tmp_path / TEXT_PATH,
        tmp_path / SUBJECT_PATH,
        tmp_path / IMAGE_PATH,
    ]
    assert (tmp_path / SUBJECT_PATH).read_text(encoding="utf-8") == mail.subject + "\n"
    assert (tmp_path / TEXT_PATH).read_text(encoding="utf-8") == mail.text
    html = (tmp_path / HTML_PATH).read_text(encoding="utf-8")
    assert html == mail.html_file and "cid:" not in html
    srcs = [attrs["src"] for tag, attrs in Html(html).tags if tag == "img"]
    assert srcs == ["lp_email_equity.png"]
    assert (tmp_path / HTML_PATH).parent.joinpath(srcs[0]).read_bytes() == PNG
    assert mail.html_file.replace("lp_email_equity.png", f"cid:{mail.image_cid}") == mail.html
    assert not list((tmp_path / HTML_PATH).parent.glob(".*.tmp"))

    write_lp_email_files(tmp_path, render_lp_email(report(), equity_png=None))
    assert not (tmp_path / IMAGE_PATH).exists()  # no stale chart beside an HTML without one
    assert "<img" not in (tmp_path / HTML_PATH).read_text(encoding="utf-8")


def test_files_are_the_same_bytes_for_the_same_report(tmp_path):
    mail = render_lp_email(report(), equity_png=PNG)
    first = {p: p.read_bytes() for p in write_lp_email_files(tmp_path, mail)}
    again = {
        p: p.read_bytes() for p in write_lp_email_files(tmp_path, render_lp_email(report(), equity_png=PNG))
    }
    assert first == again


def test_lp_email_is_a_frozen_value():
    mail = render_lp_email(report(), equity_png=None)
    assert isinstance(mail, LpEmail)
    with pytest.raises(AttributeError):
        mail.subject = "x"  # type: ignore[misc]
