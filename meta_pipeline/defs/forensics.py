"""``failure_forensics``: why agents lose, as hypotheses tested on each agent's own trades (the
tests are in ``meta_pipeline/forensics/``)."""

import dagster as dg
import pandas as pd

from meta_pipeline import names
from meta_pipeline.defs.metadata import markdown_table
from meta_pipeline.defs.resources import DataRoot
from meta_pipeline.reports import charts
from meta_pipeline.storage import atomic_write_json
from meta_pipeline.supervisor import history
from meta_pipeline.supervisor.policy import FOCUS_HORIZON_HOURS

SHOWN_FINDINGS = 30
CALIBRATION_CHARTS = 3


class ForensicsConfig(dg.Config):
    false_discovery_rate: float = 0.05
    """q of the Benjamini–Yekutieli correction across every agent and hypothesis."""
    worst_runs: int = 25
    """How many of the worst 24 h trades to list with their run's telemetry."""
    min_side: int = 10
    """Fewer chain trades than this on either side of a comparison: "not enough data"."""


@dg.asset(
    name=names.FAILURE_FORENSICS,
    group_name=names.RESEARCH_GROUP,
    deps=[names.RECONCILED_TRADES, names.TELEMETRY, names.PRICE_BARS],
    kinds={"python", "json"},
    owners=["team:meta-pipeline"],
    description=(
        "Why agents lose: the worst 24 h trades with their run's telemetry, per-agent loss summaries, "
        "and five hypotheses tested on each agent's own chain of non-overlapping trades — regime "
        "mismatch, slow runs, overconfidence (with a calibration table and Brier score), a volatility "
        "shock before entry, and cost — corrected across the fleet (Benjamini–Yekutieli). Verdicts: "
        "supported, not supported, or not enough data. Writes "
        "meta_supervisor/research/failure_forensics.json."
    ),
)
def failure_forensics(
    context: dg.AssetExecutionContext, config: ForensicsConfig, data_root: DataRoot
) -> dg.MaterializeResult:
    from meta_pipeline import forensics  # scipy.stats: imported when forensics run, not at every load

    warehouse = data_root.warehouse
    trades = history.matured_trades(warehouse, horizon_hours=FOCUS_HORIZON_HOURS)
    runs = history.telemetry_runs(warehouse)
    if not trades.empty:
        trades = trades.join(forensics.entry_volatility(history.price_bars(warehouse), trades))
    result = forensics.run_forensics(
        trades, runs, q=config.false_discovery_rate, worst_n=config.worst_runs, min_side=config.min_side
    )
    generated_at = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    atomic_write_json(
        data_root.path / names.FORENSICS_FILE,
        forensics.forensics_json(result, generated_at, horizon_hours=FOCUS_HORIZON_HOURS),
    )
    hypotheses = result.hypotheses
    supported = hypotheses[hypotheses["verdict"] == "supported"] if len(hypotheses) else hypotheses
    context.log.info(
        f"{len(supported)} supported finding(s) over {hypotheses['agent'].nunique() if len(hypotheses) else 0} agent(s)"
    )
    return dg.MaterializeResult(
        metadata={
            "matured_24h_trades": dg.MetadataValue.int(len(trades)),
            "supported_findings": dg.MetadataValue.int(len(supported)),
            "top_findings": markdown_table(
                _top_findings(hypotheses),
                empty="_no hypothesis could be tested yet: too few chain trades on one side of every comparison_",
            ),
            "worst_calibrated": dg.MetadataValue.md(_calibration_charts(result)),
        }
    )


def _top_findings(hypotheses: pd.DataFrame) -> pd.DataFrame:
    """Supported findings first, then the smallest corrected p-values: agent, hypothesis, effect,
    p-value (corrected), verdict."""
    if hypotheses.empty:
        return hypotheses
    tested = hypotheses[hypotheses["verdict"] != "not enough data"]
    if tested.empty:
        return pd.DataFrame()
    rank = tested.assign(_supported=tested["verdict"] != "supported").sort_values(
        ["_supported", "p_adjusted"]
    )
    shown = rank.head(SHOWN_FINDINGS)[["agent", "hypothesis", "effect", "p_value", "p_adjusted", "verdict"]]
    return shown.rename(columns={"p_value": "p (raw)", "p_adjusted": "p (BY-corrected)"})


def _calibration_charts(result) -> str:
    """Calibration charts of the agents with the worst Brier score."""
    brier = result.brier.dropna(subset=["brier"]) if len(result.brier) else result.brier
    if brier.empty:
        return "_no stated confidence yet_"
    parts = []
    for agent in brier.sort_values("brier", ascending=False).index[:CALIBRATION_CHARTS]:
        table = result.calibration[result.calibration["agent"] == agent]
        table = table.rename(columns={"mean_confidence": "confidence", "count": "trades"})
        png = charts.calibration_chart_png(
            table, title=f"Calibration of {agent} (Brier {brier.loc[agent, 'brier']:.3f})"
        )
        parts.append(charts.png_markdown(png, f"calibration of {agent}"))
    return "\n\n".join(parts)
