"""PNG charts for the Dagster UI and the LP email: the portfolio's equity curve with its drawdown, PnL
by agent, and the calibration of stated confidence.

Built with matplotlib's object-oriented API (:class:`matplotlib.figure.Figure` and the Agg canvas),
never ``pyplot``: no global figure registry, no GUI backend, safe to call from several threads of a
Dagster run at once.

* **Deterministic bytes.** The same input gives the same PNG: the figure size, dpi and fonts are
  fixed here, and the PNG carries no ``Software`` or time metadata (``metadata={"Software": None}``;
  Agg writes no timestamp). A different matplotlib or FreeType version may draw differently.
* **Names are data.** Agent names are drawn with ``parse_math=False`` and ``usetex=False`` (a ``$``
  never starts mathtext, a ``\\`` never a TeX command), on one line (a line break drawn as ``↵``,
  other control characters as ``�``), cut at :data:`LABEL_CHARS`.
* **No data is not an error.** Empty input gives a small image that says "no data yet".

:func:`png_markdown` wraps a PNG as a markdown image with a ``data:`` URI, the way the Dagster UI
shows a plot in ``MetadataValue.md``.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from meta_pipeline.reports.markdown import escape, truncate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "LABEL_CHARS",
    "MAX_AGENTS",
    "calibration_chart_png",
    "equity_chart_png",
    "no_data_png",
    "png_markdown",
    "pnl_by_agent_png",
]

SIZE_IN = (8.0, 4.0)
"""Figure size, inches (width, height)."""
DPI = 100
LABEL_CHARS = 40
"""Longest agent name drawn in full; longer names are cut with ``…``."""
MAX_AGENTS = 30
"""PnL by agent draws at most this many bars: the best and the worst halves."""

GREEN, RED, BLUE, GREY = "#2e7d32", "#c62828", "#1f4e79", "#757575"
_SAFE_TEXT = {"parse_math": False, "usetex": False}  # data drawn as written


def _figure(size: tuple[float, float] = SIZE_IN) -> Figure:
    # matplotlib is imported when a chart is drawn, not when the definitions load (≈ 0.4 s of
    # every process start otherwise)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself as figure.canvas
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def no_data_png(title: str, message: str = "no data yet") -> bytes:
    """A small image (4×1.5 in) with ``title`` and ``message``, for a chart with nothing to draw."""
    figure = _figure((4.0, 1.5))
    ax = figure.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.65, title, ha="center", va="center", fontsize=11, weight="bold", **_SAFE_TEXT)
    ax.text(0.5, 0.3, message, ha="center", va="center", fontsize=10, color=GREY, **_SAFE_TEXT)
    return _png(figure)


# DejaVu Sans (matplotlib's font) has no Control Pictures: a line break is drawn as ↵, a tab as a
# space, any other control character as �
_LABEL_VISIBLE = {code: "\ufffd" for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)]} | {
    0x0A: "↵",
    0x0D: "↵",
    0x85: "↵",
    0x2028: "↵",
    0x2029: "↵",
    0x09: " ",
}


def _label(name: object) -> str:
    """An agent name for a chart: one line, cut at :data:`LABEL_CHARS` (drawn with ``_SAFE_TEXT``)."""
    return truncate(str(name), LABEL_CHARS).replace("\r\n", "\n").translate(_LABEL_VISIBLE)


def equity_chart_png(curve: pd.DataFrame, title: str = "Portfolio equity (sum of trade bps)") -> bytes:
    """The equity curve (cumulative PnL, bps) on top and the drawdown shaded below, against exit
    time (UTC).

    Parameters
    ----------
    curve
        One row per matured trade: ``exit_ts`` (datetime, UTC; naive is taken as UTC),
        ``cum_pnl_bps`` (running sum of PnL, bps) and ``drawdown_bps`` (peak − cumulative, bps;
        drawn below zero whatever its sign). Any row order: rows are sorted by ``exit_ts``
        (stable). Rows with a missing time or value are skipped.

    Returns PNG bytes, 8×4 in at 100 dpi; the "no data yet" image when nothing is left to draw.
    """
    needed = ["exit_ts", "cum_pnl_bps", "drawdown_bps"]
    if curve is None or curve.empty or any(c not in curve.columns for c in needed):
        return no_data_png(title)
    frame = pd.DataFrame(
        {
            "exit_ts": pd.to_datetime(curve["exit_ts"], utc=True),
            "cum": pd.to_numeric(curve["cum_pnl_bps"], errors="coerce"),
            "dd": pd.to_numeric(curve["drawdown_bps"], errors="coerce"),
        }
    )
    frame = frame[np.isfinite(frame["cum"]) & frame["exit_ts"].notna()]
    if frame.empty:
        return no_data_png(title)
    frame = frame.sort_values("exit_ts", kind="stable")
    x = frame["exit_ts"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()  # UTC, shown as such
    cum = frame["cum"].to_numpy(dtype="float64")
    drawdown = -np.abs(frame["dd"].fillna(0.0).to_numpy(dtype="float64"))

    figure = _figure()
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    # PnL is realized at exit: the curve steps at each exit time and stays flat in between
    marker = "o" if len(cum) <= 60 else None  # a few trades, or one, stay visible as points
    top.step(x, cum, where="post", color=BLUE, linewidth=1.5, marker=marker, markersize=3)
    top.axhline(0.0, color=GREY, linewidth=0.8)
    top.set_ylabel("cumulative PnL (bps)")
    trades = f"{len(cum)} trade" + ("s" if len(cum) != 1 else "")
    top.set_title(f"{title}: {cum[-1]:+.2f} bps over {trades}", **_SAFE_TEXT)
    top.grid(True, alpha=0.3)
    bottom.fill_between(x, drawdown, 0.0, step="post", color=RED, alpha=0.4, linewidth=0)
    bottom.step(x, drawdown, where="post", color=RED, linewidth=1.0)
    bottom.set_ylabel("drawdown (bps)")
    bottom.set_xlabel("exit time (UTC)")
    bottom.grid(True, alpha=0.3)
    if x[0] == x[-1]:  # one instant: show the day around it, not matplotlib's default years
        bottom.set_xlim(x[0] - np.timedelta64(12, "h"), x[0] + np.timedelta64(12, "h"))
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    return _png(figure)


def pnl_by_agent_png(pnl: pd.Series, title: str = "PnL by agent (sum of trade bps)") -> bytes:
    """Horizontal bars of each agent's PnL (bps), green for a gain, red for a loss (grey at 0), best
    on top.

    Parameters
    ----------
    pnl
        PnL in bps indexed by agent name (any names: drawn as written, on one line, cut at
        :data:`LABEL_CHARS`). NaN entries are skipped. With more than :data:`MAX_AGENTS` agents, the
        best and the worst ``MAX_AGENTS // 2`` are drawn and the title says so.

    Returns PNG bytes, 8 in wide, 4 in high or more with many agents, 100 dpi; the "no data yet"
    image when nothing is left to draw.
    """
    if pnl is None:
        return no_data_png(title)
    values = pd.to_numeric(pd.Series(pnl), errors="coerce")
    values = values[np.isfinite(values.to_numpy(dtype="float64"))]
    if values.empty:
        return no_data_png(title)
    frame = pd.DataFrame({"name": [str(n) for n in values.index], "pnl": values.to_numpy(dtype="float64")})
    # ascending PnL, ties by name: the first bar is drawn at the bottom, so the best ends on top
    frame = frame.sort_values(["pnl", "name"], kind="stable").reset_index(drop=True)
    shown = frame
    if len(frame) > MAX_AGENTS:
        half = MAX_AGENTS // 2
        shown = pd.concat([frame.head(half), frame.tail(half)], ignore_index=True)
        title = f"{title}: {half} worst and {half} best of {len(frame)}"

    height = max(SIZE_IN[1], 0.25 * len(shown) + 1.2)
    figure = _figure((SIZE_IN[0], height))
    ax = figure.add_subplot()
    positions = np.arange(len(shown))
    colors = [GREEN if v > 0 else RED if v < 0 else GREY for v in shown["pnl"]]
    ax.barh(positions, shown["pnl"].to_numpy(), color=colors)
    ax.set_yticks(positions, labels=[_label(n) for n in shown["name"]], fontsize=8, **_SAFE_TEXT)
    ax.axvline(0.0, color=GREY, linewidth=0.8)
    ax.set_xlabel("PnL (bps)")
    ax.set_title(title, **_SAFE_TEXT)
    ax.grid(True, axis="x", alpha=0.3)
    return _png(figure)


def calibration_chart_png(
    table: pd.DataFrame, title: str = "Calibration: stated confidence vs hit rate"
) -> bytes:
    """Realized hit rate against stated confidence, one point per confidence bucket, with the
    diagonal of a perfectly calibrated agent (points below it: overconfident).

    Parameters
    ----------
    table
        One row per bucket: ``confidence`` (mean stated confidence in the bucket, 0..1) and
        ``hit_rate`` (share of its trades with PnL > 0, 0..1); optional ``trades`` (count, written
        beside each point). Rows with a missing value are skipped.

    Returns PNG bytes (5×5 in, 100 dpi); the "no data yet" image when nothing is left to draw.
    """
    if table is None or table.empty or not {"confidence", "hit_rate"} <= set(table.columns):
        return no_data_png(title)
    frame = pd.DataFrame(
        {
            "x": pd.to_numeric(table["confidence"], errors="coerce"),
            "y": pd.to_numeric(table["hit_rate"], errors="coerce"),
            "n": pd.to_numeric(table["trades"], errors="coerce") if "trades" in table else np.nan,
        }
    )
    frame = frame[np.isfinite(frame["x"]) & np.isfinite(frame["y"])].sort_values("x", kind="stable")
    if frame.empty:
        return no_data_png(title)
    figure = _figure((5.0, 5.0))
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color=GREY, linewidth=1, label="perfect calibration")
    ax.plot(frame["x"], frame["y"], marker="o", color=BLUE, linewidth=1.5, label="realized")
    for x, y, n in frame.itertuples(index=False):
        if np.isfinite(n):
            ax.annotate(f"n={n:.0f}", (x, y), textcoords="offset points", xytext=(5, -10), fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("stated confidence")
    ax.set_ylabel("realized hit rate")
    ax.set_title(title, **_SAFE_TEXT)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _png(figure)


def png_markdown(png: bytes, alt: str) -> str:
    """``![alt](data:image/png;base64,…)``: a markdown image the Dagster UI shows inline
    (``dg.MetadataValue.md``). ``alt`` is escaped (:func:`~meta_pipeline.reports.markdown.escape`),
    so a name in it cannot end the image or inject markup."""
    return f"![{escape(alt)}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
