"""Webhooks: events from Kafka topics POSTed to HTTP endpoints, signed, retried, and parked when they fail.

Routes live under `webhooks:` in topics.yaml; `streams webhooks` runs them (docs/decisions/0021).
"""

from streams.webhooks.routes import WebhookConfig, WebhookError, WebhookRoute, load_webhooks
from streams.webhooks.signing import Signer, verify

__all__ = ["Signer", "WebhookConfig", "WebhookError", "WebhookRoute", "load_webhooks", "verify"]
