//! Avro schema JSON compiled into an arena of nodes that the encoder and the decoder walk.
//!
//! Named types are resolved here once (short and full names, namespaces, recursion), so encoding
//! and decoding never look a name up.

use std::collections::HashMap;
use std::sync::OnceLock;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;
use serde_json::Value;

mod parse;

use parse::Parser;

pub type NodeId = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    Millis,
    Micros,
}

/// The Python value categories a union branch is chosen by (fastavro's rules, see encode.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    None,
    Bool,
    Int,
    Float,
    Str,
    Bytes,
    Dict,
    List,
    Decimal,
    DateTime,
    Date,
    Time,
    Uuid,
    Other,
}

pub const KIND_COUNT: usize = 14;
const ALL_KINDS: [Kind; KIND_COUNT] = [
    Kind::None,
    Kind::Bool,
    Kind::Int,
    Kind::Float,
    Kind::Str,
    Kind::Bytes,
    Kind::Dict,
    Kind::List,
    Kind::Decimal,
    Kind::DateTime,
    Kind::Date,
    Kind::Time,
    Kind::Uuid,
    Kind::Other,
];

pub struct Field {
    pub name: String,
    /// Interned once at compile time: dict lookups hash it once and usually hit by identity.
    pub key: Py<PyString>,
    pub node: NodeId,
    pub default: Option<FieldDefault>,
}

pub struct FieldDefault {
    pub json: Value,
    /// The default's Avro encoding, filled in once the whole schema is compiled.
    pub encoded: OnceLock<Vec<u8>>,
}

pub struct Record {
    pub name: String,
    pub fields: Vec<Field>,
}

pub struct Union {
    pub branches: Vec<NodeId>,
    /// For each Kind, the branch positions whose type can take a value of that kind, in order.
    pub by_kind: [Vec<usize>; KIND_COUNT],
}

pub enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Uuid,
    Fixed {
        name: String,
        size: usize,
    },
    Enum {
        name: String,
        symbols: Vec<String>,
    },
    Array {
        items: NodeId,
    },
    Map {
        values: NodeId,
    },
    Record(Record),
    Union(Box<Union>),
    /// bytes (fixed is None) or fixed (its name and size) carrying logicalType decimal.
    Decimal {
        precision: u32,
        scale: u32,
        fixed: Option<(String, usize)>,
    },
    Timestamp {
        unit: TimeUnit,
        local: bool,
    },
    Date,
    TimeOfDay {
        unit: TimeUnit,
    },
    /// A named type whose definition is still being parsed (only seen during compilation).
    Placeholder,
}

pub struct Schema {
    pub nodes: Vec<Node>,
    pub root: NodeId,
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

impl Schema {
    /// Parses and compiles schema JSON text; ValueError "invalid Avro schema: ..." when it is invalid.
    pub fn compile(py: Python<'_>, schema_json: &str) -> PyResult<Schema> {
        let json: Value = serde_json::from_str(schema_json).map_err(|e| {
            PyValueError::new_err(format!("invalid Avro schema: not valid JSON: {e}"))
        })?;
        Schema::parse(py, &json)
            .map_err(|e| PyValueError::new_err(format!("invalid Avro schema: {e}")))
    }

    pub fn parse(py: Python<'_>, json: &Value) -> Result<Schema, String> {
        let mut parser = Parser {
            py,
            nodes: Vec::new(),
            names: HashMap::new(),
        };
        let root = parser.parse(json, "", "top level")?;
        let mut schema = Schema {
            nodes: parser.nodes,
            root,
        };
        schema.index_unions();
        Ok(schema)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// Whether the encoder can take a value of `kind` for this node (a superset of fastavro's
    /// validation, which decides between several such branches).
    pub fn accepts(&self, id: NodeId, kind: Kind) -> bool {
        match (self.node(id), kind) {
            (Node::Null, Kind::None)
            | (Node::Boolean, Kind::Bool)
            | (Node::Int | Node::Long, Kind::Int)
            | (Node::Float | Node::Double, Kind::Int | Kind::Float)
            | (Node::String | Node::Enum { .. }, Kind::Str)
            | (Node::Uuid, Kind::Str | Kind::Uuid)
            | (Node::Bytes | Node::Fixed { .. }, Kind::Bytes)
            | (Node::Array { .. }, Kind::List)
            | (Node::Map { .. } | Node::Record(_), Kind::Dict)
            | (Node::Decimal { .. }, Kind::Decimal | Kind::Int | Kind::Bytes)
            | (Node::Timestamp { .. }, Kind::DateTime | Kind::Int)
            | (Node::Date, Kind::Date | Kind::DateTime | Kind::Str | Kind::Int)
            | (Node::TimeOfDay { .. }, Kind::Time | Kind::Int) => true,
            (Node::Union(u), _) => u.branches.iter().any(|&b| self.accepts(b, kind)),
            _ => false,
        }
    }

    /// What a value for this node should be, for error messages ("expected a Decimal, got ...").
    pub fn describe(&self, id: NodeId) -> String {
        match self.node(id) {
            Node::Null => "None".into(),
            Node::Boolean => "a bool".into(),
            Node::Int => "an int (Avro int)".into(),
            Node::Long => "an int".into(),
            Node::Float | Node::Double => "a float".into(),
            Node::String => "a str".into(),
            Node::Uuid => "a str or UUID".into(),
            Node::Bytes => "bytes".into(),
            Node::Fixed { name, size } => format!("bytes (fixed {name}, {size} bytes)"),
            Node::Enum { name, .. } => format!("a str (enum {name})"),
            Node::Array { .. } => "a list or tuple".into(),
            Node::Map { .. } => "a dict (map)".into(),
            Node::Record(r) => format!("a dict (record {})", r.name),
            Node::Decimal { .. } => "a Decimal".into(),
            Node::Timestamp { .. } => "a datetime".into(),
            Node::Date => "a date".into(),
            Node::TimeOfDay { .. } => "a time".into(),
            Node::Union(u) => {
                let mut parts: Vec<String> = Vec::new();
                for &b in &u.branches {
                    let d = self.describe(b);
                    if !parts.contains(&d) {
                        parts.push(d);
                    }
                }
                parts.join(" or ")
            }
            Node::Placeholder => "a value".into(),
        }
    }

    fn index_unions(&mut self) {
        let tables: Vec<(NodeId, [Vec<usize>; KIND_COUNT])> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(id, node)| match node {
                Node::Union(u) => {
                    let table = ALL_KINDS.map(|kind| {
                        (0..u.branches.len())
                            .filter(|&i| self.accepts(u.branches[i], kind))
                            .collect()
                    });
                    Some((id, table))
                }
                _ => None,
            })
            .collect();
        for (id, table) in tables {
            if let Node::Union(u) = &mut self.nodes[id] {
                u.by_kind = table;
            }
        }
    }
}
