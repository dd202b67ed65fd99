//! One pass over an Avro binary datum against a compiled Schema, shared by everything that reads
//! Avro: the decoder (Python values, decode.rs) and canonical JSON (bytes, canonical.rs).
//!
//! The walk does all of the reading and all of the validation: every length, count, union and enum
//! index, boolean byte, int range, decimal precision, date, timestamp and time-of-day range, the
//! nesting depth and array/map block sizes (through input.rs). A `Sink` is handed only values that
//! passed, and turns them into its output; the errors and their field paths are therefore the same
//! whatever the sink. Sinks check what only they can check the cheap way (UTF-8, UUID text) with one
//! shared routine each (decode.rs: `decode_utf8`, `py_uuid`), so those messages agree too.

use crate::encode::check_depth;
use crate::failure::{Failure, Res, Seg};
use crate::input::Input;
use crate::logical_read::{
    EPOCH_ORDINAL, MAX_MICROS, MAX_ORDINAL, MICROS_PER_DAY, MIN_MICROS, decimal_text,
};
use crate::schema::{Field, Node, NodeId, Record, Schema, TimeUnit};

/// What a datum's values become. `'a` is the datum's lifetime: byte slices handed over (strings,
/// map keys) borrow from it.
///
/// Containers are built in steps: `*_begin`, then per item a call before it is read (`seq_item`,
/// `map_key`, `field_begin`) and one after (`seq_push`, `map_insert`, `field_end`), then `*_end`.
pub trait Sink<'a> {
    type Value;
    type Seq;
    type Map;
    type Key;
    type Rec;

    fn null(&mut self) -> Res<Self::Value>;
    fn boolean(&mut self, value: bool) -> Res<Self::Value>;
    fn int(&mut self, value: i32) -> Res<Self::Value>;
    fn long(&mut self, value: i64) -> Res<Self::Value>;
    fn float(&mut self, value: f32) -> Res<Self::Value>;
    fn double(&mut self, value: f64) -> Res<Self::Value>;
    /// bytes and fixed (without a logical type).
    fn bytes(&mut self, value: &'a [u8]) -> Res<Self::Value>;
    /// A string's bytes, not yet checked as UTF-8; `at` is their offset in the datum.
    fn string(&mut self, raw: &'a [u8], at: usize) -> Res<Self::Value>;
    /// A uuid string's bytes, not yet checked as UTF-8 or as a UUID.
    fn uuid(&mut self, raw: &'a [u8], at: usize) -> Res<Self::Value>;
    /// Symbol `index` (in range) of the enum `node`.
    fn symbol(&mut self, node: NodeId, index: usize) -> Res<Self::Value>;
    /// A decimal as plain positional text with exactly `scale` places ("-871.00", "0", "0.0005"),
    /// within its precision.
    fn decimal(&mut self, text: &[u8]) -> Res<Self::Value>;
    /// Microseconds since 1970-01-01T00:00, within years 1 to 9999.
    fn timestamp(&mut self, micros: i64, local: bool) -> Res<Self::Value>;
    /// Days since 1970-01-01, within years 1 to 9999.
    fn date(&mut self, days: i64) -> Res<Self::Value>;
    /// Microseconds since midnight, less than a day.
    fn time_of_day(&mut self, micros: i64) -> Res<Self::Value>;

    fn seq_begin(&mut self) -> Res<Self::Seq>;
    /// `count` more items are coming (checked against the datum's size already).
    fn seq_reserve(&mut self, seq: &mut Self::Seq, count: usize);
    fn seq_item(&mut self, seq: &mut Self::Seq);
    fn seq_push(&mut self, seq: &mut Self::Seq, value: Self::Value) -> Res<()>;
    fn seq_end(&mut self, seq: Self::Seq) -> Res<Self::Value>;

    fn map_begin(&mut self) -> Res<Self::Map>;
    /// A key's bytes, not yet checked as UTF-8; later duplicates replace earlier ones.
    fn map_key(&mut self, map: &mut Self::Map, raw: &'a [u8], at: usize) -> Res<Self::Key>;
    fn map_insert(&mut self, map: &mut Self::Map, key: Self::Key, value: Self::Value) -> Res<()>;
    fn map_end(&mut self, map: Self::Map) -> Res<Self::Value>;

    fn record_begin(&mut self, node: NodeId, record: &Record) -> Res<Self::Rec>;
    fn field_begin(&mut self, rec: &mut Self::Rec, index: usize);
    fn field_end(
        &mut self,
        rec: &mut Self::Rec,
        index: usize,
        field: &Field,
        value: Self::Value,
    ) -> Res<()>;
    fn record_end(&mut self, rec: Self::Rec) -> Res<Self::Value>;
}

/// The schema and what reading needs beyond it, computed once per schema.
pub struct Layout {
    /// A lower bound on the bytes a value of each node takes: block counts are checked against it.
    pub min_size: Vec<usize>,
}

impl Layout {
    pub fn new(schema: &Schema) -> Layout {
        Layout {
            min_size: min_sizes(schema),
        }
    }
}

/// A walk of one datum into one sink.
pub struct Walk<'s, S> {
    pub schema: &'s Schema,
    pub layout: &'s Layout,
    pub sink: S,
}

impl<'a, S: Sink<'a>> Walk<'_, S> {
    /// The whole datum: one value of the root type and nothing after it.
    pub fn datum(&mut self, input: &mut Input<'a>) -> Res<S::Value> {
        let value = self.read(self.schema.root, input, 0)?;
        input.finish()?;
        Ok(value)
    }

    pub fn read(&mut self, id: NodeId, input: &mut Input<'a>, depth: u32) -> Res<S::Value> {
        let schema = self.schema;
        match schema.node(id) {
            Node::Null => self.sink.null(),
            Node::Boolean => {
                let at = input.pos();
                match input.byte()? {
                    0 => self.sink.boolean(false),
                    1 => self.sink.boolean(true),
                    b => Err(Failure::value(format!(
                        "boolean byte {b:#04x} at offset {at} is neither 0 nor 1"
                    ))),
                }
            }
            Node::Int => {
                let n = input.int()?;
                self.sink.int(n)
            }
            Node::Long => {
                let n = input.long()?;
                self.sink.long(n)
            }
            Node::Float => {
                let value = f32::from_le_bytes(input.array::<4>()?);
                self.sink.float(value)
            }
            Node::Double => {
                let value = f64::from_le_bytes(input.array::<8>()?);
                self.sink.double(value)
            }
            Node::Bytes => {
                let n = input.length("bytes")?;
                let bytes = input.take(n)?;
                self.sink.bytes(bytes)
            }
            Node::String => {
                let (raw, at) = string_bytes(input, "string")?;
                self.sink.string(raw, at)
            }
            Node::Uuid => {
                let (raw, at) = string_bytes(input, "string")?;
                self.sink.uuid(raw, at)
            }
            Node::Fixed { size, .. } => {
                let bytes = input.take(*size)?;
                self.sink.bytes(bytes)
            }
            Node::Enum { name, symbols } => self.symbol(id, name, symbols.len(), input),
            Node::Array { items } => self.array(*items, input, depth),
            Node::Map { values } => self.map(*values, input, depth),
            Node::Record(record) => self.record(id, record, input, depth),
            Node::Union(union) => {
                let at = input.pos();
                let index = input.long()?;
                match usize::try_from(index)
                    .ok()
                    .and_then(|i| union.branches.get(i))
                {
                    Some(&branch) => self.read(branch, input, depth),
                    None => Err(Failure::value(format!(
                        "union branch index {index} at offset {at} is out of range: the union has {} branches",
                        union.branches.len()
                    ))),
                }
            }
            Node::Decimal {
                precision,
                scale,
                fixed,
            } => self.decimal(*precision, *scale, fixed.as_ref().map(|f| f.1), input),
            Node::Timestamp { unit, local } => self.timestamp(*unit, *local, input),
            Node::Date => self.date(input),
            Node::TimeOfDay { unit } => self.time_of_day(*unit, input),
            Node::Placeholder => Err(Failure::value(
                "internal error: schema type was never defined",
            )),
        }
    }

    #[inline]
    fn symbol(
        &mut self,
        id: NodeId,
        name: &str,
        count: usize,
        input: &mut Input<'a>,
    ) -> Res<S::Value> {
        let at = input.pos();
        let index = input.long()?;
        match usize::try_from(index).ok().filter(|&i| i < count) {
            Some(i) => self.sink.symbol(id, i),
            None => Err(Failure::value(format!(
                "enum index {index} at offset {at} is out of range: enum {name} has {count} symbols"
            ))),
        }
    }

    /// bytes (`fixed` None) or fixed of `fixed` bytes, checked against the precision.
    #[inline]
    fn decimal(
        &mut self,
        precision: u32,
        scale: u32,
        fixed: Option<usize>,
        input: &mut Input<'a>,
    ) -> Res<S::Value> {
        let at = input.pos();
        let bytes = match fixed {
            None => {
                let n = input.length("decimal")?;
                input.take(n)?
            }
            Some(size) => input.take(size)?,
        };
        if decimal_text(bytes, precision, scale, &mut input.scratch).is_err() {
            return Err(Failure::value(format!(
                "decimal at offset {at} has more than {precision} digits (precision {precision})"
            )));
        }
        self.sink.decimal(&input.scratch)
    }

    #[inline]
    fn timestamp(&mut self, unit: TimeUnit, local: bool, input: &mut Input<'a>) -> Res<S::Value> {
        let at = input.pos();
        let n = input.long()?;
        let micros = match unit {
            TimeUnit::Millis => n.checked_mul(1000),
            TimeUnit::Micros => Some(n),
        };
        match micros.filter(|m| (MIN_MICROS..=MAX_MICROS).contains(m)) {
            Some(micros) => self.sink.timestamp(micros, local),
            None => {
                let name = match (local, unit) {
                    (false, TimeUnit::Millis) => "timestamp-millis",
                    (false, TimeUnit::Micros) => "timestamp-micros",
                    (true, TimeUnit::Millis) => "local-timestamp-millis",
                    (true, TimeUnit::Micros) => "local-timestamp-micros",
                };
                Err(Failure::value(format!(
                    "{name} {n} at offset {at} is out of range for a datetime (years 1 to 9999)"
                )))
            }
        }
    }

    fn date(&mut self, input: &mut Input<'a>) -> Res<S::Value> {
        let at = input.pos();
        let days = i64::from(input.int()?);
        if !(1..=MAX_ORDINAL).contains(&(days + EPOCH_ORDINAL)) {
            return Err(Failure::value(format!(
                "date {days} at offset {at} is out of range for a date (years 1 to 9999)"
            )));
        }
        self.sink.date(days)
    }

    fn time_of_day(&mut self, unit: TimeUnit, input: &mut Input<'a>) -> Res<S::Value> {
        let at = input.pos();
        let (n, per_unit, name) = match unit {
            TimeUnit::Millis => (i64::from(input.int()?), 1000, "time-millis"),
            TimeUnit::Micros => (input.long()?, 1, "time-micros"),
        };
        let day = MICROS_PER_DAY / per_unit;
        if !(0..day).contains(&n) {
            return Err(Failure::value(format!(
                "{name} {n} at offset {at} is not a time of day (0 to {})",
                day - 1
            )));
        }
        self.sink.time_of_day(n * per_unit)
    }

    fn array(&mut self, items: NodeId, input: &mut Input<'a>, depth: u32) -> Res<S::Value> {
        check_depth(depth)?;
        let mut seq = self.sink.seq_begin()?;
        let mut index = 0usize;
        while let Some(block) = input.block(self.layout.min_size[items], "array")? {
            // Checked by block(): the items fit in the bytes left (or are few and take none).
            self.sink.seq_reserve(&mut seq, block.count);
            for _ in 0..block.count {
                self.sink.seq_item(&mut seq);
                let value = self
                    .read(items, input, depth + 1)
                    .map_err(|e| e.at(Seg::Index(index)))?;
                self.sink.seq_push(&mut seq, value)?;
                index += 1;
            }
            input.end_block(&block, "array")?;
        }
        self.sink.seq_end(seq)
    }

    fn map(&mut self, values: NodeId, input: &mut Input<'a>, depth: u32) -> Res<S::Value> {
        check_depth(depth)?;
        let mut map = self.sink.map_begin()?;
        // A key's length takes a byte before the value.
        let entry_size = self.layout.min_size[values].saturating_add(1);
        while let Some(block) = input.block(entry_size, "map")? {
            for _ in 0..block.count {
                let (raw, at) = string_bytes(input, "map key")?;
                let key = self.sink.map_key(&mut map, raw, at)?;
                // The key is valid UTF-8 once map_key accepted it.
                let value = self
                    .read(values, input, depth + 1)
                    .map_err(|e| e.at(Seg::Key(String::from_utf8_lossy(raw).into_owned())))?;
                self.sink.map_insert(&mut map, key, value)?;
            }
            input.end_block(&block, "map")?;
        }
        self.sink.map_end(map)
    }

    fn record(
        &mut self,
        id: NodeId,
        record: &Record,
        input: &mut Input<'a>,
        depth: u32,
    ) -> Res<S::Value> {
        check_depth(depth)?;
        let mut rec = self.sink.record_begin(id, record)?;
        for (index, field) in record.fields.iter().enumerate() {
            self.sink.field_begin(&mut rec, index);
            let value = self
                .read(field.node, input, depth + 1)
                .map_err(|e| e.at(Seg::Field(field.name.clone())))?;
            self.sink.field_end(&mut rec, index, field, value)?;
        }
        self.sink.record_end(rec)
    }
}

/// A length-prefixed string's bytes (unchecked) and their offset.
#[inline]
fn string_bytes<'a>(input: &mut Input<'a>, what: &str) -> Res<(&'a [u8], usize)> {
    let n = input.length(what)?;
    let at = input.pos();
    Ok((input.take(n)?, at))
}

/// Each node's fewest bytes, iterated up from 0 until nothing changes. Every round's values are
/// lower bounds, which is all the checks need, so the rounds are capped: a record that contains
/// itself without a union or array in between has no finite value and would grow forever.
fn min_sizes(schema: &Schema) -> Vec<usize> {
    let n = schema.nodes.len();
    let mut size = vec![0usize; n];
    for _ in 0..=n {
        let mut changed = false;
        // Children are compiled after their parents: newest first settles most schemas in one round.
        for id in (0..n).rev() {
            let s = match &schema.nodes[id] {
                Node::Null | Node::Placeholder => 0,
                Node::Float => 4,
                Node::Double => 8,
                Node::Fixed { size: fixed, .. }
                | Node::Decimal {
                    fixed: Some((_, fixed)),
                    ..
                } => *fixed,
                Node::Record(record) => record
                    .fields
                    .iter()
                    .fold(0usize, |sum, field| sum.saturating_add(size[field.node])),
                Node::Union(union) => union
                    .branches
                    .iter()
                    .map(|&branch| size[branch])
                    .min()
                    .unwrap_or(0)
                    .saturating_add(1),
                // A varint, a length, a block count or the end-of-blocks zero: one byte at least.
                Node::Boolean
                | Node::Int
                | Node::Long
                | Node::Bytes
                | Node::String
                | Node::Uuid
                | Node::Enum { .. }
                | Node::Array { .. }
                | Node::Map { .. }
                | Node::Decimal { fixed: None, .. }
                | Node::Timestamp { .. }
                | Node::Date
                | Node::TimeOfDay { .. } => 1,
            };
            if s != size[id] {
                size[id] = s;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    size
}
