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
use crate::logical_read::{MICROS_PER_DAY, civil_from_days, clock, write_u64};
use crate::schema::{Field, Node, NodeId, Record, Schema};
use crate::walk::Sink;

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

/// 0: written as it is; b'u': `\u00XX`; anything else: a backslash and that byte.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether any of the eight bytes in `word` is below 0x20, `"` or `\` (the bytes ESCAPE marks).
#[inline]
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Bit Twiddling Hacks' haszero and hasless(x, 0x20): exact as whole-word tests, since a borrow
    // can only flag a byte above one that really matches, and bytes from 0x80 never match (`& !x`).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    below_space | zero(word ^ (ONES * u64::from(b'"'))) | zero(word ^ (ONES * u64::from(b'\\')))
        != 0
}

/// A JSON string of valid UTF-8 text, escaped as orjson escapes it.
pub fn write_str(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < text.len() {
        // Eight bytes at a time while none of them needs escaping (most text).
        if let Some(chunk) = text[i..].first_chunk::<8>()
            && !needs_escape(u64::from_le_bytes(*chunk))
        {
            i += 8;
            continue;
        }
        let b = text[i];
        i += 1;
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        let i = i - 1;
        out.extend_from_slice(&text[start..i]);
        if escape == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
        } else {
            out.push(b'\\');
            out.push(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
    out.push(b'"');
}

fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(n.unsigned_abs(), out);
}

/// `n` as exactly `width` digits (n < 10**width).
#[inline]
fn write_digits(out: &mut Vec<u8>, n: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        out.push(b'0' + (n / div % 10) as u8);
        div /= 10;
    }
}

/// `YYYY-MM-DD` (years 1 to 9999, zero-padded as Python's isoformat pads them).
fn write_ymd(out: &mut Vec<u8>, year: i32, month: u8, day: u8) {
    write_digits(out, year.unsigned_abs(), 4);
    out.push(b'-');
    write_digits(out, u32::from(month), 2);
    out.push(b'-');
    write_digits(out, u32::from(day), 2);
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as `base64.b64encode`.
pub fn write_base64(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(data.len().div_ceil(3) * 4);
    let mut chunks = data.chunks_exact(3);
    for chunk in &mut chunks {
        let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        out.extend_from_slice(&[
            BASE64[(n >> 18) as usize & 63],
            BASE64[(n >> 12) as usize & 63],
            BASE64[(n >> 6) as usize & 63],
            BASE64[n as usize & 63],
        ]);
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[
                BASE64[(n >> 18) as usize & 63],
                BASE64[(n >> 12) as usize & 63],
                b'=',
                b'=',
            ]);
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend_from_slice(&[
                BASE64[(n >> 18) as usize & 63],
                BASE64[(n >> 12) as usize & 63],
                BASE64[(n >> 6) as usize & 63],
                b'=',
            ]);
        }
        _ => {}
    }
}

/// `str(uuid.UUID(text))` for the usual text, 8-4-4-4-12 hex digits in either case: the same
/// digits in lowercase. None for anything else (left to uuid.UUID).
fn canonical_uuid(raw: &[u8]) -> Option<[u8; 36]> {
    let text: &[u8; 36] = raw.try_into().ok()?;
    let mut out = [0u8; 36];
    for (i, &b) in text.iter().enumerate() {
        out[i] = if matches!(i, 8 | 13 | 18 | 23) {
            (b == b'-').then_some(b'-')?
        } else if b.is_ascii_hexdigit() {
            b.to_ascii_lowercase()
        } else {
            return None;
        };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, text.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_like_orjson() {
        assert_eq!(json("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json("\u{8}\u{c}\n\r\t"), r#""\b\f\n\r\t""#);
        assert_eq!(json("\u{0}\u{b}\u{1f}"), r#""\u0000\u000b\u001f""#);
        assert_eq!(json("\u{7f}\u{2028}é😀"), "\"\u{7f}\u{2028}é😀\"");
    }

    #[test]
    fn the_eight_byte_check_agrees_with_the_table() {
        for b in 0..=255u8 {
            for at in 0..8 {
                for fill in [b'a', 0x80, 0xff, 0x21, b'"' + 1] {
                    let mut word = [fill; 8];
                    word[at] = b;
                    let expected = word.iter().any(|&w| ESCAPE[usize::from(w)] != 0);
                    assert_eq!(needs_escape(u64::from_le_bytes(word)), expected, "{word:?}");
                }
            }
        }
        let long = "0123456789abcdef\u{7}0123456789\"abcdefé\n";
        assert_eq!(
            json(long),
            "\"0123456789abcdef\\u00070123456789\\\"abcdefé\\n\""
        );
    }

    #[test]
    fn base64_pads_like_b64encode() {
        for (data, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\xff\xfe\xfd\x00", "//79AA=="),
        ] {
            let mut out = Vec::new();
            write_base64(&mut out, data);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn usual_uuids_are_lowercased_and_others_left_to_python() {
        let upper = b"12345678-ABCD-5678-1234-567812345678";
        assert_eq!(
            canonical_uuid(upper).map(|t| String::from_utf8(t.to_vec()).unwrap()),
            Some("12345678-abcd-5678-1234-567812345678".into())
        );
        assert_eq!(canonical_uuid(b"12345678123456781234567812345678"), None);
        assert_eq!(
            canonical_uuid(b"12345678-1234-5678-1234-56781234567g"),
            None
        );
        assert_eq!(
            canonical_uuid(b"1234567-81234-5678-1234-567812345678"),
            None
        );
    }

    #[test]
    fn integers_and_padded_fields() {
        let mut out = Vec::new();
        write_i64(&mut out, i64::MIN);
        out.push(b' ');
        write_i64(&mut out, 0);
        out.push(b' ');
        write_ymd(&mut out, 1, 2, 3);
        out.push(b' ');
        write_digits(&mut out, 7, 3);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-9223372036854775808 0 0001-02-03 007"
        );
    }
}
