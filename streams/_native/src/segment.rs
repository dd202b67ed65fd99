//! Archive segments read back natively: the canonical records (streams.replay.encoding's CANONICAL_SCHEMA)
//! of the Avro containers streams/archive/segments.py writes, as objects with a consumed Message's accessors.
//!
//! Replay reads the archive as fast as Kafka only without a Python dict and wrapper per record; verify
//! hashes each record's stored bytes here (the evidence bundle's leaf hash: SHA-256(0x00 || datum)).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use sha2::{Digest, Sha256};

const LEAF: u8 = 0x00; // RFC 6962 leaf domain separation, as in evidence.rs
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

/// A position in a byte slice with Avro's primitive readers; errors say what ran out where.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn long(&mut self) -> Result<i64, String> {
        let mut z: u64 = 0;
        let mut shift = 0;
        loop {
            let Some(&byte) = self.data.get(self.pos) else {
                return Err(format!("a long runs past the end at byte {}", self.pos));
            };
            self.pos += 1;
            if shift > 63 {
                return Err(format!(
                    "a long is longer than 10 bytes at byte {}",
                    self.pos
                ));
            }
            z |= u64::from(byte & 0x7F) << shift;
            if byte < 0x80 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
            shift += 7;
        }
    }

    fn take(&mut self, size: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(size)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| format!("{size} bytes at byte {} run past the end", self.pos))?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let size = self.long()?;
        let size = usize::try_from(size).map_err(|_| format!("negative length {size}"))?;
        self.take(size)
    }

    fn string(&mut self) -> Result<&'a str, String> {
        let at = self.pos;
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| format!("invalid UTF-8 in a string at byte {at}"))
    }

    fn optional(&mut self) -> Result<Option<&'a [u8]>, String> {
        match self.long()? {
            0 => Ok(None),
            1 => self.bytes().map(Some),
            n => Err(format!("union branch {n} at byte {}", self.pos)),
        }
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

fn record(
    py: Python<'_>,
    c: &mut Cursor<'_>,
    strings: &mut Strings,
) -> Result<ArchivedRecord, String> {
    let topic = strings.get(py, c.string()?);
    let partition = c.long()?;
    let partition =
        i32::try_from(partition).map_err(|_| format!("partition {partition} is not an int"))?;
    let offset = c.long()?;
    let timestamp = c.long()?;
    let key = c.optional()?.map(|k| PyBytes::new(py, k).unbind());
    let mut headers: Option<Bound<'_, PyList>> = None;
    loop {
        let mut count = c.long()?;
        if count == 0 {
            break;
        }
        if count < 0 {
            c.long()?; // a negative count is followed by the block's byte size
            count = -count;
        }
        let list = headers.get_or_insert_with(|| PyList::empty(py));
        for _ in 0..count {
            let name = strings.get(py, c.string()?);
            let value = c.optional()?;
            let pair = match value {
                Some(v) => PyTuple::new(
                    py,
                    [name.into_any(), PyBytes::new(py, v).into_any().unbind()],
                ),
                None => PyTuple::new(py, [name.into_any(), py.None()]),
            }
            .map_err(|e| e.to_string())?;
            list.append(pair).map_err(|e| e.to_string())?;
        }
    }
    let value = c.optional()?.map(|v| PyBytes::new(py, v).unbind());
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
    let result = (|| -> Result<(), String> {
        let mut c = Cursor {
            data,
            pos: header_len,
        };
        let sync = c.take(SYNC_SIZE)?;
        while c.pos < data.len() {
            let count = c.long()?;
            let block = c.bytes()?;
            if c.take(SYNC_SIZE)? != sync {
                return Err(format!(
                    "the sync marker after the block ending at byte {} is wrong",
                    c.pos
                ));
            }
            if count < 0 {
                return Err(format!("block of {count} records"));
            }
            let mut b = Cursor {
                data: block,
                pos: 0,
            };
            for _ in 0..count {
                let start = b.pos;
                let rec = record(py, &mut b, &mut strings)?;
                if hashes {
                    let mut hasher = Sha256::new();
                    hasher.update([LEAF]);
                    hasher.update(&block[start..b.pos]);
                    digests.extend_from_slice(&hasher.finalize());
                }
                out.append(Bound::new(py, rec).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            if b.pos != block.len() {
                return Err(format!(
                    "{} bytes after the block's {count} records",
                    block.len() - b.pos
                ));
            }
        }
        Ok(())
    })();
    result.map_err(PyValueError::new_err)?;
    Ok((out, PyBytes::new(py, &digests)))
}
