"""Typed resources: where the data lives and how to reach the exchanges.

Defaults come from the environment (``meta_pipeline/settings.py``, read once in
``defs/environment.py``), so a deployment configures everything through the environment and tests
inject their own values. Run-time knobs (thresholds, timeouts) are editable in the launchpad.
"""

import os
import ssl
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
from filelock import FileLock

from meta_pipeline import names
from meta_pipeline.prices.fetcher import DEFAULT_MAX_CONSECUTIVE_FAILURES, PriceFetcher, build_sources
from meta_pipeline.reports.mailer import DEFAULT_PORTS, SmtpSettings
from meta_pipeline.settings import Settings
from meta_pipeline.storage import Warehouse
from meta_pipeline.supervisor.policy import SupervisorPolicy


class DataRoot(dg.ConfigurableResource):
    """The app's data root: inputs under ``alpha/`` and ``telemetry/``, outputs beside them, and the
    Parquet warehouse under ``warehouse/`` — or, with ``warehouse_url`` (an fsspec URL such as
    ``s3://bucket/prefix``), the warehouse's partitions on an object store (the staging of input rows
    stays under the root's ``warehouse/``)."""

    root: str
    warehouse_url: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.root)

    @property
    def signals_file(self) -> Path:
        return self.path / names.SIGNALS_FILE

    @property
    def telemetry_file(self) -> Path:
        return self.path / names.TELEMETRY_FILE

    @property
    def reconciled_file(self) -> Path:
        return self.path / names.RECONCILED_FILE

    @property
    def reconciled_days_dir(self) -> Path:
        return self.path / names.RECONCILED_DAYS_DIR

    @property
    def export_lock(self) -> FileLock:
        """Held while day files are written and while the full export is rebuilt from them."""
        (self.path / "alpha").mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.path / "alpha" / ".reconciled.lock"))

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.path / names.WAREHOUSE_DIR, location=self.warehouse_url)


class IngestionPolicy(dg.ConfigurableResource):
    """Thresholds for input validation."""

    max_rejected_share: float = 0.02  # warn when more than 2 % of an input's lines are rejected


class PriceSources(dg.ConfigurableResource):
    """Where 1-minute bars come from, in fallback order (``binance``, ``coinbase``, ``files``)."""

    sources: list[str]
    binance_base_url: str
    coinbase_base_url: str
    bars_dir: str
    connect_timeout_seconds: float = 3.05
    read_timeout_seconds: float = 15.0
    max_retries: int = 5
    backoff_seconds: float = 0.5
    max_retry_after_seconds: float = 60.0
    # a source that failed this many symbol-days in a row is skipped for the rest of the run
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES
    # no request is started after this long in one run; the days left are fetched by later runs
    time_budget_seconds: float = 1800.0
    # symbol-days fetched at once within a run (the exchange_api pool keeps it to one run at a time)
    max_concurrent_fetches: int = 4

    def fetcher(self) -> PriceFetcher:
        """A fetcher with one pooled HTTP session per source, for the duration of one run (the
        circuit breaker and the time budget count from here)."""
        sources = build_sources(
            self.sources,
            binance_base_url=self.binance_base_url,
            coinbase_base_url=self.coinbase_base_url,
            bars_dir=self.bars_dir,
            timeout=(self.connect_timeout_seconds, self.read_timeout_seconds),
            max_retries=self.max_retries,
            backoff_factor=self.backoff_seconds,
            max_retry_after=self.max_retry_after_seconds,
        )
        return PriceFetcher(
            sources,
            max_consecutive_failures=self.max_consecutive_failures,
            time_budget_seconds=self.time_budget_seconds,
        )


class ReconciliationPolicy(dg.ConfigurableResource):
    """How signals become PnL rows. (The 5-minute bar gap is the load-time setting
    ``META_PIPELINE_MAX_BAR_GAP_MINUTES``: it decides how many days of bars a day needs.)"""

    round_trip_cost_bps: float = 0.0  # net_pnl_bps = realized_pnl_bps − this


class SupervisorSettings(dg.ConfigurableResource):
    """The supervisor's thresholds (docs/rules.md, *Supervisor rules*), editable in the launchpad.
    Field for field :class:`~meta_pipeline.supervisor.policy.SupervisorPolicy`, whose defaults are
    the users' rules; ``None`` turns a promotion gate off."""

    promote_min_pnl_bps: float | None = SupervisorPolicy.promote_min_pnl_bps
    promote_min_hit_rate: float | None = SupervisorPolicy.promote_min_hit_rate
    promote_max_error_rate: float | None = SupervisorPolicy.promote_max_error_rate
    promote_max_avg_latency_ms: float | None = SupervisorPolicy.promote_max_avg_latency_ms
    promote_min_trades: int | None = SupervisorPolicy.promote_min_trades
    promote_min_timing_psr: float | None = SupervisorPolicy.promote_min_timing_psr
    kill_below_pnl_bps: float = SupervisorPolicy.kill_below_pnl_bps
    kill_above_error_rate: float = SupervisorPolicy.kill_above_error_rate
    score_losing: int = SupervisorPolicy.score_losing
    losing_min_trades: int = SupervisorPolicy.losing_min_trades
    score_deep_loss: int = SupervisorPolicy.score_deep_loss
    deep_loss_below_pnl_bps: float = SupervisorPolicy.deep_loss_below_pnl_bps
    score_errors: int = SupervisorPolicy.score_errors
    errors_above_rate: float = SupervisorPolicy.errors_above_rate
    score_cost: int = SupervisorPolicy.score_cost
    cost_above_usd: float = SupervisorPolicy.cost_above_usd
    retire_min_score: int = SupervisorPolicy.retire_min_score
    watch_min_score: int = SupervisorPolicy.watch_min_score
    allocation_max_error_rate: float = SupervisorPolicy.allocation_max_error_rate
    allocation_cap: float | None = SupervisorPolicy.allocation_cap
    psr_probability: float = SupervisorPolicy.psr_probability
    lookback_days: int | None = SupervisorPolicy.lookback_days
    check_min_fleet_trades: int = SupervisorPolicy.check_min_fleet_trades
    check_max_unpriced_share: float = SupervisorPolicy.check_max_unpriced_share
    check_min_telemetry_coverage: float = SupervisorPolicy.check_min_telemetry_coverage

    @property
    def policy(self) -> SupervisorPolicy:
        return SupervisorPolicy(
            **{name: getattr(self, name) for name in SupervisorPolicy.__dataclass_fields__}
        )


class LpMailer(dg.ConfigurableResource):
    """The SMTP server the LP email goes through, from the environment (``SMTP_HOST``,
    ``SMTP_PORT``, ``SMTP_SECURITY``, ``SMTP_USER``, ``SMTP_PASSWORD``, ``SMTP_CA_FILE``,
    ``LP_EMAIL_FROM``, ``LP_EMAIL_TO``). With no host it is "not configured": the email's files are
    written and nothing is sent. The password is bound as ``dg.EnvVar("SMTP_PASSWORD")``, so it is
    never shown in the launchpad, the run config or the logs."""

    host: str = ""
    port: int = 0  # 0: the security mode's usual port (587, 465 or 25)
    security: str = "starttls"
    user: str = ""
    password: str = ""
    sender: str = ""
    recipients: str = ""  # comma-separated
    ca_file: str = ""  # a CA bundle to trust instead of the system's (a private relay)
    timeout_seconds: float = 30.0
    retries: int = 3
    backoff_seconds: float = 2.0

    def smtp_settings(self) -> SmtpSettings | None:
        """The validated settings, or None when no host is set. Raises ValueError naming the field
        that is wrong."""
        if not self.host.strip():
            return None
        return SmtpSettings(
            host=self.host.strip(),
            port=self.port or DEFAULT_PORTS.get(self.security, 587),
            security=self.security,
            user=self.user or None,
            password=self.password or None,
            sender=self.sender,
            recipients=tuple(r.strip() for r in self.recipients.split(",") if r.strip()),
            timeout_seconds=self.timeout_seconds,
            retries=self.retries,
            backoff_seconds=self.backoff_seconds,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None


def lp_mailer_from_env(environ: Mapping[str, str] | None = None) -> LpMailer:
    """The mailer the environment describes; a bad value stops the code location from loading with
    the variable named (:meth:`SmtpSettings.from_env` checks them all)."""
    environ = os.environ if environ is None else environ
    if SmtpSettings.from_env(environ) is None:
        return LpMailer()
    security = environ.get("SMTP_SECURITY", "").strip().lower() or "starttls"
    return LpMailer(
        host=environ["SMTP_HOST"].strip(),
        port=int(environ.get("SMTP_PORT", "").strip() or 0),
        security=security,
        user=environ.get("SMTP_USER", "").strip(),
        password=dg.EnvVar("SMTP_PASSWORD") if environ.get("SMTP_PASSWORD") else "",
        sender=environ.get("LP_EMAIL_FROM", "").strip(),
        recipients=environ.get("LP_EMAIL_TO", "").strip(),
        ca_file=environ.get("SMTP_CA_FILE", "").strip(),
    )


def default_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "data_root": DataRoot(root=str(settings.root), warehouse_url=settings.warehouse_url),
        "ingestion_policy": IngestionPolicy(),
        "price_sources": PriceSources(
            sources=list(settings.price_sources),
            binance_base_url=settings.binance_base_url,
            coinbase_base_url=settings.coinbase_base_url,
            bars_dir=str(settings.bars_dir),
        ),
        "reconciliation_policy": ReconciliationPolicy(),
        "supervisor_settings": SupervisorSettings(),
        "lp_mailer": lp_mailer_from_env(),
    }
