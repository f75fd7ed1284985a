"""Failure alerts by email, through the SMTP server in SMTP_HOST.

With no SMTP_HOST the alert is logged instead. Sending never changes a run's outcome: a
failure to send is logged, and the run's own error is what the caller reports.
"""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from mage_project import config

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
    msg = failure_message(pipeline, run_id, error, details)
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
    log.info("alert for %s run %s sent to %s", pipeline, run_id, ", ".join(settings.to))
    return True
