//! The walk's sink for the fast path: it writes the canonical JSON and captures, on the way, the
//! fields the cleared event reads (by Slot) and those the rule table reads (by FieldRef).

use crate::canonical::{JsonSink, RecordState};
use crate::failure::Res;
use crate::rules::{Cap, Captured, FieldRef, parse_dec};
use crate::schema::{Field, NodeId, Record};
use crate::walk::Sink;

use super::plan::{BUYER, LINE, OTHER, Plan, ROOT, SELLER, Slot};

/// A decimal's plain text (e.g. "1150.00"), kept for the QR code and the cleared event.
#[derive(Clone, Copy, Default)]
pub struct Text {
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

    pub fn as_str(&self) -> &str {
        // Decimal text is ASCII.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

/// What the cleared event and the rules read, captured during the walk (strings borrow from the datum).
#[derive(Default)]
pub struct Invoice<'a> {
    pub invoice_id: Option<&'a [u8]>,
    pub tenant_id: Option<&'a [u8]>,
    pub invoice_number: Option<&'a [u8]>,
    pub previous_hash: Option<&'a [u8]>,
    pub currency: Option<&'a [u8]>,
    pub seller_name: Option<&'a [u8]>,
    pub seller_vat: Option<&'a [u8]>,
    pub icv: Option<i64>,
    pub issued_at: Option<i64>,
    pub vat_total_text: Text,
    pub tax_inclusive_text: Text,
    /// A decimal at or beyond rules::DECIMAL_LIMIT was read: Python decides.
    pub oversize: bool,
    /// The rule table's fields.
    pub caps: Captured<'a>,
}

/// The canonical JSON sink, capturing the invoice's fields on the way.
pub struct JudgeSink<'a, 'p, 'py> {
    pub json: JsonSink<'a, 'p, 'py>,
    plan: &'p Plan,
    slot: Slot,
    /// Where the current field's value goes for the rules (taken by the first value, so a value
    /// nested in it captures nothing).
    cap: Option<FieldRef>,
    stride: usize,
    pub invoice: Invoice<'a>,
}

pub struct JudgeRec {
    inner: RecordState,
    role: usize,
    /// The slot the record is the value of, current again once it ends.
    outer: Slot,
}

impl<'a, 'p, 'py> JudgeSink<'a, 'p, 'py> {
    pub fn new(json: JsonSink<'a, 'p, 'py>, plan: &'p Plan, scalars: usize, stride: usize) -> Self {
        let mut invoice = Invoice::default();
        invoice.caps.scalars = vec![Cap::Missing; scalars];
        // Room for a few lines' captures up front: one allocation for most invoices.
        invoice.caps.lines = Vec::with_capacity(stride * 8);
        JudgeSink {
            json,
            plan,
            slot: Slot::Start,
            cap: None,
            stride,
            invoice,
        }
    }

    fn put(&mut self, value: Cap<'a>) {
        let caps = &mut self.invoice.caps;
        let target = match self.cap.take() {
            Some(FieldRef::Scalar(i)) => caps.scalars.get_mut(i),
            Some(FieldRef::Line(i)) => {
                let start = caps.lines.len().saturating_sub(self.stride);
                caps.lines.get_mut(start + i)
            }
            None => None,
        };
        if let Some(target) = target {
            *target = value;
        }
    }

    fn text(&mut self, raw: &'a [u8]) {
        let invoice = &mut self.invoice;
        let target = match self.slot {
            Slot::InvoiceId => &mut invoice.invoice_id,
            Slot::TenantId => &mut invoice.tenant_id,
            Slot::InvoiceNumber => &mut invoice.invoice_number,
            Slot::PreviousHash => &mut invoice.previous_hash,
            Slot::Currency => &mut invoice.currency,
            Slot::SellerName => &mut invoice.seller_name,
            Slot::SellerVat => &mut invoice.seller_vat,
            _ => return,
        };
        *target = Some(raw);
    }

    fn number(&mut self, text: &[u8]) {
        let parsed = parse_dec(text);
        let invoice = &mut self.invoice;
        let kept = match self.slot {
            Slot::VatTotal => Some(&mut invoice.vat_total_text),
            Slot::TaxInclusive => Some(&mut invoice.tax_inclusive_text),
            _ => None,
        };
        if let Some(kept) = kept {
            *kept = Text::of(text).unwrap_or_default();
            invoice.oversize |= parsed.is_none();
        }
        if self.cap.is_some() {
            invoice.oversize |= parsed.is_none();
            self.put(parsed.map_or(Cap::Other, Cap::Dec));
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
        self.put(Cap::Null);
        self.json.null()
    }

    #[inline]
    fn boolean(&mut self, value: bool) -> Res<()> {
        self.put(Cap::Other);
        self.json.boolean(value)
    }

    #[inline]
    fn int(&mut self, value: i32) -> Res<()> {
        self.put(Cap::Other);
        self.json.int(value)
    }

    #[inline]
    fn long(&mut self, value: i64) -> Res<()> {
        if self.slot == Slot::Icv {
            self.invoice.icv = Some(value);
        }
        self.put(Cap::Other);
        self.json.long(value)
    }

    fn float(&mut self, value: f32) -> Res<()> {
        self.put(Cap::Other);
        self.json.float(value)
    }

    fn double(&mut self, value: f64) -> Res<()> {
        self.put(Cap::Other);
        self.json.double(value)
    }

    #[inline]
    fn bytes(&mut self, value: &'a [u8]) -> Res<()> {
        self.put(Cap::Other);
        self.json.bytes(value)
    }

    #[inline]
    fn string(&mut self, raw: &'a [u8], at: usize) -> Res<()> {
        // The JSON sink checks UTF-8 first: a captured string is valid text.
        self.json.string(raw, at)?;
        self.text(raw);
        self.put(Cap::Text(raw));
        Ok(())
    }

    fn uuid(&mut self, raw: &'a [u8], at: usize) -> Res<()> {
        self.put(Cap::Other);
        self.json.uuid(raw, at)
    }

    #[inline]
    fn symbol(&mut self, node: NodeId, index: usize) -> Res<()> {
        self.put(Cap::Symbol(node, index));
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
        // A local timestamp decodes to a naive datetime, which Python cannot compare with `now`.
        self.put(if local { Cap::Other } else { Cap::Time(micros) });
        self.json.timestamp(micros, local)
    }

    fn date(&mut self, days: i64) -> Res<()> {
        self.put(Cap::Other);
        self.json.date(days)
    }

    fn time_of_day(&mut self, micros: i64) -> Res<()> {
        self.put(Cap::Other);
        self.json.time_of_day(micros)
    }

    #[inline]
    fn seq_begin(&mut self) -> Res<bool> {
        self.put(Cap::Other);
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
        self.put(Cap::Other);
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
        self.put(Cap::Other);
        let role = match self.slot {
            Slot::Start => ROOT,
            Slot::Seller => SELLER,
            Slot::Buyer => BUYER,
            Slot::Lines => {
                let caps = &mut self.invoice.caps.lines;
                caps.resize(caps.len() + self.stride, Cap::Missing);
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
        let slots = self.plan.slots.get(rec.role);
        self.slot = slots
            .and_then(|s| s.get(index))
            .copied()
            .unwrap_or(Slot::Other);
        let caps = self.plan.caps.get(rec.role);
        self.cap = caps.and_then(|c| c.get(index)).copied().flatten();
        self.json.field_begin(&mut rec.inner, index);
    }

    #[inline]
    fn field_end(&mut self, rec: &mut JudgeRec, index: usize, field: &Field, value: ()) -> Res<()> {
        self.cap = None;
        self.json.field_end(&mut rec.inner, index, field, value)
    }

    #[inline]
    fn record_end(&mut self, rec: JudgeRec) -> Res<()> {
        self.slot = rec.outer;
        self.json.record_end(rec.inner)
    }
}
