"""``lp_email``: the LPs' daily email, rendered from the meta report, written to its three files
and sent over SMTP at most once per report day (the rendering and the sending are in
``meta_pipeline/reports/``)."""

import json

import dagster as dg
import pandas as pd

from meta_pipeline import names
from meta_pipeline.defs.resources import DataRoot, LpMailer
from meta_pipeline.reports import lp_email, mailer

CHECK_DELIVERED = "delivered"


class LpEmailConfig(dg.Config):
    force: bool = False
    """Send again even if today's email already went out (or its outcome is unknown)."""


@dg.asset(
    name=names.LP_EMAIL,
    group_name=names.REPORTS_GROUP,
    deps=[names.META_REPORT, names.PORTFOLIO],
    kinds={"email", "html"},
    owners=["team:meta-pipeline"],
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_DELIVERED,
            asset=names.LP_EMAIL,
            description="Today's LP email reached the SMTP server (or SMTP is not configured).",
        )
    ],
    description=(
        "The LPs' daily email: subject, plain text and HTML with the portfolio, decisions, allocation "
        "and top agents, and the equity curve inline. Always written to "
        "meta_supervisor/reports/lp_email_subject.txt, lp_email_text.txt and lp_email_html.html; sent "
        "by SMTP at most once per UTC day (run config force: true sends again), each send recorded in "
        "lp_email_sent.jsonl. A server that is down or refuses fails the 'delivered' check, not the run."
    ),
)
def lp_email_asset(
    context: dg.AssetExecutionContext, config: LpEmailConfig, data_root: DataRoot, lp_mailer: LpMailer
) -> dg.MaterializeResult:
    report_file = data_root.path / names.META_REPORT_FILE
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    chart = data_root.path / names.EQUITY_CHART_FILE
    email = lp_email.render_lp_email(report, equity_png=chart.read_bytes() if chart.exists() else None)
    written = lp_email.write_lp_email_files(data_root.path, email)
    report_day = pd.Timestamp.now(tz="UTC").date()
    metadata = {
        "subject": dg.MetadataValue.text(email.subject),
        "files": dg.MetadataValue.md("\n".join(f"- `{path}`" for path in written)),
        "report_day": dg.MetadataValue.text(report_day.isoformat()),
    }
    try:
        settings = lp_mailer.smtp_settings()
    except ValueError as exc:  # a setting changed in the launchpad: say which, still write the files
        return _result(
            metadata, "SMTP settings invalid: written, not sent", f"SMTP settings invalid: {exc}", False
        )
    if settings is None:
        return _result(metadata, "written, not sent", "SMTP is not configured (SMTP_HOST unset)", True)
    message = lp_email.build_message(email, sender=settings.sender, recipients=list(settings.recipients))
    result = mailer.deliver(
        data_root.path, report_day, message, settings, force=config.force, ssl_context=lp_mailer.ssl_context()
    )
    context.log.info(f"LP email: {result}")
    metadata["recipients"] = dg.MetadataValue.text(", ".join(settings.recipients))
    metadata["message_id"] = dg.MetadataValue.text(result.message_id or "")
    ok = result.status in ("sent", "skipped")
    if not ok:
        context.log.error(f"LP email not delivered: {result}")
    return _result(metadata, result.status, str(result), ok)


def _result(metadata: dict, status: str, detail: str, passed: bool) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={**metadata, "status": dg.MetadataValue.text(status)},
        check_results=[
            dg.AssetCheckResult(
                check_name=CHECK_DELIVERED,
                passed=passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=detail,
            )
        ],
    )
