//! Archive segments read back natively: the canonical records (streams.replay.encoding's CANONICAL_SCHEMA)
//! of the Avro containers streams/archive/segments.py writes, as objects with a consumed Message's accessors.
//!
//! Replay reads the archive as fast as Kafka only without a Python dict and wrapper per record; verify
//! hashes each record's stored bytes here (the evidence bundle's leaf hash: SHA-256(0x00 || datum)).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use sha2::{Digest, Sha256};

use crate::evidence::LEAF;
use crate::failure::{Failure, Res};
use crate::input::Input;

const SYNC_SIZE: usize = 16;
const TIMESTAMP_CREATE_TIME: i32 = 1; // what confluent-kafka's Message.timestamp() says first

/// A record read back from the archive, with the accessors of a consumed confluent-kafka Message.
#[pyclass(frozen, module = "streams._avro_native")]
pub struct ArchivedRecord {
    topic: Py<PyString>,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<Py<PyBytes>>,
    headers: Option<Py<PyList>>, // None when the record has none, as Message.headers() says
    value: Option<Py<PyBytes>>,
}

#[pymethods]
impl ArchivedRecord {
    #[new]
    #[pyo3(signature = (topic, partition, offset, timestamp, key=None, headers=None, value=None))]
    fn new(
        topic: Bound<'_, PyString>,
        partition: i32,
        offset: i64,
        timestamp: i64,
        key: Option<Bound<'_, PyBytes>>,
        headers: Option<Bound<'_, PyList>>,
        value: Option<Bound<'_, PyBytes>>,
    ) -> Self {
        Self {
            topic: topic.unbind(),
            partition,
            offset,
            timestamp,
            key: key.map(Bound::unbind),
            headers: headers.filter(|h| !h.is_empty()).map(Bound::unbind),
            value: value.map(Bound::unbind),
        }
    }

    fn topic(&self, py: Python<'_>) -> Py<PyString> {
        self.topic.clone_ref(py)
    }

    fn partition(&self) -> i32 {
        self.partition
    }

    fn offset(&self) -> i64 {
        self.offset
    }

    fn timestamp(&self) -> (i32, i64) {
        (TIMESTAMP_CREATE_TIME, self.timestamp)
    }

    fn key(&self, py: Python<'_>) -> Option<Py<PyBytes>> {
        self.key.as_ref().map(|k| k.clone_ref(py))
    }

    fn value(&self, py: Python<'_>) -> Option<Py<PyBytes>> {
        self.value.as_ref().map(|v| v.clone_ref(py))
    }

    fn headers(&self, py: Python<'_>) -> Option<Py<PyList>> {
        self.headers.as_ref().map(|h| h.clone_ref(py))
    }

    fn error(&self) -> Option<Py<PyAny>> {
        None
    }
}

fn bytes<'a>(c: &mut Input<'a>) -> Res<&'a [u8]> {
    let n = c.length("bytes")?;
    c.take(n)
}

fn string<'a>(c: &mut Input<'a>) -> Res<&'a str> {
    let at = c.pos();
    let n = c.length("string")?;
    std::str::from_utf8(c.take(n)?)
        .map_err(|_| Failure::value(format!("invalid UTF-8 in a string at offset {at}")))
}

/// `["null", "bytes"]`, the canonical record's key, header values and value.
fn optional<'a>(c: &mut Input<'a>) -> Res<Option<&'a [u8]>> {
    let at = c.pos();
    match c.long()? {
        0 => Ok(None),
        1 => bytes(c).map(Some),
        n => Err(Failure::value(format!("union branch {n} at offset {at}"))),
    }
}

/// Python strings made once per distinct text (a segment repeats one topic and a few header names).
#[derive(Default)]
struct Strings(Vec<(Vec<u8>, Py<PyString>)>);

impl Strings {
    fn get(&mut self, py: Python<'_>, text: &str) -> Py<PyString> {
        if let Some((_, s)) = self.0.iter().find(|(t, _)| t == text.as_bytes()) {
            return s.clone_ref(py);
        }
        let s = PyString::new(py, text).unbind();
        if self.0.len() < 64 {
            self.0.push((text.as_bytes().to_vec(), s.clone_ref(py)));
        }
        s
    }
}

fn record(py: Python<'_>, c: &mut Input<'_>, strings: &mut Strings) -> Res<ArchivedRecord> {
    let topic = strings.get(py, string(c)?);
    let partition = c.int()?;
    let offset = c.long()?;
    let timestamp = c.long()?;
    let key = optional(c)?.map(|k| PyBytes::new(py, k).unbind());
    let mut headers: Option<Bound<'_, PyList>> = None;
    // a header takes at least 2 bytes: its name's length and the value's union branch
    while let Some(block) = c.block(2, "headers")? {
        let list = headers.get_or_insert_with(|| PyList::empty(py));
        for _ in 0..block.count {
            let name = strings.get(py, string(c)?);
            let value = match optional(c)? {
                Some(v) => PyBytes::new(py, v).into_any().unbind(),
                None => py.None(),
            };
            let pair =
                PyTuple::new(py, [name.into_any(), value]).map_err(|e| Failure::python(e, py))?;
            list.append(pair).map_err(|e| Failure::python(e, py))?;
        }
        c.end_block(&block, "headers")?;
    }
    let value = optional(c)?.map(|v| PyBytes::new(py, v).unbind());
    Ok(ArchivedRecord {
        topic,
        partition,
        offset,
        timestamp,
        key,
        headers: headers.map(Bound::unbind),
        value,
    })
}

/// The records of an archive segment's container bytes, and with `hashes` their leaf hashes joined.
///
/// `header_len` is where the sync marker starts: the caller has checked the bytes before it (magic,
/// the canonical schema, codec null). Then blocks of (count, size, datums, sync marker) to the end.
/// ValueError names what does not decode (a torn block, a wrong sync marker, a malformed record).
#[pyfunction]
pub fn decode_archive_segment<'py>(
    py: Python<'py>,
    data: &[u8],
    header_len: usize,
    hashes: bool,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyBytes>)> {
    let out = PyList::empty(py);
    let mut digests: Vec<u8> = Vec::new();
    let mut strings = Strings::default();
    let mut c = Input::new(data);
    let result = (|| -> Res<()> {
        c.take(header_len)?;
        let sync = c.take(SYNC_SIZE)?;
        while c.left() > 0 {
            let count = c.long()?;
            let size = c.length("block")?;
            let block = c.take(size)?;
            if c.take(SYNC_SIZE)? != sync {
                return Err(Failure::value(format!(
                    "the sync marker after the block ending at offset {} is wrong",
                    c.pos()
                )));
            }
            if count < 0 {
                return Err(Failure::value(format!("block of {count} records")));
            }
            let mut b = Input::new(block);
            for _ in 0..count {
                let start = b.pos();
                let rec = record(py, &mut b, &mut strings)?;
                if hashes {
                    let mut hasher = Sha256::new();
                    hasher.update([LEAF]);
                    hasher.update(&block[start..b.pos()]);
                    digests.extend_from_slice(&hasher.finalize());
                }
                let rec = Bound::new(py, rec).map_err(|e| Failure::python(e, py))?;
                out.append(rec).map_err(|e| Failure::python(e, py))?;
            }
            b.finish()?;
        }
        Ok(())
    })();
    result.map_err(|f| PyValueError::new_err(f.render()))?;
    Ok((out, PyBytes::new(py, &digests)))
}
