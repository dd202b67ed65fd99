//! Python values to Avro binary against a compiled Schema, byte for byte what fastavro writes.
//!
//! The happy path allocates nothing per field: errors carry their path segments outward and the
//! message is only assembled when it is raised. Unions are in union.rs, logical types in logical.rs.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType,
};

use crate::defaults::json_to_py;
use crate::failure::{Failure, Res, Seg, describe, py_list, short_repr, show};
use crate::mpd::DecimalLayout;
use crate::schema::{Field, FieldDefault, Node, NodeId, Record, Schema};

/// Deeper nesting than this is refused rather than risking the native stack (recursive schemas).
pub(crate) const MAX_DEPTH: u32 = 256;

/// Python objects the encoder compares against or calls, looked up once per Encoder.
pub struct PyEnv {
    pub(crate) decimal: Py<PyType>,
    pub(crate) datetime: Py<PyType>,
    pub(crate) date: Py<PyType>,
    pub(crate) time: Py<PyType>,
    pub(crate) uuid: Py<PyType>,
    pub(crate) epoch: Py<PyAny>,
    pub(crate) epoch_naive: Py<PyAny>,
    pub(crate) date_fromisoformat: Py<PyAny>,
    /// Whether Decimals are read in place (mpd.rs) rather than through `str()`.
    pub(crate) decimal_layout: DecimalLayout,
}

impl PyEnv {
    pub fn new(py: Python<'_>) -> PyResult<PyEnv> {
        let decimal = py.import("decimal")?;
        let datetime = py.import("datetime")?;
        let uuid = py.import("uuid")?;
        let datetime_type = datetime.getattr("datetime")?;
        let utc = datetime.getattr("timezone")?.getattr("utc")?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("tzinfo", utc)?;
        let epoch = datetime_type.call((1970, 1, 1), Some(&kwargs))?;
        let epoch_naive = datetime_type.call1((1970, 1, 1))?;
        let decimal_type = decimal.getattr("Decimal")?.cast_into::<PyType>()?;
        Ok(PyEnv {
            decimal_layout: DecimalLayout::probe(py, &decimal_type),
            decimal: decimal_type.unbind(),
            datetime: datetime_type.clone().cast_into::<PyType>()?.unbind(),
            date: datetime.getattr("date")?.cast_into::<PyType>()?.unbind(),
            time: datetime.getattr("time")?.cast_into::<PyType>()?.unbind(),
            uuid: uuid.getattr("UUID")?.cast_into::<PyType>()?.unbind(),
            epoch: epoch.unbind(),
            epoch_naive: epoch_naive.unbind(),
            date_fromisoformat: datetime.getattr("date")?.getattr("fromisoformat")?.unbind(),
        })
    }
}

/// `n` as an Avro long, once it was made.
fn emit_long(out: &mut Vec<u8>, n: Res<i64>) -> Res<()> {
    write_long(out, n?);
    Ok(())
}

pub fn write_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

pub struct Encoder<'a, 'py> {
    pub py: Python<'py>,
    pub schema: &'a Schema,
    pub env: &'a PyEnv,
}

impl<'py> Encoder<'_, 'py> {
    fn write_fixed(
        &self,
        id: NodeId,
        name: &str,
        size: usize,
        v: &Bound<'py, PyAny>,
        out: &mut Vec<u8>,
    ) -> Res<()> {
        let data = self.bytes_of(id, v)?;
        if data.len() != size {
            return Err(Failure::value(format!(
                "fixed {name} takes exactly {size} bytes, got {}",
                data.len()
            )));
        }
        out.extend_from_slice(data);
        Ok(())
    }

    fn write_symbol(
        &self,
        id: NodeId,
        name: &str,
        symbols: &[String],
        v: &Bound<'py, PyAny>,
        out: &mut Vec<u8>,
    ) -> Res<()> {
        let Ok(s) = v.cast::<PyString>() else {
            return Err(self.mismatch(id, v));
        };
        let text = s.to_str().map_err(|e| Failure::python(e, self.py))?;
        match symbols.iter().position(|symbol| symbol == text) {
            Some(index) => {
                write_long(out, index as i64);
                Ok(())
            }
            None => Err(Failure::value(format!(
                "{} is not a symbol of enum {name}; expected one of {}",
                short_repr(v),
                py_list(symbols)
            ))),
        }
    }

    pub fn write(
        &self,
        id: NodeId,
        v: &Bound<'py, PyAny>,
        out: &mut Vec<u8>,
        depth: u32,
    ) -> Res<()> {
        match self.schema.node(id) {
            Node::Null => {
                if v.is_none() {
                    Ok(())
                } else {
                    Err(self.mismatch(id, v))
                }
            }
            Node::Boolean => match v.cast::<PyBool>() {
                Ok(b) => {
                    out.push(u8::from(b.is_true()));
                    Ok(())
                }
                Err(_) => Err(self.mismatch(id, v)),
            },
            Node::Int => {
                let n = self.int(id, v)?;
                if i32::try_from(n).is_err() {
                    return Err(Failure::value(format!(
                        "{n} is out of range for Avro int (32-bit)"
                    )));
                }
                write_long(out, n);
                Ok(())
            }
            Node::Long => emit_long(out, self.int(id, v)),
            Node::Float => {
                // Rounds to nearest and overflows to infinity, as fastavro's C cast does.
                out.extend_from_slice(&(self.float(id, v)? as f32).to_le_bytes());
                Ok(())
            }
            Node::Double => {
                out.extend_from_slice(&self.float(id, v)?.to_le_bytes());
                Ok(())
            }
            Node::String => match v.cast::<PyString>() {
                Ok(s) => self.write_str(s, out),
                Err(_) => Err(self.mismatch(id, v)),
            },
            Node::Uuid => match v.cast::<PyString>() {
                Ok(s) => self.write_str(s, out),
                Err(_) if self.is(v, &self.env.uuid) => {
                    let text = v.str().map_err(|e| Failure::python(e, self.py))?;
                    self.write_str(&text, out)
                }
                Err(_) => Err(self.mismatch(id, v)),
            },
            Node::Bytes => self.write_raw_bytes(id, v, out),
            Node::Fixed { name, size } => self.write_fixed(id, name, *size, v, out),
            Node::Enum { name, symbols } => self.write_symbol(id, name, symbols, v, out),
            Node::Array { items } => self.write_array(id, *items, v, out, depth),
            Node::Map { values } => self.write_map(id, *values, v, out, depth),
            Node::Record(record) => self.write_record(id, record, v, out, depth),
            Node::Union(union) => self.write_union(id, union, v, out, depth),
            Node::Decimal {
                precision,
                scale,
                fixed,
            } => self.write_decimal(id, *precision, *scale, fixed, v, out),
            Node::Timestamp { unit, local } => emit_long(out, self.timestamp(id, *unit, *local, v)),
            Node::Date => emit_long(out, self.date(id, v)),
            Node::TimeOfDay { unit } => emit_long(out, self.time_of_day(id, *unit, v)),
            Node::Placeholder => Err(Failure::value(
                "internal error: schema type was never defined",
            )),
        }
    }

    pub(crate) fn mismatch(&self, id: NodeId, v: &Bound<'py, PyAny>) -> Box<Failure> {
        Failure::type_(format!(
            "expected {}, got {}",
            self.schema.describe(id),
            describe(v)
        ))
    }

    pub(crate) fn is(&self, v: &Bound<'py, PyAny>, t: &Py<PyType>) -> bool {
        let t = t.bind(self.py);
        v.get_type().is(t) || v.is_instance(t).unwrap_or(false)
    }

    pub(crate) fn int(&self, id: NodeId, v: &Bound<'py, PyAny>) -> Res<i64> {
        if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
            return Err(self.mismatch(id, v));
        }
        v.extract::<i64>().map_err(|_| {
            Failure::value(format!(
                "{} is out of range for Avro long (64-bit)",
                show(v)
            ))
        })
    }

    pub(crate) fn float(&self, id: NodeId, v: &Bound<'py, PyAny>) -> Res<f64> {
        if let Ok(f) = v.cast::<PyFloat>() {
            return Ok(f.value());
        }
        if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
            return Err(self.mismatch(id, v));
        }
        v.extract::<f64>().map_err(|e| Failure::python(e, self.py))
    }

    pub(crate) fn write_str(&self, s: &Bound<'py, PyString>, out: &mut Vec<u8>) -> Res<()> {
        let text = s.to_str().map_err(|e| Failure::python(e, self.py))?;
        write_bytes(out, text.as_bytes());
        Ok(())
    }

    /// bytes or bytearray; bytearray is copied since its buffer may move.
    pub(crate) fn write_raw_bytes(
        &self,
        id: NodeId,
        v: &Bound<'py, PyAny>,
        out: &mut Vec<u8>,
    ) -> Res<()> {
        if let Ok(b) = v.cast::<PyBytes>() {
            write_bytes(out, b.as_bytes());
            Ok(())
        } else if let Ok(b) = v.cast::<PyByteArray>() {
            write_bytes(out, &b.to_vec());
            Ok(())
        } else {
            Err(self.mismatch(id, v))
        }
    }

    pub(crate) fn bytes_of<'b>(&self, id: NodeId, v: &'b Bound<'py, PyAny>) -> Res<&'b [u8]> {
        match v.cast::<PyBytes>() {
            Ok(b) => Ok(b.as_bytes()),
            Err(_) => Err(self.mismatch(id, v)),
        }
    }

    pub(crate) fn write_array(
        &self,
        id: NodeId,
        items: NodeId,
        v: &Bound<'py, PyAny>,
        out: &mut Vec<u8>,
        depth: u32,
    ) -> Res<()> {
        check_depth(depth)?;
        if let Ok(list) = v.cast::<PyList>() {
            let n = list.len();
            if n > 0 {
                write_long(out, n as i64);
                for i in 0..n {
                    // get_item re-checks the length: encoding may run Python code that shrinks the list.
                    let item = list
                        .get_item(i)
                        .map_err(|e| Failure::python(e, self.py).at(Seg::Index(i)))?;
                    self.write(items, &item, out, depth + 1)
                        .map_err(|e| e.at(Seg::Index(i)))?;
                }
            }
        } else if let Ok(tuple) = v.cast::<PyTuple>() {
            let n = tuple.len();
            if n > 0 {
                write_long(out, n as i64);
                for (i, item) in tuple.iter().enumerate() {
                    self.write(items, &item, out, depth + 1)
                        .map_err(|e| e.at(Seg::Index(i)))?;
                }
            }
        } else {
            return Err(self.mismatch(id, v));
        }
        out.push(0);
        Ok(())
    }

    pub(crate) fn write_map(
        &self,
        id: NodeId,
        values: NodeId,
        v: &Bound<'py, PyAny>,
        out: &mut Vec<u8>,
        depth: u32,
    ) -> Res<()> {
        check_depth(depth)?;
        let Ok(dict) = v.cast::<PyDict>() else {
            return Err(self.mismatch(id, v));
        };
        let n = dict.len();
        if n > 0 {
            write_long(out, n as i64);
            // PyO3's dict iterator refuses a dict that changes size underneath it.
            for (key, value) in dict.iter() {
                let Ok(key) = key.cast::<PyString>() else {
                    return Err(Failure::type_(format!(
                        "map keys must be str, got {}",
                        describe(&key)
                    )));
                };
                self.write_str(key, out)?;
                self.write(values, &value, out, depth + 1)
                    .map_err(|e| e.at(Seg::Key(key.to_string_lossy().into_owned())))?;
            }
        }
        out.push(0);
        Ok(())
    }

    pub(crate) fn write_record(
        &self,
        id: NodeId,
        record: &Record,
        v: &Bound<'py, PyAny>,
        out: &mut Vec<u8>,
        depth: u32,
    ) -> Res<()> {
        check_depth(depth)?;
        let Ok(dict) = v.cast::<PyDict>() else {
            return Err(self.mismatch(id, v));
        };
        let mut matched = 0usize;
        // Most payloads are dicts written in the schema's field order (literals, model_dump()), whose
        // keys are the interned names: walk the dict alongside the fields while that holds, taking each
        // value without a hash lookup, and look up the rest once it does not.
        let mut position: ffi::Py_ssize_t = 0;
        let mut in_order = 0usize;
        for field in &record.fields {
            let mut key: *mut ffi::PyObject = std::ptr::null_mut();
            let mut value: *mut ffi::PyObject = std::ptr::null_mut();
            // SAFETY: `dict` is a live dict; PyDict_Next only reads it and yields borrowed references,
            // and the value is made an owned reference before any Python code can run.
            let next =
                unsafe { ffi::PyDict_Next(dict.as_ptr(), &mut position, &mut key, &mut value) };
            if next == 0 || key != field.key.as_ptr() {
                break;
            }
            // SAFETY: `value` is a borrowed reference from the dict, non-null when PyDict_Next returns 1.
            let value = unsafe { Bound::from_borrowed_ptr(self.py, value) };
            matched += 1;
            in_order += 1;
            self.write(field.node, &value, out, depth + 1)
                .map_err(|e| e.at(Seg::Field(field.name.clone())))?;
        }
        for field in &record.fields[in_order..] {
            match dict.get_item(field.key.bind(self.py)) {
                Ok(Some(value)) => {
                    matched += 1;
                    self.write(field.node, &value, out, depth + 1)
                        .map_err(|e| e.at(Seg::Field(field.name.clone())))?;
                }
                Ok(None) => match &field.default {
                    Some(default) => self.write_default(field, default, out, depth)?,
                    None => {
                        return Err(Failure::value("required field is missing")
                            .at(Seg::Field(field.name.clone())));
                    }
                },
                Err(e) => {
                    return Err(Failure::python(e, self.py).at(Seg::Field(field.name.clone())));
                }
            }
        }
        // Every field matched at most one key, so fewer matches than keys means unknown keys.
        if matched != dict.len() {
            return Err(self.unknown_fields(record, dict));
        }
        Ok(())
    }

    pub(crate) fn write_default(
        &self,
        field: &Field,
        default: &FieldDefault,
        out: &mut Vec<u8>,
        depth: u32,
    ) -> Res<()> {
        if let Some(encoded) = default.encoded.get() {
            out.extend_from_slice(encoded);
            return Ok(());
        }
        // Only while the schema is being compiled: this default's own encoding is not cached yet.
        let value = json_to_py(self.py, self.schema, field.node, &default.json)
            .map_err(|e| Failure::python(e, self.py).at(Seg::Field(field.name.clone())))?;
        self.write(field.node, &value, out, depth + 1)
            .map_err(|e| e.at(Seg::Field(field.name.clone())))
    }

    pub(crate) fn unknown_fields(
        &self,
        record: &Record,
        dict: &Bound<'py, PyDict>,
    ) -> Box<Failure> {
        let unknown: Vec<String> = dict
            .keys()
            .iter()
            .filter(|k| {
                k.cast::<PyString>()
                    .ok()
                    .and_then(|s| {
                        s.to_str()
                            .ok()
                            .map(|s| !record.fields.iter().any(|f| f.name == s))
                    })
                    .unwrap_or(true)
            })
            .map(|k| short_repr(&k))
            .collect();
        let known: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
        Failure::value(format!(
            "unknown field(s) [{}]; record {} has fields {}",
            unknown.join(", "),
            record.name,
            py_list(&known)
        ))
    }
}

pub(crate) fn check_depth(depth: u32) -> Res<()> {
    if depth > MAX_DEPTH {
        Err(Failure::value(format!(
            "value is nested more than {MAX_DEPTH} levels deep"
        )))
    } else {
        Ok(())
    }
}
