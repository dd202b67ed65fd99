"""The demo's Celery app and its two tasks: a PDF per cleared invoice, a notification per compliance violation.

`celery -A streams.bridge.reference_tasks worker -Q interactive,default,batch`; `app` is built on first use.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from celery import Celery
from fpdf import FPDF
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.bridge.tasks import BridgeTask
from streams.settings import Settings

__all__ = ["CelerySettings", "create_app", "invoice_pdf_path", "notification_path", "write_atomically"]

INVOICE_PDF = "streams.generate_invoice_pdf"
NOTIFY_COMPLIANCE = "streams.notify_compliance"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_app: Celery | None = None
_app_lock = threading.Lock()


class CelerySettings(BaseSettings):
    """How the worker side talks to its broker (env prefix STREAMS_CELERY_)."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_CELERY_", frozen=True, extra="ignore")

    broker_url: str | None = None  # default: the Settings' Redis (STREAMS_REDIS_URL or the local stack)
    visibility_timeout_s: int = 3600  # a reserved task of a lost worker is redelivered after this
    restore_interval_s: int = 10  # how often a worker looks for such tasks (kombu scans every Nth look: 1)
    prefetch_multiplier: int = 1  # acks_late tasks: reserve little, so a lost worker strands little
    claim_ttl_s: int = 60  # a crashed run blocks its redelivery at most this long (see BridgeTask)


def create_app(settings: Settings | None = None, celery: CelerySettings | None = None) -> Celery:
    """A Celery app on the bridge's Redis with the latency-class queues and the reference tasks."""
    settings = settings or Settings()
    celery = celery or CelerySettings()
    app = Celery("streams")
    app.conf.update(
        broker_url=celery.broker_url or settings.redis(),
        broker_transport_options={
            "visibility_timeout": celery.visibility_timeout_s,
            "unacked_restore_interval": celery.restore_interval_s,
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_prefetch_multiplier=celery.prefetch_multiplier,
        task_default_queue="default",
        task_routes={INVOICE_PDF: {"queue": "default"}, NOTIFY_COMPLIANCE: {"queue": "interactive"}},
        task_ignore_result=True,
        streams_data_dir=str(settings.data_dir),
        streams_claim_ttl_s=celery.claim_ttl_s,
    )
    register_reference_tasks(app)
    return app


def register_reference_tasks(app: Celery) -> None:
    """Add generate_invoice_pdf and notify_compliance to `app` (as BridgeTask tasks)."""
    data_dir = Path(app.conf.get("streams_data_dir") or Settings().data_dir)

    @app.task(base=BridgeTask, name=INVOICE_PDF)  # type: ignore[untyped-decorator]
    def generate_invoice_pdf(
        invoice_id: str,
        invoice_number: str,
        tenant_id: str,
        seller_vat_number: str,
        tax_inclusive_total: Decimal,
        vat_total: Decimal,
        currency: str,
        cleared_at: datetime | None = None,
        qr_payload: str | None = None,
    ) -> str:
        """Render the cleared invoice as a PDF under <data_dir>/bridge/invoices/<tenant>/<invoice_id>.pdf."""
        path = invoice_pdf_path(data_dir, tenant_id, invoice_id)
        if not path.exists():  # the path is keyed by the invoice: a second run has nothing to do
            lines = [
                ("Invoice number", invoice_number),
                ("Invoice id", invoice_id),
                ("Seller VAT", seller_vat_number),
                ("Total incl. VAT", f"{tax_inclusive_total} {currency}"),
                ("VAT", f"{vat_total} {currency}"),
                ("Cleared at", _iso(cleared_at)),
                ("QR (TLV, base64)", (qr_payload or "")[:80]),
            ]
            write_atomically(path, render_pdf("Tax Invoice", lines))
        return str(path)

    @app.task(base=BridgeTask, name=NOTIFY_COMPLIANCE)  # type: ignore[untyped-decorator]
    def notify_compliance(
        violation_id: str,
        invoice_id: str,
        tenant_id: str,
        rule_code: str,
        severity: str,
        message: str,
        field_path: str | None = None,
        detected_at: datetime | None = None,
    ) -> str:
        """Write the notification for compliance as <data_dir>/bridge/compliance/<violation_id>.json."""
        path = notification_path(data_dir, violation_id)
        body = {
            "violation_id": violation_id,
            "invoice_id": invoice_id,
            "tenant_id": tenant_id,
            "rule_code": rule_code,
            "severity": severity,
            "message": message,
            "field_path": field_path,
            "detected_at": _iso(detected_at),
            "notified_at": datetime.now(UTC).isoformat(),
        }
        if not path.exists():
            write_atomically(path, (json.dumps(body, indent=2) + "\n").encode())
        return str(path)


def invoice_pdf_path(data_dir: Path, tenant_id: str, invoice_id: str) -> Path:
    return data_dir / "bridge" / "invoices" / _SAFE.sub("_", tenant_id) / f"{_SAFE.sub('_', invoice_id)}.pdf"


def notification_path(data_dir: Path, violation_id: str) -> Path:
    return data_dir / "bridge" / "compliance" / f"{_SAFE.sub('_', violation_id)}.json"


def render_pdf(title: str, lines: list[tuple[str, str]]) -> bytes:
    """A one-page A4 PDF: a title and label/value lines (core fonts, so text is kept to Latin-1)."""
    pdf = FPDF(format="A4")
    pdf.set_creation_date(datetime(2000, 1, 1, tzinfo=UTC))  # same input, same bytes
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=18)
    pdf.cell(0, 12, _latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    for label, value in lines:
        pdf.cell(50, 8, _latin1(label))
        pdf.cell(0, 8, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


def __getattr__(name: str) -> Any:
    """`app` for `celery -A streams.bridge.reference_tasks`, built (from the environment) on first access."""
    global _app  # noqa: PLW0603 - one app per process, built lazily so importing reads no environment
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _app_lock:
        if _app is None:
            _app = create_app()
        return _app
