"""The reference pipeline end to end on the embedded local stack (`streams demo` runs it).

Starts the stack, applies topics and schemas, publishes a sample batch and shows what landed where.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from streams.admin import apply_plan, plan_changes
from streams.agents.zatca import invoice_hash
from streams.catalog import load_catalog
from streams.demo.outbox import erp_through_outbox
from streams.demo.samples import invoice_chain, user_action, workflow_completed
from streams.demo.webhooks import run_webhooks_until, show_webhooks
from streams.errors import StreamsError
from streams.local.stack import ServiceReady, StackEvent, StackNote, start_stack
from streams.publish import Publisher
from streams.replay.commands import keygen, replay, verify
from streams.schemas.commands import apply_schemas
from streams.schemas.registry_client import RegistryClient

if TYPE_CHECKING:
    from streams.catalog import Catalog
    from streams.demo.worker import WorkerReport
    from streams.settings import Settings


def run_demo(settings: Settings, invoices: int) -> None:
    """The reference pipeline on the local stack, each step reported (`streams demo`)."""
    console = Console()
    console.rule("1. local stack")

    def on_event(event: StackEvent) -> None:
        if isinstance(event, ServiceReady):
            console.print(f"[green]{event.name}[/] {event.address} ready in {event.seconds:.1f}s")
        elif isinstance(event, StackNote):
            console.print(f"note: {event.message}", highlight=False)

    state = start_stack(settings.data_dir, catalog=settings.catalog_path, notify=on_event)
    for service in state.services.values():
        console.print(f"{service.name:9s} {service.address}")

    console.rule("2. topics (topics.yaml)")
    catalog = load_catalog(settings.catalog_path, settings.profile)
    kafka_config = settings.kafka_config(settings.bootstrap_servers())
    plan = plan_changes(catalog, kafka_config)
    apply_plan(plan, catalog, kafka_config)
    console.print(f"{len(plan.changes)} change(s) applied; {len(catalog.topics)} topics declared")

    console.rule("3. schemas (schemas/*.avsc)")
    with RegistryClient(settings.registry_url()) as client:
        for step in apply_schemas(catalog, client):
            registered = step.registered
            console.print(
                f"{step.verdict.schema.subject:32s} id {registered.id if registered else '-':>3} "
                f"v{registered.version if registered else '-'} {step.action}"
            )

    console.rule("4. publish a sample batch")
    batch = {
        "invoice.created": demo_invoices(invoices),
        "user.action": [user_action(i) for i in range(invoices // 4)],
        "workflow.completed": [workflow_completed(i) for i in range(invoices // 10)],
    }
    console.print(erp_through_outbox(settings, catalog, batch["invoice.created"]), highlight=False)
    with Publisher(settings, catalog=catalog, source="streams-demo") as publisher:
        for topic, events in batch.items():
            for event in events if topic != "invoice.created" else ():  # the ERP's went through its outbox
                publisher.publish(topic, event)
    console.print(", ".join(f"{len(events)} {topic}" for topic, events in batch.items()) + " published")

    console.rule("5. worker: validation, audit, indexing")
    expected = len(batch["invoice.created"])
    from streams.demo.worker import run_worker_until  # noqa: PLC0415 - `streams demo --help` stays fast

    report = run_worker_until(settings, catalog, expected, timeout=180)
    _show_topics(console, catalog, kafka_config)
    _show_worker(console, report, expected, settings)

    console.rule("6. bridge: Celery tasks from the outcomes (PDFs, compliance notifications)")
    tenants = {event["tenant_id"] for event in batch["invoice.created"]}
    from streams.demo.bridge import run_bridge_until  # noqa: PLC0415 - `streams demo --help` stays fast

    effects = run_bridge_until(settings, tenants, report.cleared, report.errors, timeout=180)
    console.print(f"invoice PDFs: {effects.pdfs} (one per cleared invoice), e.g. {effects.sample_pdf}")
    console.print(
        f"compliance notifications: {effects.notifications} (one per ERROR violation) under "
        f"{settings.data_dir / 'bridge' / 'compliance'}"
    )

    show_webhooks(console, run_webhooks_until(settings, catalog, tenants, report.errors, timeout=120))

    console.rule("7. replay the invoices into a signed evidence bundle, then verify it")
    ctx = click.get_current_context()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    folder = settings.data_dir / "evidence"
    folder.mkdir(parents=True, exist_ok=True)
    ctx.invoke(keygen, stem=folder / f"auditor-{stamp}")
    ctx.invoke(
        replay, topic="invoice.created", export=folder / f"invoices-{stamp}", sign_key=folder / f"auditor-{stamp}.key"
    )
    ctx.invoke(verify, directory=folder / f"invoices-{stamp}", public_key=folder / f"auditor-{stamp}.pub")


def _show_worker(console: Console, report: WorkerReport, expected: int, settings: Settings) -> None:
    """The agents' outcomes; StreamsError if the search index holds no cleared invoice."""
    console.print(
        f"invoices judged: {report.judged} of {expected} ({report.cleared} cleared, {report.violating} with violations)"
    )
    for rule, count in sorted(report.violations.items()):
        console.print(f"  {rule:22s} {count}")
    console.print(f"dead letters: {report.dead_letters}")
    console.print(f"audit chain: {report.chain_entries} entries, verify: {report.verify}")
    if not report.search_hits:
        raise StreamsError(f"the search index has no cleared invoice; see {settings.data_dir / 'demo-worker.log'}")
    for hit in report.search_hits:
        console.print(f"search 'cleared': {hit['topic']} {hit['title']}")


def demo_invoices(count: int) -> list[dict[str, Any]]:
    """Mostly valid chains of three sellers, plus one invoice per kind of mistake the agents catch.

    Each run has sellers of its own (acme-<run>, ...), so running the demo again starts new chains.
    """
    per_seller = max(count // 3, 2)
    run = uuid.uuid4().hex[:6]
    chains = [
        invoice_chain(per_seller, tenant=f"{t}-{run}", seller_vat=v, seed=int(run, 16))
        for t, v in (("acme", "300000000000003"), ("gulf", "310000000000003"), ("najd", "320000000000003"))
    ]
    events = [event for group in zip(*chains, strict=True) for event in group]
    last = chains[0][-1]
    events.append(
        {
            **last,
            "invoice_id": str(uuid.uuid4()),
            "tax_currency": "USD",
            "icv": last["icv"] + 1,
            "previous_invoice_hash": invoice_hash(last),
        }
    )  # wrong tax currency
    events.append({**chains[1][0]})  # duplicate UUID
    events.append({**chains[2][-1], "invoice_id": str(uuid.uuid4()), "icv": 1})  # ICV and hash break
    return events


def _show_topics(console: Console, catalog: Catalog, kafka_config: dict[str, str | int | float | bool]) -> None:
    consumer = Consumer({**kafka_config, "group.id": "streams-demo"})
    try:
        table = Table(title="topics after the run")
        table.add_column("topic")
        table.add_column("partitions", justify="right")
        table.add_column("end offsets", justify="right")  # transaction markers take offsets too
        for spec in catalog.topics:
            partitions = consumer.list_topics(spec.name, timeout=10).topics[spec.name].partitions
            total = sum(
                high - low
                for low, high in (
                    consumer.get_watermark_offsets(TopicPartition(spec.name, p), timeout=10) for p in partitions
                )
            )
            table.add_row(spec.name, str(len(partitions)), str(total))
        console.print(table)
    finally:
        consumer.close()
