"""The validation agent's native fast path, InvoiceJudge, held to the Python judge it stands in for.

`InvoiceJudge.try_clear` clears an invoice that passes every rule in one native call and returns None for
anything else. It must never disagree with `ValidationAgent.handle_one`: whenever it returns an event,
Python clears the same invoice into the same key, value and headers (ce_time aside) and writes the same
state; whenever it returns None, it has changed nothing. And it must really cover the common case.

No broker or registry: real wire-format values and CloudEvents headers from EventEncoder, real
confluent_kafka.Message objects, and an in-memory stand-in for the schema registry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import Message
from hypothesis import event, given, settings
from hypothesis import strategies as st

from streams._avro_native import EventWriter, InvoiceJudge
from streams.agents.rules import RuleTable, default_rules
from streams.agents.validation import ValidationAgent
from streams.agents.zatca import CENT, FIRST_PIH, outcome_id
from streams.catalog import load_catalog
from streams.demo.samples import invoice, workflow_completed
from streams.errors import PublishError
from streams.publish import TRACEPARENT, Built, EventEncoder
from streams.records import EventDecoder, SourceRecord
from streams.runtime.state import Output, PartitionState
from streams.schemas.codec import AvroCodec
from streams.schemas.registry_client import RegistryClient

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "invoice.created"
CLEARED = "invoice.cleared"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NOW_MICROS = (NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
SELLERS = [("acme", "300000000000003"), ("globex", "311111111111113"), ("initech", "399999999999993")]
CE_TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
RULES = default_rules()
# The VAT rate of each category, as the table's KSA-VAT-RATE rule has it.
CATEGORY_RATES: dict[str, Decimal] = next(r for r in RULES.rules if r.code == "KSA-VAT-RATE").params["table"]

WireHeaders = list[tuple[str, bytes | None]]
Sent = tuple[str, bytes | None, bytes | None, WireHeaders]


class FakeRegistry:
    """RegistryClient's register, lookup and schema_by_id in memory: one id per distinct schema text."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.schemas: dict[int, str] = {}

    def register(self, subject: str, schema_str: str) -> int:
        assert subject.endswith("-value")
        if schema_str not in self.ids:
            self.ids[schema_str] = len(self.ids) + 1
            self.schemas[self.ids[schema_str]] = schema_str
        return self.ids[schema_str]

    def lookup(self, subject: str, schema_str: str) -> int:
        return self.register(subject, schema_str)

    def schema_by_id(self, schema_id: int) -> str:
        return self.schemas[schema_id]

    def close(self) -> None:
        pass


class Collect(Output):
    """An Output that keeps what the agent sends."""

    def __init__(self) -> None:  # no producer: nothing is produced
        self.sent: list[Sent] = []

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
    ) -> None:
        self.sent.append((topic, key, value, list(headers)))


@dataclass
class World:
    registry: FakeRegistry
    producer: EventEncoder  # what billing-api publishes invoices with
    agent: ValidationAgent
    judge: InvoiceJudge
    added: dict[int, bool] = field(default_factory=dict)

    def cleared_writer(self) -> EventWriter:
        return self.agent.encoder.topic(CLEARED).writer


def make_world(rules: RuleTable = RULES) -> World:
    """Both judges on one rule table (the package's unless told)."""
    registry = FakeRegistry()
    client = cast("RegistryClient", registry)
    catalog = load_catalog(ROOT / "topics.yaml")
    producer = EventEncoder(catalog, client, source="billing-api")
    decoder = EventDecoder(client)
    agent = ValidationAgent(catalog, decoder, EventEncoder(catalog, client, source="validation-agent"), rules=rules)
    judge = InvoiceJudge(agent.encoder.topic(CLEARED).writer, FIRST_PIH, decoder.max_record_bytes, rules.text)
    return World(registry, producer, agent, judge)


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


def message(
    value: bytes | None,
    headers: WireHeaders | None,
    offset: int = 0,
    *,
    key: bytes | None = b"acme",
    topic: str | None = SOURCE,
    partition: int | None = 3,
) -> Message:
    coordinates: dict[str, Any] = {"topic": topic, "partition": partition}  # None: leave it unset
    return Message(
        offset=offset,
        key=key,
        value=value,
        headers=cast("Any", headers),
        timestamp=(1, 1_793_520_000_000),
        **{name: v for name, v in coordinates.items() if v is not None},
    )


def native_clear(world: World, record: Message, state: PartitionState) -> Built | None:
    """try_clear, adding the writer schema the first time its id comes up (as the agent would)."""
    before = (list(state.items()), set(state.dirty))
    result = world.judge.try_clear(record, state, state.dirty, NOW, NOW_MICROS)
    if isinstance(result, int):
        assert (list(state.items()), state.dirty) == before
        assert result not in world.added
        world.added[result] = world.judge.add_schema(result, world.registry.schema_by_id(result))
        result = world.judge.try_clear(record, state, state.dirty, NOW, NOW_MICROS)
    assert not isinstance(result, int)
    return result


def python_judge(world: World, record: Message, state: PartitionState) -> tuple[str, list[Sent]]:
    """handle_one's outcome label and what it sent ("raised" for what handle_one lets escape)."""
    out = Collect()
    try:
        outcome = world.agent.handle_one(SourceRecord.from_message(record), state, out, NOW)
    except LookupError:  # a one-item seller state (a shape our own writes never have)
        return "raised", out.sent
    return outcome, out.sent


def copy_state(state: PartitionState) -> PartitionState:
    twin = PartitionState()
    twin.update(state)  # dict.update: the twin's dirty set stays empty
    twin.dirty = set(state.dirty)
    return twin


def check_step(world: World, record: Message, state: PartitionState) -> Built | None:
    """Judge `record` natively on a copy of `state` and in Python on `state` itself; assert they agree.

    Returns the native result; `state` ends as Python left it (the sequences continue from it)."""
    twin = copy_state(state)
    before = (list(twin.items()), set(twin.dirty))
    native = native_clear(world, record, twin)
    outcome, sent = python_judge(world, record, state)
    if native is None:
        assert (list(twin.items()), twin.dirty) == before, "None must leave the state untouched"
        return None
    assert outcome == "cleared"
    assert len(sent) == 1
    topic, key, value, headers = sent[0]
    assert topic == CLEARED
    native_key, native_value, native_headers, native_id = native
    assert (native_key, native_value) == (key, value)
    assert [name for name, _ in native_headers] == [name for name, _ in headers]
    assert dict(headers)["ce_id"] == native_id.encode()
    source_trace = SourceRecord.from_message(record).header("ce_traceparent")
    for (name, mine), (_, theirs) in zip(native_headers, headers, strict=True):
        if name == "ce_time":
            assert mine is not None
            assert CE_TIME.fullmatch(mine)
        elif name == "ce_traceparent" and source_trace is None:  # both made up a new trace
            assert mine is not None
            assert TRACEPARENT.match(mine.decode())
        else:
            assert mine == theirs, name
    assert list(twin.items()) == list(state.items())
    assert [type(v) for v in twin.values()] == [type(v) for v in state.values()]
    assert twin.dirty == state.dirty
    return native


# ---- generated sequences ------------------------------------------------------------------------------

MUST_CLEAR = {
    "none",
    "simplified",
    "simplified_odd_buyer",
    "arabic_name",
    "long_name",
    "icv_jump",
    "large_ok",
    "currency_eur",
    "future_edge",
    "past",
    "zero_rated",
}
BREAKING = [
    "seller_vat_wrong",
    "seller_vat_none",
    "seller_vat_arabic",
    "seller_vat_newline",
    "seller_vat_fullwidth",
    "seller_vat_short",
    "buyer_none",
    "buyer_vat_bad",
    "buyer_vat_arabic",
    "tax_currency",
    "future_over",
    "icv_same",
    "icv_back",
    "pih_wrong",
    "duplicate_id",
    "republish",
    "rate_wrong",
    "large_over",
    "amounts",
    "amounts",
    "amounts",
]
CLEAN_HEADERS = {
    "normal",
    "given_id",
    "no_ce_id",
    "empty_ce_id",
    "none_ce_id",
    "two_ce_ids",
    "none_then_id",
    "non_ascii_id",
    "no_trace",
    "none_trace",
}
HEADER_VARIANTS = [*sorted(CLEAN_HEADERS), "bad_utf8_id", "bad_trace", "str_ce_id"]

# Mostly exact, else right at the 0.01 tolerance or just past it.
DELTAS = st.sampled_from([*[Decimal("0.00")] * 8, Decimal("0.01"), Decimal("-0.01"), Decimal("0.02"), Decimal("-0.02")])


def fixed(places: int, units: st.SearchStrategy[int]) -> st.SearchStrategy[Decimal]:
    return units.map(lambda n: Decimal(n).scaleb(-places))


@dataclass(frozen=True)
class LineSpec:
    quantity: Decimal
    unit_price: Decimal
    discount: Decimal
    category: str
    rate: Decimal
    net_delta: Decimal


@dataclass(frozen=True)
class Amounts:
    lines: tuple[LineSpec, ...]
    deltas: tuple[Decimal, Decimal, Decimal, Decimal]  # tax exclusive, VAT, tax inclusive, payable


line_specs = st.builds(
    LineSpec,
    # Halves and quarters make ties for the half-even rounding of the net amount.
    quantity=st.sampled_from(
        [Decimal("0.500"), Decimal("1.000"), Decimal("2.500"), Decimal("0.125"), Decimal("-1.000")]
    )
    | fixed(3, st.integers(-50_000, 50_000)),
    unit_price=st.one_of(
        st.sampled_from(
            [
                Decimal("0.01"),
                Decimal("0.03"),
                Decimal("0.05"),
                Decimal("0.10"),
                Decimal("0.30"),
                Decimal("99.99"),
                Decimal("9999999999999.99"),
            ]
        ),
        fixed(2, st.integers(-(10**6), 10**6)),
        fixed(2, st.integers(-(10**6), 10**6)),
        fixed(2, st.integers(10**13, 10**15 + 10)),  # amounts the fast path leaves to Python
    ),
    discount=st.sampled_from([Decimal("0.00")]) | fixed(2, st.integers(-1000, 1000)),
    category=st.sampled_from(["S", "S", "Z", "E", "O"]),
    rate=st.sampled_from([Decimal("-1.00"), Decimal("5.00")]),  # used only when the category's rate is not
    net_delta=DELTAS,
)
amounts = st.builds(Amounts, st.lists(line_specs, max_size=4).map(tuple), st.tuples(DELTAS, DELTAS, DELTAS, DELTAS))


@dataclass(frozen=True)
class Step:
    seller: int
    mutation: str
    headers: str
    amounts: Amounts
    right_rate: bool


steps = st.builds(
    Step,
    seller=st.integers(0, len(SELLERS) - 1),
    mutation=st.sampled_from(sorted(MUST_CLEAR)) | st.sampled_from(BREAKING),
    headers=st.sampled_from(sorted(CLEAN_HEADERS)) | st.sampled_from(HEADER_VARIANTS),
    amounts=amounts,
    right_rate=st.booleans() | st.just(True),
)


def with_amounts(event: dict[str, Any], spec: Amounts, right_rate: bool) -> dict[str, Any]:
    """`event` with these lines; nets and totals as the rules compute them, then nudged by the deltas."""
    lines: list[dict[str, Any]] = []
    for n, line in enumerate(spec.lines):
        rate = CATEGORY_RATES[line.category] if right_rate else line.rate
        net = (line.quantity * line.unit_price - line.discount).quantize(CENT) + line.net_delta
        lines.append(
            {
                "line_id": str(n + 1),
                "description": "Item",
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "discount": line.discount,
                "vat_category": line.category,
                "vat_rate": rate,
                "net_amount": net,
            }
        )
    exclusive = sum((line["net_amount"] for line in lines), Decimal("0.00")) + spec.deltas[0]
    vat = sum((line["net_amount"] * line["vat_rate"] / 100 for line in lines), Decimal("0.00")).quantize(CENT)
    vat += spec.deltas[1]
    inclusive = exclusive + vat + spec.deltas[2]
    return {
        **event,
        "lines": lines,
        "tax_exclusive_total": exclusive,
        "vat_total": vat,
        "tax_inclusive_total": inclusive,
        "payable_amount": inclusive + spec.deltas[3],
    }


def one_line(event: dict[str, Any], unit_price: str, category: str) -> dict[str, Any]:
    price = Decimal(unit_price)
    line = {
        "line_id": "1",
        "description": "Big",
        "quantity": Decimal("1.000"),
        "unit_price": price,
        "discount": Decimal("0.00"),
        "vat_category": category,
        "vat_rate": CATEGORY_RATES[category],
        "net_amount": price,
    }
    vat = (price * CATEGORY_RATES[category] / 100).quantize(CENT)
    return {
        **event,
        "lines": [line],
        "tax_exclusive_total": price,
        "vat_total": vat,
        "tax_inclusive_total": price + vat,
        "payable_amount": price + vat,
    }


@dataclass
class Run:
    """One generated sequence: the Python-side state and what was sent so far."""

    world: World
    state: PartitionState = field(default_factory=PartitionState)
    sent: list[Message] = field(default_factory=list)
    invoice_ids: list[str] = field(default_factory=list)

    def chain(self, tenant: str) -> tuple[int, str]:
        found = self.state.get(f"seller:{tenant}")
        return (int(found[0]), str(found[1])) if found else (0, FIRST_PIH)

    def event(self, seq: int, step: Step) -> dict[str, Any]:
        tenant, vat = SELLERS[step.seller]
        last_icv, last_hash = self.chain(tenant)
        event = invoice(seq, tenant=tenant, seller_vat=vat, previous_hash=last_hash, icv=last_icv + 1)
        if step.mutation == "amounts":
            return with_amounts(event, step.amounts, step.right_rate)
        return MUTATIONS[step.mutation](event, Chain(last_icv, self.invoice_ids))

    def record(self, seq: int, step: Step) -> Message | None:
        if step.mutation == "republish" and self.sent:
            old = self.sent[seq % len(self.sent)]
            return message(old.value(), cast("WireHeaders", old.headers()), seq, key=old.key())
        event = self.event(seq, step)
        try:
            key, value, headers, _ = self.world.producer.build(
                SOURCE, event, event_id=f"evt-{seq}" if step.headers == "given_id" else None
            )
        except PublishError:  # amounts the schema cannot hold (precision 18): not an event anyone can publish
            return None
        self.invoice_ids.append(event["invoice_id"])
        return message(value, vary_headers(cast("WireHeaders", headers), step.headers), seq, key=key)


@dataclass(frozen=True)
class Chain:
    """What a mutation may use: the seller's last ICV and the invoice ids sent before."""

    last_icv: int
    used_ids: list[str]


Mutation = Callable[[dict[str, Any], Chain], dict[str, Any]]


def seller(**changes: Any) -> Mutation:
    return lambda e, _: {**e, "seller": {**e["seller"], **changes}}


def buyer_vat(vat: str) -> Mutation:
    return lambda e, _: {**e, "buyer": {**e["buyer"], "vat_number": vat}}


def fields(**changes: Any) -> Mutation:
    return lambda e, _: {**e, **changes}


ARABIC_THREE = "\N{ARABIC-INDIC DIGIT THREE}"
MUTATIONS: dict[str, Mutation] = {
    "none": lambda e, _: e,
    "simplified": fields(subtype="SIMPLIFIED", buyer=None),
    "simplified_odd_buyer": lambda e, c: buyer_vat("not a VAT number")({**e, "subtype": "SIMPLIFIED"}, c),
    "arabic_name": seller(name="شركة أكمي للتجارة"),
    # 300 bytes of 2-byte characters and characters JSON escapes: the QR code cuts one in half at 255.
    "long_name": seller(name="é" * 150 + '\n"\\'),
    "icv_jump": lambda e, c: {**e, "icv": c.last_icv + 7},
    # The largest amounts the fast path takes (unscaled just below 10**15), and the smallest it leaves.
    "large_ok": lambda e, _: one_line(e, "9999999999999.99", "Z"),
    "large_over": lambda e, _: one_line(e, "10000000000000.00", "Z"),
    "zero_rated": lambda e, _: one_line(e, "120.50", "E"),
    "currency_eur": fields(currency="EUR"),
    "future_edge": fields(issued_at=NOW + timedelta(minutes=5)),
    "future_over": fields(issued_at=NOW + timedelta(minutes=5, milliseconds=1)),
    "past": fields(issued_at=datetime(2001, 2, 3, 4, 5, 6, 789_000, tzinfo=UTC)),
    "seller_vat_wrong": seller(vat_number="300000000000004"),
    "seller_vat_none": seller(vat_number=None),
    # Python's \d takes Arabic-Indic and fullwidth digits, and its $ a final newline.
    "seller_vat_arabic": seller(vat_number=ARABIC_THREE + "\N{ARABIC-INDIC DIGIT ZERO}" * 13 + ARABIC_THREE),
    "seller_vat_newline": seller(vat_number="300000000000003\n"),
    "seller_vat_fullwidth": seller(vat_number="3" + "\N{FULLWIDTH DIGIT ZERO}" * 13 + "3"),
    "seller_vat_short": seller(vat_number="30000000000003"),
    "buyer_none": fields(buyer=None),
    "buyer_vat_bad": buyer_vat("400000000000003"),
    "buyer_vat_arabic": buyer_vat(ARABIC_THREE + "\N{ARABIC-INDIC DIGIT ONE}" * 13 + ARABIC_THREE),
    "tax_currency": fields(tax_currency="USD"),
    "icv_same": lambda e, c: {**e, "icv": c.last_icv},
    "icv_back": lambda e, c: {**e, "icv": c.last_icv - 1},
    "pih_wrong": lambda e, _: {**e, "previous_invoice_hash": e["previous_invoice_hash"][::-1]},
    "duplicate_id": lambda e, c: {**e, "invoice_id": c.used_ids[-1]} if c.used_ids else e,
    "republish": lambda e, _: e,  # Run.record sends an earlier record again instead
    "rate_wrong": lambda e, _: {**e, "lines": [{**e["lines"][0], "vat_category": "Z"}, *e["lines"][1:]]},
    "amounts": lambda e, _: e,  # Run.event applies the step's amounts
}


def vary_headers(headers: WireHeaders, variant: str) -> WireHeaders:
    def without(name: str) -> WireHeaders:
        return [(k, v) for k, v in headers if k != name]

    def replaced(name: str, value: object) -> WireHeaders:
        return [(k, cast("bytes | None", value) if k == name else v) for k, v in headers]

    variants: dict[str, Callable[[], WireHeaders]] = {
        "no_ce_id": lambda: without("ce_id"),
        "empty_ce_id": lambda: replaced("ce_id", b""),
        "none_ce_id": lambda: replaced("ce_id", None),
        "two_ce_ids": lambda: [("ce_id", b"first-id"), *headers],  # the first one counts,
        "none_then_id": lambda: [("ce_id", None), *headers],  # even when its value is None
        "non_ascii_id": lambda: replaced("ce_id", "événement-1".encode()),
        "bad_utf8_id": lambda: replaced("ce_id", b"evt-\xff\xfe"),
        "str_ce_id": lambda: replaced("ce_id", "evt-as-str"),
        "no_trace": lambda: without("ce_traceparent"),
        "none_trace": lambda: replaced("ce_traceparent", None),
        "bad_trace": lambda: replaced("ce_traceparent", b"00-not-a-trace"),
    }
    return variants.get(variant, lambda: headers)()


@settings(max_examples=250, deadline=None)
@given(plan=st.lists(steps, min_size=1, max_size=14))
def test_native_and_python_judges_agree_on_every_sequence(world: World, plan: list[Step]) -> None:
    run = Run(world)
    for seq, step in enumerate(plan):
        record = run.record(seq, step)
        if record is None:
            continue
        native = check_step(world, record, run.state)
        event("cleared natively" if native is not None else "left to Python")
        run.sent.append(record)
        if step.mutation in MUST_CLEAR and step.headers in CLEAN_HEADERS:
            assert native is not None, f"the fast path must clear {step}"


def test_a_seller_chain_clears_natively_with_the_python_results(world: World) -> None:
    run = Run(world)
    zero = Decimal("0.00")
    plain = Step(0, "none", "normal", Amounts((), (zero, zero, zero, zero)), right_rate=True)
    for seq in range(6):
        record = run.record(seq, plain)
        assert record is not None
        native = check_step(world, record, run.state)
        assert native is not None
        ce_id = SourceRecord.from_message(record).event_id
        assert native[3] == outcome_id(ce_id, "cleared")
    assert run.state["seller:acme"][0] == 6


# ---- schemas ------------------------------------------------------------------------------------------


def invoice_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "schemas" / "invoice.created.avsc").read_text())
    return loaded


def changed(edit: Callable[[dict[str, Any]], None]) -> str:
    schema = invoice_schema()
    edit(schema)
    return json.dumps(schema)


def fields_of(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in schema["fields"]}


def line_fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in fields_of(schema)["lines"]["type"]["items"]["fields"]}


def set_type(fields: dict[str, dict[str, Any]], name: str, new_type: object) -> None:
    fields[name]["type"] = new_type


UNSUPPORTED = {
    "icv as int": changed(lambda s: set_type(fields_of(s), "icv", "int")),
    "invoice_id as uuid": changed(
        lambda s: set_type(fields_of(s), "invoice_id", {"type": "string", "logicalType": "uuid"})
    ),
    "issued_at local": changed(
        lambda s: set_type(fields_of(s), "issued_at", {"type": "long", "logicalType": "local-timestamp-millis"})
    ),
    "no tax_currency": changed(lambda s: s.update(fields=[f for f in s["fields"] if f["name"] != "tax_currency"])),
    "buyer not nullable": changed(lambda s: set_type(fields_of(s), "buyer", ["Party", "string"])),
    "a float field": changed(lambda s: s["fields"].append({"name": "score", "type": "double", "default": 0.0})),
    "not JSON": "{",
    "not a record": '"string"',
}


@pytest.mark.parametrize("schema_text", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_unsupported_schemas_are_refused_and_their_records_left_to_python(schema_text: str) -> None:
    world = make_world()
    assert world.judge.add_schema(41, schema_text) is False
    value = b"\x00\x00\x00\x00\x29" + b"\x00" * 40
    state = PartitionState()
    assert world.judge.try_clear(message(value, []), state, state.dirty, NOW, NOW_MICROS) is None
    assert state == {}
    assert state.dirty == set()


def test_an_unknown_schema_id_is_returned_until_added(world: World) -> None:
    judge = InvoiceJudge(world.cleared_writer(), FIRST_PIH, 1_048_576, RULES.text)
    key, value, headers, _ = world.producer.build(SOURCE, invoice(1))
    record = message(value, cast("WireHeaders", headers), key=key)
    state = PartitionState()
    schema_id = int.from_bytes(value[1:5], "big")
    assert judge.try_clear(record, state, state.dirty, NOW, NOW_MICROS) == schema_id
    assert state == {}
    assert state.dirty == set()
    assert judge.add_schema(schema_id, world.registry.schema_by_id(schema_id)) is True
    assert isinstance(judge.try_clear(record, state, state.dirty, NOW, NOW_MICROS), tuple)
    assert len(state) == 2


def test_other_event_schemas_are_refused(world: World) -> None:
    _, value, headers, _ = world.producer.build("workflow.completed", workflow_completed(1))
    schema_id = int.from_bytes(value[1:5], "big")
    judge = InvoiceJudge(world.cleared_writer(), FIRST_PIH, 1_048_576, RULES.text)
    assert judge.add_schema(schema_id, world.registry.schema_by_id(schema_id)) is False
    state = PartitionState()
    assert judge.try_clear(message(value, cast("WireHeaders", headers)), state, state.dirty, NOW, NOW_MICROS) is None
    assert state == {}


def evolved_record(world: World, schema: dict[str, Any], payload: dict[str, Any]) -> Message:
    """A record written with another version of the invoice schema (registered like any other)."""
    text = json.dumps(schema, separators=(",", ":"))
    codec = AvroCodec(schema, world.registry.register(f"{SOURCE}-value", text))
    key, _, headers, _ = world.producer.build(SOURCE, invoice(1))
    return message(codec.encode(payload), cast("WireHeaders", headers), key=key)


def test_extra_fields_and_other_precisions_are_supported(world: World) -> None:
    schema = invoice_schema()
    # First in the record and in key order ("aaa" < "buyer"), then a map and a nested record: all in the hash.
    schema["fields"].insert(0, {"name": "aaa_note", "type": ["null", "string"], "default": None})
    schema["fields"].append({"name": "tags", "type": {"type": "map", "values": "string"}, "default": {}})
    schema["fields"].append({"name": "shipper", "type": ["null", "Party"], "default": None})
    line_fields(schema)["vat_rate"]["type"]["precision"] = 7
    fields_of(schema)["vat_total"]["type"]["precision"] = 20
    event = invoice(3)
    payload = {
        **event,
        "aaa_note": "first",
        "tags": {"z": "1", "a": "2"},
        "shipper": {"name": "Ship Co", "vat_number": "312345678901233", "cr_number": None, "address": None},
    }
    state = PartitionState()
    native = check_step(world, evolved_record(world, schema, payload), state)
    assert native is not None
    assert state["seller:acme"][0] == event["icv"]


@pytest.mark.parametrize(("name", "scale"), [("vat_rate", 3), ("quantity", 2), ("discount", 4)])
def test_rule_fields_at_other_scales_are_judged_exactly(world: World, name: str, scale: int) -> None:
    # The rule table's arithmetic (rules.rs) takes each decimal's scale from the value, as Python's Decimal does.
    schema = invoice_schema()
    line_fields(schema)[name]["type"]["scale"] = scale
    event = invoice(5)
    quantum = Decimal(1).scaleb(-scale)
    payload = {**event, "lines": [{**line, name: line[name].quantize(quantum)} for line in event["lines"]]}
    state = PartitionState()
    native = check_step(world, evolved_record(world, schema, payload), state)
    assert native is not None
    assert state["seller:acme"][0] == event["icv"]


def test_a_party_used_elsewhere_is_not_taken_for_the_seller(world: World) -> None:
    schema = invoice_schema()
    schema["fields"].append({"name": "agent", "type": "Party"})  # after the seller, which defines Party
    event = invoice(4)
    bad = {**event, "seller": {**event["seller"], "vat_number": None}}
    good_agent = {"name": "Agent", "vat_number": "300000000000003", "cr_number": None, "address": None}
    assert check_step(world, evolved_record(world, schema, {**bad, "agent": good_agent}), PartitionState()) is None
    bad_agent = {**good_agent, "vat_number": None}
    assert check_step(world, evolved_record(world, schema, {**event, "agent": bad_agent}), PartitionState())


# ---- state, headers and values the fast path leaves to Python -----------------------------------------


def first_invoice(world: World, headers: str = "normal") -> Message:
    key, value, built_headers, _ = world.producer.build(SOURCE, invoice(0, icv=1))
    return message(value, vary_headers(cast("WireHeaders", built_headers), headers), 11, key=key)


STATE_SHAPES: dict[str, tuple[object, bool]] = {  # seller state -> whether the fast path must clear
    "tuple": ((0, FIRST_PIH), True),
    "list": ([0, FIRST_PIH], True),
    "empty tuple": ((), True),
    "None": (None, True),
    "longer tuple": ((0, FIRST_PIH, "more"), True),
    "bool icv": ((False, FIRST_PIH), False),
    "float icv": ((0.0, FIRST_PIH), False),
    "huge icv": ((2**70, FIRST_PIH), False),
    "bytes hash": ((0, FIRST_PIH.encode()), False),
    "one item": ((0,), False),
    "a str": ("0", False),
    "a dict": ({"icv": 0}, False),
}


@pytest.mark.parametrize(("shape", "must_clear"), STATE_SHAPES.values(), ids=STATE_SHAPES.keys())
def test_seller_state_shapes(world: World, shape: object, must_clear: bool) -> None:
    state = PartitionState()
    state.update({"seller:acme": shape})
    native = check_step(world, first_invoice(world), state)
    assert (native is not None) == must_clear


def test_an_invoice_key_holding_none_counts_as_unseen(world: World) -> None:
    state = PartitionState()
    key, value, headers, _ = world.producer.build(SOURCE, invoice(0, icv=1))
    decoded = world.agent.decoder.decode(value)[1]
    state.update({f"invoice:{decoded['invoice_id']}": None})
    assert check_step(world, message(value, cast("WireHeaders", headers), key=key), state) is not None


def test_event_ids_from_the_coordinates_when_there_is_no_ce_id(world: World) -> None:
    key, value, headers, _ = world.producer.build(SOURCE, invoice(0, icv=1))
    no_id = vary_headers(cast("WireHeaders", headers), "no_ce_id")
    for record in (
        message(value, no_id, 0, key=key, topic=None, partition=None),
        message(value, no_id, 42, key=key, partition=0),
        message(value, None, 7, key=key),
    ):
        native = check_step(world, record, PartitionState())
        assert native is not None
        source = SourceRecord.from_message(record)
        assert native[3] == outcome_id(f"{source.topic}/{source.partition}/{source.offset}", "cleared")


def test_an_event_the_writer_refuses_leaves_the_state_alone(world: World) -> None:
    record = evolved_record(world, invoice_schema(), invoice(0, tenant="not a tenant id!", icv=1))
    state = PartitionState()
    assert native_clear(world, record, state) is None
    assert state == {}
    assert check_step(world, record, PartitionState()) is None  # Python raises PublishError for the tenant id


def test_a_bad_traceparent_leaves_the_state_alone(world: World) -> None:
    state = PartitionState()
    assert native_clear(world, first_invoice(world, "bad_trace"), state) is None
    assert state == {}
    assert state.dirty == set()


def odd_records(world: World) -> Iterator[tuple[str, Message]]:
    _, value, headers, _ = world.producer.build(SOURCE, invoice(0, icv=1))
    good = cast("WireHeaders", headers)
    yield "no value", message(None, good)
    yield "short value", message(value[:4], good)
    yield "magic byte 1", message(b"\x01" + value[1:], good)
    yield "truncated datum", message(value[:-1], good)
    yield "trailing byte", message(value + b"\x00", good)
    yield "headers as a dict", message(value, cast("WireHeaders", dict(good)))
    yield "header name as bytes", message(value, [(cast("str", b"ce_id"), b"x"), *good])
    yield "header of three", message(value, [cast("tuple[str, bytes]", ("ce_id", b"x", b"y")), *good])
    yield "header value as str", message(value, vary_headers(good, "str_ce_id"))
    yield "header not UTF-8", message(value, vary_headers(good, "bad_utf8_id"))
    yield "topic not a str", message(value, vary_headers(good, "no_ce_id"), topic=cast("str", b"t"))


def test_odd_records_are_left_to_python(world: World) -> None:
    for name, record in odd_records(world):
        state = PartitionState()
        assert native_clear(world, record, state) is None, name
        assert state == {}, name
        assert state.dirty == set(), name


def test_records_over_the_size_limit_are_left_to_python(world: World) -> None:
    _, value, headers, _ = world.producer.build(SOURCE, invoice(0, icv=1))
    schema_id = int.from_bytes(value[1:5], "big")
    judge = InvoiceJudge(world.cleared_writer(), FIRST_PIH, len(value) - 1, RULES.text)
    assert judge.add_schema(schema_id, world.registry.schema_by_id(schema_id)) is True
    state = PartitionState()
    assert judge.try_clear(message(value, cast("WireHeaders", headers)), state, state.dirty, NOW, NOW_MICROS) is None
    assert state == {}


# ---- the agent's handle(): the fast path, its fallbacks, and records Python used to let escape ---------


class Panic(BaseException):
    """Stands in for pyo3's PanicException."""


class BrokenJudge:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def try_clear(self, *_: object) -> None:
        raise self.error


def handled(world: World, records: list[Message]) -> list[Sent]:
    out = Collect()
    world.agent.handle(records, PartitionState(), out)
    return out.sent


def comparable(world: World, sent: list[Sent]) -> list[tuple[str, bytes | None, dict[str, Any], bytes | None]]:
    """Topic, key, decoded value without its clock time (handle() reads the clock), and ce_id."""

    def without_clock(value: bytes | None) -> dict[str, Any]:
        decoded = world.agent.decoder.decode(value)[1]
        decoded.pop("cleared_at")
        return decoded

    return [(topic, key, without_clock(value), dict(headers)["ce_id"]) for topic, key, value, headers in sent]


def test_handle_clears_clean_invoices_natively(world: World) -> None:
    record = first_invoice(world)
    python_outcome, python_sent = python_judge(world, record, PartitionState())
    sent = handled(world, [record])
    assert python_outcome == "cleared"
    assert comparable(world, sent) == comparable(world, python_sent)


@pytest.mark.parametrize("error", [RuntimeError("a bug"), Panic("a panic")], ids=["exception", "panic"])
def test_a_failing_fast_path_leaves_the_record_to_python(
    world: World, error: BaseException, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = first_invoice(world)
    _, python_sent = python_judge(world, record, PartitionState())
    monkeypatch.setattr(world.agent, "_judge", BrokenJudge(error))
    sent = handled(world, [record])
    assert comparable(world, sent) == comparable(world, python_sent)
    assert sent[0][0] == CLEARED


def test_a_malformed_traceparent_is_dropped_and_the_invoice_cleared_on_a_new_trace(world: World) -> None:
    sent = handled(world, [first_invoice(world, "bad_trace")])
    assert [topic for topic, *_ in sent] == [CLEARED]
    trace = dict(sent[0][3])["ce_traceparent"]
    assert trace is not None
    assert TRACEPARENT.match(trace.decode())


def test_an_invoice_whose_output_the_envelope_refuses_is_dead_lettered(world: World) -> None:
    record = evolved_record(world, invoice_schema(), invoice(0, tenant="not a tenant id!", icv=1))
    sent = handled(world, [record, first_invoice(world)])  # and the partition keeps flowing
    assert [topic for topic, *_ in sent] == [f"{SOURCE}.dlq", CLEARED]
    _, key, value, headers = sent[0]
    assert (key, value) == (record.key(), record.value())
    assert dict(headers)["dlq_error_class"] == b"PublishError"
    assert dict(headers)["dlq_attempts"] == b"3"
