"""The console's workflows in headless Chromium: redrive after a dry run, an invoice's story, evidence bundles,
the overview refreshing in place, and every page's screenshot for docs/console/."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from streams.dlq import pending
from streams.settings import KafkaConfig
from tests.integration.console_harness import (
    ConsoleStack,
    env_for_cli,
    logged_in,
    park_dead_letter,
    screenshot,
)
from tests.integration.worker_harness import read_topic

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.timeout(600)


def test_an_operator_redrives_a_dead_letter_after_a_dry_run(browser: Browser, console_stack: ConsoleStack) -> None:
    kafka: KafkaConfig = {"bootstrap.servers": console_stack.settings.bootstrap_servers()}
    waiting = pending(kafka, "invoice.created")
    assert len(waiting) == 1, "the harness parked one undecodable invoice"
    sources_before = len(read_topic(console_stack.settings, "invoice.created"))
    page = logged_in(browser, console_stack, "otto")
    page.goto(f"{console_stack.url}/dlq?topic=invoice.created")
    table = page.inner_text("#letters")
    assert "validation" in table
    assert "UndecodableRecordError" in table
    page.click("#dry-run")
    page.wait_for_selector("#dry-run-result")
    assert "1 of 1 pending dead letter(s) of invoice.created match (all); nothing was sent" in page.inner_text(
        "#dry-run-result"
    )
    screenshot(page, "dead-letters-dry-run")
    assert len(read_topic(console_stack.settings, "invoice.created")) == sources_before, "a dry run sends nothing"
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#redrive")
    page.wait_for_selector("#redrive-result")
    assert "Redrove 1 record(s) to invoice.created" in page.inner_text("#redrive-result")
    redriven = read_topic(console_stack.settings, "invoice.created")
    assert len(redriven) == sources_before + 1
    assert redriven[-1].value() == waiting[0].value(), "the original bytes went back"
    assert "dlq_error_class" not in dict(redriven[-1].headers() or []), "our dlq_* headers are removed"
    assert pending(kafka, "invoice.created") == []
    page.goto(f"{console_stack.url}/dlq?topic=invoice.created")
    assert "redriven" in page.inner_text("#letters")
    screenshot(page, "dead-letters")
    page.context.close()


def test_an_auditor_follows_an_invoice_and_verifies_the_chain(browser: Browser, console_stack: ConsoleStack) -> None:
    page = logged_in(browser, console_stack, "aude")
    broken = console_stack.invoice_ids[-1]  # its tax currency is USD: a violation
    page.goto(f"{console_stack.url}/audit?invoice_id={broken}")
    steps = page.inner_text("#story")
    assert "published" in steps
    assert "violation" in steps
    assert "audited" in steps
    assert page.locator("tr.step-published").count() == 1
    assert page.locator("tr.step-audited").count() >= 2, "the invoice and its violation are both chained"
    page.click("#verify")
    page.wait_for_selector("#chain-status")
    status = page.inner_text("#chain-status")
    assert status.startswith("intact"), status
    screenshot(page, "audit")
    cleared = console_stack.invoice_ids[0]
    page.goto(f"{console_stack.url}/audit?invoice_id={cleared}")
    assert page.locator("tr.step-cleared").count() == 1
    assert page.locator("tr.step-violation").count() == 0
    page.context.close()


def test_an_auditor_builds_downloads_and_verifies_an_evidence_bundle(
    browser: Browser, console_stack: ConsoleStack, tmp_path: Path
) -> None:
    page = logged_in(browser, console_stack, "aude")
    page.goto(f"{console_stack.url}/evidence")
    page.select_option("select[name=topic]", "invoice.created")
    page.fill("input[name=tenant]", "console-co")
    page.click("#build-go")
    page.wait_for_selector(".job .download", timeout=120_000)
    job = page.inner_text(".job")
    assert "done" in job
    assert "signed by" in job
    screenshot(page, "evidence")
    with page.expect_download() as download:
        page.click(".job .download")
    archive = tmp_path / "bundle.zip"
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(tmp_path / "unpacked")
    directory = next((tmp_path / "unpacked").iterdir())
    verified = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "evidence",
            "verify",
            str(directory),
            "--public-key",
            str(console_stack.public_key),
        ],
        env=env_for_cli(console_stack),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert "signed by the trusted key" in verified.stdout

    page.set_input_files("#bundle-file", str(archive))
    page.set_input_files("#key-file", str(console_stack.public_key))
    page.click("#verify-go")
    page.wait_for_selector("#verify-report")
    assert page.inner_text("#verify-report").startswith("verified")

    not_a_bundle = tmp_path / "notes.zip"
    not_a_bundle.write_text("just some text")
    page.set_input_files("#bundle-file", str(not_a_bundle))
    with page.expect_response(lambda r: r.url.endswith("/evidence/verify")) as answer:
        page.click("#verify-go")
    assert answer.value.status == 400
    page.wait_for_selector("#verify-result #error")
    assert "not an evidence bundle" in page.inner_text("#verify-result")
    page.context.close()


def test_an_operator_redrives_a_failed_task_after_a_dry_run(browser: Browser, console_stack: ConsoleStack) -> None:
    import redis  # noqa: PLC0415

    from streams.bridge.celery_wire import EFFECTS_PREFIX, effect_key, task_id_for  # noqa: PLC0415
    from streams.bridge.reference_tasks import INVOICE_PDF  # noqa: PLC0415
    from streams.publish import Publisher  # noqa: PLC0415

    settings = console_stack.settings
    cleared = read_topic(settings, "invoice.cleared")[0]
    event_id = dict(cleared.headers())["ce_id"].decode()
    # What a BridgeTask that gave up leaves: its effect marked failed in Redis and a task.failed event.
    client = redis.Redis.from_url(settings.redis())
    done_key = f"{EFFECTS_PREFIX}done:{effect_key(INVOICE_PDF, event_id)}"
    client.set(done_key, "failed")
    with Publisher(settings, source="celery-worker") as publisher:
        publisher.publish(
            "task.failed",
            {
                "task_id": task_id_for(event_id, INVOICE_PDF),
                "task_name": INVOICE_PDF,
                "event_id": event_id,
                "route": "invoice-pdf",
                "reason": "retries_exhausted",
                "attempts": 5,
                "deliveries": 1,
                "error_class": "OSError",
                "error_message": "disk full",
                "source_topic": "invoice.cleared",
                "source_partition": cleared.partition(),
                "source_offset": cleared.offset(),
                "tenant_id": "console-co",
                "worker": "celery@test",
                "failed_at": datetime.now(UTC),
            },
        )
    before = len(read_topic(settings, "invoice.cleared"))
    page = logged_in(browser, console_stack, "otto")
    page.goto(f"{console_stack.url}/tasks")
    assert "disk full" in page.inner_text("#failed")
    page.click(".task-dry-run")
    page.wait_for_selector("#task-dry-run-result")
    assert "Its effect is failed" in page.inner_text("#task-dry-run-result")
    assert client.get(done_key) == b"failed", "a dry run changes nothing"
    screenshot(page, "tasks")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#task-redrive")
    page.wait_for_selector("#task-redrive-result")
    assert client.get(done_key) is None, "the effect may run again"
    after = read_topic(settings, "invoice.cleared")
    assert len(after) == before + 1
    copies = [m for m in after if dict(m.headers())["ce_id"].decode() == event_id]
    assert len(copies) == 2, "the same event again (same ce_id, so the bridge derives the same task id)"
    assert copies[0].value() == copies[1].value()
    again = page.evaluate("""async () => (await fetch("/tasks/redrive", {method: "POST", body: new URLSearchParams(
        {csrf: document.querySelector("input[name=csrf]").value,
         partition: document.querySelector("#failed input[name=partition]").value,
         offset: document.querySelector("#failed input[name=offset]").value})})).status""")
    assert again == 409, "a second re-drive finds no failed mark and changes nothing"
    assert len(read_topic(settings, "invoice.cleared")) == before + 1
    client.close()
    page.context.close()


def test_the_overview_refreshes_without_reloading(browser: Browser, console_stack: ConsoleStack) -> None:
    page = logged_in(browser, console_stack, "vera")
    page.evaluate("window.loadedOnce = 'still here'")
    first = page.inner_text("#refreshed-at")
    page.wait_for_function(f"document.getElementById('refreshed-at').textContent !== {first!r}", timeout=30_000)
    assert page.evaluate("window.loadedOnce") == "still here", "the panel was swapped in, the page not reloaded"
    page.context.close()


@pytest.mark.parametrize(
    ("path", "name", "selector"),
    [
        ("/topics", "topics", "#topics"),
        ("/topics/invoice.created/schema", "schema", "#compatibility"),
        ("/groups", "consumer-groups", ".group"),
        ("/tasks", "tasks-queues", "#queues"),
    ],
)
def test_every_page_renders(browser: Browser, console_stack: ConsoleStack, path: str, name: str, selector: str) -> None:
    page = logged_in(browser, console_stack, "otto")
    answer = page.goto(console_stack.url + path)
    assert answer is not None
    assert answer.status == 200
    assert page.locator(selector).count() >= 1
    if name == "topics":
        assert "invoice.created" in page.inner_text("#topics")
        assert "buyer.name" in page.inner_text("#topics")
    if name == "tasks-queues":
        bridges = page.inner_text("#bridges")
        assert console_stack.bridge_url in bridges
        assert page.inner_text("#bridges .paused") == "2", "the bridge's streams_bridge_paused_partitions"
        batch = next(row for row in page.locator("#queues tr").all_inner_texts() if row.startswith("batch"))
        assert batch.split("\t")[-2:] == ["12", "3"], "pushed and push retries from the bridge's metrics"
    if name == "consumer-groups":
        assert "streams-worker-validation" in page.inner_text("main")
    screenshot(page, name)
    page.context.close()


def test_the_cli_redrives_with_the_same_code(console_stack: ConsoleStack) -> None:
    park_dead_letter(console_stack, "cli-1", "parked for the CLI")
    env = env_for_cli(console_stack)
    dry = subprocess.run(
        [sys.executable, "-m", "streams.cli", "dlq", "redrive", "invoice.created", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    assert "would redrive 1 record(s)" in dry.stdout
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "dlq", "redrive", "invoice.created"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "redrove 1 record(s)" in done.stdout
    assert pending({"bootstrap.servers": console_stack.settings.bootstrap_servers()}, "invoice.created") == []
