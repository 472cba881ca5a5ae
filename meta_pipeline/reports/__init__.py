"""Reports for people and for the app, without Dagster: ``meta_report.json``, the PR comment, PNG charts,
and the markdown escaping they share (names are data and are escaped everywhere)."""
