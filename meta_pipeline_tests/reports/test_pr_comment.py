"""The PR comment and the markdown escaping under it: exact text for a known case, and hostile names
that a CommonMark parser (markdown-it, with GFM tables) reads back as written."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meta_pipeline.reports.markdown import Markdown, cell, escape, inline, table, visible
from meta_pipeline.reports.meta_report import build_meta_report
from meta_pipeline.reports.pr_comment import NAME_CHARS, comment_path, pr_comment, write_pr_comment

markdown_it = pytest.importorskip("markdown_it")

HOSTILE = "x|y`z\n<script>alert(1)</script>$a$"

HOSTILE_NAMES = [
    HOSTILE,
    "`",
    "``",
    "`x`",
    "a``b```c",
    " leading and trailing ",
    "      six spaces",
    "   ",
    "\\",
    "x\\",
    "a\\|b",
    "||",
    "|",
    "# heading",
    "- item",
    "1. item",
    "---",
    "```",
    "~~~",
    "> quote",
    "<div>block</div>",
    "<!-- comment -->",
    "[x](https://example.com)",
    "![i](https://example.com/i.png)",
    "[ref]: https://example.com",
    "&amp; &lt; &#60;",
    "*bold* _it_ **b** __b__",
    "~~strike~~",
    "$$x$$",
    "line\r\nbreak\rcr\ttab\x00nul\x7fdel\x85nel\u2028ls",
    "\u00a0nbsp\u3000",
    "émoji 🚀 ünïcode",
    "a" * 500,
]


def parser():
    return markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])


def flat(tokens):
    for token in tokens:
        yield token
        yield from flat(token.children or [])


def inline_text(token) -> str:
    """The text a reader sees for an inline token: its text and code spans, in order."""
    parts = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append("\n")
    return "".join(parts)


def table_rows(text: str) -> list[list[str]]:
    """Every table row of ``text`` (header included) as the list of its cells' visible text."""
    rows, row, tokens = [], None, parser().parse(text)
    for i, token in enumerate(tokens):
        if token.type == "tr_open":
            row = []
        elif token.type in ("th_open", "td_open"):
            row.append(inline_text(tokens[i + 1]))
        elif token.type == "tr_close":
            rows.append(row)
    return rows


def assert_no_html(text: str, headings: int = 0) -> None:
    """No HTML, link, image, fence or indented code came out of the data, and only our headings."""
    tokens = list(flat(parser().parse(text)))
    assert not [t for t in tokens if t.type in ("html_inline", "html_block")]
    assert not [t for t in tokens if t.type in ("link_open", "image", "fence", "code_block", "hr", "s_open")]
    assert len([t for t in tokens if t.type == "heading_open"]) == headings
    assert "<script" not in parser().render(text)


# --------------------------------------------------------------------------- the comment


def two_agent_report(**overrides) -> dict:
    agents = {
        "alpha": {
            "decision": "PROMOTE",
            "label": "KEEP",
            "retirement_score": 0,
            "pnl_sum_bps": 300.0,
            "hit_rate": 0.6,
            "error_rate": 0.0,
            "avg_latency_ms": 412.4,
            "trades": 12,
            "runs": 14,
            "cost_usd": 1.25,
            "timing_psr": 0.97,
            "failed_gates": [],
        },
        HOSTILE: {
            "decision": "KILL",
            "label": "WATCH",
            "retirement_score": 60,
            "pnl_sum_bps": -176.544,
            "hit_rate": math.nan,
            "error_rate": 0.25,
            "avg_latency_ms": None,
            "trades": 3,
            "runs": 8,
            "cost_usd": 0.1,
            "timing_psr": math.nan,
            "failed_gates": ("pnl", "hit rate", "trades"),
        },
    }
    arguments = {
        "generated_at": "2024-03-06T00:00:00Z",
        "fleet": {
            "pnl_bps": 123.456,
            "hit_rate": 0.6,
            "max_drawdown_bps": 176.544,
            "trades": 15,
            "mean_bps": 8.23,
        },
        "agents": agents,
        "weights": {"alpha": 1.0},
        "confidence_state": {},
        "checks": [
            {"name": "fleet trades", "passed": True, "blocking": True, "value": 15, "threshold": 10},
            {
                "name": "unpriced share",
                "passed": False,
                "blocking": True,
                "value": 0.0625,
                "threshold": 0.05,
                "detail": "1 of 16 due rows unpriced",
            },
        ],
    }
    arguments.update(overrides)
    return build_meta_report(**arguments)


EXPECTED = """\
## Meta-Agent Report
- Generated: `2024-03-06T00:00:00Z`
- Severity: **high**

### Portfolio
- Trades: **15**
- PnL (bps): **123.46**
- Hit rate: **0.600**
- Max DD (bps): **176.54**

### Decisions (top)
| agent | decision | label | trades | PnL bps | hit | err | lat ms | failed gates |
|---|---|---|---:|---:|---:|---:|---:|---|
| `alpha` | PROMOTE | KEEP | 12 | 300.00 | 0.600 | 0.000 | 412 |  |
| ``x\\|y`z\u240a<script>alert(1)</script>$a$`` | KILL | WATCH | 3 | -176.54 |  | 0.250 |  | pnl, hit rate, trades |

### Allocation (top)
- `alpha`: **1.0000**

### Checks
| check | blocking | result | value | threshold | detail |
|---|---|---|---|---|---|
| fleet trades | yes | pass | 15 | 10 |  |
| unpriced share | yes | FAIL | 0.0625 | 0.05 | 1 of 16 due rows unpriced |
"""


def test_two_agent_comment_is_exactly_the_expected_text():
    assert pr_comment(two_agent_report()) == EXPECTED


def test_comment_parses_to_the_expected_structure_and_names_round_trip():
    text = pr_comment(two_agent_report())
    assert_no_html(text, headings=5)
    rows = table_rows(text)
    decisions, checks = rows[:3], rows[3:]
    assert [len(r) for r in decisions] == [9, 9, 9] and [len(r) for r in checks] == [6, 6, 6]
    assert decisions[1][0] == "alpha"
    assert decisions[2][0] == visible(HOSTILE) == HOSTILE.replace("\n", "\u240a")
    assert decisions[2][-1] == "pnl, hit rate, trades"
    headings = [t.content for t in flat(parser().parse(text)) if t.type == "inline"]
    for heading in ("Meta-Agent Report", "Portfolio", "Decisions (top)", "Allocation (top)", "Checks"):
        assert heading in headings


def test_hostile_names_in_the_allocation_list_round_trip():
    names = HOSTILE_NAMES[:-1]  # the long one is cut, checked below
    weights = {name: 1.0 / len(names) for name in names}
    report = two_agent_report(weights=weights, agents={}, checks=None)
    text = pr_comment(report, top=len(names))
    assert_no_html(text, headings=4)
    items = [t for t in flat(parser().parse(text)) if t.type == "inline" and t.content.startswith("`")]
    shown = {inline_text(t).rsplit(": ", 1)[0] for t in items}
    assert shown == {visible(name) for name in names}


def test_top_limits_the_lists_and_says_how_many_more():
    agents = {f"agent_{i}": {"pnl_sum_bps": float(i), "decision": "HOLD"} for i in range(12)}
    weights = {f"agent_{i}": i / 66 for i in range(12)}
    text = pr_comment(two_agent_report(agents=agents, weights=weights, checks=[]), top=3)
    rows = table_rows(text)
    assert [r[0] for r in rows[1:]] == ["agent_11", "agent_10", "agent_9"]  # by PnL, descending
    assert "_… and 9 more agents_" in text and "_… and 9 more weights_" in text
    assert "### Checks" not in text  # no checks, no section


def test_long_names_are_cut_and_missing_figures_are_empty():
    name = "n" * 500
    report = {"agents": {name: {"decision": "HOLD"}}, "allocation": {"weights": {}}}
    text = pr_comment(report)
    row = table_rows(text)[1]
    assert row[0] == "n" * (NAME_CHARS - 1) + "…"
    assert row[1:] == ["HOLD", "", "", "", "", "", "", ""]
    assert "nan" not in text.lower() and "None" not in text
    assert "- Trades:\n" in text and "- Generated:\n" in text  # missing: nothing after the label
    assert "_no capital allocated: no agent qualifies_" in text


def test_an_empty_report_still_has_every_section():
    text = pr_comment({})
    for heading in ("## Meta-Agent Report", "### Portfolio", "### Decisions (top)", "### Allocation (top)"):
        assert heading in text
    assert "_no agents yet_" in text


def test_write_pr_comment_is_atomic_and_stable(tmp_path):
    text = pr_comment(two_agent_report())
    path = write_pr_comment(tmp_path, text)
    assert path == comment_path(tmp_path) == tmp_path / "meta_supervisor/reports/pr_comment.md"
    first = path.read_bytes()
    write_pr_comment(tmp_path, pr_comment(two_agent_report()))
    assert path.read_bytes() == first == text.encode("utf-8")
    assert [p.name for p in path.parent.iterdir()] == ["pr_comment.md"]  # no temp file left


# --------------------------------------------------------------------------- markdown helpers


def test_cell_escapes_html_and_table_syntax_and_keeps_the_row():
    text = cell(HOSTILE)
    assert "\n" not in text and "<" not in text and "|" not in text.replace("\\|", "")
    assert text == "x\\|y\\`z\u240a&lt;script&gt;alert\\(1\\)&lt;\\/script&gt;\\$a\\$"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, ""), (math.nan, ""), (float("inf"), "inf"), (1.5, "1.5"), (-2, "-2"), (True, "true"), ((), "")],
)
def test_cell_formats_values(value, expected):
    assert cell(value) == expected


def test_table_of_hostile_names_round_trips_through_a_commonmark_parser():
    rows = [[name, Markdown(inline(name, table=True)), 1.5] for name in HOSTILE_NAMES]
    text = table(rows, ["escaped", "code", "n"])
    assert_no_html(text)
    parsed = table_rows(text)
    assert len(parsed) == len(HOSTILE_NAMES) + 1 and all(len(r) == 3 for r in parsed)
    for name, (escaped, code, n) in zip(HOSTILE_NAMES, parsed[1:], strict=True):
        assert escaped == visible(name)
        assert code == visible(name) or name.strip() == ""  # a code span cannot be empty
        assert n == "1.5"


def test_table_rejects_rows_of_the_wrong_length():
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        table([["a"]], ["a", "b"])


def test_inline_uses_a_fence_longer_than_any_backtick_run():
    assert inline("a``b") == "```a``b```"
    assert inline("`x`") == "`` `x` ``"
    assert inline(None) == "" and inline("") == ""


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_text_round_trips_in_a_paragraph_a_bullet_and_a_table(name):
    shown = visible(name)
    # plain escaped text, alone in a paragraph, and after a bullet marker
    for prefix in ("", "- "):
        tokens = [t for t in parser().parse(prefix + escape(name)) if t.type == "inline"]
        assert len(tokens) == 1 and inline_text(tokens[0]) == shown
    # a code span in a bullet (markdown-it strips only ASCII spaces' pairs as CommonMark says)
    code = inline(name)
    if code:
        tokens = [t for t in parser().parse("- " + code) if t.type == "inline"]
        assert len(tokens) == 1 and inline_text(tokens[0]) == shown
    # one table row, two cells
    rows = table_rows(table([[name, Markdown(inline(name, table=True))]], ["a", "b"]))
    assert len(rows) == 2 and rows[1][0] == shown
    if code:
        assert rows[1][1] == shown
