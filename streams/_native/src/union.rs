//! Union branch selection, following fastavro's write_union so that the same branch is written.
//!
//! Most unions are ["null", X]: the value's Python kind picks the branch without validation.

use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

use crate::encode::{Encoder, MAX_DEPTH, write_long};
use crate::failure::Res;
use crate::schema::{Kind, Node, NodeId, Record, TimeUnit, Union};

impl<'py> Encoder<'_, 'py> {
    pub(crate) fn write_union(
        &self,
        id: NodeId,
        union: &Union,
        v: &Bound<'py, PyAny>,
        out: &mut Vec<u8>,
        depth: u32,
    ) -> Res<()> {
        let kind = self.classify(v);
        let candidates = &union.by_kind[kind as usize];
        let branch = match candidates.len() {
            0 => return Err(self.mismatch(id, v)),
            1 => candidates[0],
            _ => match self.fastavro_choice(union, candidates, kind, v, depth) {
                Some(branch) => branch,
                None => return self.write_first_that_fits(union, candidates, v, out, depth),
            },
        };
        write_long(out, branch as i64);
        self.write(union.branches[branch], v, out, depth)
    }

    /// fastavro's write_union: the first branch that validates, except that records keep looking
    /// for the one sharing most keys with the dict and "float" gives way to a later "double".
    pub(crate) fn fastavro_choice(
        &self,
        union: &Union,
        candidates: &[usize],
        kind: Kind,
        v: &Bound<'py, PyAny>,
        depth: u32,
    ) -> Option<usize> {
        let mut best = None;
        let mut most_fields: i64 = -1;
        let mut could_be_float = false;
        for &branch in candidates {
            let node_id = union.branches[branch];
            let node = self.schema.node(node_id);
            if could_be_float {
                if matches!(node, Node::Double) {
                    return Some(branch);
                }
                continue;
            }
            if !self.valid(node_id, v, kind, depth) {
                continue;
            }
            match node {
                Node::Record(record) => {
                    let dict = v.cast::<PyDict>().ok()?;
                    let shared = record
                        .fields
                        .iter()
                        .filter(|f| dict.contains(f.key.bind(self.py)).unwrap_or(false))
                        .count() as i64;
                    if shared > most_fields {
                        best = Some(branch);
                        most_fields = shared;
                    }
                }
                Node::Float => {
                    best = Some(branch);
                    could_be_float = true;
                }
                _ => return Some(branch),
            }
        }
        best
    }

    /// Values fastavro rejects but this encoder takes (an int for a decimal, 1.500 at scale 2):
    /// the first candidate branch that encodes wins.
    pub(crate) fn write_first_that_fits(
        &self,
        union: &Union,
        candidates: &[usize],
        v: &Bound<'py, PyAny>,
        out: &mut Vec<u8>,
        depth: u32,
    ) -> Res<()> {
        let mark = out.len();
        let mut first_failure = None;
        for &branch in candidates {
            write_long(out, branch as i64);
            match self.write(union.branches[branch], v, out, depth) {
                Ok(()) => return Ok(()),
                Err(failure) => {
                    out.truncate(mark);
                    first_failure.get_or_insert(failure);
                }
            }
        }
        Err(first_failure.expect("at least two candidates were tried"))
    }

    pub fn classify(&self, v: &Bound<'py, PyAny>) -> Kind {
        if v.is_none() {
            Kind::None
        } else if v.is_instance_of::<PyString>() {
            Kind::Str
        } else if v.is_instance_of::<PyBool>() {
            Kind::Bool
        } else if v.is_instance_of::<PyInt>() {
            Kind::Int
        } else if v.is_instance_of::<PyFloat>() {
            Kind::Float
        } else if v.is_instance_of::<PyDict>() {
            Kind::Dict
        } else if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
            Kind::List
        } else if v.is_instance_of::<PyBytes>() || v.is_instance_of::<PyByteArray>() {
            Kind::Bytes
        } else if self.is(v, &self.env.decimal) {
            Kind::Decimal
        } else if self.is(v, &self.env.datetime) {
            Kind::DateTime
        } else if self.is(v, &self.env.date) {
            Kind::Date
        } else if self.is(v, &self.env.time) {
            Kind::Time
        } else if self.is(v, &self.env.uuid) {
            Kind::Uuid
        } else {
            Kind::Other
        }
    }

    /// fastavro's validate(): decides between union branches that could all take the value.
    pub(crate) fn valid(&self, id: NodeId, v: &Bound<'py, PyAny>, kind: Kind, depth: u32) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        let int_in = |lo: i64, hi: i64| v.extract::<i64>().is_ok_and(|n| (lo..=hi).contains(&n));
        match (self.schema.node(id), kind) {
            (Node::Null, Kind::None)
            | (Node::Boolean, Kind::Bool)
            | (Node::Float | Node::Double, Kind::Int | Kind::Float)
            | (Node::String, Kind::Str)
            | (Node::Uuid, Kind::Str | Kind::Uuid)
            | (Node::Bytes, Kind::Bytes)
            | (Node::Timestamp { .. }, Kind::DateTime)
            | (Node::TimeOfDay { .. }, Kind::Time)
            | (Node::Date, Kind::Date | Kind::DateTime)
            | (Node::Decimal { fixed: None, .. }, Kind::Bytes) => true,
            (Node::Int | Node::Date, Kind::Int)
            | (
                Node::TimeOfDay {
                    unit: TimeUnit::Millis,
                },
                Kind::Int,
            ) => int_in(i64::from(i32::MIN), i64::from(i32::MAX)),
            (
                Node::Long
                | Node::Timestamp { .. }
                | Node::TimeOfDay {
                    unit: TimeUnit::Micros,
                },
                Kind::Int,
            ) => int_in(i64::MIN, i64::MAX),
            (Node::Date, Kind::Str) => self
                .env
                .date_fromisoformat
                .bind(self.py)
                .call1((v,))
                .is_ok(),
            (Node::Fixed { size, .. }, Kind::Bytes) => v
                .cast::<PyBytes>()
                .is_ok_and(|b| b.as_bytes().len() == *size),
            (Node::Enum { symbols, .. }, Kind::Str) => v
                .cast::<PyString>()
                .ok()
                .and_then(|s| s.to_str().ok().map(|s| symbols.iter().any(|sym| sym == s)))
                .unwrap_or(false),
            (
                Node::Decimal {
                    precision,
                    scale,
                    fixed,
                },
                Kind::Decimal,
            ) => {
                let mut scratch = Vec::new();
                self.write_decimal(id, *precision, *scale, fixed, v, &mut scratch)
                    .is_ok()
            }
            (
                Node::Decimal {
                    fixed: Some((_, size)),
                    ..
                },
                Kind::Bytes,
            ) => v
                .cast::<PyBytes>()
                .is_ok_and(|b| b.as_bytes().len() == *size),
            (Node::Array { items }, Kind::List) => self.valid_items(*items, v, depth),
            (Node::Map { values }, Kind::Dict) => self.valid_values(*values, v, depth),
            (Node::Record(record), Kind::Dict) => self.valid_record(record, v, depth),
            (Node::Union(union), _) => union
                .branches
                .iter()
                .any(|&b| self.valid(b, v, kind, depth)),
            _ => false,
        }
    }
    fn valid_items(&self, items: NodeId, v: &Bound<'py, PyAny>, depth: u32) -> bool {
        match v.try_iter() {
            Ok(iter) => iter.flatten().all(|item| {
                let k = self.classify(&item);
                self.valid(items, &item, k, depth + 1)
            }),
            Err(_) => false,
        }
    }

    fn valid_values(&self, values: NodeId, v: &Bound<'py, PyAny>, depth: u32) -> bool {
        v.cast::<PyDict>().is_ok_and(|dict| {
            dict.iter().all(|(key, value)| {
                let k = self.classify(&value);
                key.is_instance_of::<PyString>() && self.valid(values, &value, k, depth + 1)
            })
        })
    }

    fn valid_record(&self, record: &Record, v: &Bound<'py, PyAny>, depth: u32) -> bool {
        v.cast::<PyDict>().is_ok_and(|dict| {
            record
                .fields
                .iter()
                .all(|field| match dict.get_item(field.key.bind(self.py)) {
                    Ok(Some(value)) => {
                        let k = self.classify(&value);
                        self.valid(field.node, &value, k, depth + 1)
                    }
                    Ok(None) if field.default.is_some() => true,
                    Ok(None) => self.valid(
                        field.node,
                        &self.py.None().into_bound(self.py),
                        Kind::None,
                        depth + 1,
                    ),
                    Err(_) => false,
                })
        })
    }
}
