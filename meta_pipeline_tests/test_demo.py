"""The demo data root: deterministic, well-formed, and each agent's numbers land where its intended
decision and label need them. Everything here is recomputed independently of ``meta_pipeline.demo``
and of the supervisor's modules (pure Python and scipy: bisect on the bar files, the price and PnL
rules, the chain of non-overlapping trades, the timing returns and their probabilistic Sharpe ratio,
and the supervisor thresholds of docs/rules.md, written out as literals). One test then runs the
supervisor itself on the demo's trades and checks that it agrees."""

from __future__ import annotations

import bisect
import json
import math
import re
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats as sps

from meta_pipeline.demo import AGENTS, DemoSummary, generate_demo
from meta_pipeline.supervisor.decisions import decide
from meta_pipeline.supervisor.policy import SupervisorPolicy
from meta_pipeline.supervisor.stats import agent_stats

START = date(2025, 9, 1)
DAYS = 30
BASES = {"BTC", "ETH", "SOL", "DOGE"}
MS_MINUTE = 60_000
MS_DAY = 86_400_000


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DemoSummary:
    return generate_demo(tmp_path_factory.mktemp("demo_a"), seed=7, start=START, days=DAYS)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _classify(line: bytes) -> tuple[str, dict | None]:
    """'ok' or the reason a signal line is bad, by independent rules."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8", None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return "invalid_json", None
    if not isinstance(obj.get("ts"), str):
        return "ts_numeric", obj
    ts = datetime.fromisoformat(obj["ts"])
    if ts.tzinfo is None:
        return "ts_without_offset", obj
    if not obj.get("run_id"):
        return "missing_run_id", obj
    if str(obj.get("direction", "")).upper() not in ("LONG", "SHORT"):
        return "bad_direction", obj
    if not 0.0 <= obj["confidence"] <= 1.0:
        return "bad_confidence", obj
    if _instrument(obj["symbol"]) is None:
        return "bad_symbol", obj
    return "ok", obj


def _instrument(symbol: str) -> str | None:
    parts = [p for p in re.split(r"[/\-]", symbol.upper()) if p]
    if len(parts) == 2:
        base, quote = parts
        if quote not in ("USD", "USDT", "USDC"):
            return None
    else:
        base = re.sub(r"(USDT|USDC|USD)$", "", parts[0])
    return f"{base}USDT" if base in BASES else None


def _ms(ts: str) -> int:
    dt = datetime.fromisoformat(ts).astimezone(UTC)
    return round((dt - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000)


def _parse(demo: DemoSummary) -> dict:
    raw = demo.signals_path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw[:-1].split(b"\n")
    kinds: Counter = Counter()
    seen: set[bytes] = set()
    signals = []
    for line in lines:
        if line in seen:
            kinds["duplicate"] += 1
            continue
        seen.add(line)
        kind, obj = _classify(line)
        kinds[kind] += 1
        if kind == "ok":
            signals.append(obj | {"_ms": _ms(obj["ts"]), "_inst": _instrument(obj["symbol"])})
    telemetry = [json.loads(x) for x in demo.telemetry_path.read_text("utf-8").splitlines()]
    return {"lines": lines, "kinds": kinds, "signals": signals, "telemetry": telemetry}


def _load_bars(demo: DemoSummary) -> dict:
    out = {}
    for sym in demo.symbols:
        files = sorted((demo.bars_dir / sym).glob(f"{sym}-1m-*.csv"))
        out[sym] = (files, pd.concat([pd.read_csv(f, header=None) for f in files], ignore_index=True))
    return out


def _price(times: list[int], opens: list[float], t: int) -> float | None:
    i = bisect.bisect_left(times, t)
    if i == len(times) or times[i] - t > 5 * MS_MINUTE:
        return None
    return opens[i]


def _stats(parsed: dict, bars: dict) -> dict:
    lookup = {s: (df[0].tolist(), df[1].tolist()) for s, (_, df) in bars.items()}
    per = defaultdict(
        lambda: {
            "pnl": [],
            "unpriced": 0,
            "trade_runs": set(),
            "regime_pnl": defaultdict(float),
            "rows": [],
        }
    )
    for s in parsed["signals"]:
        times, opens = lookup[s["_inst"]]
        entry = _price(times, opens, s["_ms"])
        exit_ = _price(times, opens, s["_ms"] + 24 * 3_600_000)
        a = per[s["agent"]]
        a["trade_runs"].add(s["run_id"])
        if entry is None or exit_ is None:
            a["unpriced"] += 1
            continue
        long = s["direction"].upper() == "LONG"
        bps = (exit_ / entry - 1) * 1e4 if long else (1 - exit_ / entry) * 1e4
        a["pnl"].append(bps)
        a["regime_pnl"][s["regime"]] += bps
        a["rows"].append(
            {
                "ms": s["_ms"],
                "run_id": s["run_id"],
                "instrument": s["_inst"],
                "d": 1 if long else -1,
                "gross": bps,
                "regime": s["regime"],
                "confidence": s["confidence"],
            }
        )
    runs = defaultdict(list)
    for t in parsed["telemetry"]:
        runs[t["agent"]].append(t)
    out = {}
    for agent, a in per.items():
        tel = runs[agent]
        traded = [t for t in tel if t["run_id"] in a["trade_runs"]]
        pnl = a["pnl"]
        out[agent] = {
            "trades": len(pnl),
            "unpriced": a["unpriced"],
            "pnl": sum(pnl),
            "hit": sum(p > 0 for p in pnl) / len(pnl),
            "runs": len(tel),
            "err": sum(t["errors"] > 0 for t in tel) / len(tel),
            "err_sum": sum(t["errors"] for t in tel) / len(tel),
            "lat": sum(t["latency_ms"] for t in tel) / len(tel),
            "cost": sum(t["cost_usd"] for t in tel),
            "err_traded": sum(t["errors"] > 0 for t in traded) / len(traded),
            "lat_traded": sum(t["latency_ms"] for t in traded) / len(traded),
            "cost_traded": sum(t["cost_usd"] for t in traded),
            "regime_pnl": dict(a["regime_pnl"]),
            "rows": a["rows"],
            **_chain_psr(a["rows"]),
        }
    return out


def _chain_psr(rows: list[dict]) -> dict:
    """docs/rules.md, *Significance*: the chain of non-overlapping 24 h trades (order ts, run_id; the
    next is the first whose entry is at or after the previous exit), the timing returns (d − d̄)·r with
    r = d·gross and d̄ the mean direction per instrument over the chain, and their PSR(0) (Bailey &
    López de Prado 2012: biased skewness, non-excess kurtosis). ``psr`` is None when undefined."""
    chain, free_at = [], -math.inf
    for row in sorted(rows, key=lambda r: (r["ms"], r["run_id"])):
        if row["ms"] >= free_at:
            chain.append(row)
            free_at = row["ms"] + MS_DAY
    out = {"chain": len(chain), "psr": None, "psr_reason": None}
    directions = defaultdict(list)
    for row in chain:
        directions[row["instrument"]].append(row["d"])
    mean_d = {inst: sum(ds) / len(ds) for inst, ds in directions.items()}
    x = [(row["d"] - mean_d[row["instrument"]]) * (row["d"] * row["gross"]) for row in chain]
    if len(x) < 2:
        out["psr_reason"] = "fewer than 2 chain trades"
        return out
    mean = sum(x) / len(x)
    std = math.sqrt(sum((v - mean) ** 2 for v in x) / (len(x) - 1))
    if std == 0:
        out["psr_reason"] = "no timing variation"
        return out
    sr = mean / std
    skew, kurt = float(sps.skew(x)), float(sps.kurtosis(x, fisher=False))
    radicand = 1 - skew * sr + (kurt - 1) / 4 * sr**2
    if radicand <= 0:
        out["psr_reason"] = "non-positive variance term"
        return out
    out["psr"] = float(sps.norm.cdf(sr * math.sqrt(len(x) - 1) / math.sqrt(radicand)))
    return out


def _failed_gates(s: dict, *, err: float, min_trades: int = 10, min_psr: float | None = 0.95) -> set[str]:
    """The promotion gates of docs/rules.md, *Supervisor rules*, that fail (default thresholds;
    ``min_trades`` 0 and ``min_psr`` None turn those two off, as in the app's first rules). An
    undefined PSR fails."""
    failed = {
        "pnl": s["pnl"] < 150,
        "hit rate": s["hit"] < 0.55,
        "error rate": err > 0,
        "avg latency": s["lat"] > 900,
        "trades": s["trades"] < min_trades,
        "timing PSR": min_psr is not None and (s["psr"] is None or s["psr"] < min_psr),
    }
    return {gate for gate, fails in failed.items() if fails}


def _decision(s: dict, *, err: float, min_trades: int = 10, min_psr: float | None = 0.95) -> tuple[str, str]:
    """(decision, label) by docs/rules.md, *Supervisor rules*, default thresholds (``err`` over all
    runs; ``min_trades`` and ``min_psr`` as in :func:`_failed_gates`). Nobody is on the kill list."""
    pnl, cost = s["pnl"], s["cost"]
    score = (
        40 * (s["trades"] >= 10 and pnl < 0)
        + 30 * (pnl < -150)
        + 20 * (err > 0.10)
        + 10 * (cost > 5 and pnl <= 0)
    )
    label = "RETIRE" if score >= 80 else "WATCH" if score >= 55 else "KEEP"
    decision = "HOLD"
    if not _failed_gates(s, err=err, min_trades=min_trades, min_psr=min_psr):
        decision = "PROMOTE"
    if pnl < -150 or err > 0.20:
        decision = "KILL"
    if label == "RETIRE":
        decision = "RETIRE"
    return decision, label


def _first_rules(s: dict) -> str:
    """The app's first rules: pnl ≥ 150, hit rate ≥ 0.55, error rate 0, avg latency ≤ 900 ms."""
    return _decision(s, err=s["err"], min_trades=0, min_psr=None)[0]


def _intended(summary: DemoSummary) -> dict[str, tuple[str, str]]:
    return {a: (summary.intended[a], summary.labels[a]) for a in summary.agents}


@pytest.fixture(scope="module")
def parsed(demo):
    return _parse(demo)


@pytest.fixture(scope="module")
def bars(demo):
    return _load_bars(demo)


@pytest.fixture(scope="module")
def stats(parsed, bars):
    return _stats(parsed, bars)


# --------------------------------------------------------------------------- tests


def test_same_seed_gives_identical_bytes(demo, tmp_path):
    again = generate_demo(tmp_path / "b", seed=7, start=START, days=DAYS)
    a, b = _files(demo.root), _files(again.root)
    assert sorted(a) == sorted(b)
    assert len(a) == 2 + 4 * (DAYS + 3)
    different = [name for name in a if a[name] != b[name]]
    assert different == []
    assert _intended(again) == _intended(demo) and again.n_signals == demo.n_signals


def test_regenerating_in_place_is_identical_and_other_seeds_differ(demo, tmp_path):
    root = tmp_path / "c"
    generate_demo(root, seed=8, start=START, days=DAYS)
    (root / "bars" / "BTCUSDT" / "BTCUSDT-1m-2020-01-01.csv").write_text("stale\n")
    other = _files(root)
    assert other["alpha/events.jsonl"] != (demo.root / "alpha/events.jsonl").read_bytes()
    summary = generate_demo(root, seed=7, start=START, days=DAYS)
    assert _files(root) == _files(demo.root)
    assert _intended(summary) == _intended(demo)


def test_summary_counts_match_the_files(demo, parsed):
    kinds = parsed["kinds"]
    assert kinds["ok"] == demo.n_signals
    assert kinds["duplicate"] == demo.n_duplicates == 3
    malformed = {k: v for k, v in kinds.items() if k not in ("ok", "duplicate")}
    assert sum(malformed.values()) == demo.n_malformed
    assert (
        set(malformed)
        == set(demo.malformed_kinds)
        == {
            "invalid_json",
            "invalid_utf8",
            "ts_without_offset",
            "ts_numeric",
            "bad_direction",
            "bad_confidence",
            "missing_run_id",
            "bad_symbol",
        }
    )
    assert len(parsed["lines"]) == demo.n_signals + demo.n_malformed + demo.n_duplicates
    assert 0.002 < demo.n_malformed / len(parsed["lines"]) < 0.02  # ≈0.5 %, well under 5 %
    assert len(parsed["telemetry"]) == demo.n_telemetry
    assert b'"direction": "FLAT"' in b"\n".join(parsed["lines"])
    assert b'"symbol": "BTC/EUR"' in b"\n".join(parsed["lines"])


def test_fleet_size_and_span(demo, parsed):
    assert len(demo.agents) >= 10 and "<b>x</b>" in demo.agents
    assert len(demo.symbols) >= 4
    assert demo.days == (START, START + timedelta(days=DAYS - 1))
    assert set(demo.intended) == set(demo.labels) == set(demo.agents)
    # every decision the generator can aim for (KILLED follows once KILL / RETIRE are on the kill list)
    assert set(demo.intended.values()) == {"PROMOTE", "HOLD", "KILL", "RETIRE"}
    assert set(demo.labels.values()) == {"KEEP", "WATCH", "RETIRE"}
    assert ("HOLD", "WATCH") in set(_intended(demo).values())
    signals = parsed["signals"]
    assert {s["agent"] for s in signals} == set(demo.agents)
    assert {s["_inst"] for s in signals} == set(demo.symbols)
    lo = _ms(f"{START.isoformat()}T00:00:00Z")
    assert all(lo <= s["_ms"] < lo + DAYS * 86_400_000 for s in signals)
    signal_days = {datetime.fromtimestamp(s["_ms"] / 1000, UTC).date() for s in signals}
    assert len(signal_days) == DAYS


def test_signal_lines_look_like_the_app(parsed):
    lines = [x for x in parsed["lines"] if x.startswith(b"{")]
    signals = parsed["signals"]
    text = b"\n".join(lines)
    for marker in (b'Z"', b'+02:00"', b'+00:00"'):
        assert text.count(marker) >= 20
    assert sum(bool(re.search(r"\.\d{3}(\d{3})?(Z|[+-]\d\d:\d\d)$", s["ts"])) for s in signals) >= 50
    assert sum(s["_ms"] % MS_MINUTE == 0 for s in signals) >= 30  # exact minute: open_time ≥ t matters
    spellings = {s["symbol"] for s in signals}
    assert {"BTC", "BTCUSDT", "BTC/USDT", "btc-usdt", "ETH-USD", "sol/usdc"} <= spellings
    assert {s["direction"] for s in signals} == {"LONG", "SHORT", "long", "short"}
    assert {s["regime"] for s in signals} == {"trend", "range", "high_vol"}
    assert all(0 <= s["confidence"] <= 1 and isinstance(s["score_final"], float) for s in signals)
    assert all(s["model"] and s["prompt_version"] for s in signals)
    # sorted by time, as the app appends them
    times = [s["_ms"] for s in signals]
    assert times == sorted(times)
    run_ids = [s["run_id"] for s in signals]
    assert len(run_ids) == len(set(run_ids))


def test_every_signal_has_telemetry_and_some_runs_have_no_signal(parsed):
    tel = parsed["telemetry"]
    by_run = {t["run_id"]: t for t in tel}
    assert len(by_run) == len(tel)
    for s in parsed["signals"]:
        assert by_run[s["run_id"]]["agent"] == s["agent"]
        assert _ms(by_run[s["run_id"]]["ts"]) + by_run[s["run_id"]]["latency_ms"] == s["_ms"]
    silent = len(tel) - len(parsed["signals"])
    assert 0.30 <= silent / len(tel) <= 0.55
    for t in tel:
        assert set(t) == {
            "run_id",
            "agent",
            "ts",
            "latency_ms",
            "tokens_in",
            "tokens_out",
            "errors",
            "cost_usd",
        }
        assert all(isinstance(t[k], int) for k in ("latency_ms", "tokens_in", "tokens_out", "errors"))
        assert isinstance(t["cost_usd"], float) and t["cost_usd"] > 0
    assert [t["ts"] for t in tel] == sorted(t["ts"] for t in tel)
    per_day = Counter((t["agent"], t["run_id"].rsplit("-", 2)[1]) for t in tel)
    for (agent, _day), n in per_day.items():
        assert 3 <= n <= (12 if agent == "gamma_coinflip" else 10)  # gamma: + the two gap runs


def test_bars_are_well_formed(demo, bars):
    first = _ms(f"{START.isoformat()}T00:00:00Z")
    n_days = DAYS + 3
    gap_symbol, gap_day, gap_start, gap_len = demo.gap
    gap_ms = _ms(f"{gap_day.isoformat()}T{gap_start}:00Z")
    for sym, (files, df) in bars.items():
        assert len(files) == n_days
        assert [f.name for f in files] == [f"{sym}-1m-{START + timedelta(days=d)}.csv" for d in range(n_days)]
        assert df.shape[1] == 12 and (df[11] == 0).all()
        t = df[0]
        assert (df[6] == t + 59_999).all()
        o, h, low, c = df[1], df[2], df[3], df[4]
        assert (h >= o).all() and (h >= c).all() and (low <= o).all() and (low <= c).all() and (low > 0).all()
        assert (df[5] > 0).all() and (df[8] >= 1).all() and (df[9] <= df[5]).all()
        steps = t.diff().iloc[1:]
        jumps = steps[steps != MS_MINUTE]
        continuity = o.iloc[1:].to_numpy() - c.iloc[:-1].to_numpy()
        if sym == gap_symbol:
            assert jumps.tolist() == [(gap_len + 1) * MS_MINUTE]
            assert (
                t[jumps.index[0] - 1] == gap_ms - MS_MINUTE
                and t[jumps.index[0]] == gap_ms + gap_len * MS_MINUTE
            )
            assert len(df) == n_days * 1440 - gap_len
            continuity[jumps.index[0] - 1] = 0.0
        else:
            assert jumps.empty and len(df) == n_days * 1440
        assert abs(continuity).max() < 1e-9  # each bar opens at the previous close
        assert t.iloc[0] == first
        # each file holds its own UTC day
        for f in files[:: n_days // 3]:
            day = pd.read_csv(f, header=None)[0]
            lo = _ms(f.name[-14:-4] + "T00:00:00Z")
            assert day.min() >= lo and day.max() < lo + 86_400_000
        # realistic volatility: annualised 1-minute close-to-close vol between 40 % and 110 %
        lr = (c / c.shift()).apply(lambda x: 0 if pd.isna(x) else __import__("math").log(x))
        annual = lr.std() * (525_600**0.5)
        assert 0.40 < annual < 1.10, (sym, annual)
    assert 40_000 < bars["BTCUSDT"][1][1].iloc[0] < 80_000
    assert 0.05 < bars["DOGEUSDT"][1][1].iloc[0] < 0.5


def test_the_gap_leaves_gamma_with_unpriced_rows(stats):
    assert stats["gamma_coinflip"]["unpriced"] == 2
    assert sum(s["unpriced"] for a, s in stats.items() if a != "gamma_coinflip") == 0


def test_each_agent_lands_where_its_intended_decision_needs_it(demo, stats):
    assert set(stats) == set(demo.agents)
    for agent, s in stats.items():
        intended = _intended(demo)[agent]
        # both error-rate readings (share of erroring runs, errors per run) give the same decision
        assert _decision(s, err=s["err"]) == intended, (agent, s)
        assert _decision(s, err=s["err_sum"]) == intended, (agent, s)
        # a HOLD is held by the gates it was built to fail
        assert (intended[0] == "HOLD") == bool(demo.held_by.get(agent)), agent
        assert set(demo.held_by.get(agent, ())) <= _failed_gates(s, err=s["err"]), (agent, s)
        # clearly inside: no statistic sits near a threshold it is compared with
        for threshold in (-150.0, 0.0, 150.0):
            assert abs(s["pnl"] - threshold) >= 30, (agent, s["pnl"])
        assert abs(s["hit"] - 0.55) >= 0.02, (agent, s["hit"])
        for threshold in (0.10, 0.20):
            assert abs(s["err"] - threshold) >= 0.02 and abs(s["err_sum"] - threshold) >= 0.02, (agent, s)
        assert s["err"] == 0 or s["err"] >= 0.02
        assert abs(s["lat"] - 900) >= 100, (agent, s["lat"])
        assert abs(s["cost"] - 5) >= 1, (agent, s["cost"])
        assert (s["trades"] >= 10) == (agent != "theta_sparse")
        assert s["trades"] <= 10 - 2 or s["trades"] >= 10 + 2, (agent, s["trades"])
        # the timing PSR decides when every other gate passes: then it is clear of 0.95 too
        if _failed_gates(s, err=s["err"], min_psr=None) == set() and s["psr"] is not None:
            assert abs(s["psr"] - 0.95) >= 0.02, (agent, s["psr"])


def test_another_seed_lands_on_the_same_decisions(tmp_path):
    other = generate_demo(tmp_path, seed=11, start=date(2025, 6, 1), days=DAYS)
    stats = _stats(_parse(other), _load_bars(other))
    assert {a: _decision(s, err=s["err"]) for a, s in stats.items()} == _intended(other)
    for agent in ("theta_sparse", "mu_always_long"):  # the first rules would promote them
        assert _first_rules(stats[agent]) == "PROMOTE", agent


def test_agent_stories(stats):
    alpha = stats["alpha_trend"]
    assert alpha["pnl"] >= 1500 and alpha["hit"] >= 0.6 and alpha["err"] == 0 and alpha["lat"] <= 700
    assert alpha["chain"] >= 15 and alpha["psr"] >= 0.97  # evidence of timing skill, not luck
    beta = stats["beta_meanrev"]
    assert beta["pnl"] >= 1500 and beta["hit"] >= 0.6 and beta["lat"] > 1000
    assert stats["delta_contrarian"]["pnl"] < -1000 and stats["delta_contrarian"]["cost"] < 4
    # epsilon: its errors all sit in runs without a signal. Counted over the runs that traded, the
    # error rate is 0 and the first rules would promote it; over all runs it is killed.
    eps = stats["epsilon_flaky"]
    assert eps["err_traded"] == 0 and eps["lat_traded"] <= 800 and eps["err"] > 0.25
    traded_view = eps | {"lat": eps["lat_traded"], "cost": eps["cost_traded"], "err": eps["err_traded"]}
    assert _first_rules(traded_view) == "PROMOTE"
    zeta = stats["zeta_wobbly"]
    assert -150 < zeta["pnl"] < 0 and 0.10 < zeta["err"] < 0.20 and zeta["cost"] < 4
    eta = stats["eta_burner"]
    assert eta["pnl"] < -150 and eta["cost"] > 6 and eta["cost_traded"] > 6 and eta["err"] > 0.12
    # theta: 8 lucky trades pass the first rules; the trade count holds it, and so does its PSR
    theta = stats["theta_sparse"]
    assert theta["trades"] == 8 and _first_rules(theta) == "PROMOTE"
    assert _failed_gates(theta, err=theta["err"]) == {"trades", "timing PSR"}
    assert theta["psr"] is None or theta["psr"] <= 0.93
    assert _decision(theta, err=theta["err"], min_trades=1)[0] == "HOLD"  # the PSR alone holds it
    iota = stats["iota_expensive"]
    assert iota["pnl"] < 0 and iota["cost"] > 6 and iota["cost_traded"] > 6 and iota["err"] == 0
    kappa = stats["kappa_regime"]["regime_pnl"]
    assert kappa["trend"] > 0 > kappa["high_vol"]
    html = stats["<b>x</b>"]
    assert html["pnl"] > 150 and html["hit"] < 0.55 and html["err"] == 0  # gets capital, not promoted
    # mu: always LONG on one symbol while it rose; the first rules promote it, the timing PSR holds it
    mu = stats["mu_always_long"]
    assert {r["d"] for r in mu["rows"]} == {1} and len({r["instrument"] for r in mu["rows"]}) == 1
    assert mu["pnl"] >= 180 and mu["hit"] >= 0.57 and mu["trades"] >= 12 and _first_rules(mu) == "PROMOTE"
    assert mu["psr"] is None and mu["psr_reason"] == "no timing variation"
    assert _failed_gates(mu, err=mu["err"]) == {"timing PSR"}


def test_the_rally_rider_is_live_for_a_few_consecutive_days_only(parsed):
    days = sorted(
        {t["run_id"].rsplit("-", 2)[1] for t in parsed["telemetry"] if t["agent"] == "mu_always_long"}
    )
    first = datetime.strptime(days[0], "%Y%m%d").date()
    assert 4 <= len(days) <= 10
    assert days == [(first + timedelta(days=k)).strftime("%Y%m%d") for k in range(len(days))]


def test_the_policy_defaults_are_the_thresholds_checked_here():
    """The fleet is built against ``SupervisorPolicy()``; ``_decision`` above spells the same numbers."""
    p = SupervisorPolicy()
    assert (p.promote_min_pnl_bps, p.promote_min_hit_rate, p.promote_max_error_rate) == (150.0, 0.55, 0.0)
    assert (p.promote_max_avg_latency_ms, p.promote_min_trades) == (900.0, 10)
    assert (p.kill_below_pnl_bps, p.kill_above_error_rate) == (-150.0, 0.20)
    assert (p.score_losing, p.losing_min_trades, p.score_deep_loss, p.deep_loss_below_pnl_bps) == (
        40,
        10,
        30,
        -150.0,
    )
    assert (p.score_errors, p.errors_above_rate, p.score_cost, p.cost_above_usd) == (20, 0.10, 10, 5.0)
    assert (p.retire_min_score, p.watch_min_score) == (80, 55)
    assert p.promote_min_timing_psr == 0.95


def test_special_agents_are_marked_by_attributes_not_names():
    gap = [a.name for a in AGENTS if a.unpriced_gap_signals]
    assert gap == ["gamma_coinflip"]
    assert [a.name for a in AGENTS if a.latency_spikes_on_losses] == ["zeta_wobbly"]
    hosts = [a.name for a in AGENTS if a.hosts_malformed_lines]
    assert hosts == ["gamma_coinflip", "iota_expensive", "kappa_regime", "<b>x</b>"]
    assert [a.name for a in AGENTS if a.rides_a_rally] == ["mu_always_long"]
    banded = [a.name for a in AGENTS if a.timing_psr_band is not None]
    assert banded == ["alpha_trend", "theta_sparse", "mu_always_long"]


def _supervisor_inputs(stats: dict, parsed: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The supervisor's trades frame (matured 24 h trades priced above) and runs frame (telemetry)."""
    rows = [{"agent": agent, **row} for agent, s in stats.items() for row in s["rows"]]
    ts = pd.to_datetime([r["ms"] for r in rows], unit="ms", utc=True)
    trades = pd.DataFrame(
        {
            "agent": [r["agent"] for r in rows],
            "run_id": [r["run_id"] for r in rows],
            "instrument": [r["instrument"] for r in rows],
            "ts": ts,
            "exit_ts": ts + pd.Timedelta(hours=24),
            "direction": ["LONG" if r["d"] > 0 else "SHORT" for r in rows],
            "gross_bps": [r["gross"] for r in rows],
            "net_bps": [r["gross"] for r in rows],  # the round-trip cost defaults to 0
            "regime": [r["regime"] for r in rows],
            "confidence": [r["confidence"] for r in rows],
        }
    )
    tel = parsed["telemetry"]
    runs = pd.DataFrame(
        {
            "agent": [t["agent"] for t in tel],
            "run_id": [t["run_id"] for t in tel],
            "ts": pd.to_datetime([t["ts"] for t in tel], utc=True),
            "latency_ms": [float(t["latency_ms"]) for t in tel],
            "errors": [float(t["errors"]) for t in tel],
            "cost_usd": [t["cost_usd"] for t in tel],
        }
    )
    return trades, runs


def test_the_supervisor_reaches_every_decision_and_label_on_the_demo(demo, stats, parsed):
    trades, runs = _supervisor_inputs(stats, parsed)
    table = agent_stats(trades, runs)
    policy = SupervisorPolicy()
    decided = decide(table, policy)
    got = {a: (decided.at[a, "decision"], decided.at[a, "label"]) for a in decided.index}
    assert got == _intended(demo)
    for agent, gates in demo.held_by.items():
        assert set(gates) <= set(decided.at[agent, "failed_gates"]), agent
    assert decided.at["mu_always_long", "failed_gates"] == ("timing PSR",)
    assert table.at["mu_always_long", "psr_reason"] == "no timing variation"
    assert set(decided.at["theta_sparse", "failed_gates"]) == {"trades", "timing PSR"}
    # the oracle's chain and PSR are the supervisor's
    for agent, s in stats.items():
        assert table.at[agent, "chain_trades"] == s["chain"], agent
        if s["psr"] is None:
            assert math.isnan(table.at[agent, "timing_psr"]), agent
        else:
            assert table.at[agent, "timing_psr"] == pytest.approx(s["psr"], abs=1e-9), agent
    # the next run, with KILL and RETIRE applied to the kill list, reports them as KILLED
    acted = sorted(a for a, d in got.items() if d[0] in ("KILL", "RETIRE"))
    assert acted == ["delta_contrarian", "epsilon_flaky", "eta_burner"]
    after = decide(table, policy, killed=acted)
    assert set(after["decision"]) == {"KILLED", "PROMOTE", "HOLD"}
    assert all(after.at[a, "decision"] == "KILLED" for a in acted)


def test_too_short_a_period_is_refused(tmp_path):
    with pytest.raises(ValueError):
        generate_demo(tmp_path, days=5)
