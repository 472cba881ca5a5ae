"""Small helpers that turn frames into metadata the Dagster UI renders well.

The UI renders markdown and drops anything that looks like HTML, so every cell is escaped: an agent
named ``<b>x</b>`` shows as written, and so does a quarantined line holding ``<i>``. Missing values
show as empty cells, never ``nan``.
"""

import html

import dagster as dg
import pandas as pd


def _cell(value: object) -> str:
    if value is None or (not isinstance(value, list | dict) and pd.isna(value)):
        return ""
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value.tzinfo else str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    # markdown table syntax and HTML both need escaping; newlines would break the row
    return html.escape(str(value), quote=False).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def markdown_table(frame: pd.DataFrame, *, empty: str = "_no rows_") -> dg.MetadataValue:
    """A markdown table of ``frame`` (index dropped), every cell escaped for the UI."""
    if frame is None or frame.empty:
        return dg.MetadataValue.md(empty)
    header = "| " + " | ".join(_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return dg.MetadataValue.md("\n".join([header, rule, *body]))


def counts_table(counts: pd.Series, key: str, value: str) -> dg.MetadataValue:
    """A two-column markdown table from a Series of counts (index → count)."""
    if counts.empty:
        return dg.MetadataValue.md("_none_")
    return markdown_table(counts.rename_axis(key).reset_index(name=value))


def frame_preview(frame: pd.DataFrame, rows: int = 20) -> dg.MetadataValue:
    """The first ``rows`` rows as a markdown table (the UI shows it on the asset page)."""
    if frame.empty:
        return dg.MetadataValue.md("_no rows_")
    table = markdown_table(frame.head(rows)).value
    if len(frame) > rows:
        table += f"\n\n_… {len(frame) - rows} more rows_"
    return dg.MetadataValue.md(table)


def row_count(partition_keys, rows: int) -> dict:
    """``dagster/row_count`` only when the run covers one partition: a range run's metadata is
    attached to every partition in it, and a run total would read as each day's count."""
    if len(partition_keys) == 1:
        return {"dagster/row_count": int(rows)}
    return {"rows_in_run": int(rows), "partitions_in_run": len(partition_keys)}
