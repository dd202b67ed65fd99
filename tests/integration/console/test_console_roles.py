"""The console in headless Chromium: logging in as each role, PII masking by role, server-side refusals, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from streams.console.kafka_views import MASK
from tests.integration.console_harness import (
    PASSWORDS,
    ConsoleStack,
    csrf_of,
    logged_in,
    park_dead_letter,
    post_from_page,
    screenshot,
)
from tests.integration.worker_harness import read_topic

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.timeout(600)


def pending_dead_letters(stack: ConsoleStack) -> int:
    from streams.dlq import pending  # noqa: PLC0415

    return len(pending({"bootstrap.servers": stack.settings.bootstrap_servers()}, "invoice.created"))


@pytest.mark.parametrize("user", sorted(PASSWORDS))
def test_each_role_logs_in_and_sees_the_overview(browser: Browser, console_stack: ConsoleStack, user: str) -> None:
    page = logged_in(browser, console_stack, user)
    assert "Overview" in page.inner_text("h1")
    panel = page.inner_text("#overview-refresh")
    assert "brokers" in panel
    assert f"bridge {console_stack.bridge_url}\nup Redis up, 2 paused partition(s)" in panel
    assert f"relay {console_stack.dead_relay_url}\nDOWN ConnectError" in panel
    assert "4 pending" in panel, "the relay that answers: its pending rows"
    for part in ("total lag", "Dead letters", "Violations today by rule", "Events per second"):
        assert part in panel
    if user == "aude":
        screenshot(page, "overview")
    page.context.close()


def test_a_wrong_password_is_refused(browser: Browser, console_stack: ConsoleStack) -> None:
    page = browser.new_page()
    page.goto(f"{console_stack.url}/login")
    page.fill("input[name=username]", "vera")
    page.fill("input[name=password]", "not her password")
    with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as answer:
        page.click("#login")
    assert answer.value.status == 401
    assert "wrong user name or password" in page.inner_text("#error")
    screenshot(page, "login")
    page.goto(f"{console_stack.url}/messages")
    assert page.url.startswith(f"{console_stack.url}/login"), "a page without a session sends to the login"
    page.close()


def test_pii_is_masked_for_a_viewer_and_shown_to_an_auditor(browser: Browser, console_stack: ConsoleStack) -> None:
    query = "/messages?topic=invoice.created&limit=50"
    viewer = logged_in(browser, console_stack, "vera")
    viewer.goto(console_stack.url + query)
    shown = viewer.inner_text("#records")
    assert viewer.inner_text("#pii-state") == "masked"
    assert MASK in shown
    assert not any(name in shown for name in console_stack.buyer_names), "a buyer's name reached a viewer"
    assert console_stack.invoice_ids[0] in shown, "fields that are not PII are shown"
    screenshot(viewer, "messages-viewer-masked")
    with viewer.expect_download() as download:
        viewer.click("#download")
    lines = [json.loads(line) for line in Path(download.value.path()).read_text(encoding="utf-8").splitlines()]
    decoded = [line for line in lines if line["value"] is not None]
    assert decoded
    assert all(line["value"]["buyer"]["name"] == MASK for line in decoded if line["value"]["buyer"])
    viewer.context.close()

    auditor = logged_in(browser, console_stack, "aude")
    auditor.goto(console_stack.url + query)
    shown = auditor.inner_text("#records")
    assert auditor.inner_text("#pii-state") == "shown (auditor)"
    assert MASK not in shown
    assert any(name in shown for name in console_stack.buyer_names)
    screenshot(auditor, "messages-auditor-unmasked")
    auditor.context.close()


def test_a_viewer_cannot_redrive_even_with_a_valid_token(browser: Browser, console_stack: ConsoleStack) -> None:
    viewer = logged_in(browser, console_stack, "vera")
    viewer.goto(f"{console_stack.url}/dlq?topic=invoice.created")
    assert viewer.locator("#dry-run").count() == 0, "the page offers a viewer no redrive"
    park_dead_letter(console_stack, "viewer-1", "parked for the viewer")
    before = pending_dead_letters(console_stack)
    assert before >= 1
    for path in ("/dlq/preview", "/dlq/redrive"):
        answer = post_from_page(
            viewer, path, {"csrf": csrf_of(viewer), "topic": "invoice.created", "expected": str(before)}
        )
        assert answer["status"] == 403, answer
        assert "role viewer may not redrive" in answer["text"]
    assert pending_dead_letters(console_stack) == before, "nothing was redriven"
    viewer.context.close()


def test_a_post_without_the_csrf_token_is_refused(browser: Browser, console_stack: ConsoleStack) -> None:
    operator = logged_in(browser, console_stack, "otto")
    operator.goto(f"{console_stack.url}/dlq?topic=invoice.created")
    before = pending_dead_letters(console_stack)
    forged = post_from_page(operator, "/dlq/redrive", {"topic": "invoice.created", "expected": str(before)})
    assert forged["status"] == 403, forged
    assert "CSRF token is missing or wrong" in forged["text"]
    wrong = post_from_page(
        operator, "/dlq/redrive", {"csrf": "forged", "topic": "invoice.created", "expected": str(before)}
    )
    assert wrong["status"] == 403
    assert pending_dead_letters(console_stack) == before, "nothing was redriven"
    # Without the session cookie (another site's form cannot read it either) the POST is refused before any check.
    bare = httpx.post(f"{console_stack.url}/dlq/redrive", data={"topic": "invoice.created"}, timeout=10)
    assert bare.status_code in {303, 401}
    operator.context.close()


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("/messages?topic=invoice.created&partition=abc", 400, "partition 'abc' is not a whole number"),
        ("/messages?topic=invoice.created&from=yesterday-ish", 400, "is neither an ISO-8601 time"),
        ("/messages?topic=invoice.created&partition=0&offset=999999999", 416, "is beyond the end"),
        ("/messages?topic=invoice.nope", 404, "is not in the catalog"),
        ("/dlq?topic=no.such.topic", 404, "is not in the catalog"),
    ],
)
def test_bad_input_gets_a_clear_message_and_a_4xx(
    browser: Browser, console_stack: ConsoleStack, query: str, status: int, message: str
) -> None:
    page = logged_in(browser, console_stack, "vera")
    answer = page.goto(console_stack.url + query)
    assert answer is not None
    assert answer.status == status
    assert message in page.inner_text("#error")
    if "offset=" in query:
        screenshot(page, "bad-input")
    page.context.close()


def test_console_actions_are_user_action_events(browser: Browser, console_stack: ConsoleStack) -> None:
    page = logged_in(browser, console_stack, "otto")
    page.context.close()
    from streams.records import EventDecoder  # noqa: PLC0415
    from streams.schemas.registry_client import RegistryClient  # noqa: PLC0415

    with RegistryClient(console_stack.settings.registry_url()) as registry:
        decoder = EventDecoder(registry)
        actions = [decoder.decode(m.value())[1] for m in read_topic(console_stack.settings, "user.action")]
    logins = [a for a in actions if a["action"] == "console.login" and a["user_id"] == "otto"]
    assert logins
    assert logins[-1]["tenant_id"] == "console"
    metrics = httpx.get(f"{console_stack.url}/metrics", timeout=10).text
    assert 'streams_console_logins_total{outcome="ok"}' in metrics
    assert "streams_console_request_seconds_bucket" in metrics
