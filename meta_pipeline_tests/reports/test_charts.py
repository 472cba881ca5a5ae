"""Charts: PNG bytes, the same bytes for the same input, a "no data yet" image for nothing, and agent
names drawn as written (no mathtext)."""

from __future__ import annotations

import base64
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from meta_pipeline.reports.charts import (
    calibration_chart_png,
    equity_chart_png,
    no_data_png,
    png_markdown,
    pnl_by_agent_png,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE = "x|y`z\n<script>alert(1)</script>$a$"


def size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from the IHDR chunk."""
    assert png[:8] == PNG_MAGIC and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def curve(n: int = 30) -> pd.DataFrame:
    pnl = np.random.default_rng(7).normal(5.0, 40.0, n)
    cum = np.cumsum(pnl)
    drawdown = np.maximum.accumulate(np.maximum(cum, 0.0)) - cum
    exit_ts = pd.date_range("2024-03-01", periods=n, freq="6h", tz="UTC")
    return pd.DataFrame({"exit_ts": exit_ts, "cum_pnl_bps": cum, "drawdown_bps": drawdown})


def test_equity_chart_is_an_8_by_4_inch_png_and_deterministic():
    first = equity_chart_png(curve())
    assert size(first) == (800, 400)
    assert equity_chart_png(curve()) == first
    assert b"Software" not in first and b"matplotlib" not in first  # no version or time metadata


def test_equity_chart_ignores_row_order():
    shuffled = curve().sample(frac=1.0, random_state=3)
    assert equity_chart_png(shuffled) == equity_chart_png(curve())


def test_equity_chart_of_one_trade_and_of_nothing():
    assert size(equity_chart_png(curve(1))) == (800, 400)
    empty = equity_chart_png(curve().iloc[:0])
    assert empty == no_data_png("Portfolio equity (sum of trade bps)") and size(empty) == (400, 150)
    assert equity_chart_png(pd.DataFrame()) == empty
    assert equity_chart_png(curve().assign(cum_pnl_bps=np.nan)) == empty


def test_pnl_by_agent_draws_hostile_names_as_written():
    pnl = pd.Series(
        {"alpha": 300.0, HOSTILE: -176.5, r"$\frac{1}{0}$ \alpha": 20.0, "b" * 300: 0.0, "gone": np.nan}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a mathtext parse error or a missing glyph would warn or raise
        png = pnl_by_agent_png(pnl)
    assert size(png) == (800, 400)
    assert pnl_by_agent_png(pnl) == png
    assert pnl_by_agent_png(pnl.iloc[::-1]) == png  # sorted by PnL, not by input order


def test_pnl_by_agent_of_many_agents_grows_and_of_none_says_so():
    many = pd.Series({f"agent_{i:03d}": float(i - 40) for i in range(80)})
    width, height = size(pnl_by_agent_png(many))
    assert width == 800 and height > 400
    assert pnl_by_agent_png(pd.Series(dtype="float64")) == no_data_png("PnL by agent (sum of trade bps)")
    assert size(pnl_by_agent_png(pd.Series({"a": np.nan}))) == (400, 150)


def test_calibration_chart():
    table = pd.DataFrame(
        {"confidence": [0.55, 0.65, 0.75], "hit_rate": [0.5, 0.6, 0.55], "trades": [20, 30, 8]}
    )
    png = calibration_chart_png(table)
    assert size(png) == (500, 500) and calibration_chart_png(table) == png
    assert size(calibration_chart_png(table.drop(columns="trades"))) == (500, 500)
    assert size(calibration_chart_png(table.iloc[:0])) == (400, 150)


def test_charts_can_be_drawn_from_several_threads_at_once():
    expected = equity_chart_png(curve())
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: equity_chart_png(curve()), range(4)))
    assert all(result == expected for result in results)


def test_png_markdown_is_a_data_uri_image_with_an_escaped_alt():
    png = no_data_png("t")
    text = png_markdown(png, HOSTILE)
    assert text.startswith("![x\\|y\\`z\u240a&lt;script&gt;") and "\n" not in text
    prefix, data = text.split("](data:image/png;base64,")
    assert base64.b64decode(data.removesuffix(")")) == png
    markdown_it = pytest.importorskip("markdown_it")
    tokens = markdown_it.MarkdownIt("commonmark").parse(text)
    images = [t for t in tokens[1].children if t.type == "image"]
    assert len(images) == 1 and images[0].attrs["src"].startswith("data:image/png;base64,")
    alt = "".join(child.content for child in images[0].children if child.type == "text")
    assert alt == HOSTILE.replace("\n", "\u240a")  # the alt text a reader sees is the name
