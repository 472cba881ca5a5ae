"""Small helpers that turn frames into metadata the Dagster UI renders well."""

import dagster as dg
import pandas as pd


def counts_table(counts: pd.Series, key: str, value: str) -> dg.MetadataValue:
    """A two-column markdown table from a Series of counts (index → count)."""
    if counts.empty:
        return dg.MetadataValue.md("_none_")
    frame = counts.rename_axis(key).reset_index(name=value)
    return dg.MetadataValue.md(frame.to_markdown(index=False))


def frame_preview(frame: pd.DataFrame, rows: int = 20) -> dg.MetadataValue:
    """The first ``rows`` rows as a markdown table (the UI shows it on the asset page)."""
    if frame.empty:
        return dg.MetadataValue.md("_no rows_")
    head = frame.head(rows).copy()
    for column in head.columns:
        if isinstance(head[column].dtype, pd.DatetimeTZDtype):
            head[column] = head[column].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    text = head.to_markdown(index=False)
    if len(frame) > rows:
        text += f"\n\n_… {len(frame) - rows} more rows_"
    return dg.MetadataValue.md(text)


def row_count(partition_keys, rows: int) -> dict:
    """``dagster/row_count`` only when the run covers one partition: a range run's metadata is
    attached to every partition in it, and a run total would read as each day's count."""
    if len(partition_keys) == 1:
        return {"dagster/row_count": int(rows)}
    return {"rows_in_run": int(rows), "partitions_in_run": len(partition_keys)}
