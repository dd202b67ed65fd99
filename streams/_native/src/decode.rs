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

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyList, PyString};

use crate::encode::check_depth;
use crate::failure::{Failure, Res, Seg, short_repr};
use crate::input::Input;
use crate::logical_read::{
    EPOCH_ORDINAL, MAX_MICROS, MAX_ORDINAL, MICROS_PER_DAY, MIN_MICROS, civil_from_days, clock,
    decimal_text,
};
use crate::schema::{Node, NodeId, Record, Schema, TimeUnit};

/// Decodes Avro binary (no Confluent header) to Python values for one schema.
///
/// `Decoder(schema_json)` parses and compiles the schema; ValueError when it is invalid.
/// `decode(datum)` returns what `fastavro.schemaless_reader` returns for it, and raises ValueError
/// naming the field path when the datum is malformed, truncated or followed by extra bytes.
#[pyclass(frozen, module = "streams._avro_native")]
pub struct Decoder {
    schema: Schema,
    plan: Plan,
    env: DecodeEnv,
}

#[pymethods]
impl Decoder {
    #[new]
    fn new(py: Python<'_>, schema_json: &str) -> PyResult<Self> {
        let schema = Schema::compile(py, schema_json)?;
        let plan = Plan::new(py, &schema);
        Ok(Decoder {
            env: DecodeEnv::new(py)?,
            plan,
            schema,
        })
    }

    /// The Python value of the Avro datum `datum`, which must be consumed exactly.
    fn decode<'py>(&self, py: Python<'py>, datum: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let reader = Reader {
            py,
            schema: &self.schema,
            plan: &self.plan,
            env: &self.env,
        };
        let mut input = Input::new(datum);
        reader
            .read(self.schema.root, &mut input, 0)
            .and_then(|value| input.finish().map(|()| value))
            .map_err(|failure| (*failure).into_pyerr(py))
    }
}

/// Python objects values are built with, looked up once per Decoder.
struct DecodeEnv {
    decimal: Py<PyAny>,
    datetime: Py<PyAny>,
    date: Py<PyAny>,
    time: Py<PyAny>,
    uuid: Py<PyAny>,
    utc: Py<PyAny>,
}

impl DecodeEnv {
    fn new(py: Python<'_>) -> PyResult<DecodeEnv> {
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

/// What decoding needs beyond the schema, per node.
struct Plan {
    /// A lower bound on the bytes a value of the node takes: block counts are checked against it.
    min_size: Vec<usize>,
    /// Enum symbols as Python strings, made once (empty for other nodes).
    symbols: Vec<Vec<Py<PyString>>>,
}

impl Plan {
    fn new(py: Python<'_>, schema: &Schema) -> Plan {
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
        Plan {
            min_size: min_sizes(schema),
            symbols,
        }
    }
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

struct Reader<'a, 'py> {
    py: Python<'py>,
    schema: &'a Schema,
    plan: &'a Plan,
    env: &'a DecodeEnv,
}

impl<'py> Reader<'_, 'py> {
    fn read(&self, id: NodeId, input: &mut Input<'_>, depth: u32) -> Res<Bound<'py, PyAny>> {
        let py = self.py;
        match self.schema.node(id) {
            Node::Null => Ok(py.None().into_bound(py)),
            Node::Boolean => {
                let at = input.pos();
                match input.byte()? {
                    0 => Ok(PyBool::new(py, false).to_owned().into_any()),
                    1 => Ok(PyBool::new(py, true).to_owned().into_any()),
                    b => Err(Failure::value(format!(
                        "boolean byte {b:#04x} at offset {at} is neither 0 nor 1"
                    ))),
                }
            }
            Node::Int => Ok(input
                .int()?
                .into_pyobject(py)
                .unwrap_or_else(|never| match never {})
                .into_any()),
            Node::Long => Ok(input
                .long()?
                .into_pyobject(py)
                .unwrap_or_else(|never| match never {})
                .into_any()),
            Node::Float => {
                let value = f32::from_le_bytes(input.array::<4>()?);
                Ok(PyFloat::new(py, f64::from(value)).into_any())
            }
            Node::Double => {
                let value = f64::from_le_bytes(input.array::<8>()?);
                Ok(PyFloat::new(py, value).into_any())
            }
            Node::Bytes => {
                let n = input.length("bytes")?;
                Ok(PyBytes::new(py, input.take(n)?).into_any())
            }
            Node::String => self.string(input, "string"),
            Node::Uuid => {
                let text = self.string(input, "string")?;
                self.env.uuid.bind(py).call1((&text,)).map_err(|e| {
                    python_failure(py, e, || format!("{} is not a UUID", short_repr(&text)))
                })
            }
            Node::Fixed { size, .. } => Ok(PyBytes::new(py, input.take(*size)?).into_any()),
            Node::Enum { name, symbols } => {
                let at = input.pos();
                let index = input.long()?;
                match usize::try_from(index)
                    .ok()
                    .and_then(|i| self.plan.symbols[id].get(i))
                {
                    Some(symbol) => Ok(symbol.bind(py).clone().into_any()),
                    None => Err(Failure::value(format!(
                        "enum index {index} at offset {at} is out of range: enum {name} has {} symbols",
                        symbols.len()
                    ))),
                }
            }
            Node::Array { items } => self.array(*items, input, depth),
            Node::Map { values } => self.map(*values, input, depth),
            Node::Record(record) => self.record(record, input, depth),
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
            } => {
                let at = input.pos();
                let bytes = match fixed {
                    None => {
                        let n = input.length("decimal")?;
                        input.take(n)?
                    }
                    Some((_, size)) => input.take(*size)?,
                };
                if decimal_text(bytes, *precision, *scale, &mut input.scratch).is_err() {
                    return Err(Failure::value(format!(
                        "decimal at offset {at} has more than {precision} digits (precision {precision})"
                    )));
                }
                let text = std::str::from_utf8(&input.scratch)
                    .map_err(|_| Failure::value("internal error: decimal text is not ASCII"))?;
                self.env
                    .decimal
                    .bind(py)
                    .call1((PyString::new(py, text),))
                    .map_err(Failure::passthrough)
            }
            Node::Timestamp { unit, local } => {
                let at = input.pos();
                let n = input.long()?;
                self.timestamp(n, *unit, *local, at)
            }
            Node::Date => {
                let at = input.pos();
                let days = i64::from(input.int()?);
                if !(1..=MAX_ORDINAL).contains(&(days + EPOCH_ORDINAL)) {
                    return Err(Failure::value(format!(
                        "date {days} at offset {at} is out of range for a date (years 1 to 9999)"
                    )));
                }
                let (year, month, day) = civil_from_days(days);
                self.env
                    .date
                    .bind(py)
                    .call1((year, month, day))
                    .map_err(Failure::passthrough)
            }
            Node::TimeOfDay { unit } => {
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
                let (hour, minute, second, micros) = clock(n * per_unit);
                self.env
                    .time
                    .bind(py)
                    .call1((hour, minute, second, micros))
                    .map_err(Failure::passthrough)
            }
            Node::Placeholder => Err(Failure::value(
                "internal error: schema type was never defined",
            )),
        }
    }

    /// A length-prefixed UTF-8 string, decoded (and checked) by Python's own UTF-8 codec.
    fn string(&self, input: &mut Input<'_>, what: &str) -> Res<Bound<'py, PyAny>> {
        let n = input.length(what)?;
        let at = input.pos();
        let bytes = input.take(n)?;
        // SAFETY: `bytes` is a live slice of `n` bytes (n <= isize::MAX, it is inside a bytes object);
        // a NULL `errors` means strict decoding. The result is a new reference or NULL with an
        // exception set.
        let ptr = unsafe {
            ffi::PyUnicode_DecodeUTF8(
                bytes.as_ptr().cast(),
                n as ffi::Py_ssize_t,
                std::ptr::null(),
            )
        };
        if ptr.is_null() {
            let err = PyErr::fetch(self.py);
            return Err(python_failure(self.py, err, || {
                format!("invalid UTF-8 in the {what} at offset {at}")
            }));
        }
        // SAFETY: non-null, so a new (owned) reference to a str.
        Ok(unsafe { Bound::from_owned_ptr(self.py, ptr) })
    }

    fn array(&self, items: NodeId, input: &mut Input<'_>, depth: u32) -> Res<Bound<'py, PyAny>> {
        check_depth(depth)?;
        let mut values: Vec<Bound<'py, PyAny>> = Vec::new();
        while let Some(block) = input.block(self.plan.min_size[items], "array")? {
            // Checked by block(): the items fit in the bytes left (or are few and take none).
            values.reserve(block.count);
            for _ in 0..block.count {
                let index = values.len();
                let value = self
                    .read(items, input, depth + 1)
                    .map_err(|e| e.at(Seg::Index(index)))?;
                values.push(value);
            }
            input.end_block(&block, "array")?;
        }
        PyList::new(self.py, values)
            .map(Bound::into_any)
            .map_err(Failure::passthrough)
    }

    fn map(&self, values: NodeId, input: &mut Input<'_>, depth: u32) -> Res<Bound<'py, PyAny>> {
        check_depth(depth)?;
        let dict = PyDict::new(self.py);
        // A key's length takes a byte before the value.
        let entry_size = self.plan.min_size[values].saturating_add(1);
        while let Some(block) = input.block(entry_size, "map")? {
            for _ in 0..block.count {
                let key = self.string(input, "map key")?;
                let value = self.read(values, input, depth + 1).map_err(|e| {
                    let name = key
                        .cast::<PyString>()
                        .map(|k| k.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    e.at(Seg::Key(name))
                })?;
                // Later duplicates replace earlier ones, as in fastavro.
                dict.set_item(key, value).map_err(Failure::passthrough)?;
            }
            input.end_block(&block, "map")?;
        }
        Ok(dict.into_any())
    }

    fn record(&self, record: &Record, input: &mut Input<'_>, depth: u32) -> Res<Bound<'py, PyAny>> {
        check_depth(depth)?;
        // Keys are the interned field names, whose hashes are cached.
        let dict = PyDict::new(self.py);
        for field in &record.fields {
            let value = self
                .read(field.node, input, depth + 1)
                .map_err(|e| e.at(Seg::Field(field.name.clone())))?;
            dict.set_item(field.key.bind(self.py), value)
                .map_err(Failure::passthrough)?;
        }
        Ok(dict.into_any())
    }

    /// fastavro: epoch + timedelta(microseconds=...), in timezone.utc (naive for local timestamps).
    fn timestamp(&self, n: i64, unit: TimeUnit, local: bool, at: usize) -> Res<Bound<'py, PyAny>> {
        let py = self.py;
        let micros = match unit {
            TimeUnit::Millis => n.checked_mul(1000),
            TimeUnit::Micros => Some(n),
        };
        let Some(micros) = micros.filter(|m| (MIN_MICROS..=MAX_MICROS).contains(m)) else {
            let name = match (local, unit) {
                (false, TimeUnit::Millis) => "timestamp-millis",
                (false, TimeUnit::Micros) => "timestamp-micros",
                (true, TimeUnit::Millis) => "local-timestamp-millis",
                (true, TimeUnit::Micros) => "local-timestamp-micros",
            };
            return Err(Failure::value(format!(
                "{name} {n} at offset {at} is out of range for a datetime (years 1 to 9999)"
            )));
        };
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
}
