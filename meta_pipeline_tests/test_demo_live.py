"""The live demo feed: what is held back after the cut comes back, in time order, exactly once,
and the demo root ends byte for byte (bars) or line for line (inputs) as generated."""

import json
import shutil
from collections import Counter
from datetime import date

import pandas as pd
import pytest

from meta_pipeline import names
from meta_pipeline.demo import generate_demo
from meta_pipeline.demo.live import MINUTE_MS, LiveFeed, replay_clock
from meta_pipeline.ingest.fields import parse_ts

START = date(2025, 9, 1)
DAYS = 14


def _ms(text: str) -> int:
    return int(pd.Timestamp(text).value // 1_000_000)


def _snapshot(root):
    inputs = {
        f: Counter((root / f).read_bytes().splitlines()) for f in (names.SIGNALS_FILE, names.TELEMETRY_FILE)
    }
    bars = {p.relative_to(root): p.read_bytes() for p in sorted((root / "bars").glob("*/*.csv"))}
    return inputs, bars


def _ts_ms(line: bytes) -> int | None:
    try:
        return int(parse_ts(json.loads(line)["ts"]).value // 1_000_000)
    except Exception:
        return None


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    generate_demo(root, start=START, days=DAYS)
    return root, _snapshot(root)


def test_the_feed_holds_back_after_the_cut_and_releases_in_time_order(generated, tmp_path):
    root, (inputs, bars) = generated
    work = tmp_path / "root"
    shutil.copytree(root, work)
    cut = _ms("2025-09-14T09:00:00Z")
    feed = LiveFeed(work, cut)
    for clock in (cut, _ms("2025-09-14T09:30:00Z"), _ms("2025-09-14T15:00:00Z")):
        feed.advance(clock)
        for name in (names.SIGNALS_FILE, names.TELEMETRY_FILE):
            lines = (work / name).read_bytes().splitlines()
            stamped = [t for t in map(_ts_ms, lines) if t is not None]
            assert stamped and max(stamped) <= clock  # nothing from the future
            want = sum(n for line, n in inputs[name].items() if (_ts_ms(line) or 0) <= clock)
            assert sum(1 for line in lines if (_ts_ms(line) or 0) <= clock) == want  # all that is due
        for path in (work / "bars").glob("*/*.csv"):
            rows = path.read_bytes().splitlines()
            assert int(rows[-1].split(b",")[0]) + MINUTE_MS <= clock  # only closed bars
    # a day that had not started at the cut has no bar file yet
    assert not (work / "bars" / "BTCUSDT" / "BTCUSDT-1m-2025-09-15.csv").exists()
    assert not feed.exhausted
    feed.advance(_ms("2025-09-20T00:00:00Z"))
    assert feed.exhausted
    assert feed.advance(_ms("2025-09-21T00:00:00Z")).signals == 0  # released once, never again
    got_inputs, got_bars = _snapshot(work)
    assert got_inputs == inputs  # every line back, duplicates and malformed lines included
    assert got_bars == bars  # every bar file byte for byte


def test_the_replay_clock_runs_fast_then_follows_the_wall_clock():
    cut, started = 1_000_000, 2_000_000
    assert replay_clock(cut, started, started, speed=60) == cut
    assert replay_clock(cut, started, started + 1_000, speed=60) == cut + 60_000
    assert replay_clock(cut, started, started + 10**9, speed=60) == started + 10**9  # caught up
    clocks = [replay_clock(cut, started, started + s * 500, speed=60) for s in range(100)]
    assert clocks == sorted(clocks) and all(c <= started + s * 500 for s, c in enumerate(clocks))
