"""Markdown that stays markdown whatever the data says.

Agent names, gate names and quarantined lines are data (docs/rules.md, *File contract*: a name may
hold any character, ``<``, ``|`` and newlines included). Everything here turns such a value into
markdown text that renders as the value, in GitHub comments, in the Dagster UI and in any CommonMark
(0.31) renderer with the GFM table extension:

* :func:`escape` — plain inline text. ``& < > "`` become HTML entities (no tag, no entity, no
  autolink can form), every other ASCII punctuation character gets a backslash (CommonMark §2.4:
  any ASCII punctuation may be backslash-escaped, so ``* _ [ ] ` | $ # ~ !`` and the rest lose
  their meaning, ``|`` included for GFM tables). Leading and trailing whitespace becomes numeric
  references (a space is ``&#32;``), so a name cannot indent a list item into a code block or end a
  line with a hard break, and a renderer's trimming cannot eat it. GitHub still
  links ``@name``, ``#123`` and bare URLs in escaped text (its filters run on the rendered text), so
  names in a GitHub comment go in code spans.
* :func:`inline` — a **code span**, the way the app showed names (``- `name`: …``). A code span
  shows its content literally: no HTML, no emphasis, no math, no entity, and on GitHub no
  ``@mention``, ``#123`` reference, emoji shortcode or autolinked URL, which escaping alone does not
  prevent. A backtick in the name cannot close the span: the fence is one backtick longer than the
  longest backtick run in the name (CommonMark §6.1), and the content is padded with one space
  when it starts or ends with a backtick (the renderer strips exactly that space).
* :func:`cell` and :func:`table` — GFM table cells: missing values are empty, numbers are
  formatted, strings are escaped.

**Line breaks and control characters can never start a new row or block.** Before either form,
every C0 control character is replaced by its visible Unicode *Control Picture*: a newline shows as
``␊`` (U+240A), a carriage return as ``␍``, a tab as ``␉``; DEL shows as ``␡``; C1 controls as
``�``; the Unicode line and paragraph separators as ``␤``. The text stays on one line, and a reader
still sees where the name had a line break.

Inside a GFM table every ``|`` is written ``\\|``, code spans included: GitHub (cmark-gfm),
markdown-it and micromark treat a backslash directly before a pipe as an escaped pipe at the table
level and drop that backslash before parsing the cell's inlines (GFM spec, example 200).
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["Markdown", "cell", "escape", "inline", "table", "truncate", "visible"]

_ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}


def _picture(code: int) -> str:
    if code < 0x20:
        return chr(0x2400 + code)  # U+2400..U+241F, CONTROL PICTURES (␀ … ␟)
    if code == 0x7F:
        return "\u2421"  # ␡
    if code in (0x2028, 0x2029):
        return "\u2424"  # ␤ SYMBOL FOR NEWLINE
    return "\ufffd"  # C1 controls (U+0080..U+009F), NEL included


# one translation table, built once: str.translate is the fastest per-character mapping
_VISIBLE = {code: _picture(code) for code in [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]}
_ESCAPE = {
    **_VISIBLE,
    **{ord(c): _ENTITIES.get(c, "\\" + c) for c in _ASCII_PUNCTUATION},
}
_EDGE_SPACES = re.compile(r"^\s+|\s+$")
# what a formatted number or timestamp is made of: nothing here has a meaning inside a table cell
_PLAIN = re.compile(r"[0-9A-Za-z.,:+\- %]*")


class Markdown(str):
    """A string that already is markdown: :func:`cell` and :func:`table` pass it through as is.

    Only for markdown this module produced (e.g. ``Markdown(inline(name, table=True))``); it must
    hold no line break."""

    __slots__ = ()


def _missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return math.isnan(float(value))
    return value is pd.NA or value is pd.NaT


def truncate(text: str, max_chars: int | None) -> str:
    """``text`` cut to at most ``max_chars`` characters, the last one ``…`` when it was cut
    (``None``: unchanged). Cut before escaping, so an entity or an escape is never split."""
    if max_chars is None or len(text) <= max_chars:
        return text
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    return text[: max_chars - 1] + "…"


def visible(value: object) -> str:
    """``str(value)`` on one line: control characters and line separators as visible symbols
    (``\\n`` → ``␊``, see the module docstring); nothing else changes. The text a markdown reader
    sees for :func:`escape` and :func:`inline`."""
    return str(value).translate(_VISIBLE)


def escape(value: object, *, max_chars: int | None = None) -> str:
    """``str(value)`` as markdown inline text that renders as written, on one line.

    Safe in a paragraph, a list item, a heading, an image's alt text and a GFM table cell.
    ``max_chars`` truncates the raw text first (see :func:`truncate`).
    """
    out = truncate(str(value), max_chars).translate(_ESCAPE)
    # renderers strip a paragraph's or a cell's edge whitespace (some any Unicode whitespace): keep it
    return _EDGE_SPACES.sub(lambda m: "".join(f"&#{ord(c)};" for c in m.group()), out)


def inline(value: object, *, table: bool = False, max_chars: int | None = None) -> str:
    """``value`` as a CommonMark code span that shows it literally (see the module docstring).

    ``table=True`` also writes each ``|`` as ``\\|`` for use inside a GFM table cell (outside a
    table that backslash would show). Returns ``""`` for ``None``/NaN and for an empty string (a
    code span cannot be empty).
    """
    if _missing(value):
        return ""
    content = visible(truncate(str(value), max_chars))
    if not content:
        return ""
    longest = max((len(run) for run in re.findall(r"`+", content)), default=0)
    fence = "`" * (longest + 1)
    # CommonMark strips one space from each side when both sides have one (and the span is not all
    # spaces): pad when the content starts/ends with a backtick, or would itself lose its spaces
    pad = content[0] == "`" or content[-1] == "`" or (content[0] == content[-1] == " " and content.strip(" "))
    if pad:
        content = f" {content} "
    if table:
        content = content.replace("|", "\\|")
    return f"{fence}{content}{fence}"


def _timestamp(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat() + "Z"
    return value.isoformat()


def _plain(text: str) -> str:
    """A formatted number or timestamp: as is when it holds only digits, letters and ``.,:+-%``
    (readable in the raw file), else escaped."""
    return text if _PLAIN.fullmatch(text) else escape(text)


def cell(value: object, *, fmt: str | None = None, max_chars: int | None = None) -> str:
    """One GFM table cell for ``value``; never breaks the row, whatever the value.

    * ``None``, NaN, ``pd.NA``, ``NaT`` → empty cell (never ``nan``).
    * :class:`Markdown` → as is (already rendered by this module).
    * numbers → ``format(value, fmt)``; without ``fmt`` integers as is and floats ``.6g``
      (``inf`` shows as ``inf``). Booleans → ``true``/``false``.
    * datetimes (``pd.Timestamp`` too) → ISO-8601, UTC with ``Z`` when tz-aware.
    * lists, tuples and sets → their items' cells joined by ``, `` (sets sorted).
    * anything else → :func:`escape` of ``str(value)``, truncated to ``max_chars``.
    """
    if isinstance(value, Markdown):
        return str(value)
    if _missing(value):
        return ""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, numbers.Number):
        if fmt is not None:
            return _plain(format(value, fmt))
        if isinstance(value, numbers.Integral):
            return str(int(value))
        if isinstance(value, numbers.Real):
            return _plain(f"{float(value):.6g}")
        return escape(str(value))
    if isinstance(value, dt.datetime):
        return _plain(_timestamp(value))
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return ", ".join(c for c in (cell(v, fmt=fmt, max_chars=max_chars) for v in items) if c)
    return escape(value, max_chars=max_chars)


_ALIGN = {None: "---", "left": ":---", "right": "---:", "center": ":---:"}


def table(
    rows: Iterable[Sequence[object] | Mapping[str, object]],
    columns: Sequence[str],
    *,
    align: Sequence[str | None] | None = None,
) -> str:
    """A GFM table: a header of ``columns``, one line per row, every value through :func:`cell`.

    ``rows`` are sequences aligned with ``columns`` or mappings keyed by column name (a missing
    key is an empty cell). ``align`` gives ``"left"``, ``"right"``, ``"center"`` or ``None`` per
    column. Returns the lines joined by ``\\n``, without a trailing newline; with no rows, the
    header and the rule only.

    Raises
    ------
    ValueError
        A sequence row whose length differs from ``columns``, or ``align`` of the wrong length.
    """
    columns = list(columns)
    if not columns:
        raise ValueError("a table needs at least one column")
    align = list(align) if align is not None else [None] * len(columns)
    if len(align) != len(columns):
        raise ValueError(f"align has {len(align)} entries for {len(columns)} columns")
    lines = [
        "| " + " | ".join(cell(c) for c in columns) + " |",
        "|" + "|".join(_ALIGN[a] for a in align) + "|",
    ]
    for number, row in enumerate(rows):
        if isinstance(row, Mapping):
            values = [row.get(c) for c in columns]
        else:
            values = list(row)
            if len(values) != len(columns):
                raise ValueError(f"row {number} has {len(values)} cells for {len(columns)} columns")
        # an empty cell is written "|  |" (not "||"): some renderers read "||" as one separator
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return "\n".join(lines)
