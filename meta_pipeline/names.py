"""One name per fact: the asset keys, groups, job and run tags used across the project.

The warehouse stores each asset under its key (``warehouse/<asset>/…``), so the storage code and the
Dagster wiring import these names rather than repeating the strings.
"""

# the file contract: paths relative to the data root (docs/rules.md, *File contract*)
SIGNALS_FILE = "alpha/events.jsonl"
TELEMETRY_FILE = "telemetry/events.jsonl"
RECONCILED_FILE = "alpha/reconciled.jsonl"
RECONCILED_DAYS_DIR = "alpha/reconciled"  # one <YYYY-MM-DD>.jsonl per signal day
WAREHOUSE_DIR = "warehouse"
# the supervisor's per-day summaries (a cache of the reconciled history: deleting it rebuilds it),
# always on the data root's disk, under the local warehouse directory
SUPERVISOR_LEDGER_DIR = "_supervisor_ledger"
SUPERVISOR_STATE_DIR = "meta_supervisor/state"
CONFIDENCE_FILE = "meta_supervisor/state/confidence.json"
DECISIONS_FILE = "meta_supervisor/state/decisions.json"
KILLED_AGENTS_FILE = "meta_supervisor/state/killed_agents.json"
KILLED_STRATEGIES_FILE = "meta_supervisor/state/killed_strategies.json"
KILL_LOG_FILE = "meta_supervisor/state/kill_log.jsonl"
META_REPORT_FILE = "meta_supervisor/reports/meta_report.json"
PR_COMMENT_FILE = "meta_supervisor/reports/pr_comment.md"
EQUITY_CHART_FILE = "meta_supervisor/reports/equity_curve.png"
FORENSICS_FILE = "meta_supervisor/research/failure_forensics.json"

# assets (also their warehouse folder names)
SIGNALS = "signals"
TELEMETRY = "telemetry"
SIGNAL_QUARANTINE = "signal_quarantine"
TELEMETRY_QUARANTINE = "telemetry_quarantine"
PRICE_BARS = "price_bars"
RECONCILED_TRADES = "reconciled_trades"
RECONCILED_EXPORT = "reconciled_export"
CONFIDENCE_STATE = "confidence_state"
AGENT_STATS = "agent_stats"
AGENT_DECISIONS = "agent_decisions"
ALLOCATION_WEIGHTS = "allocation_weights"
PORTFOLIO = "portfolio"
META_REPORT = "meta_report"
LP_EMAIL = "lp_email"
FAILURE_FORENSICS = "failure_forensics"

# asset groups: jobs and schedules select by group, so new groups never join them by accident
INGESTION_GROUP = "ingestion"
PRICES_GROUP = "prices"
RECONCILIATION_GROUP = "reconciliation"
PIPELINE_GROUPS = (INGESTION_GROUP, PRICES_GROUP, RECONCILIATION_GROUP)
EXPORTS_GROUP = "exports"  # refreshed on their own cadence, outside the 30-minute tick
SUPERVISOR_GROUP = "supervisor"  # unpartitioned current views, updated after new reconciled data
RESEARCH_GROUP = "research"  # failure forensics, on its own daily cadence
REPORTS_GROUP = "reports"  # what goes to people on a daily cadence (the LP email), never in the tick

MAIN_JOB = "meta_pipeline_job"
REPROCESS_JOB = "reprocess_inputs"
EXPORT_JOB = "refresh_reconciled_export"
SUPERVISOR_JOB = "run_supervisor"
OPERATE_KILL_SWITCH_JOB = "operate_kill_switch"
LP_EMAIL_JOB = "send_lp_email"
FORENSICS_JOB = "run_failure_forensics"

# asset checks added beside an asset's own definition
RECONCILED_FRESH_CHECK = "reconciled_is_fresh"  # on reconciled_trades: the tick keeps up with the inputs

# the tag on the runs the heal_pending_rows sensor starts (value: the days it heals)
HEALING_TAG = "meta_pipeline/heals_pending_days"

# Dagster's run tags for a run over a range of partitions (one run per range)
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

# the pool that limits how many steps talk to the exchanges at once (dagster.yaml sets its limit)
EXCHANGE_POOL = "exchange_api"
