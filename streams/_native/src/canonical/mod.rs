//! Canonical JSON straight from Avro binary: `Decoder.canonical_json(datum)` writes exactly the bytes
//! `streams.agents.zatca.canonical_bytes(Decoder.decode(datum))` gives, in one pass over the datum
//! (walk.rs, the decoder's own reading and checking) and without building a Python value.
//!
//! canonical_bytes is `orjson.dumps(value, option=OPT_SORT_KEYS | OPT_PASSTHROUGH_DATETIME,
//! default=_canonical_default)`; for what the decoder returns that is:
//!
//! - records and maps: objects with keys in code point order (UTF-8 byte order is the same), no
//!   spaces. A record's key order is worked out here once per schema; its fields are written in
//!   the datum's order and moved into key order when the record ends (nothing moves when the two
//!   agree). A map's entries are sorted when it ends; of duplicate keys the last wins (a dict's).
//! - strings (and keys): orjson's escapes, the same as `json.dumps(ensure_ascii=False)`: `\"`, `\\`,
//!   `\b \f \n \r \t`, other code points below 0x20 as `\u00XX` (lowercase hex), everything else
//!   (DEL, U+2028, U+2029, any non-ASCII) as raw UTF-8.
//! - null, true/false, ints as decimal integers, arrays in order, enums and union values as the value.
//! - bytes and fixed: standard base64 with padding (`b64encode(value).decode()`).
//! - decimals: `format(d, "f")` of the Decimal the decoder builds from its plain text with exactly
//!   `scale` places, which is that text ("871.00", "-0.0005", "0.00", "150"); an unscaled zero has
//!   no sign, so negative zero cannot arise.
//! - timestamp-millis/micros (aware, UTC): `astimezone(UTC).isoformat(timespec="milliseconds")` with
//!   "Z", i.e. `YYYY-MM-DDTHH:MM:SS.mmmZ`, microseconds truncated to milliseconds.
//! - date: `YYYY-MM-DD`; uuid: orjson's own `str(UUID)` form, lowercase 8-4-4-4-12 hex.
//!
//! Refused per schema (ValueError before reading, `canonical_json_unsupported` says why): float and
//! double (orjson's shortest float text is its own algorithm, not reproduced here), local-timestamp-*
//! (the decoder returns naive datetimes, which `astimezone` reads in the machine's local time zone)
//! and time-millis/micros (`_canonical_default` has no time branch: canonical_bytes raises TypeError).
//!
//! Refused per datum: values nested more than 254 containers deep, which orjson refuses with
//! "Recursion limit reached" (the decoder's own limit is 257). Malformed data raises decode's errors
//! first, since the walk checks the datum before the depth is looked at.

use pyo3::prelude::*;
use pyo3::types::PyStringMethods;

use crate::decode::{DecodeEnv, decode_utf8, py_uuid};
use crate::failure::{Failure, Res};
use crate::logical_read::{MICROS_PER_DAY, civil_from_days, clock};
use crate::schema::{Field, Node, NodeId, Record, Schema};
use crate::walk::Sink;

mod text;

use text::{canonical_uuid, write_digits, write_i64, write_ymd};
pub use text::{write_base64, write_str};

/// orjson refuses a dict or list nested in this many others (`Recursion limit reached`).
const ORJSON_MAX_LEVEL: u32 = 254;

/// What canonical JSON needs beyond the schema, made once per Decoder.
pub struct CanonicalPlan {
    /// Why this schema is not supported, or None.
    pub unsupported: Option<String>,
    /// Per node: a record's key order (empty for other nodes).
    records: Vec<RecordOrder>,
    /// Per node: an enum's symbols as JSON strings (empty for other nodes).
    symbols: Vec<Vec<Box<[u8]>>>,
}

#[derive(Default)]
struct RecordOrder {
    /// The fields are declared in key order: each is written in place with its key.
    in_order: bool,
    /// (field index, `"name":`, with a leading comma after the first) in key order.
    sorted: Vec<(usize, Box<[u8]>)>,
}

impl CanonicalPlan {
    pub fn new(schema: &Schema) -> CanonicalPlan {
        let mut reasons: Vec<&str> = Vec::new();
        let mut refuse = |reason: &'static str| {
            if !reasons.contains(&reason) {
                reasons.push(reason);
            }
        };
        let mut records = Vec::with_capacity(schema.nodes.len());
        let mut symbols = Vec::with_capacity(schema.nodes.len());
        for node in &schema.nodes {
            match node {
                Node::Float | Node::Double => refuse(
                    "float or double values (orjson writes floats with its own shortest-text \
                     algorithm, which is not reproduced natively)",
                ),
                Node::Timestamp { local: true, .. } => refuse(
                    "local-timestamp-millis/micros values (decoded as naive datetimes, which \
                     canonical_bytes converts from the machine's local time zone)",
                ),
                Node::TimeOfDay { .. } => refuse(
                    "time-millis/micros values (canonical_bytes cannot serialise datetime.time: \
                     TypeError)",
                ),
                _ => {}
            }
            records.push(match node {
                Node::Record(record) => RecordOrder::new(record),
                _ => RecordOrder::default(),
            });
            symbols.push(match node {
                Node::Enum { symbols, .. } => symbols
                    .iter()
                    .map(|s| {
                        let mut text = Vec::with_capacity(s.len() + 2);
                        write_str(&mut text, s.as_bytes());
                        text.into_boxed_slice()
                    })
                    .collect(),
                _ => Vec::new(),
            });
        }
        let unsupported = (!reasons.is_empty()).then(|| {
            format!(
                "canonical_json does not support this schema, which has {}",
                reasons.join("; and ")
            )
        });
        CanonicalPlan {
            unsupported,
            records,
            symbols,
        }
    }
}

impl RecordOrder {
    fn new(record: &Record) -> RecordOrder {
        let mut order: Vec<usize> = (0..record.fields.len()).collect();
        // Field names are unique: no ties.
        order.sort_by(|&a, &b| record.fields[a].name.cmp(&record.fields[b].name));
        let sorted = order
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let mut prefix = Vec::with_capacity(record.fields[i].name.len() + 4);
                if k > 0 {
                    prefix.push(b',');
                }
                write_str(&mut prefix, record.fields[i].name.as_bytes());
                prefix.push(b':');
                (i, prefix.into_boxed_slice())
            })
            .collect();
        RecordOrder {
            in_order: order.iter().enumerate().all(|(k, &i)| k == i),
            sorted,
        }
    }
}

/// A map entry written so far: its key (valid UTF-8, from the datum) and its value's bytes in `out`.
struct Entry<'a> {
    key: &'a [u8],
    start: usize,
    end: usize,
}

pub struct RecordState {
    node: NodeId,
    /// Where the record's first field starts in `out`.
    mark: usize,
    /// Where its field ends start in `ends`.
    base: usize,
}

/// Writes canonical JSON into `out` as the walk goes.
pub struct JsonSink<'a, 'p, 'py> {
    py: Python<'py>,
    plan: &'p CanonicalPlan,
    env: &'p DecodeEnv,
    out: Vec<u8>,
    /// A copy of a container's values while they are put into key order.
    scratch: Vec<u8>,
    /// The end offset in `out` of each field of the records being written, innermost last.
    ends: Vec<usize>,
    /// The entries of the maps being written, innermost last.
    entries: Vec<Entry<'a>>,
    level: u32,
    deepest: u32,
}

impl<'a, 'p, 'py> JsonSink<'a, 'p, 'py> {
    pub fn new(
        py: Python<'py>,
        plan: &'p CanonicalPlan,
        env: &'p DecodeEnv,
        size_hint: usize,
    ) -> Self {
        JsonSink {
            py,
            plan,
            env,
            out: Vec::with_capacity(size_hint.saturating_add(64)),
            // Sized once: growing them a step at a time costs more than the pass.
            scratch: Vec::with_capacity(size_hint.saturating_add(64)),
            ends: Vec::with_capacity(64),
            entries: Vec::new(),
            level: 0,
            deepest: 0,
        }
    }

    /// After the walk: refuses what orjson would refuse for its depth.
    pub fn finish(&self) -> Res<()> {
        if self.deepest > ORJSON_MAX_LEVEL {
            return Err(Failure::value(format!(
                "the value is nested {} containers deep: canonical_bytes (orjson) refuses more than \
                 {ORJSON_MAX_LEVEL} (Recursion limit reached)",
                self.deepest
            )));
        }
        Ok(())
    }

    pub fn output(&self) -> &[u8] {
        &self.out
    }

    #[inline]
    fn enter(&mut self) {
        self.level += 1;
        self.deepest = self.deepest.max(self.level);
    }

    /// Checks UTF-8 the fast way; the message, when it fails, is decode's (Python's codec).
    #[inline]
    fn utf8(&self, raw: &[u8], what: &str, at: usize) -> Res<()> {
        if std::str::from_utf8(raw).is_ok() {
            return Ok(());
        }
        match decode_utf8(self.py, raw, what, at) {
            Err(failure) => Err(failure),
            Ok(_) => Err(Failure::value(format!(
                "internal error: the {what} at offset {at} is UTF-8 to Python but not to Rust"
            ))),
        }
    }

    fn internal(what: &str) -> Res<()> {
        Err(Failure::value(format!(
            "internal error: canonical JSON got a {what} value from a schema it does not support"
        )))
    }
}

impl<'a> Sink<'a> for JsonSink<'a, '_, '_> {
    type Value = ();
    /// Whether no item has been written yet.
    type Seq = bool;
    /// (where the map's entries start in `out`, where they start in `entries`).
    type Map = (usize, usize);
    /// The key and where its value starts in `out`.
    type Key = (&'a [u8], usize);
    type Rec = RecordState;

    #[inline]
    fn null(&mut self) -> Res<()> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    #[inline]
    fn boolean(&mut self, value: bool) -> Res<()> {
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        Ok(())
    }

    #[inline]
    fn int(&mut self, value: i32) -> Res<()> {
        write_i64(&mut self.out, i64::from(value));
        Ok(())
    }

    #[inline]
    fn long(&mut self, value: i64) -> Res<()> {
        write_i64(&mut self.out, value);
        Ok(())
    }

    fn float(&mut self, _value: f32) -> Res<()> {
        Self::internal("float")
    }

    fn double(&mut self, _value: f64) -> Res<()> {
        Self::internal("double")
    }

    #[inline]
    fn bytes(&mut self, value: &'a [u8]) -> Res<()> {
        self.out.push(b'"');
        write_base64(&mut self.out, value);
        self.out.push(b'"');
        Ok(())
    }

    #[inline]
    fn string(&mut self, raw: &'a [u8], at: usize) -> Res<()> {
        self.utf8(raw, "string", at)?;
        write_str(&mut self.out, raw);
        Ok(())
    }

    fn uuid(&mut self, raw: &'a [u8], at: usize) -> Res<()> {
        if let Some(text) = canonical_uuid(raw) {
            self.out.push(b'"');
            self.out.extend_from_slice(&text);
            self.out.push(b'"');
            return Ok(());
        }
        // Any other text uuid.UUID takes (braces, "urn:uuid:", no hyphens, ...): let it say what
        // the UUID is, or raise decode's error.
        let value = py_uuid(self.py, self.env, raw, at)?;
        let text = value.str().map_err(Failure::passthrough)?;
        let text = text.to_str().map_err(Failure::passthrough)?;
        write_str(&mut self.out, text.as_bytes());
        Ok(())
    }

    #[inline]
    fn symbol(&mut self, node: NodeId, index: usize) -> Res<()> {
        self.out.extend_from_slice(&self.plan.symbols[node][index]);
        Ok(())
    }

    #[inline]
    fn decimal(&mut self, text: &[u8]) -> Res<()> {
        self.out.push(b'"');
        self.out.extend_from_slice(text);
        self.out.push(b'"');
        Ok(())
    }

    fn timestamp(&mut self, micros: i64, local: bool) -> Res<()> {
        if local {
            return Self::internal("local timestamp");
        }
        let (year, month, day) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
        let (hour, minute, second, micro) = clock(micros.rem_euclid(MICROS_PER_DAY));
        let out = &mut self.out;
        out.push(b'"');
        write_ymd(out, year, month, day);
        out.push(b'T');
        write_digits(out, u32::from(hour), 2);
        out.push(b':');
        write_digits(out, u32::from(minute), 2);
        out.push(b':');
        write_digits(out, u32::from(second), 2);
        out.push(b'.');
        write_digits(out, micro / 1000, 3);
        out.extend_from_slice(b"Z\"");
        Ok(())
    }

    fn date(&mut self, days: i64) -> Res<()> {
        let (year, month, day) = civil_from_days(days);
        self.out.push(b'"');
        write_ymd(&mut self.out, year, month, day);
        self.out.push(b'"');
        Ok(())
    }

    fn time_of_day(&mut self, _micros: i64) -> Res<()> {
        Self::internal("time-millis/micros")
    }

    #[inline]
    fn seq_begin(&mut self) -> Res<bool> {
        self.enter();
        self.out.push(b'[');
        Ok(true)
    }

    #[inline]
    fn seq_reserve(&mut self, _seq: &mut bool, _count: usize) {}

    #[inline]
    fn seq_item(&mut self, first: &mut bool) {
        if !*first {
            self.out.push(b',');
        }
        *first = false;
    }

    #[inline]
    fn seq_push(&mut self, _seq: &mut bool, _value: ()) -> Res<()> {
        Ok(())
    }

    #[inline]
    fn seq_end(&mut self, _seq: bool) -> Res<()> {
        self.level -= 1;
        self.out.push(b']');
        Ok(())
    }

    #[inline]
    fn map_begin(&mut self) -> Res<(usize, usize)> {
        self.enter();
        Ok((self.out.len(), self.entries.len()))
    }

    #[inline]
    fn map_key(
        &mut self,
        _map: &mut (usize, usize),
        raw: &'a [u8],
        at: usize,
    ) -> Res<(&'a [u8], usize)> {
        self.utf8(raw, "map key", at)?;
        Ok((raw, self.out.len()))
    }

    #[inline]
    fn map_insert(
        &mut self,
        _map: &mut (usize, usize),
        (key, start): (&'a [u8], usize),
        _value: (),
    ) -> Res<()> {
        self.entries.push(Entry {
            key,
            start,
            end: self.out.len(),
        });
        Ok(())
    }

    /// The values were written one after another: copy them out and write them back in key order,
    /// each after its key.
    fn map_end(&mut self, (mark, base): (usize, usize)) -> Res<()> {
        self.level -= 1;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(&self.out[mark..]);
        self.out.truncate(mark);
        let entries = &mut self.entries[base..];
        // Stable: of equal keys the last written stays last, and it is the one a dict keeps.
        entries.sort_by(|a, b| a.key.cmp(b.key));
        self.out.push(b'{');
        let mut first = true;
        for (i, entry) in entries.iter().enumerate() {
            if entries.get(i + 1).is_some_and(|next| next.key == entry.key) {
                continue;
            }
            if !first {
                self.out.push(b',');
            }
            first = false;
            write_str(&mut self.out, entry.key);
            self.out.push(b':');
            self.out
                .extend_from_slice(&scratch[entry.start - mark..entry.end - mark]);
        }
        self.out.push(b'}');
        self.entries.truncate(base);
        self.scratch = scratch;
        Ok(())
    }

    #[inline]
    fn record_begin(&mut self, node: NodeId, _record: &Record) -> Res<RecordState> {
        self.enter();
        if self.plan.records[node].in_order {
            self.out.push(b'{');
        }
        Ok(RecordState {
            node,
            mark: self.out.len(),
            base: self.ends.len(),
        })
    }

    #[inline]
    fn field_begin(&mut self, rec: &mut RecordState, index: usize) {
        let order = &self.plan.records[rec.node];
        if order.in_order {
            self.out.extend_from_slice(&order.sorted[index].1);
        }
    }

    #[inline]
    fn field_end(
        &mut self,
        rec: &mut RecordState,
        _index: usize,
        _field: &Field,
        _value: (),
    ) -> Res<()> {
        if !self.plan.records[rec.node].in_order {
            self.ends.push(self.out.len());
        }
        Ok(())
    }

    /// Out of order: the values were written one after another; copy them out and write them
    /// back in key order, each after its key.
    fn record_end(&mut self, rec: RecordState) -> Res<()> {
        self.level -= 1;
        let order = &self.plan.records[rec.node];
        if order.in_order {
            self.out.push(b'}');
            return Ok(());
        }
        let RecordState { mark, base, .. } = rec;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(&self.out[mark..]);
        self.out.truncate(mark);
        self.out.push(b'{');
        let ends = &self.ends[base..];
        for (index, prefix) in &order.sorted {
            let start = if *index == 0 { mark } else { ends[index - 1] };
            let end = ends[*index];
            self.out.extend_from_slice(prefix);
            self.out
                .extend_from_slice(&scratch[start - mark..end - mark]);
        }
        self.out.push(b'}');
        self.ends.truncate(base);
        self.scratch = scratch;
        Ok(())
    }
}
