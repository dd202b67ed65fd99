//! Field defaults: Avro JSON default values turned into the Python values fastavro would write.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyList, PyString};
use serde_json::Value;

use crate::schema::{Node, NodeId, Schema};

/// A field default (Avro JSON) as the Python value fastavro would be handed: bytes and fixed
/// defaults are strings of code points 0-255, NaN/Infinity floats may be strings.
pub fn json_to_py<'py>(
    py: Python<'py>,
    schema: &Schema,
    id: NodeId,
    json: &Value,
) -> PyResult<Bound<'py, PyAny>> {
    let node = schema.node(id);
    match (node, json) {
        (Node::Bytes | Node::Fixed { .. } | Node::Decimal { .. }, Value::String(s)) => {
            let data: Vec<u8> = s
                .chars()
                .map(|c| u8::try_from(u32::from(c)))
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    PyValueError::new_err(format!(
                        "bytes default {s:?} has characters above \\u00ff"
                    ))
                })?;
            Ok(PyBytes::new(py, &data).into_any())
        }
        (Node::Float | Node::Double, Value::String(s)) => {
            let f = match s.as_str() {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "float default {s:?} is not a number"
                    )));
                }
            };
            Ok(PyFloat::new(py, f).into_any())
        }
        // null picks the null branch when the union is resolved, as fastavro does.
        (Node::Union(_), Value::Null) => Ok(py.None().into_bound(py)),
        (Node::Union(union), _) => {
            // Avro: a union's default belongs to its first branch.
            json_to_py(py, schema, union.branches[0], json)
        }
        (Node::Record(record), Value::Object(obj)) => {
            let dict = PyDict::new(py);
            for (key, value) in obj {
                let converted = match record.fields.iter().find(|f| &f.name == key) {
                    Some(field) => json_to_py(py, schema, field.node, value)?,
                    None => plain_json_to_py(py, value)?,
                };
                dict.set_item(key, converted)?;
            }
            Ok(dict.into_any())
        }
        (Node::Map { values }, Value::Object(obj)) => {
            let dict = PyDict::new(py);
            for (key, value) in obj {
                dict.set_item(key, json_to_py(py, schema, *values, value)?)?;
            }
            Ok(dict.into_any())
        }
        (Node::Array { items }, Value::Array(list)) => {
            let converted = list
                .iter()
                .map(|item| json_to_py(py, schema, *items, item))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, converted)?.into_any())
        }
        _ => plain_json_to_py(py, json),
    }
}

fn plain_json_to_py<'py>(py: Python<'py>, json: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match json {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(list) => {
            let converted = list
                .iter()
                .map(|item| plain_json_to_py(py, item))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, converted)?.into_any()
        }
        Value::Object(obj) => {
            let dict = PyDict::new(py);
            for (key, value) in obj {
                dict.set_item(key, plain_json_to_py(py, value)?)?;
            }
            dict.into_any()
        }
    })
}
