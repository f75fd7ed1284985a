"""Alerts by email, through the SMTP server in SMTP_HOST: a run's failure to ALERT_EMAIL_TO, and
a broken contract to the owning domain's own addresses (the contract's alert routes).

With no SMTP_HOST the alert is logged instead. Sending never changes a run's outcome: a
failure to send is logged, and the run's own error is what the caller reports.
"""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from mage_project import config
from mage_project.contracts import Product

log = logging.getLogger(__name__)


def failure_message(pipeline: str, run_id: str | None, error: str, details: dict) -> EmailMessage:
    settings = config.smtp()
    msg = EmailMessage()
    msg["Subject"] = f"[mage_project] pipeline {pipeline} failed (run {run_id or 'unknown'})"
    msg["From"] = settings.mail_from
    msg["To"] = ", ".join(settings.to)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain="mage-project.local")
    lines = [
        f"Pipeline: {pipeline}",
        f"Run id:   {run_id or 'unknown'}",
        *(f"{k}: {v}" for k, v in details.items() if v is not None),
        "",
        "Error:",
        error,
        "",
        "Each write of a run commits whole or not at all (a failed quality gate leaves the"
        " marts as they were); re-running is safe.",
    ]
    msg.set_content("\n".join(lines))
    return msg


def send_failure_alert(pipeline: str, run_id: str | None, error: str, **details) -> bool:
    """Email the failure to ALERT_EMAIL_TO; returns whether a message was sent."""
    try:
        settings = config.smtp()
    except config.ConfigError as exc:
        log.error("alert not sent (%s): %s failed: %s", exc, pipeline, error)
        return False
    if settings.host is None:
        log.error("ALERT (SMTP_HOST unset, not emailed): %s run %s failed: %s",
                  pipeline, run_id, error)
        return False
    return _send(settings, failure_message(pipeline, run_id, error, details), pipeline, run_id)


# What a broken contract stopped, as the alert says it: a build's publish, a load, or the use of new rows.
_STOPPED = {
    "published": "The new build breaks the contract, so it was not published; the previous tables stay:",
    "loaded": "The rows of the load break the contract, so none of them were kept; the table is as it was:",
    "used": "New rows break the contract, so no mart was built on them; the published marts stay:",
}


def contract_message(product: Product, pipeline: str, run_id: str, problems: list[str],
                     settings: config.SmtpSettings, stopped: str = "published") -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = (f"[mage_project] {product.key}: not {stopped}, its contract is broken "
                      f"({pipeline} run {run_id})")
    msg["From"] = settings.mail_from
    msg["To"] = ", ".join(dict.fromkeys(route.email for route in product.alert_routes))
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain="mage-project.local")
    msg.set_content("\n".join([
        f"Product:  {product.key} {product.version} (owner {product.owner}, {product.owner_email})",
        f"Contract: {product.contract}",
        f"Pipeline: {pipeline}",
        f"Run id:   {run_id}",
        "",
        _STOPPED[stopped],
        *(f"- {problem}" for problem in problems),
        "",
        f"Every check of the run is in ops.quality_results (run_id = '{run_id}').",
    ]))
    return msg


def send_contract_alert(pipeline: str, run_id: str, broken: list, products: list[Product],
                        stopped: str = "published") -> int:
    """Email each product whose contract the results ``broken`` break to its own alert routes
    (the owning domain's addresses in the contract); ``stopped``: what did not happen, "published"
    (a build), "loaded" (a load) or "used" (loaded rows the raw gate holds back). A result names
    its product (a contract check's), or is of a table the product declares (an expectation the
    contract gives the raw gate). Returns how many messages were sent."""
    try:
        settings = config.smtp()
    except config.ConfigError as exc:
        log.error("contract alert not sent (%s): %s run %s", exc, pipeline, run_id)
        return 0
    sent = 0
    for product in products:
        tables = {t.name for t in product.tables}
        problems = [r.problem for r in broken if (r.observed["product"] == product.key
                                                  if "product" in r.observed else r.table_name in tables)]
        if not problems:
            continue
        if settings.host is None:
            log.error("ALERT (SMTP_HOST unset, not emailed) to %s: %s", product.key, "; ".join(problems))
            continue
        sent += _send(settings, contract_message(product, pipeline, run_id, problems, settings, stopped),
                      pipeline, run_id)
    return sent


def _send(settings: config.SmtpSettings, msg: EmailMessage, pipeline: str, run_id: str | None) -> bool:
    try:
        smtp_class = smtplib.SMTP_SSL if settings.ssl else smtplib.SMTP
        with smtp_class(settings.host, settings.port, timeout=30) as server:
            if settings.starttls and not settings.ssl:
                server.starttls()
            if settings.user and settings.password:
                server.login(settings.user, settings.password)
            server.send_message(msg)
    except (TimeoutError, OSError, smtplib.SMTPException) as exc:
        log.error("alert for %s run %s could not be sent through %s:%s: %s",
                  pipeline, run_id, settings.host, settings.port, exc)
        return False
    log.info("alert for %s run %s sent to %s", pipeline, run_id, msg["To"])
    return True
