//! The validation agent's native fast path: an invoice.created record that passes every rule,
//! judged in one pass over its Avro datum and turned into its invoice.cleared event.
//!
//! The reference is Python: `ValidationAgent.judge` (streams/agents/validation.py) and the rules in
//! streams/agents/zatca.py. `InvoiceJudge.try_clear` covers only the case where that code clears the
//! invoice, and must give exactly its result there: the same (key, value, headers, event id) from the
//! same EventWriter, and the same writes to the partition state. Anything else (a rule that fails,
//! a duplicate or re-published invoice, an odd value, header or state, a decode error) returns None
//! without touching anything, and the Python path judges the record as before.
//!
//! One walk (walk.rs) writes the canonical JSON (canonical.rs, hashed for the invoice chain) and
//! captures the fields the rules read, by position: add_schema compiles which field of which
//! record is which, once per writer schema. The decimal rules run on exact scaled integers; they
//! agree with Python's `decimal` (28 digits, ROUND_HALF_EVEN) because every value is refused unless
//! its unscaled integer is below 10**15, so no intermediate result comes near 28 digits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyInt, PyList, PySet, PyString, PyTuple};

use crate::canonical::{CanonicalPlan, JsonSink, RecordState, write_base64};
use crate::decode::DecodeEnv;
use crate::envelope::EventWriter;
use crate::evidence;
use crate::failure::Res;
use crate::input::Input;
use crate::logical_read::{MICROS_PER_DAY, civil_from_days, clock};
use crate::schema::{Field, Node, NodeId, Record, Schema};
use crate::walk::{Layout, Sink, Walk};

/// zatca.OUTCOME_NAMESPACE (6f1c1c8e-8d0a-4b7e-9a43-6c3f5f0f2a11): outcome ids are uuid5 in it.
const OUTCOME_NAMESPACE: [u8; 16] = [
    0x6f, 0x1c, 0x1c, 0x8e, 0x8d, 0x0a, 0x4b, 0x7e, 0x9a, 0x43, 0x6c, 0x3f, 0x5f, 0x0f, 0x2a, 0x11,
];
/// zatca.FUTURE_SKEW: an invoice may be issued up to five minutes after `now`.
const FUTURE_SKEW_MICROS: i64 = 5 * 60 * 1_000_000;
/// Decimals whose unscaled integer reaches this are left to Python.
const DECIMAL_LIMIT: i128 = 1_000_000_000_000_000;
/// Intermediate results must stay below this (28-digit decimal context, with a digit to spare).
const EXACT_LIMIT: i128 = 1_000_000_000_000_000_000_000_000_000;

/// What a field of the invoice is to the rules. The record a field belongs to decides it (see Role),
/// so a Party record used elsewhere, or a record nested in a captured one, captures nothing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    /// Not read by the rules (it only goes into the canonical JSON).
    Other,
    /// Before the root record starts.
    Start,
    InvoiceId,
    TenantId,
    InvoiceNumber,
    Icv,
    PreviousHash,
    Subtype,
    IssuedAt,
    Seller,
    Buyer,
    Lines,
    TaxExclusive,
    VatTotal,
    TaxInclusive,
    Payable,
    Currency,
    TaxCurrency,
    SellerName,
    SellerVat,
    BuyerVat,
    Quantity,
    UnitPrice,
    Discount,
    Category,
    Rate,
    Net,
}

/// The records whose fields are captured, as indexes into Plan::slots; anything else is OTHER.
const ROOT: usize = 0;
const SELLER: usize = 1;
const BUYER: usize = 2;
const LINE: usize = 3;
const OTHER: usize = 4;

/// One writer schema, compiled for the fast path.
struct Plan {
    schema: Schema,
    layout: Layout,
    canonical: CanonicalPlan,
    /// Per captured record (ROOT, SELLER, BUYER, LINE): each field's slot.
    slots: [Vec<Slot>; 4],
    /// The subtype enum's index of "STANDARD" (B2B: the buyer needs a VAT number).
    standard: Option<usize>,
    /// Per vat_category symbol: zatca.CATEGORY_RATES[symbol] unscaled at 2 places, or None for a
    /// symbol that has no rate (Python raises KeyError: left to it).
    rates: Vec<Option<i128>>,
    /// The last canonical JSON's size, for the next buffer.
    json_size: AtomicUsize,
}

fn bind(slots: &mut [Slot], record: &Record, name: &str, slot: Slot) -> Option<NodeId> {
    let index = record.fields.iter().position(|f| f.name == name)?;
    slots[index] = slot;
    Some(record.fields[index].node)
}

fn string(schema: &Schema, id: NodeId) -> Option<()> {
    matches!(schema.node(id), Node::String).then_some(())
}

/// ["null", "string"] in either order (what a missing VAT number decodes from: None).
fn nullable_string(schema: &Schema, id: NodeId) -> Option<()> {
    let Node::Union(union) = schema.node(id) else {
        return None;
    };
    let kinds: Vec<_> = union
        .branches
        .iter()
        .map(|&b| match schema.node(b) {
            Node::Null => 0,
            Node::String => 1,
            _ => 2,
        })
        .collect();
    (kinds == [0, 1] || kinds == [1, 0]).then_some(())
}

fn decimal(schema: &Schema, id: NodeId, places: u32) -> Option<()> {
    matches!(schema.node(id), Node::Decimal { scale, .. } if *scale == places).then_some(())
}

fn record(schema: &Schema, id: NodeId) -> Option<&Record> {
    match schema.node(id) {
        Node::Record(record) => Some(record),
        _ => None,
    }
}

fn enum_symbols(schema: &Schema, id: NodeId) -> Option<&[String]> {
    match schema.node(id) {
        Node::Enum { symbols, .. } => Some(symbols),
        _ => None,
    }
}

impl Plan {
    /// The plan for a schema with the invoice fields the rules read, typed as in
    /// schemas/invoice.created.avsc (decimals: the same scale, any precision), or None.
    fn new(schema: Schema) -> Option<Plan> {
        let canonical = CanonicalPlan::new(&schema);
        if canonical.unsupported.is_some() {
            return None;
        }
        let s = &schema;
        let root = record(s, s.root)?;
        let mut slots: [Vec<Slot>; 4] = Default::default();
        let mut top = vec![Slot::Other; root.fields.len()];
        for (name, slot) in [
            ("invoice_id", Slot::InvoiceId),
            ("tenant_id", Slot::TenantId),
            ("invoice_number", Slot::InvoiceNumber),
            ("previous_invoice_hash", Slot::PreviousHash),
            ("currency", Slot::Currency),
            ("tax_currency", Slot::TaxCurrency),
        ] {
            string(s, bind(&mut top, root, name, slot)?)?;
        }
        for (name, slot) in [
            ("tax_exclusive_total", Slot::TaxExclusive),
            ("vat_total", Slot::VatTotal),
            ("tax_inclusive_total", Slot::TaxInclusive),
            ("payable_amount", Slot::Payable),
        ] {
            decimal(s, bind(&mut top, root, name, slot)?, 2)?;
        }
        let icv = bind(&mut top, root, "icv", Slot::Icv)?;
        matches!(s.node(icv), Node::Long).then_some(())?;
        let issued = bind(&mut top, root, "issued_at", Slot::IssuedAt)?;
        matches!(s.node(issued), Node::Timestamp { local: false, .. }).then_some(())?;
        let subtype = enum_symbols(s, bind(&mut top, root, "subtype", Slot::Subtype)?)?;
        let standard = subtype.iter().position(|symbol| symbol == "STANDARD");

        let seller = record(s, bind(&mut top, root, "seller", Slot::Seller)?)?;
        let mut seller_slots = vec![Slot::Other; seller.fields.len()];
        string(
            s,
            bind(&mut seller_slots, seller, "name", Slot::SellerName)?,
        )?;
        nullable_string(
            s,
            bind(&mut seller_slots, seller, "vat_number", Slot::SellerVat)?,
        )?;

        // ["null", Party] in either order.
        let buyer = match s.node(bind(&mut top, root, "buyer", Slot::Buyer)?) {
            Node::Union(union) if union.branches.len() == 2 => {
                let (a, b) = (union.branches[0], union.branches[1]);
                match (s.node(a), s.node(b)) {
                    (Node::Null, Node::Record(r)) | (Node::Record(r), Node::Null) => r,
                    _ => return None,
                }
            }
            _ => return None,
        };
        let mut buyer_slots = vec![Slot::Other; buyer.fields.len()];
        nullable_string(
            s,
            bind(&mut buyer_slots, buyer, "vat_number", Slot::BuyerVat)?,
        )?;

        let Node::Array { items } = s.node(bind(&mut top, root, "lines", Slot::Lines)?) else {
            return None;
        };
        let line = record(s, *items)?;
        let mut line_slots = vec![Slot::Other; line.fields.len()];
        for (name, slot, places) in [
            ("quantity", Slot::Quantity, 3),
            ("unit_price", Slot::UnitPrice, 2),
            ("discount", Slot::Discount, 2),
            ("vat_rate", Slot::Rate, 2),
            ("net_amount", Slot::Net, 2),
        ] {
            decimal(s, bind(&mut line_slots, line, name, slot)?, places)?;
        }
        let categories = enum_symbols(
            s,
            bind(&mut line_slots, line, "vat_category", Slot::Category)?,
        )?;
        let rates = categories
            .iter()
            .map(|symbol| match symbol.as_str() {
                "S" => Some(1500),
                "Z" | "E" | "O" => Some(0),
                _ => None,
            })
            .collect();

        slots[ROOT] = top;
        slots[SELLER] = seller_slots;
        slots[BUYER] = buyer_slots;
        slots[LINE] = line_slots;
        Some(Plan {
            layout: Layout::new(&schema),
            canonical,
            slots,
            standard,
            rates,
            json_size: AtomicUsize::new(512),
            schema,
        })
    }
}

/// A decimal's plain text (e.g. "1150.00"), kept for the QR code and the cleared event.
#[derive(Clone, Copy, Default)]
struct Text {
    len: u8,
    buf: [u8; 32],
}

impl Text {
    fn of(text: &[u8]) -> Option<Text> {
        let mut out = Text {
            len: u8::try_from(text.len()).ok()?,
            buf: [0; 32],
        };
        out.buf.get_mut(..text.len())?.copy_from_slice(text);
        Some(out)
    }

    fn as_str(&self) -> &str {
        // Decimal text is ASCII.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

#[derive(Clone, Copy, Default)]
struct Line {
    quantity: Option<i128>,
    unit_price: Option<i128>,
    discount: Option<i128>,
    rate: Option<i128>,
    net: Option<i128>,
    category: Option<usize>,
}

/// What the rules read, captured during the walk (strings borrow from the datum).
#[derive(Default)]
struct Invoice<'a> {
    invoice_id: Option<&'a [u8]>,
    tenant_id: Option<&'a [u8]>,
    invoice_number: Option<&'a [u8]>,
    previous_hash: Option<&'a [u8]>,
    currency: Option<&'a [u8]>,
    tax_currency: Option<&'a [u8]>,
    seller_name: Option<&'a [u8]>,
    seller_vat: Option<&'a [u8]>,
    buyer_vat: Option<&'a [u8]>,
    buyer: bool,
    icv: Option<i64>,
    subtype: Option<usize>,
    issued_at: Option<i64>,
    tax_exclusive: Option<i128>,
    vat_total: Option<i128>,
    tax_inclusive: Option<i128>,
    payable: Option<i128>,
    vat_total_text: Text,
    tax_inclusive_text: Text,
    lines: Vec<Line>,
    /// A decimal at or beyond DECIMAL_LIMIT was read: Python decides.
    oversize: bool,
}

/// The unscaled integer of a decimal's plain text, if below DECIMAL_LIMIT.
fn unscaled(text: &[u8]) -> Option<i128> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let mut value: i128 = 0;
    for &b in digits {
        match b {
            b'.' => {}
            b'0'..=b'9' => {
                value = value * 10 + i128::from(b - b'0');
                if value >= DECIMAL_LIMIT {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(if negative { -value } else { value })
}

/// The canonical JSON sink, capturing the invoice's fields on the way.
struct JudgeSink<'a, 'p, 'py> {
    json: JsonSink<'a, 'p, 'py>,
    plan: &'p Plan,
    slot: Slot,
    invoice: Invoice<'a>,
}

pub struct JudgeRec {
    inner: RecordState,
    role: usize,
    /// The slot the record is the value of, current again once it ends.
    outer: Slot,
}

impl<'a> JudgeSink<'a, '_, '_> {
    fn text(&mut self, raw: &'a [u8]) {
        let invoice = &mut self.invoice;
        let target = match self.slot {
            Slot::InvoiceId => &mut invoice.invoice_id,
            Slot::TenantId => &mut invoice.tenant_id,
            Slot::InvoiceNumber => &mut invoice.invoice_number,
            Slot::PreviousHash => &mut invoice.previous_hash,
            Slot::Currency => &mut invoice.currency,
            Slot::TaxCurrency => &mut invoice.tax_currency,
            Slot::SellerName => &mut invoice.seller_name,
            Slot::SellerVat => &mut invoice.seller_vat,
            Slot::BuyerVat => &mut invoice.buyer_vat,
            _ => return,
        };
        *target = Some(raw);
    }

    fn number(&mut self, text: &[u8]) {
        let invoice = &mut self.invoice;
        let line = invoice.lines.last_mut();
        let target = match (self.slot, line) {
            (Slot::TaxExclusive, _) => &mut invoice.tax_exclusive,
            (Slot::VatTotal, _) => {
                invoice.vat_total_text = Text::of(text).unwrap_or_default();
                &mut invoice.vat_total
            }
            (Slot::TaxInclusive, _) => {
                invoice.tax_inclusive_text = Text::of(text).unwrap_or_default();
                &mut invoice.tax_inclusive
            }
            (Slot::Payable, _) => &mut invoice.payable,
            (Slot::Quantity, Some(line)) => &mut line.quantity,
            (Slot::UnitPrice, Some(line)) => &mut line.unit_price,
            (Slot::Discount, Some(line)) => &mut line.discount,
            (Slot::Rate, Some(line)) => &mut line.rate,
            (Slot::Net, Some(line)) => &mut line.net,
            _ => return,
        };
        *target = unscaled(text);
        if target.is_none() {
            invoice.oversize = true;
        }
    }
}

impl<'a> Sink<'a> for JudgeSink<'a, '_, '_> {
    type Value = ();
    type Seq = bool;
    type Map = (usize, usize);
    type Key = (&'a [u8], usize);
    type Rec = JudgeRec;

    #[inline]
    fn null(&mut self) -> Res<()> {
        self.json.null()
    }

    #[inline]
    fn boolean(&mut self, value: bool) -> Res<()> {
        self.json.boolean(value)
    }

    #[inline]
    fn int(&mut self, value: i32) -> Res<()> {
        self.json.int(value)
    }

    #[inline]
    fn long(&mut self, value: i64) -> Res<()> {
        if self.slot == Slot::Icv {
            self.invoice.icv = Some(value);
        }
        self.json.long(value)
    }

    fn float(&mut self, value: f32) -> Res<()> {
        self.json.float(value)
    }

    fn double(&mut self, value: f64) -> Res<()> {
        self.json.double(value)
    }

    #[inline]
    fn bytes(&mut self, value: &'a [u8]) -> Res<()> {
        self.json.bytes(value)
    }

    #[inline]
    fn string(&mut self, raw: &'a [u8], at: usize) -> Res<()> {
        // The JSON sink checks UTF-8 first: a captured string is valid text.
        self.json.string(raw, at)?;
        self.text(raw);
        Ok(())
    }

    fn uuid(&mut self, raw: &'a [u8], at: usize) -> Res<()> {
        self.json.uuid(raw, at)
    }

    #[inline]
    fn symbol(&mut self, node: NodeId, index: usize) -> Res<()> {
        match self.slot {
            Slot::Subtype => self.invoice.subtype = Some(index),
            Slot::Category => {
                if let Some(line) = self.invoice.lines.last_mut() {
                    line.category = Some(index);
                }
            }
            _ => {}
        }
        self.json.symbol(node, index)
    }

    #[inline]
    fn decimal(&mut self, text: &[u8]) -> Res<()> {
        self.number(text);
        self.json.decimal(text)
    }

    fn timestamp(&mut self, micros: i64, local: bool) -> Res<()> {
        if self.slot == Slot::IssuedAt {
            self.invoice.issued_at = Some(micros);
        }
        self.json.timestamp(micros, local)
    }

    fn date(&mut self, days: i64) -> Res<()> {
        self.json.date(days)
    }

    fn time_of_day(&mut self, micros: i64) -> Res<()> {
        self.json.time_of_day(micros)
    }

    #[inline]
    fn seq_begin(&mut self) -> Res<bool> {
        self.json.seq_begin()
    }

    #[inline]
    fn seq_reserve(&mut self, seq: &mut bool, count: usize) {
        self.json.seq_reserve(seq, count);
    }

    #[inline]
    fn seq_item(&mut self, seq: &mut bool) {
        self.json.seq_item(seq);
    }

    #[inline]
    fn seq_push(&mut self, seq: &mut bool, value: ()) -> Res<()> {
        self.json.seq_push(seq, value)
    }

    #[inline]
    fn seq_end(&mut self, seq: bool) -> Res<()> {
        self.json.seq_end(seq)
    }

    #[inline]
    fn map_begin(&mut self) -> Res<(usize, usize)> {
        self.json.map_begin()
    }

    #[inline]
    fn map_key(
        &mut self,
        map: &mut (usize, usize),
        raw: &'a [u8],
        at: usize,
    ) -> Res<(&'a [u8], usize)> {
        self.json.map_key(map, raw, at)
    }

    #[inline]
    fn map_insert(
        &mut self,
        map: &mut (usize, usize),
        key: (&'a [u8], usize),
        value: (),
    ) -> Res<()> {
        self.json.map_insert(map, key, value)
    }

    #[inline]
    fn map_end(&mut self, map: (usize, usize)) -> Res<()> {
        self.json.map_end(map)
    }

    #[inline]
    fn record_begin(&mut self, node: NodeId, record: &Record) -> Res<JudgeRec> {
        let role = match self.slot {
            Slot::Start => ROOT,
            Slot::Seller => SELLER,
            Slot::Buyer => {
                self.invoice.buyer = true;
                BUYER
            }
            Slot::Lines => {
                self.invoice.lines.push(Line::default());
                LINE
            }
            _ => OTHER,
        };
        Ok(JudgeRec {
            inner: self.json.record_begin(node, record)?,
            role,
            outer: self.slot,
        })
    }

    #[inline]
    fn field_begin(&mut self, rec: &mut JudgeRec, index: usize) {
        self.slot = self
            .plan
            .slots
            .get(rec.role)
            .and_then(|slots| slots.get(index))
            .copied()
            .unwrap_or(Slot::Other);
        self.json.field_begin(&mut rec.inner, index);
    }

    #[inline]
    fn field_end(&mut self, rec: &mut JudgeRec, index: usize, field: &Field, value: ()) -> Res<()> {
        self.json.field_end(&mut rec.inner, index, field, value)
    }

    #[inline]
    fn record_end(&mut self, rec: JudgeRec) -> Res<()> {
        self.slot = rec.outer;
        self.json.record_end(rec.inner)
    }
}

/// What zatca.VAT_NUMBER surely matches: 15 ASCII digits, the first and the last 3. (The regex
/// also takes other Unicode digits and a trailing newline: those are left to Python.)
fn is_vat(text: &[u8]) -> bool {
    text.len() == 15 && text[0] == b'3' && text[14] == b'3' && text.iter().all(u8::is_ascii_digit)
}

/// `x / divisor` rounded half to even (Decimal.quantize under ROUND_HALF_EVEN).
fn round_half_even(x: i128, divisor: i128) -> i128 {
    let quotient = x / divisor;
    let twice = 2 * (x % divisor).abs();
    if twice > divisor || (twice == divisor && quotient % 2 != 0) {
        quotient + x.signum()
    } else {
        quotient
    }
}

/// Whether |a - b| <= 0.01 for values at 2 places.
fn close(a: i128, b: i128) -> bool {
    (a - b).abs() <= 1
}

/// zatca.stateless_violations finds nothing (Some), or it may find something or raise (None).
fn stateless_ok(plan: &Plan, invoice: &Invoice<'_>, now_micros: i64) -> Option<()> {
    if invoice.oversize || !is_vat(invoice.seller_vat?) {
        return None;
    }
    if Some(invoice.subtype?) == plan.standard && !(invoice.buyer && is_vat(invoice.buyer_vat?)) {
        return None;
    }
    // zatca._line_violations, then the sums zatca._total_violations makes (units: net 0.01,
    // VAT 0.000001, i.e. net * rate / 100 with both at 2 places).
    let mut net_sum: i128 = 0;
    let mut vat_sum: i128 = 0;
    for line in &invoice.lines {
        let rate = line.rate?;
        if rate != (*plan.rates.get(line.category?)?)? {
            return None;
        }
        // quantity (3 places) * unit_price (2) - discount (2), at 5 places.
        let product = line.quantity? * line.unit_price?;
        let gross = product.checked_sub(line.discount? * 1000)?;
        if product.abs() >= EXACT_LIMIT || gross.abs() >= EXACT_LIMIT {
            return None;
        }
        let net = line.net?;
        if !close(net, round_half_even(gross, 1000)) {
            return None;
        }
        net_sum = net_sum.checked_add(net)?;
        vat_sum = vat_sum.checked_add(net * rate)?;
        if net_sum.abs() >= EXACT_LIMIT || vat_sum.abs() >= EXACT_LIMIT {
            return None;
        }
    }
    let (exclusive, vat, inclusive) = (
        invoice.tax_exclusive?,
        invoice.vat_total?,
        invoice.tax_inclusive?,
    );
    let ok = close(exclusive, net_sum)
        && close(vat, round_half_even(vat_sum, 10_000))
        && close(inclusive, exclusive + vat)
        && close(invoice.payable?, inclusive)
        && invoice.tax_currency? == b"SAR"
        && invoice.issued_at? <= now_micros.checked_add(FUTURE_SKEW_MICROS)?;
    ok.then_some(())
}

/// One SHA-1 round on the working variables (a, b, c, d, e).
#[inline(always)]
fn sha1_step(v: &mut [u32; 5], f: u32, k: u32, word: u32) {
    let [a, b, c, d, e] = *v;
    let t = a
        .rotate_left(5)
        .wrapping_add(f)
        .wrapping_add(e)
        .wrapping_add(k)
        .wrapping_add(word);
    *v = [t, a, b.rotate_left(30), c, d];
}

/// The SHA-1 compression function over one 64-byte block.
fn sha1_block(h: &mut [u32; 5], block: &[u8]) {
    let mut w = [0u32; 80];
    for (word, bytes) in w.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    for i in 16..80 {
        w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
    }
    let mut v = *h;
    for &word in &w[..20] {
        let [_, b, c, d, _] = v;
        sha1_step(&mut v, (b & c) | (!b & d), 0x5A82_7999, word);
    }
    for &word in &w[20..40] {
        let [_, b, c, d, _] = v;
        sha1_step(&mut v, b ^ c ^ d, 0x6ED9_EBA1, word);
    }
    for &word in &w[40..60] {
        let [_, b, c, d, _] = v;
        sha1_step(&mut v, (b & c) | (b & d) | (c & d), 0x8F1B_BCDC, word);
    }
    for &word in &w[60..] {
        let [_, b, c, d, _] = v;
        sha1_step(&mut v, b ^ c ^ d, 0xCA62_C1D6, word);
    }
    for (state, add) in h.iter_mut().zip(v) {
        *state = state.wrapping_add(add);
    }
}

/// SHA-1 (FIPS 180-4): only uuid5 needs it.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut blocks = data.chunks_exact(64);
    for block in &mut blocks {
        sha1_block(&mut h, block);
    }
    let rest = blocks.remainder();
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let end = if rest.len() < 56 { 64 } else { 128 };
    tail[end - 8..end].copy_from_slice(&(data.len() as u64).wrapping_mul(8).to_be_bytes());
    for block in tail[..end].chunks_exact(64) {
        sha1_block(&mut h, block);
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// zatca.outcome_id(event_id, what): str(uuid5(OUTCOME_NAMESPACE, f"{event_id}:{what}")).
fn outcome_id(event_id: &str, what: &str) -> String {
    let mut name = Vec::with_capacity(16 + event_id.len() + 1 + what.len());
    name.extend_from_slice(&OUTCOME_NAMESPACE);
    name.extend_from_slice(event_id.as_bytes());
    name.push(b':');
    name.extend_from_slice(what.as_bytes());
    let mut raw = sha1(&name);
    raw[6] = (raw[6] & 0x0F) | 0x50;
    raw[8] = (raw[8] & 0x3F) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, &b) in raw[..16].iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// zatca.qr_payload: base64 of the TLV (tag, length, at most 255 bytes) of the seller's name and
/// VAT number, the issue time "YYYY-MM-DDTHH:MM:SSZ", the total with VAT and the VAT total.
fn qr_payload(invoice: &Invoice<'_>) -> Option<String> {
    let micros = invoice.issued_at?;
    let (year, month, day) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
    let (hour, minute, second, _) = clock(micros.rem_euclid(MICROS_PER_DAY));
    // "YYYY-MM-DDTHH:MM:SSZ" (years 1 to 9999, as the walk checked).
    let mut issued = *b"0000-00-00T00:00:00Z";
    let year = u32::try_from(year).ok()?;
    for (at, value, width) in [
        (0, year, 4),
        (5, u32::from(month), 2),
        (8, u32::from(day), 2),
        (11, u32::from(hour), 2),
        (14, u32::from(minute), 2),
        (17, u32::from(second), 2),
    ] {
        let mut rest = value;
        for digit in issued[at..at + width].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
    }
    let values: [&[u8]; 5] = [
        invoice.seller_name?,
        invoice.seller_vat?,
        &issued,
        invoice.tax_inclusive_text.as_str().as_bytes(),
        invoice.vat_total_text.as_str().as_bytes(),
    ];
    let mut tlv = Vec::with_capacity(160);
    for (tag, value) in (1u8..).zip(values) {
        let value = &value[..value.len().min(255)];
        tlv.push(tag);
        tlv.push(value.len() as u8);
        tlv.extend_from_slice(value);
    }
    let mut out = Vec::with_capacity(tlv.len().div_ceil(3) * 4);
    write_base64(&mut out, &tlv);
    String::from_utf8(out).ok()
}

/// SourceRecord.header's text: None for a None value, the text of valid UTF-8 bytes; Err for
/// anything else (Python would decode with replacement characters or take str(value)).
fn header_text<'py>(raw: &Bound<'py, PyAny>) -> Result<Option<Bound<'py, PyString>>, ()> {
    if raw.is_none() {
        return Ok(None);
    }
    let bytes = raw.cast::<PyBytes>().map_err(|_| ())?;
    let text = std::str::from_utf8(bytes.as_bytes()).map_err(|_| ())?;
    Ok(Some(PyString::new(raw.py(), text)))
}

/// The first ce_id and ce_traceparent headers' text (SourceRecord.header), or Err when the headers
/// are not a list or tuple of (str, bytes | None) pairs.
#[allow(clippy::type_complexity)]
fn event_headers<'py>(
    headers: &Bound<'py, PyAny>,
) -> Result<(Option<Bound<'py, PyString>>, Option<Bound<'py, PyString>>), ()> {
    let (mut id, mut trace, mut id_seen, mut trace_seen) = (None, None, false, false);
    if headers.is_none() {
        return Ok((id, trace));
    }
    let mut visit = |item: Bound<'py, PyAny>| -> Result<(), ()> {
        let pair = item.cast_exact::<PyTuple>().map_err(|_| ())?;
        if pair.len() != 2 {
            return Err(());
        }
        let key = pair.get_item(0).map_err(|_| ())?;
        let key = key.cast_exact::<PyString>().map_err(|_| ())?;
        match key.to_str().map_err(|_| ())? {
            "ce_id" if !id_seen => {
                id_seen = true;
                id = header_text(&pair.get_item(1).map_err(|_| ())?)?;
            }
            "ce_traceparent" if !trace_seen => {
                trace_seen = true;
                trace = header_text(&pair.get_item(1).map_err(|_| ())?)?;
            }
            _ => {}
        }
        Ok(())
    };
    if let Ok(list) = headers.cast_exact::<PyList>() {
        for item in list.iter() {
            visit(item)?;
        }
    } else {
        for item in headers.cast_exact::<PyTuple>().map_err(|_| ())?.iter() {
            visit(item)?;
        }
    }
    Ok((id, trace))
}

/// `message.method() or default` for topic(), partition() and offset(): None, or exactly str/int.
fn coordinate(value: &Bound<'_, PyAny>) -> Result<Option<String>, ()> {
    if value.is_none() {
        return Ok(None);
    }
    if let Ok(text) = value.cast_exact::<PyString>() {
        return text.to_str().map(|s| Some(s.to_owned())).map_err(|_| ());
    }
    if value.is_exact_instance_of::<PyInt>() {
        return value
            .extract::<i64>()
            .map(|n| Some(n.to_string()))
            .map_err(|_| ());
    }
    Err(())
}

/// The seller's chain state as SellerChain.from_json reads it: (last ICV, last hash), the ICV as an
/// int object and as a number. None for anything but no state or a tuple/list [int, str, ...].
#[allow(clippy::type_complexity)]
fn seller_chain<'py>(
    found: Option<Bound<'py, PyAny>>,
    first_pih: &Bound<'py, PyString>,
) -> Option<(Bound<'py, PyAny>, i64, Bound<'py, PyString>)> {
    let py = first_pih.py();
    let zero = || 0i64.into_pyobject(py).map(|n| n.into_any()).ok();
    let Some(data) = found.filter(|d| !d.is_none()) else {
        return Some((zero()?, 0, first_pih.clone()));
    };
    let items = if let Ok(list) = data.cast_exact::<PyList>() {
        list.as_sequence().to_tuple().ok()?
    } else {
        data.cast_exact::<PyTuple>().ok()?.clone()
    };
    if items.is_empty() {
        return Some((zero()?, 0, first_pih.clone()));
    }
    let icv = items.get_item(0).ok()?;
    let hash = items.get_item(1).ok()?;
    if !icv.is_exact_instance_of::<PyInt>() {
        return None;
    }
    let number = icv.extract::<i64>().ok()?;
    let hash = hash.cast_exact::<PyString>().ok()?.clone();
    Some((icv, number, hash))
}

/// The validation agent's fast path for invoices that pass every rule (see the module docs).
///
/// `InvoiceJudge(cleared_writer, first_pih, max_record_bytes)`; `add_schema(schema_id, schema_json)`
/// compiles a writer schema (False when the fast path does not support it); `try_clear(message,
/// state, dirty, now, now_micros)` returns the invoice.cleared event as EventEncoder.build returns
/// it, updating `state` and `dirty` as ValidationAgent.judge would; None when the record is not
/// for the fast path (nothing changed); the schema id (an int) when it was never added.
#[pyclass(frozen, module = "streams._avro_native")]
pub struct InvoiceJudge {
    writer: Py<EventWriter>,
    first_pih: Py<PyString>,
    max_record_bytes: usize,
    env: DecodeEnv,
    decimal: Py<PyAny>,
    plans: Mutex<HashMap<u32, Option<Arc<Plan>>>>,
}

#[pymethods]
impl InvoiceJudge {
    #[new]
    fn new(
        py: Python<'_>,
        cleared_writer: Py<EventWriter>,
        first_pih: Py<PyString>,
        max_record_bytes: usize,
    ) -> PyResult<Self> {
        Ok(InvoiceJudge {
            writer: cleared_writer,
            first_pih,
            max_record_bytes,
            env: DecodeEnv::new(py)?,
            decimal: py.import("decimal")?.getattr("Decimal")?.unbind(),
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// Compiles the writer schema registered under `schema_id`; whether the fast path supports it.
    fn add_schema(&self, py: Python<'_>, schema_id: u32, schema_json: &str) -> bool {
        let plan = Schema::compile(py, schema_json)
            .ok()
            .and_then(Plan::new)
            .map(Arc::new);
        let supported = plan.is_some();
        self.plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(schema_id, plan);
        supported
    }

    /// The cleared event `(key, value, headers, event_id)`, None, or an unknown schema id.
    fn try_clear<'py>(
        &self,
        py: Python<'py>,
        message: &Bound<'py, PyAny>,
        state: &Bound<'py, PyDict>,
        dirty: &Bound<'py, PySet>,
        now: &Bound<'py, PyAny>,
        now_micros: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let none = || Ok(py.None().into_bound(py));
        let value = message.call_method0(intern!(py, "value"))?;
        let Ok(value) = value.cast::<PyBytes>() else {
            return none();
        };
        let data = value.as_bytes();
        if data.len() > self.max_record_bytes || data.len() < 5 || data[0] != 0 {
            return none();
        }
        let schema_id = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
        let plan = {
            let plans = self
                .plans
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match plans.get(&schema_id) {
                None => {
                    let id = schema_id
                        .into_pyobject(py)
                        .unwrap_or_else(|never| match never {});
                    return Ok(id.into_any());
                }
                Some(None) => return none(),
                Some(Some(plan)) => Arc::clone(plan),
            }
        };

        let json = JsonSink::new(
            py,
            &plan.canonical,
            &self.env,
            plan.json_size.load(Ordering::Relaxed),
        );
        let mut walk = Walk {
            schema: &plan.schema,
            layout: &plan.layout,
            sink: JudgeSink {
                json,
                plan: &plan,
                slot: Slot::Start,
                invoice: Invoice::default(),
            },
        };
        if walk
            .datum(&mut Input::new(&data[5..]))
            .and_then(|()| walk.sink.json.finish())
            .is_err()
        {
            return none();
        }
        let JudgeSink { json, invoice, .. } = walk.sink;
        let canonical = json.output();
        plan.json_size.store(canonical.len(), Ordering::Relaxed);
        if stateless_ok(&plan, &invoice, now_micros).is_none() {
            return none();
        }
        let (
            Some(invoice_id),
            Some(tenant_id),
            Some(invoice_number),
            Some(previous_hash),
            Some(currency),
            Some(seller_vat),
            Some(icv),
        ) = (
            text(invoice.invoice_id),
            text(invoice.tenant_id),
            text(invoice.invoice_number),
            invoice.previous_hash,
            text(invoice.currency),
            text(invoice.seller_vat),
            invoice.icv,
        )
        else {
            return none();
        };

        // SourceRecord.event_id and header("ce_traceparent").
        let headers = message.call_method0(intern!(py, "headers"))?;
        let Ok((ce_id, trace)) = event_headers(&headers) else {
            return none();
        };
        let event_id = match ce_id {
            Some(id) if !id.to_str()?.is_empty() => id,
            _ => {
                let topic = coordinate(&message.call_method0(intern!(py, "topic"))?);
                let partition = coordinate(&message.call_method0(intern!(py, "partition"))?);
                let offset = coordinate(&message.call_method0(intern!(py, "offset"))?);
                let (Ok(topic), Ok(partition), Ok(offset)) = (topic, partition, offset) else {
                    return none();
                };
                // `or`: an empty topic and a zero partition or offset are their defaults anyway.
                let id = format!(
                    "{}/{}/{}",
                    topic.unwrap_or_default(),
                    partition.unwrap_or_else(|| "0".into()),
                    offset.unwrap_or_else(|| "0".into()),
                );
                PyString::new(py, &id)
            }
        };
        let event_text = event_id.to_str()?;

        // The stateful rules on the partition's state (a first delivery only).
        let invoice_key = PyString::new(py, &["invoice:", invoice_id].concat());
        if state
            .get_item(&invoice_key)?
            .is_some_and(|seen| !seen.is_none())
        {
            return none();
        }
        let seller_key = PyString::new(py, &["seller:", tenant_id].concat());
        let first_pih = self.first_pih.bind(py);
        let Some((last_icv, last_icv_number, last_hash)) =
            seller_chain(state.get_item(&seller_key)?, first_pih)
        else {
            return none();
        };
        if icv <= last_icv_number
            || last_hash.to_str().ok().map(str::as_bytes) != Some(previous_hash)
        {
            return none();
        }

        let mut digest = Vec::with_capacity(44);
        write_base64(
            &mut digest,
            &evidence::sha256(evidence::detected(), canonical),
        );
        let digest = PyString::new(py, std::str::from_utf8(&digest).unwrap_or_default());
        let Some(qr) = qr_payload(&invoice) else {
            return none();
        };
        let outcome = PyString::new(py, &outcome_id(event_text, "cleared"));
        let decimal = self.decimal.bind(py);
        let cleared = PyDict::new(py);
        cleared.set_item(intern!(py, "invoice_id"), invoice_id)?;
        cleared.set_item(intern!(py, "tenant_id"), tenant_id)?;
        cleared.set_item(intern!(py, "invoice_number"), invoice_number)?;
        cleared.set_item(intern!(py, "seller_vat_number"), seller_vat)?;
        cleared.set_item(intern!(py, "invoice_hash"), &digest)?;
        cleared.set_item(intern!(py, "qr_payload"), qr)?;
        cleared.set_item(
            intern!(py, "tax_inclusive_total"),
            decimal.call1((invoice.tax_inclusive_text.as_str(),))?,
        )?;
        cleared.set_item(
            intern!(py, "vat_total"),
            decimal.call1((invoice.vat_total_text.as_str(),))?,
        )?;
        cleared.set_item(intern!(py, "currency"), currency)?;
        cleared.set_item(intern!(py, "cleared_at"), now)?;
        cleared.set_item(intern!(py, "source_event_id"), &event_id)?;
        let built = self.writer.get().build(
            py,
            cleared.as_any(),
            None,
            None,
            None,
            Some(outcome.as_any()),
            None,
            trace.as_ref().map(Bound::as_any),
        );
        let Ok(built) = built else {
            return none();
        };

        // PartitionState writes, in judge's order: the invoice, then the seller's chain.
        let seen = PyTuple::new(py, [event_id.as_any(), &last_icv, last_hash.as_any()])?;
        state.set_item(&invoice_key, seen)?;
        let chain = PyTuple::new(py, [icv.into_pyobject(py)?.as_any(), digest.as_any()])?;
        state.set_item(&seller_key, chain)?;
        dirty.add(&invoice_key)?;
        dirty.add(&seller_key)?;
        Ok(built.into_pyobject(py)?.into_any())
    }
}

/// A captured string as text (the JSON sink has checked it is UTF-8).
fn text(raw: Option<&[u8]>) -> Option<&str> {
    std::str::from_utf8(raw?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha1_known_answers() {
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(&sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(
            hex(&sha1(&[b'a'; 1_000_000])),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
    }

    #[test]
    fn half_even() {
        assert_eq!(round_half_even(1500, 1000), 2);
        assert_eq!(round_half_even(2500, 1000), 2);
        assert_eq!(round_half_even(-2500, 1000), -2);
        assert_eq!(round_half_even(-2501, 1000), -3);
        assert_eq!(round_half_even(2499, 1000), 2);
        assert_eq!(round_half_even(-1500, 1000), -2);
        assert_eq!(round_half_even(0, 1000), 0);
    }

    #[test]
    fn decimal_text_to_unscaled() {
        assert_eq!(unscaled(b"-871.00"), Some(-87100));
        assert_eq!(unscaled(b"0.005"), Some(5));
        assert_eq!(unscaled(b"9999999999999.99"), Some(999_999_999_999_999));
        assert_eq!(unscaled(b"10000000000000.00"), None);
        assert!(is_vat(b"300000000000003"));
        assert!(!is_vat(b"30000000000000\n"));
    }
}
