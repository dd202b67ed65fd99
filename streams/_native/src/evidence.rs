//! Evidence-bundle hashing for `streams replay --export`: the canonical Avro encoding of a batch of
//! consumed records, their SHA-256 leaf hashes, and the RFC 6962 Merkle root over them.
//!
//! streams/replay/encoding.py owns the definition (CANONICAL_SCHEMA, record_hash, merkle_root); this is
//! its fast path and must stay byte-identical to it (tests/replay/test_native_hash.py checks that).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::{IntoPyObjectExt, intern};

const LEAF: u8 = 0x00; // RFC 6962 domain separation of leaves and interior nodes
const NODE: u8 = 0x01;
const NULL: u8 = 0x00; // union branch 0 ("null")
const SOME: u8 = 0x02; // union branch 1, zig-zag encoded

// ---- SHA-256 (FIPS 180-4): SHA extensions when the CPU has them, portable rounds otherwise ----------

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

fn compress_portable(state: &mut [u32; 8], blocks: &[u8]) {
    for block in blocks.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (slot, value) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *slot = slot.wrapping_add(value);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod shani {
    use core::arch::x86_64::*;

    use super::K;

    // Macros rather than helper functions: a helper without the target features would not get the
    // intrinsics inlined, and every round would become a call.
    macro_rules! rounds4 {
        ($abef:ident, $cdgh:ident, $w:expr, $i:expr) => {{
            let k = _mm_loadu_si128(K.as_ptr().add(4 * $i) as *const __m128i);
            let t = _mm_add_epi32($w, k);
            $cdgh = _mm_sha256rnds2_epu32($cdgh, $abef, t);
            $abef = _mm_sha256rnds2_epu32($abef, $cdgh, _mm_shuffle_epi32(t, 0x0E));
        }};
    }

    macro_rules! schedule {
        ($w0:expr, $w1:expr, $w2:expr, $w3:expr) => {{
            let t = _mm_add_epi32(_mm_sha256msg1_epu32($w0, $w1), _mm_alignr_epi8($w3, $w2, 4));
            _mm_sha256msg2_epu32(t, $w3)
        }};
    }

    /// # Safety
    /// The CPU must have the SHA, SSE2, SSSE3 and SSE4.1 extensions (checked by the caller).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub unsafe fn compress(state: &mut [u32; 8], blocks: &[u8]) {
        unsafe {
            let mask = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
            let dcba = _mm_loadu_si128(state.as_ptr() as *const __m128i);
            let efgh = _mm_loadu_si128(state.as_ptr().add(4) as *const __m128i);
            let cdab = _mm_shuffle_epi32(dcba, 0xB1);
            let efgh = _mm_shuffle_epi32(efgh, 0x1B);
            let mut abef = _mm_alignr_epi8(cdab, efgh, 8);
            let mut cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
            for block in blocks.chunks_exact(64) {
                let (abef_saved, cdgh_saved) = (abef, cdgh);
                let p = block.as_ptr() as *const __m128i;
                let mut w0 = _mm_shuffle_epi8(_mm_loadu_si128(p), mask);
                let mut w1 = _mm_shuffle_epi8(_mm_loadu_si128(p.add(1)), mask);
                let mut w2 = _mm_shuffle_epi8(_mm_loadu_si128(p.add(2)), mask);
                let mut w3 = _mm_shuffle_epi8(_mm_loadu_si128(p.add(3)), mask);
                rounds4!(abef, cdgh, w0, 0);
                rounds4!(abef, cdgh, w1, 1);
                rounds4!(abef, cdgh, w2, 2);
                rounds4!(abef, cdgh, w3, 3);
                // each step turns the oldest four message words into the next four
                for i in 1..4 {
                    w0 = schedule!(w0, w1, w2, w3);
                    rounds4!(abef, cdgh, w0, 4 * i);
                    w1 = schedule!(w1, w2, w3, w0);
                    rounds4!(abef, cdgh, w1, 4 * i + 1);
                    w2 = schedule!(w2, w3, w0, w1);
                    rounds4!(abef, cdgh, w2, 4 * i + 2);
                    w3 = schedule!(w3, w0, w1, w2);
                    rounds4!(abef, cdgh, w3, 4 * i + 3);
                }
                abef = _mm_add_epi32(abef, abef_saved);
                cdgh = _mm_add_epi32(cdgh, cdgh_saved);
            }
            let feba = _mm_shuffle_epi32(abef, 0x1B);
            let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
            let dcba = _mm_blend_epi16(feba, dchg, 0xF0);
            let hgef = _mm_alignr_epi8(dchg, feba, 8);
            _mm_storeu_si128(state.as_mut_ptr() as *mut __m128i, dcba);
            _mm_storeu_si128(state.as_mut_ptr().add(4) as *mut __m128i, hgef);
        }
    }
}

/// Which compression function this process uses (decided once).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Portable,
    #[cfg(target_arch = "x86_64")]
    ShaNi,
}

pub(crate) fn detected() -> Engine {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static ENGINE: OnceLock<Engine> = OnceLock::new();
        *ENGINE.get_or_init(|| {
            let ok = std::arch::is_x86_feature_detected!("sha")
                && std::arch::is_x86_feature_detected!("sse2")
                && std::arch::is_x86_feature_detected!("ssse3")
                && std::arch::is_x86_feature_detected!("sse4.1");
            if ok { Engine::ShaNi } else { Engine::Portable }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    Engine::Portable
}

fn compress(engine: Engine, state: &mut [u32; 8], blocks: &[u8]) {
    match engine {
        Engine::Portable => compress_portable(state, blocks),
        // SAFETY: ShaNi is only chosen after the CPU features were detected.
        #[cfg(target_arch = "x86_64")]
        Engine::ShaNi => unsafe { shani::compress(state, blocks) },
    }
}

/// SHA-256 over data given in pieces (no copy of the pieces into one buffer).
struct Sha256 {
    engine: Engine,
    state: [u32; 8],
    block: [u8; 64],
    filled: usize,
    total: u64,
}

impl Sha256 {
    fn new(engine: Engine) -> Self {
        Sha256 {
            engine,
            state: H0,
            block: [0; 64],
            filled: 0,
            total: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.filled > 0 {
            let take = data.len().min(64 - self.filled);
            self.block[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < 64 {
                return;
            }
            compress(self.engine, &mut self.state, &self.block);
            self.filled = 0;
        }
        let whole = data.len() & !63;
        compress(self.engine, &mut self.state, &data[..whole]);
        let rest = &data[whole..];
        self.block[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    fn finish(mut self) -> [u8; 32] {
        let bits = self.total * 8;
        let mut tail = [0u8; 128];
        tail[..self.filled].copy_from_slice(&self.block[..self.filled]);
        tail[self.filled] = 0x80;
        let end = if self.filled < 56 { 64 } else { 128 };
        tail[end - 8..end].copy_from_slice(&bits.to_be_bytes());
        compress(self.engine, &mut self.state, &tail[..end]);
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// SHA-256 of `data`.
pub(crate) fn sha256(engine: Engine, data: &[u8]) -> [u8; 32] {
    let mut state = H0;
    let whole = data.len() & !63;
    compress(engine, &mut state, &data[..whole]);
    let rest = &data[whole..];
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let end = if rest.len() < 56 { 64 } else { 128 };
    tail[end - 8..end].copy_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    compress(engine, &mut state, &tail[..end]);
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

// ---- the canonical encoding (Avro binary under CANONICAL_SCHEMA) ------------------------------------

fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7F) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, data: &[u8]) {
    put_long(out, data.len() as i64);
    out.extend_from_slice(data);
}

fn put_optional(out: &mut Vec<u8>, data: Option<&[u8]>) {
    match data {
        None => out.push(NULL),
        Some(data) => {
            out.push(SOME);
            put_bytes(out, data);
        }
    }
}

fn optional_bytes<'a>(value: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Option<&'a [u8]>> {
    if value.is_none() {
        return Ok(None);
    }
    match value.cast::<PyBytes>() {
        Ok(data) => Ok(Some(data.as_bytes())),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{what} must be bytes or None, not {}",
            value.get_type().name()?
        ))),
    }
}

/// Appends the record's headers array (the encoding of `message.headers()`) to `out`.
fn put_headers(out: &mut Vec<u8>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
    if !headers.is_none() {
        let list = headers.cast::<PyList>().map_err(|_| {
            PyTypeError::new_err("headers must be a list of (name, value) tuples or None")
        })?;
        if !list.is_empty() {
            put_long(out, list.len() as i64);
            for item in list.iter() {
                let pair = item.cast::<PyTuple>().map_err(|_| {
                    PyTypeError::new_err("headers must be a list of (name, value) tuples or None")
                })?;
                if pair.len() != 2 {
                    return Err(PyTypeError::new_err(
                        "a header must be a (name, value) tuple",
                    ));
                }
                let name = pair.get_item(0)?;
                let name = name
                    .cast::<PyString>()
                    .map_err(|_| PyTypeError::new_err("a header name must be str"))?;
                put_bytes(out, name.to_str()?.as_bytes());
                put_optional(out, optional_bytes(&pair.get_item(1)?, "a header value")?);
            }
        }
    }
    out.push(0); // end of the array (an empty array is this byte alone)
    Ok(())
}

/// Records of one target file, joined: `data` holds one datum per record, datum i ending at `ends[i]`.
struct Group {
    header: Option<[u8; 5]>, // the values' Confluent header, or None for the raw-values file
    data: Vec<u8>,
    ends: Vec<usize>,
}

/// The group for `header` among the first `used` (made or recycled when new).
fn group_for<'a>(
    groups: &'a mut Vec<Group>,
    used: &mut usize,
    header: Option<[u8; 5]>,
) -> &'a mut Group {
    let index = match groups[..*used].iter().position(|g| g.header == header) {
        Some(index) => index,
        None => {
            if *used == groups.len() {
                groups.push(Group {
                    header,
                    data: Vec::new(),
                    ends: Vec::new(),
                });
            }
            groups[*used].header = header;
            *used += 1;
            *used - 1
        }
    };
    &mut groups[index]
}

#[derive(Default)]
struct Buffers {
    groups: Vec<Group>,
    prefix: Vec<u8>,
}

thread_local! {
    static BUFFERS: std::cell::Cell<Buffers> = std::cell::Cell::new(Buffers::default());
}

/// The union branch and length of an optional `bytes` value (the value's bytes follow).
fn put_optional_tag(out: &mut Vec<u8>, data: Option<&[u8]>) {
    match data {
        None => out.push(NULL),
        Some(data) => {
            out.push(SOME);
            put_long(out, data.len() as i64);
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Encodes and hashes one partition's records for an evidence bundle.
///
/// `messages` are consumed records of `topic` (confluent-kafka Messages, or anything with their
/// accessors), in offset order. `typed(header)` is asked once per batch for each distinct 5-byte
/// Confluent header: True when the schema id is known (the record goes to that schema's container
/// file, its datum kept as is), False for the raw-values file. Returns `(digests, lines, groups)`:
/// the 32-byte record hashes joined, the `"partition offset sha256hex\n"` lines, and per target file
/// `(header or None, datums joined, end of each datum)`, each group in offset order.
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn encode_evidence_batch<'py>(
    py: Python<'py>,
    topic: &str,
    partition: i32,
    messages: &Bound<'py, PyAny>,
    typed: &Bound<'py, PyAny>,
) -> PyResult<(
    Bound<'py, PyBytes>,
    Bound<'py, PyString>,
    Bound<'py, PyList>,
)> {
    let engine = detected();
    let mut part_prefix = Vec::with_capacity(topic.len() + 10);
    put_bytes(&mut part_prefix, topic.as_bytes());
    put_long(&mut part_prefix, i64::from(partition));
    let (n_offset, n_timestamp, n_key, n_headers, n_value) = (
        intern!(py, "offset"),
        intern!(py, "timestamp"),
        intern!(py, "key"),
        intern!(py, "headers"),
        intern!(py, "value"),
    );
    let mut digests: Vec<u8> = Vec::with_capacity(32 * messages.len().unwrap_or(0));
    let mut lines: Vec<u8> = Vec::with_capacity(84 * messages.len().unwrap_or(0));
    let mut kinds: Vec<([u8; 5], bool)> = Vec::new();
    let mut digits = itoa_buffer();
    // Buffers kept between calls: a batch needs megabytes, and fresh ones would be page-faulted in.
    let mut buffers = BUFFERS.with(|b| b.take());
    let Buffers { groups, prefix } = &mut buffers;
    for group in groups.iter_mut() {
        group.data.clear();
        group.ends.clear();
    }
    let mut used = 0;
    let mut result: PyResult<()> = Ok(());
    for message in messages.try_iter()? {
        let record = (|| -> PyResult<()> {
            let message = message?;
            let offset: i64 = message.call_method0(n_offset)?.extract().map_err(|_| {
                PyValueError::new_err(
                    "a consumed record has no offset (an error message was not dropped?)",
                )
            })?;
            let timestamp: i64 = message.call_method0(n_timestamp)?.get_item(1)?.extract()?;
            let key = message.call_method0(n_key)?;
            let headers = message.call_method0(n_headers)?;
            let value = message.call_method0(n_value)?;
            let value = optional_bytes(&value, "a record's value")?;

            prefix.clear();
            prefix.extend_from_slice(&part_prefix);
            put_long(prefix, offset);
            put_long(prefix, timestamp);
            put_optional(prefix, optional_bytes(&key, "a record's key")?);
            put_headers(prefix, &headers)?;

            let mut tag: Vec<u8> = Vec::with_capacity(11);
            put_optional_tag(&mut tag, value);
            let mut hasher = Sha256::new(engine);
            hasher.update(&[LEAF]);
            hasher.update(prefix);
            hasher.update(&tag);
            hasher.update(value.unwrap_or_default());
            let digest = hasher.finish();
            digests.extend_from_slice(&digest);

            lines.extend_from_slice(digits.format(i64::from(partition)));
            lines.push(b' ');
            lines.extend_from_slice(digits.format(offset));
            lines.push(b' ');
            for byte in digest {
                lines.push(HEX[usize::from(byte >> 4)]);
                lines.push(HEX[usize::from(byte & 0x0F)]);
            }
            lines.push(b'\n');

            let header = match value {
                Some(v) if v.len() >= 5 && v[0] == 0 => {
                    let header: [u8; 5] = [v[0], v[1], v[2], v[3], v[4]];
                    let known = kinds.iter().find(|(h, _)| *h == header).map(|(_, k)| *k);
                    let is_typed = match known {
                        Some(k) => k,
                        None => {
                            let k: bool = typed.call1((PyBytes::new(py, &header),))?.extract()?;
                            kinds.push((header, k));
                            k
                        }
                    };
                    is_typed.then_some(header)
                }
                _ => None,
            };
            let group = group_for(groups, &mut used, header);
            group.data.extend_from_slice(prefix);
            match (header, value) {
                (Some(h), Some(v)) => {
                    // envelope: canonical prefix, schema id, union branch 1, the datum as it is
                    put_long(
                        &mut group.data,
                        i64::from(u32::from_be_bytes([h[1], h[2], h[3], h[4]])),
                    );
                    group.data.push(SOME);
                    group.data.extend_from_slice(&v[5..]);
                }
                _ => {
                    // raw file: the canonical encoding itself
                    group.data.extend_from_slice(&tag);
                    group.data.extend_from_slice(value.unwrap_or_default());
                }
            }
            group.ends.push(group.data.len());
            Ok(())
        })();
        if record.is_err() {
            result = record;
            break;
        }
    }
    let out = PyList::empty(py);
    if result.is_ok() {
        for group in &groups[..used] {
            let header = match group.header {
                Some(h) => PyBytes::new(py, &h).into_any(),
                None => py.None().into_bound(py),
            };
            let item =
                (header, PyBytes::new(py, &group.data), &group.ends).into_bound_py_any(py)?;
            out.append(item)?;
        }
    }
    BUFFERS.with(|b| b.replace(buffers));
    result?;
    let lines = PyString::new(py, std::str::from_utf8(&lines).expect("ASCII lines"));
    Ok((PyBytes::new(py, &digests), lines, out))
}

/// A small decimal formatter for the hash-list lines.
struct Digits([u8; 24]);

fn itoa_buffer() -> Digits {
    Digits([0; 24])
}

impl Digits {
    fn format(&mut self, n: i64) -> &[u8] {
        let mut pos = self.0.len();
        let negative = n < 0;
        let mut rest = n.unsigned_abs();
        loop {
            pos -= 1;
            self.0[pos] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        if negative {
            pos -= 1;
            self.0[pos] = b'-';
        }
        &self.0[pos..]
    }
}

/// The RFC 6962 Merkle tree hash over `digests` (32-byte leaf hashes joined, in order), as
/// streams.replay.encoding.merkle_root computes it: SHA-256(0x01 || left || right), an odd last node
/// carried up unhashed, SHA-256 of nothing for no leaves.
#[pyfunction]
pub fn evidence_merkle_root<'py>(py: Python<'py>, digests: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    if digests.len() % 32 != 0 {
        return Err(PyValueError::new_err(format!(
            "digests must be 32-byte hashes joined; got {} bytes",
            digests.len()
        )));
    }
    let engine = detected();
    let root = py.detach(|| merkle(engine, digests));
    Ok(PyBytes::new(py, &root))
}

fn merkle(engine: Engine, digests: &[u8]) -> [u8; 32] {
    if digests.is_empty() {
        return sha256(engine, b"");
    }
    let mut level: Vec<[u8; 32]> = digests
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32-byte chunk"))
        .collect();
    let mut node = [0u8; 65];
    node[0] = NODE;
    while level.len() > 1 {
        let mut paired = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            if let [left, right] = pair {
                node[1..33].copy_from_slice(left);
                node[33..].copy_from_slice(right);
                paired.push(sha256(engine, &node));
            } else {
                paired.push(pair[0]);
            }
        }
        level = paired;
    }
    level[0]
}

/// SHA-256 of `data` as the functions above compute it; `portable` forces the rounds written in
/// plain Rust even where the CPU has SHA extensions (so tests can check both against hashlib).
#[pyfunction]
#[pyo3(signature = (data, *, portable = false))]
pub fn evidence_sha256<'py>(py: Python<'py>, data: &[u8], portable: bool) -> Bound<'py, PyBytes> {
    let engine = if portable {
        Engine::Portable
    } else {
        detected()
    };
    PyBytes::new(py, &sha256(engine, data))
}

/// Whether this process hashes with the CPU's SHA extensions.
#[pyfunction]
pub fn evidence_sha256_accelerated() -> bool {
    detected() != Engine::Portable
}
