"""The LP email (docs/rules.md, *Forensics and the LP email* and *File contract*): a subject, a
plain-text body and an HTML body rendered from ``meta_report.json``, the MIME message that carries
them, and the three files ``meta_supervisor/reports/lp_email_{subject.txt,text.txt,html.html}``.

Content, kept from the app:

* subject ``[LP Daily] PnL <portfolio_pnl_bps> bps | DD <portfolio_max_drawdown_bps> bps``;
* text: the subject, ``Generated: …``, ``PORTFOLIO`` (Trades, PnL (bps), Hit rate, Max DD (bps)),
  ``DECISIONS`` (``- PROMOTE: …`` and ``- KILL/RETIRE: …``, names or ``None``), ``ALLOCATION (top)``
  (the :data:`TOP_WEIGHTS` largest weights, ``- name: weight``);
* HTML: ``LP Daily Performance``, the same sections, a *Top Agents* table of the :data:`TOP_AGENTS`
  best agents by PnL (Agent, Decision, PnL bps, Hit, Err, Latency ms, Cost, Retire) and the note
  that the summary is informational and not investment advice.

Added: the PnL is labelled as what it is (:data:`PNL_LABEL`: an additive sum of trade bps, not a
return on capital) in both bodies, the HTML shows the equity-curve chart
(:func:`meta_pipeline.reports.charts.equity_chart_png`) inline, and the text body ends with the
same not-investment-advice note as the HTML.

Decisions taken here:

* **Templates.** ``templates/lp_email.txt.j2`` and ``templates/lp_email.html.j2``, rendered with
  jinja2. Auto-escaping is on for the HTML template (by its ``.html.j2`` name) and off for the text
  template, which must show ``<``/``&`` as written. Undefined variables raise (``StrictUndefined``).
* **Names are data.** Every string taken from the report (agent names, decisions, labels, the
  generation time) is put on one line before it reaches a template: control characters and line
  separators become visible symbols (``\\n`` → ``␊``, :func:`meta_pipeline.reports.markdown.visible`),
  so a name can never start a fake line in the text body; it is cut at :data:`NAME_CHARS`
  characters. The HTML template escapes it again, so ``<script>`` shows as text.
* **The subject is one line.** It interpolates numbers only (formatted here; anything that is not a
  finite number shows as ``n/a``), and any CR, LF or other control character is replaced by a
  space as a last guard: a header can never be split.
* **Numbers.** bps 2 decimals, rates 3, weights 4, latency whole ms, cost ``$`` with 4 decimals,
  trades whole; a missing figure shows as ``n/a``. ``-0.00`` is written ``0.00``.
* **Ranking.** Agents by ``pnl_sum_bps`` descending, missing PnL last, ties by name; weights by
  weight descending, ties by name; the PROMOTE and KILL/RETIRE lists by name. KILL/RETIRE lists the
  agents whose decision in this report is ``KILL`` or ``RETIRE`` (the app's rule); agents already on
  the kill list (``KILLED``) were announced when they were killed.
* **The chart.** Mail clients block ``data:`` URIs, so the email carries the PNG as an inline part
  of a ``multipart/related`` and the HTML refers to it as ``cid:<content-id>`` (RFC 2392). The
  content-id is derived from the PNG's SHA-256, so the same report gives the same bytes. The HTML
  *file* cannot resolve a ``cid:`` URL in a browser: :func:`write_lp_email_files` writes the PNG
  beside it as ``lp_email_equity.png`` and the file's ``<img>`` refers to that name
  (:attr:`LpEmail.html_file`); the two HTML versions differ only in that ``src``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Any

import jinja2

from meta_pipeline.atomic_files import atomic_write_bytes, atomic_write_text
from meta_pipeline.reports.markdown import truncate, visible

__all__ = [
    "DISCLAIMER",
    "HTML_PATH",
    "IMAGE_PATH",
    "LpEmail",
    "NAME_CHARS",
    "PNL_LABEL",
    "SUBJECT_PATH",
    "TEXT_PATH",
    "TOP_AGENTS",
    "TOP_WEIGHTS",
    "build_message",
    "one_line",
    "render_lp_email",
    "subject_of",
    "write_lp_email_files",
]

SUBJECT_PATH = Path("meta_supervisor/reports/lp_email_subject.txt")
TEXT_PATH = Path("meta_supervisor/reports/lp_email_text.txt")
HTML_PATH = Path("meta_supervisor/reports/lp_email_html.html")
IMAGE_PATH = Path("meta_supervisor/reports/lp_email_equity.png")
"""The files' paths relative to the data root (the PNG only when the email has a chart)."""

TOP_AGENTS = 15
"""Rows of the HTML *Top Agents* table."""
TOP_WEIGHTS = 10
"""Weights listed under *Allocation (top)*."""
NAME_CHARS = 100
"""Longest name shown in full (characters); longer names are cut with ``…``."""

PNL_LABEL = "the sum of trade bps across all matured 24 h trades (not a return on capital)"
"""What the portfolio PnL is, written beside it in both bodies (docs/rules.md, *Portfolio*)."""
DISCLAIMER = "Informational performance summary. Not investment advice."
NO_VALUE = "n/a"
CHART_ALT = "Portfolio equity curve and drawdown (cumulative sum of trade bps)"

_TEMPLATES = "templates"
# everything that could break a header or a line: C0 controls, DEL, C1 controls, Unicode separators
_LINE_BREAKERS = {code: " " for code in [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]}


@dataclass(frozen=True)
class LpEmail:
    """A rendered LP email.

    Attributes
    ----------
    subject
        One line, no CR/LF.
    text
        The plain-text body (UTF-8 text, ``\\n`` line ends, a final newline).
    html
        The HTML body for the email: the chart, if any, is ``<img src="cid:{image_cid}">``.
    html_file
        The same HTML for ``lp_email_html.html``: the chart is ``<img src="lp_email_equity.png">``.
    image
        The equity-curve PNG, or ``None`` (then neither HTML has an ``<img>``).
    image_cid
        The PNG's Content-ID without angle brackets, or ``None`` when there is no image.
    """

    subject: str
    text: str
    html: str
    html_file: str
    image: bytes | None = None
    image_cid: str | None = None


# --------------------------------------------------------------------------- formatting


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (missing, NaN, ±inf, bool, not a number)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: Any, spec: str, prefix: str = "") -> str:
    """``value`` formatted with ``spec`` (``-0.00`` written ``0.00``), or :data:`NO_VALUE`."""
    number = _number(value)
    if number is None:
        return NO_VALUE
    text = format(number, spec)
    if text.startswith("-") and float(text) == 0.0:
        text = text[1:]
    return prefix + text


def _line(value: Any, max_chars: int | None = NAME_CHARS) -> str:
    """A string from the report on one line (control characters as visible symbols), cut at
    ``max_chars``; ``None`` → ``""``."""
    if value is None:
        return ""
    return visible(truncate(str(value), max_chars))


def one_line(text: str) -> str:
    """``text`` with every control character and line separator replaced by a space: safe in a
    header (the subject)."""
    return text.translate(_LINE_BREAKERS)


def _ranked_agents(agents: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Agents by ``pnl_sum_bps`` descending, missing PnL last, ties by name."""
    items = [(str(name), stats if isinstance(stats, Mapping) else {}) for name, stats in agents.items()]

    def key(item: tuple[str, Mapping[str, Any]]) -> tuple[bool, float, str]:
        pnl = _number(item[1].get("pnl_sum_bps"))
        return (pnl is None, -(pnl or 0.0), item[0])

    return sorted(items, key=key)


def _ranked_weights(weights: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Weights descending, missing last, ties by name."""
    return sorted(
        ((str(name), w) for name, w in weights.items()),
        key=lambda kv: (_number(kv[1]) is None, -(_number(kv[1]) or 0.0), kv[0]),
    )


def _names_with(agents: Mapping[str, Any], decisions: set[str]) -> list[str]:
    return sorted(
        str(name)
        for name, stats in agents.items()
        if isinstance(stats, Mapping) and str(stats.get("decision")) in decisions
    )


def _content_id(png: bytes) -> str:
    """A Content-ID (RFC 2392, without ``<>``) made from the PNG's bytes: the same chart, the same id."""
    return f"lp-equity.{hashlib.sha256(png).hexdigest()[:24]}@meta-pipeline"


@functools.cache
def _environment() -> jinja2.Environment:
    """One jinja2 environment: auto-escaping for ``*.html.j2`` templates, none for the text one."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("meta_pipeline.reports", _TEMPLATES),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "html.j2"), default_for_string=True, default=False
        ),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# --------------------------------------------------------------------------- rendering


def subject_of(report: Mapping[str, Any]) -> str:
    """``[LP Daily] PnL <bps> bps | DD <bps> bps`` for ``report``, on one line."""
    fleet = report.get("fleet") or {}
    pnl = _fmt(fleet.get("portfolio_pnl_bps"), ".2f")
    drawdown = _fmt(fleet.get("portfolio_max_drawdown_bps"), ".2f")
    return one_line(f"[LP Daily] PnL {pnl} bps | DD {drawdown} bps")


def _context(report: Mapping[str, Any], subject: str) -> dict[str, Any]:
    meta = report.get("meta") or {}
    fleet = report.get("fleet") or {}
    agents = report.get("agents") or {}
    allocation = report.get("allocation") or {}
    weights = (allocation.get("weights") or {}) if isinstance(allocation, Mapping) else {}
    if not isinstance(agents, Mapping):
        agents = {}
    if not isinstance(weights, Mapping):
        weights = {}

    ranked = _ranked_agents(agents)
    top_agents = [
        {
            "name": _line(name),
            "decision": _line(stats.get("decision")),
            "pnl": _fmt(stats.get("pnl_sum_bps"), ".2f"),
            "hit": _fmt(stats.get("hit_rate"), ".3f"),
            "err": _fmt(stats.get("error_rate"), ".3f"),
            "latency": _fmt(stats.get("avg_latency_ms"), ".0f"),
            "cost": _fmt(stats.get("cost_usd"), ".4f", prefix="$"),
            "retire": _line(stats.get("retirement_label", stats.get("label"))),
        }
        for name, stats in ranked[:TOP_AGENTS]
    ]
    ranked_weights = _ranked_weights(weights)
    return {
        "subject": subject,
        "generated_at": _line(meta.get("generated_at")) or NO_VALUE,
        "trades": _fmt(fleet.get("trades"), ".0f"),
        "pnl_bps": _fmt(fleet.get("portfolio_pnl_bps"), ".2f"),
        "pnl_label": PNL_LABEL,
        "hit_rate": _fmt(fleet.get("portfolio_hit_rate"), ".3f"),
        "max_drawdown_bps": _fmt(fleet.get("portfolio_max_drawdown_bps"), ".2f"),
        "promoted": [_line(n) for n in _names_with(agents, {"PROMOTE"})],
        "killed_or_retired": [_line(n) for n in _names_with(agents, {"KILL", "RETIRE"})],
        "allocation": [(_line(name), _fmt(w, ".4f")) for name, w in ranked_weights[:TOP_WEIGHTS]],
        "allocation_more": max(0, len(ranked_weights) - TOP_WEIGHTS),
        "top_agents": top_agents,
        "agents_more": max(0, len(ranked) - TOP_AGENTS),
        "agent_count": len(ranked),
        "disclaimer": DISCLAIMER,
        "chart_alt": CHART_ALT,
    }


def render_lp_email(report: Mapping[str, Any], *, equity_png: bytes | None) -> LpEmail:
    """Render the LP email for ``report``.

    Parameters
    ----------
    report
        The dict of ``meta_report.json`` (:func:`~meta_pipeline.reports.meta_report.build_meta_report`);
        any key may be missing (the figure shows as ``n/a``, a list as ``None``).
    equity_png
        The equity-curve chart (:func:`~meta_pipeline.reports.charts.equity_chart_png`), or
        ``None`` for an email without a chart.

    Returns an :class:`LpEmail`. Deterministic: the same report and PNG give the same strings.
    """
    subject = subject_of(report)
    context = _context(report, subject)
    env = _environment()
    text = env.get_template("lp_email.txt.j2").render(context)
    html_template = env.get_template("lp_email.html.j2")
    image = bytes(equity_png) if equity_png else None
    cid = _content_id(image) if image else None
    html = html_template.render(context, image_src=f"cid:{cid}" if cid else None)
    html_file = html_template.render(context, image_src=IMAGE_PATH.name if cid else None)
    return LpEmail(subject=subject, text=text, html=html, html_file=html_file, image=image, image_cid=cid)


# --------------------------------------------------------------------------- the MIME message


def build_message(
    email: LpEmail,
    *,
    sender: str,
    recipients: Sequence[str],
    message_id: str | None = None,
    date: dt.datetime | None = None,
) -> EmailMessage:
    """The MIME message for ``email``::

        multipart/alternative
        ├── text/plain; charset=utf-8                 (email.text)
        └── multipart/related                          (only with an image; else text/html directly)
            ├── text/html; charset=utf-8              (email.html, <img src="cid:…">)
            └── image/png; Content-ID: <image_cid>     (inline, filename lp_email_equity.png)

    Both text parts are quoted-printable, so the message is 7-bit clean for any SMTP server.
    Headers: ``Subject``, ``From`` (``sender``), ``To`` (``recipients`` joined by ``, ``), ``Date``
    (``date``, default now, UTC), ``Message-ID`` (``message_id`` or a new
    :func:`email.utils.make_msgid` on the sender's domain, no DNS lookup), ``Auto-Submitted:
    auto-generated`` (RFC 3834: autoresponders stay quiet), ``MIME-Version``.

    Raises
    ------
    ValueError
        No recipient, or a header value holding CR/LF (refused by :mod:`email`).
    """
    recipients = [str(r).strip() for r in recipients if str(r).strip()]
    if not recipients:
        raise ValueError("the LP email needs at least one recipient")
    domain = parseaddr(sender)[1].rpartition("@")[2] or "meta-pipeline.invalid"
    message = EmailMessage()
    message["Subject"] = email.subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    when = date if date is not None else dt.datetime.now(dt.UTC)
    message["Date"] = format_datetime(when if when.tzinfo else when.replace(tzinfo=dt.UTC))
    message["Message-ID"] = message_id or make_msgid(idstring="lp-daily", domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(email.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(email.html, subtype="html", charset="utf-8", cte="quoted-printable")
    if email.image is not None:
        if not email.image_cid:
            raise ValueError("an image needs its content-id")
        html_part = message.get_payload()[1]
        html_part.add_related(
            email.image,
            maintype="image",
            subtype="png",
            cid=f"<{email.image_cid}>",
            disposition="inline",
            filename=IMAGE_PATH.name,
        )
    return message


# --------------------------------------------------------------------------- files


def write_lp_email_files(root: Path | str, email: LpEmail) -> list[Path]:
    """Write the email's files under ``<root>/meta_supervisor/reports/``, each atomically (temp file
    + rename, normal permissions), UTF-8:

    * ``lp_email_equity.png`` — the chart, first, so the HTML file never refers to a missing image
      (removed when the email has no chart, so no stale chart sits beside the HTML);
    * ``lp_email_html.html`` — :attr:`LpEmail.html_file` (the chart by its file name);
    * ``lp_email_text.txt`` — the text body;
    * ``lp_email_subject.txt`` — the subject and a newline.

    Returns the paths written (the PNG last when there is one).
    """
    root = Path(root)
    written = []
    image_path = root / IMAGE_PATH
    if email.image is not None:
        atomic_write_bytes(image_path, email.image)
    else:
        image_path.unlink(missing_ok=True)
    for relative, content in (
        (HTML_PATH, email.html_file),
        (TEXT_PATH, email.text),
        (SUBJECT_PATH, one_line(email.subject) + "\n"),
    ):
        atomic_write_text(root / relative, content)
        written.append(root / relative)
    if email.image is not None:
        written.append(image_path)
    return written
