"""The peer of bench/webhooks.py: the Celery task a team writes to POST an event to a webhook, with retries.

Signs like Standard Webhooks (HMAC-SHA256 over id.timestamp.body), POSTs with httpx, retries server errors,
429 and transport errors with exponential backoff and jitter, honouring Retry-After. Broker: BENCH_REDIS_URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
import time

import httpx
from celery import Celery, Task

app = Celery("bench_webhooks", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=4,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)
_client = httpx.Client(timeout=10.0)
_KEY = base64.b64decode(os.environ.get("BENCH_WEBHOOK_SECRET", "whsec_").removeprefix("whsec_") or "AA==")


@app.task(bind=True, max_retries=7)  # type: ignore[untyped-decorator]
def deliver(self: Task, url: str, msg_id: str, body: str, headers: dict[str, str]) -> int:
    stamp = int(time.time())
    signature = base64.b64encode(hmac.new(_KEY, f"{msg_id}.{stamp}.{body}".encode(), hashlib.sha256).digest())
    signed = {
        **headers,
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": "v1," + signature.decode(),
    }
    try:
        response = _client.post(url, content=body.encode(), headers=signed)
    except httpx.HTTPError as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from None
    if response.status_code >= 500 or response.status_code == 429:
        after = response.headers.get("retry-after", "")
        countdown = max(_backoff(self.request.retries), float(after) if after.isdigit() else 0.0)
        raise self.retry(countdown=countdown)
    return response.status_code


def _backoff(retries: int) -> float:
    delay = min(60.0, 1.0 * 2**retries)
    return random.uniform(delay / 2, delay)
