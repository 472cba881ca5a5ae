"""The demo data root as a live feed, for ``meta-pipeline demo --live``.

The demo is generated with a history that ends today (UTC). Then everything stamped after a *cut*
(by default three hours before now) is held back — the signal and telemetry lines and the 1-minute
bars — and :class:`LiveFeed` hands it out again in time order as a clock advances:

* signal and telemetry lines are appended to ``alpha/events.jsonl`` and ``telemetry/events.jsonl``
  once their ``ts`` has passed, whole lines in one write each (a reader that catches a line half
  written leaves it for the next run, as ingestion does with any incomplete last line);
* a bar is added to its day file once it has *closed* (open time + 1 minute), each day file replaced
  atomically (the ``files`` price source never sees half a row).

:func:`replay_clock` runs the clock from the cut towards now faster than real time (the held-back
hours arrive within minutes: partitions fill, a 1 h row waits for its exit bar and matures when it
arrives), then at wall-clock pace. Lines that carry no readable ``ts`` (the demo's malformed lines
on purpose) stay in the history part. Nothing here reads the wall clock: the caller passes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from meta_pipeline import names
from meta_pipeline.atomic_files import atomic_write_bytes
from meta_pipeline.ingest.fields import parse_ts

MINUTE_MS = 60_000


@dataclass
class _Held:
    """Lines of one file held back: ``(due time in ms, line with its newline)``, in time order."""

    path: Path
    lines: list[tuple[int, bytes]] = field(default_factory=list)
    next: int = 0

    def due(self, clock_ms: int) -> list[bytes]:
        start = self.next
        while self.next < len(self.lines) and self.lines[self.next][0] <= clock_ms:
            self.next += 1
        return [line for _, line in self.lines[start : self.next]]

    @property
    def left(self) -> int:
        return len(self.lines) - self.next


@dataclass(frozen=True)
class Released:
    """What one :meth:`LiveFeed.advance` appended: signal lines, telemetry lines, bars."""

    signals: int
    runs: int
    bars: int


class LiveFeed:
    """Hold back what the demo root holds after ``cut_ms`` (epoch ms, UTC) and release it by
    :meth:`advance`. Construction rewrites the two input files and the bar files with their parts up
    to the cut (atomically) and keeps the rest in memory."""

    def __init__(self, root: Path, cut_ms: int) -> None:
        self.root = Path(root)
        self.cut_ms = cut_ms
        self._lines = [self._hold_lines(self.root / f) for f in (names.SIGNALS_FILE, names.TELEMETRY_FILE)]
        self._bars: dict[Path, tuple[bytes, _Held]] = {}
        for path in sorted((self.root / "bars").glob("*/*-1m-*.csv")):
            self._hold_bars(path)

    # ------------------------------------------------------------------------------------ holding back
    def _hold_lines(self, path: Path) -> _Held:
        kept, held = bytearray(), _Held(path)
        for line in path.read_bytes().splitlines(keepends=True):
            due = _line_ms(line)
            if due is None or due <= self.cut_ms:
                kept += line
            else:
                held.lines.append((due, line))
        held.lines.sort(key=lambda item: item[0])  # stable: equal times keep the file's order
        atomic_write_bytes(path, bytes(kept))
        return held

    def _hold_bars(self, path: Path) -> None:
        kept, held = bytearray(), _Held(path)
        for row in path.read_bytes().splitlines(keepends=True):
            closes = _bar_open_ms(row) + MINUTE_MS
            if closes <= self.cut_ms:
                kept += row
            else:
                held.lines.append((closes, row))
        if not held.lines:
            return
        self._bars[path] = (bytes(kept), held)
        if kept:
            atomic_write_bytes(path, bytes(kept))
        else:
            path.unlink()  # a day that has not started at the cut: no file yet, as on the exchange

    # ---------------------------------------------------------------------------------------- release
    def advance(self, clock_ms: int) -> Released:
        """Append every held line due at ``clock_ms`` and every bar closed by then."""
        counts = []
        for held in self._lines:
            due = held.due(clock_ms)
            if due:
                with held.path.open("ab") as out:
                    out.write(b"".join(due))
            counts.append(len(due))
        bars = 0
        for path, (kept, held) in self._bars.items():
            due = held.due(clock_ms)
            if due:
                kept += b"".join(due)
                self._bars[path] = (kept, held)
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, kept)
                bars += len(due)
        return Released(signals=counts[0], runs=counts[1], bars=bars)

    @property
    def exhausted(self) -> bool:
        """True once everything held back has been released."""
        return all(h.left == 0 for h in self._lines) and all(h.left == 0 for _, h in self._bars.values())


def replay_clock(cut_ms: int, started_ms: int, now_ms: int, speed: float) -> int:
    """The feed's clock at wall time ``now_ms`` for a replay that started at ``started_ms`` from
    ``cut_ms``: ``speed`` times faster than real time until it catches up with the wall clock, then
    the wall clock itself (never ahead of it)."""
    return min(now_ms, cut_ms + int((now_ms - started_ms) * speed))


def _line_ms(line: bytes) -> int | None:
    """The ``ts`` of a JSONL line in epoch ms (UTC), or None when it has none that parses."""
    try:
        obj = json.loads(line)
        return int(parse_ts(obj["ts"]).value // 1_000_000)
    except Exception:  # noqa: BLE001 — a malformed line on purpose: it belongs to the history part
        return None


def _bar_open_ms(row: bytes) -> int:
    """A Binance kline CSV row's open time in epoch ms (the dumps write ms or µs)."""
    value = int(row.split(b",", 1)[0])
    return value // 1000 if value >= 10**14 else value
