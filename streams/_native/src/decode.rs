//! Avro binary to Python values against a compiled Schema: for valid data, exactly what
//! fastavro.schemaless_reader returns (dicts in field order, union values without branch names,
//! Decimal with the schema's scale as exponent, datetimes in timezone.utc, uuid.UUID); for anything
//! malformed, ValueError naming the field path, e.g. "field 'lines[2].quantity': truncated datum: ...".
//!
//! The bytes are read through input.rs, which checks every length, count and index against what is
//! left before using it. Deliberately stricter than fastavro, which reads most of these as something:
//! trailing bytes, negative or out-of-range union and enum indexes (fastavro wraps negative ones),
//! booleans other than 0 and 1, ints beyond 32 bits, decimals with more digits than their precision
//! (fastavro rounds them), timestamps and dates outside years 1-9999, times of day outside one day
//! (fastavro makes up a time for some negative ones) and array blocks whose declared size is wrong.

//! The reading and all of that checking is walk.rs, shared with canonical JSON (canonical.rs); this
//! file is the Python class and the sink that builds Python values.

use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyList, PyString};

use crate::canonical::{CanonicalPlan, JsonSink};
use crate::failure::{Failure, Res, short_repr};
use crate::input::Input;
use crate::logical_read::{MICROS_PER_DAY, civil_from_days, clock};
use crate::schema::{Field, Node, NodeId, Record, Schema};
use crate::walk::{Layout, Sink, Walk};

/// Decodes Avro binary (no Confluent header) to Python values for one schema.
///
/// `Decoder(schema_json)` parses and compiles the schema; ValueError when it is invalid.
/// `decode(datum)` returns what `fastavro.schemaless_reader` returns for it, and raises ValueError
/// naming the field path when the datum is malformed, truncated or followed by extra bytes.
/// `canonical_json(datum)` returns the canonical JSON bytes of that value (canonical.rs) without
/// building it, with the same errors.
#[pyclass(frozen, module = "streams._avro_native")]
pub struct Decoder {
    schema: Schema,
    layout: Layout,
    /// Enum symbols as Python strings, made once (empty for other nodes).
    symbols: Vec<Vec<Py<PyString>>>,
    env: DecodeEnv,
    canonical: CanonicalPlan,
    /// The last canonical JSON's size: the next buffer starts big enough, most of the time.
    json_size: AtomicUsize,
}

#[pymethods]
impl Decoder {
    #[new]
    fn new(py: Python<'_>, schema_json: &str) -> PyResult<Self> {
        let schema = Schema::compile(py, schema_json)?;
        let symbols = schema
            .nodes
            .iter()
            .map(|node| match node {
                Node::Enum { symbols, .. } => symbols
                    .iter()
                    .map(|s| PyString::intern(py, s).unbind())
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        Ok(Decoder {
            env: DecodeEnv::new(py)?,
            layout: Layout::new(&schema),
            canonical: CanonicalPlan::new(&schema),
            json_size: AtomicUsize::new(256),
            symbols,
            schema,
        })
    }

    /// The Python value of the Avro datum `datum`, which must be consumed exactly.
    fn decode<'py>(&self, py: Python<'py>, datum: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let mut walk = Walk {
            schema: &self.schema,
            layout: &self.layout,
            sink: PySink {
                py,
                symbols: &self.symbols,
                env: &self.env,
            },
        };
        walk.datum(&mut Input::new(datum))
            .map_err(|failure| (*failure).into_pyerr(py))
    }

    /// The canonical JSON of the datum's value, exactly `zatca.canonical_bytes(self.decode(datum))`,
    /// written in one pass without building the value. ValueError as `decode` for malformed data;
    /// ValueError for schemas it does not support (`canonical_json_unsupported` says why) and for
    /// values nested deeper than orjson writes.
    fn canonical_json<'py>(&self, py: Python<'py>, datum: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(reason) = &self.canonical.unsupported {
            return Err(PyValueError::new_err(reason.clone()));
        }
        let sink = JsonSink::new(
            py,
            &self.canonical,
            &self.env,
            self.json_size.load(Ordering::Relaxed),
        );
        let mut walk = Walk {
            schema: &self.schema,
            layout: &self.layout,
            sink,
        };
        walk.datum(&mut Input::new(datum))
            .and_then(|()| walk.sink.finish())
            .map_err(|failure| (*failure).into_pyerr(py))?;
        let out = walk.sink.output();
        self.json_size.store(out.len(), Ordering::Relaxed);
        Ok(PyBytes::new(py, out))
    }

    /// Why `canonical_json` refuses this schema (float/double, local timestamps, times of day), or
    /// None when it supports it.
    #[getter]
    fn canonical_json_unsupported(&self) -> Option<&str> {
        self.canonical.unsupported.as_deref()
    }
}

/// Python objects values are built with, looked up once per Decoder.
pub(crate) struct DecodeEnv {
    decimal: Py<PyAny>,
    datetime: Py<PyAny>,
    date: Py<PyAny>,
    time: Py<PyAny>,
    uuid: Py<PyAny>,
    utc: Py<PyAny>,
}

impl DecodeEnv {
    pub(crate) fn new(py: Python<'_>) -> PyResult<DecodeEnv> {
        let datetime = py.import("datetime")?;
        Ok(DecodeEnv {
            decimal: py.import("decimal")?.getattr("Decimal")?.unbind(),
            datetime: datetime.getattr("datetime")?.unbind(),
            date: datetime.getattr("date")?.unbind(),
            time: datetime.getattr("time")?.unbind(),
            uuid: py.import("uuid")?.getattr("UUID")?.unbind(),
            // fastavro's epoch is datetime(1970, 1, 1, tzinfo=timezone.utc); its results carry that object.
            utc: datetime.getattr("timezone")?.getattr("utc")?.unbind(),
        })
    }
}

/// A Python exception raised while building a value: ValueErrors are the data's fault and get the
/// path; anything else (MemoryError, KeyboardInterrupt) is raised as it is.
fn python_failure(py: Python<'_>, err: PyErr, what: impl FnOnce() -> String) -> Box<Failure> {
    if err.is_instance_of::<PyValueError>(py) {
        let message = format!("{}: {}", what(), err.value(py));
        Failure::value(message).with_cause(err)
    } else {
        Failure::passthrough(err)
    }
}

/// The str of UTF-8 bytes, decoded (and checked) by Python's own UTF-8 codec; `what` ("string",
/// "map key") and `at` name them in the error. Canonical JSON checks UTF-8 in Rust and calls this
/// for the message when the check fails, so both raise the same error.
pub(crate) fn decode_utf8<'py>(
    py: Python<'py>,
    raw: &[u8],
    what: &str,
    at: usize,
) -> Res<Bound<'py, PyAny>> {
    // SAFETY: `raw` is a live slice (its length <= isize::MAX: it is inside a bytes object); a NULL
    // `errors` means strict decoding. The result is a new reference or NULL with an exception set.
    let ptr = unsafe {
        ffi::PyUnicode_DecodeUTF8(
            raw.as_ptr().cast(),
            raw.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        )
    };
    if ptr.is_null() {
        let err = PyErr::fetch(py);
        return Err(python_failure(py, err, || {
            format!("invalid UTF-8 in the {what} at offset {at}")
        }));
    }
    // SAFETY: non-null, so a new (owned) reference to a str.
    Ok(unsafe { Bound::from_owned_ptr(py, ptr) })
}

/// `uuid.UUID(text)` of a uuid string's bytes, with decode's errors (shared with canonical JSON for
/// the texts it does not read itself).
pub(crate) fn py_uuid<'py>(
    py: Python<'py>,
    env: &DecodeEnv,
    raw: &[u8],
    at: usize,
) -> Res<Bound<'py, PyAny>> {
    let text = decode_utf8(py, raw, "string", at)?;
    env.uuid
        .bind(py)
        .call1((&text,))
        .map_err(|e| python_failure(py, e, || format!("{} is not a UUID", short_repr(&text))))
}

/// Builds the Python values fastavro returns.
struct PySink<'d, 'py> {
    py: Python<'py>,
    symbols: &'d [Vec<Py<PyString>>],
    env: &'d DecodeEnv,
}

impl<'py> Sink<'_> for PySink<'_, 'py> {
    type Value = Bound<'py, PyAny>;
    type Seq = Vec<Bound<'py, PyAny>>;
    type Map = Bound<'py, PyDict>;
    type Key = Bound<'py, PyAny>;
    type Rec = Bound<'py, PyDict>;

    #[inline]
    fn null(&mut self) -> Res<Self::Value> {
        Ok(self.py.None().into_bound(self.py))
    }

    #[inline]
    fn boolean(&mut self, value: bool) -> Res<Self::Value> {
        Ok(PyBool::new(self.py, value).to_owned().into_any())
    }

    #[inline]
    fn int(&mut self, value: i32) -> Res<Self::Value> {
        Ok(value
            .into_pyobject(self.py)
            .unwrap_or_else(|never| match never {})
            .into_any())
    }

    #[inline]
    fn long(&mut self, value: i64) -> Res<Self::Value> {
        Ok(value
            .into_pyobject(self.py)
            .unwrap_or_else(|never| match never {})
            .into_any())
    }

    #[inline]
    fn float(&mut self, value: f32) -> Res<Self::Value> {
        Ok(PyFloat::new(self.py, f64::from(value)).into_any())
    }

    #[inline]
    fn double(&mut self, value: f64) -> Res<Self::Value> {
        Ok(PyFloat::new(self.py, value).into_any())
    }

    #[inline]
    fn bytes(&mut self, value: &[u8]) -> Res<Self::Value> {
        Ok(PyBytes::new(self.py, value).into_any())
    }

    #[inline]
    fn string(&mut self, raw: &[u8], at: usize) -> Res<Self::Value> {
        decode_utf8(self.py, raw, "string", at)
    }

    fn uuid(&mut self, raw: &[u8], at: usize) -> Res<Self::Value> {
        py_uuid(self.py, self.env, raw, at)
    }

    #[inline]
    fn symbol(&mut self, node: NodeId, index: usize) -> Res<Self::Value> {
        Ok(self.symbols[node][index].bind(self.py).clone().into_any())
    }

    fn decimal(&mut self, text: &[u8]) -> Res<Self::Value> {
        let text = std::str::from_utf8(text)
            .map_err(|_| Failure::value("internal error: decimal text is not ASCII"))?;
        self.env
            .decimal
            .bind(self.py)
            .call1((PyString::new(self.py, text),))
            .map_err(Failure::passthrough)
    }

    /// fastavro: epoch + timedelta(microseconds=...), in timezone.utc (naive for local timestamps).
    fn timestamp(&mut self, micros: i64, local: bool) -> Res<Self::Value> {
        let py = self.py;
        let (year, month, day) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
        let (hour, minute, second, micro) = clock(micros.rem_euclid(MICROS_PER_DAY));
        let datetime = self.env.datetime.bind(py);
        if local {
            datetime.call1((year, month, day, hour, minute, second, micro))
        } else {
            datetime.call1((
                year,
                month,
                day,
                hour,
                minute,
                second,
                micro,
                self.env.utc.bind(py),
            ))
        }
        .map_err(Failure::passthrough)
    }

    fn date(&mut self, days: i64) -> Res<Self::Value> {
        let (year, month, day) = civil_from_days(days);
        self.env
            .date
            .bind(self.py)
            .call1((year, month, day))
            .map_err(Failure::passthrough)
    }

    fn time_of_day(&mut self, micros: i64) -> Res<Self::Value> {
        let (hour, minute, second, micros) = clock(micros);
        self.env
            .time
            .bind(self.py)
            .call1((hour, minute, second, micros))
            .map_err(Failure::passthrough)
    }

    #[inline]
    fn seq_begin(&mut self) -> Res<Self::Seq> {
        Ok(Vec::new())
    }

    #[inline]
    fn seq_reserve(&mut self, seq: &mut Self::Seq, count: usize) {
        seq.reserve(count);
    }

    #[inline]
    fn seq_item(&mut self, _seq: &mut Self::Seq) {}

    #[inline]
    fn seq_push(&mut self, seq: &mut Self::Seq, value: Self::Value) -> Res<()> {
        seq.push(value);
        Ok(())
    }

    fn seq_end(&mut self, seq: Self::Seq) -> Res<Self::Value> {
        PyList::new(self.py, seq)
            .map(Bound::into_any)
            .map_err(Failure::passthrough)
    }

    #[inline]
    fn map_begin(&mut self) -> Res<Self::Map> {
        Ok(PyDict::new(self.py))
    }

    #[inline]
    fn map_key(&mut self, _map: &mut Self::Map, raw: &[u8], at: usize) -> Res<Self::Key> {
        decode_utf8(self.py, raw, "map key", at)
    }

    #[inline]
    fn map_insert(&mut self, map: &mut Self::Map, key: Self::Key, value: Self::Value) -> Res<()> {
        // Later duplicates replace earlier ones, as in fastavro.
        map.set_item(key, value).map_err(Failure::passthrough)
    }

    #[inline]
    fn map_end(&mut self, map: Self::Map) -> Res<Self::Value> {
        Ok(map.into_any())
    }

    #[inline]
    fn record_begin(&mut self, _node: NodeId, _record: &Record) -> Res<Self::Rec> {
        Ok(PyDict::new(self.py))
    }

    #[inline]
    fn field_begin(&mut self, _rec: &mut Self::Rec, _index: usize) {}

    #[inline]
    fn field_end(
        &mut self,
        rec: &mut Self::Rec,
        _index: usize,
        field: &Field,
        value: Self::Value,
    ) -> Res<()> {
        // Keys are the interned field names, whose hashes are cached.
        rec.set_item(field.key.bind(self.py), value)
            .map_err(Failure::passthrough)
    }

    #[inline]
    fn record_end(&mut self, rec: Self::Rec) -> Res<Self::Value> {
        Ok(rec.into_any())
    }
}
