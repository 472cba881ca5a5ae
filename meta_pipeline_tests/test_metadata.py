"""What the UI shows: text that looks like HTML or markdown is shown as written, missing values empty."""

import math

import pandas as pd

from meta_pipeline.defs.metadata import counts_table, frame_preview, markdown_table


def test_html_and_table_syntax_in_cells_are_escaped():
    frame = pd.DataFrame({"agent": ["<b>x</b>", "a|b"], "raw": ['{"agent": "<i>"}', "line\nbreak"]})
    text = markdown_table(frame).value
    assert "<b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text
    assert "&lt;i&gt;" in text and "a\\|b" in text
    assert text.count("\n") == 3  # header, rule, two rows: the newline in a cell did not break a row


def test_missing_values_show_as_empty_cells_not_nan():
    frame = pd.DataFrame({"reason": [None, "gap"], "bps": [math.nan, 1.5]})
    text = frame_preview(frame).value
    assert "nan" not in text.lower() and "None" not in text


def test_counts_table_of_nothing_says_so():
    assert counts_table(pd.Series(dtype="int64"), "reason", "lines").value == "_none_"
