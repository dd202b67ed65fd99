//! Evidence-bundle hashing for `streams replay --export`: the canonical Avro encoding of a batch of
//! consumed records, their SHA-256 leaf hashes, and the RFC 6962 Merkle root over them.
//!
//! streams/replay/encoding.py owns the definition (CANONICAL_SCHEMA, record_hash, merkle_root); this is
//! its fast path and must stay byte-identical to it (tests/replay/test_native_hash.py checks that).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::{IntoPyObjectExt, intern};
use sha2::{Digest, Sha256};

pub(crate) const LEAF: u8 = 0x00; // RFC 6962 domain separation of leaves and interior nodes
const NODE: u8 = 0x01;
const NULL: u8 = 0x00; // union branch 0 ("null")
const SOME: u8 = 0x02; // union branch 1, zig-zag encoded

// ---- SHA-256: the sha2 crate (SHA extensions when the CPU has them, detected at run time) -----------

/// SHA-256 of `data`.
fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Whether the CPU has the SHA extensions the sha2 crate uses when present (its `cpufeatures` test).
fn accelerated() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse2")
            && std::arch::is_x86_feature_detected!("ssse3")
            && std::arch::is_x86_feature_detected!("sse4.1")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
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

/// `(digests, lines, groups)` of encode_evidence_batch.
type EvidenceBatch<'py> = (
    Bound<'py, PyBytes>,
    Bound<'py, PyString>,
    Bound<'py, PyList>,
);

/// Encodes and hashes one partition's records for an evidence bundle.
///
/// `messages` are consumed records of `topic` (confluent-kafka Messages, or anything with their
/// accessors), in offset order. `typed(header)` is asked once per batch for each distinct 5-byte
/// Confluent header: True when the schema id is known (the record goes to that schema's container
/// file, its datum kept as is), False for the raw-values file. Returns `(digests, lines, groups)`:
/// the 32-byte record hashes joined, the `"partition offset sha256hex\n"` lines, and per target file
/// `(header or None, datums joined, end of each datum)`, each group in offset order.
#[pyfunction]
pub fn encode_evidence_batch<'py>(
    py: Python<'py>,
    topic: &str,
    partition: i32,
    messages: &Bound<'py, PyAny>,
    typed: &Bound<'py, PyAny>,
) -> PyResult<EvidenceBatch<'py>> {
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

            let key = optional_bytes(&key, "a record's key")?;
            record_prefix(prefix, &part_prefix, offset, timestamp, key, &headers)?;

            let mut tag: Vec<u8> = Vec::with_capacity(11);
            put_optional_tag(&mut tag, value);
            let mut hasher = Sha256::new();
            hasher.update([LEAF]);
            hasher.update(&prefix[..]);
            hasher.update(&tag);
            hasher.update(value.unwrap_or_default());
            let digest = <[u8; 32]>::from(hasher.finalize());
            digests.extend_from_slice(&digest);

            hash_line(&mut lines, &mut digits, partition, offset, &digest);
            let header = typed_header(py, &mut kinds, typed, value)?;
            let group = group_for(groups, &mut used, header);
            append_datum(group, prefix, header, value, &tag);
            Ok(())
        })();
        if record.is_err() {
            result = record;
            break;
        }
    }
    let out = match result {
        Ok(()) => groups_list(py, &buffers.groups[..used]),
        Err(err) => Err(err),
    };
    BUFFERS.with(|b| b.replace(buffers));
    let out = out?;
    let lines = PyString::new(py, std::str::from_utf8(&lines).expect("ASCII lines"));
    Ok((PyBytes::new(py, &digests), lines, out))
}

/// The canonical encoding of a record up to its value: topic and partition, offset, timestamp, key, headers.
fn record_prefix(
    prefix: &mut Vec<u8>,
    part_prefix: &[u8],
    offset: i64,
    timestamp: i64,
    key: Option<&[u8]>,
    headers: &Bound<'_, PyAny>,
) -> PyResult<()> {
    prefix.clear();
    prefix.extend_from_slice(part_prefix);
    put_long(prefix, offset);
    put_long(prefix, timestamp);
    put_optional(prefix, key);
    put_headers(prefix, headers)
}

/// One `"partition offset sha256hex\n"` line of the hash list.
fn hash_line(
    lines: &mut Vec<u8>,
    digits: &mut Digits,
    partition: i32,
    offset: i64,
    digest: &[u8; 32],
) {
    lines.extend_from_slice(digits.format(i64::from(partition)));
    lines.push(b' ');
    lines.extend_from_slice(digits.format(offset));
    lines.push(b' ');
    for &byte in digest {
        lines.push(HEX[usize::from(byte >> 4)]);
        lines.push(HEX[usize::from(byte & 0x0F)]);
    }
    lines.push(b'\n');
}

/// The value's Confluent header when `typed` says its schema id is known (asked once per header).
fn typed_header(
    py: Python<'_>,
    kinds: &mut Vec<([u8; 5], bool)>,
    typed: &Bound<'_, PyAny>,
    value: Option<&[u8]>,
) -> PyResult<Option<[u8; 5]>> {
    let Some(v) = value.filter(|v| v.len() >= 5 && v[0] == 0) else {
        return Ok(None);
    };
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
    Ok(is_typed.then_some(header))
}

/// One record into its target file's datums: the canonical prefix, then the typed envelope or the raw
/// encoding.
fn append_datum(
    group: &mut Group,
    prefix: &[u8],
    header: Option<[u8; 5]>,
    value: Option<&[u8]>,
    tag: &[u8],
) {
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
            group.data.extend_from_slice(tag);
            group.data.extend_from_slice(value.unwrap_or_default());
        }
    }
    group.ends.push(group.data.len());
}

/// `(header or None, datums joined, end of each datum)` per target file.
fn groups_list<'py>(py: Python<'py>, groups: &[Group]) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for group in groups {
        let header = match group.header {
            Some(h) => PyBytes::new(py, &h).into_any(),
            None => py.None().into_bound(py),
        };
        out.append((header, PyBytes::new(py, &group.data), &group.ends).into_bound_py_any(py)?)?;
    }
    Ok(out)
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
    let root = py.detach(|| merkle(digests));
    Ok(PyBytes::new(py, &root))
}

fn merkle(digests: &[u8]) -> [u8; 32] {
    if digests.is_empty() {
        return sha256(b"");
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
                paired.push(sha256(&node));
            } else {
                paired.push(pair[0]);
            }
        }
        level = paired;
    }
    level[0]
}

/// SHA-256 of `data` as the functions above compute it (tests hold it to hashlib).
#[pyfunction]
pub fn evidence_sha256<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &sha256(data))
}

/// Whether this process hashes with the CPU's SHA extensions.
#[pyfunction]
pub fn evidence_sha256_accelerated() -> bool {
    accelerated()
}
