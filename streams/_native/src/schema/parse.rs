//! Avro schema JSON parsed into the node arena: names and namespaces resolved, logical types and
//! their parameters checked (the Schema in the module above is what comes out).

use std::collections::HashMap;

use pyo3::prelude::*;
use serde_json::{Map, Value};

use super::*;

pub(super) struct Parser<'py> {
    pub(super) py: Python<'py>,
    pub(super) nodes: Vec<Node>,
    pub(super) names: HashMap<String, NodeId>,
}

fn split_fullname(name: &str, namespace: Option<&str>, enclosing: &str) -> (String, String) {
    if let Some(dot) = name.rfind('.') {
        (name.to_string(), name[..dot].to_string())
    } else {
        let ns = namespace.unwrap_or(enclosing);
        let full = if ns.is_empty() {
            name.to_string()
        } else {
            format!("{ns}.{name}")
        };
        (full, ns.to_string())
    }
}

fn get_str<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a str, String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(other) => Err(format!(
            "{at}: \"{key}\" must be a non-empty string, got {other}"
        )),
        None => Err(format!("{at}: \"{key}\" is missing")),
    }
}

fn get_uint(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Option<u64>, String> {
    match obj.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{at}: \"{key}\" must be a non-negative integer, got {v}")),
    }
}

/// The largest precision a fixed of `size` bytes holds: floor(log10(2^(8*size-1) - 1)).
fn max_fixed_precision(size: usize) -> u64 {
    if size == 0 {
        return 0;
    }
    // 2^k is never a power of ten, so floor(log10(2^k - 1)) == floor(k * log10(2)).
    (((8 * size - 1) as f64) * std::f64::consts::LOG10_2).floor() as u64
}

impl Parser<'_> {
    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn primitive(name: &str) -> Option<Node> {
        Some(match name {
            "null" => Node::Null,
            "boolean" => Node::Boolean,
            "int" => Node::Int,
            "long" => Node::Long,
            "float" => Node::Float,
            "double" => Node::Double,
            "bytes" => Node::Bytes,
            "string" => Node::String,
            _ => return None,
        })
    }

    fn resolve(&self, name: &str, ns: &str, at: &str) -> Result<NodeId, String> {
        let found = if name.contains('.') {
            self.names.get(name).copied()
        } else {
            let qualified = if ns.is_empty() {
                None
            } else {
                self.names.get(&format!("{ns}.{name}")).copied()
            };
            qualified.or_else(|| self.names.get(name).copied())
        };
        found.ok_or_else(|| format!("{at}: unknown type '{name}' (not a primitive and not a named type defined before it)"))
    }

    fn register(&mut self, full: &str, at: &str) -> Result<NodeId, String> {
        if PRIMITIVES.contains(&full) {
            return Err(format!("{at}: a named type cannot be called '{full}'"));
        }
        if self.names.contains_key(full) {
            return Err(format!("{at}: type '{full}' is defined twice"));
        }
        let id = self.push(Node::Placeholder);
        self.names.insert(full.to_string(), id);
        Ok(id)
    }

    pub(super) fn parse(&mut self, json: &Value, ns: &str, at: &str) -> Result<NodeId, String> {
        match json {
            Value::String(name) => match Self::primitive(name) {
                Some(node) => Ok(self.push(node)),
                None => self.resolve(name, ns, at),
            },
            Value::Array(branches) => self.parse_union(branches, ns, at),
            Value::Object(obj) => self.parse_object(obj, ns, at),
            other => Err(format!(
                "{at}: expected a type name, a list (union) or an object, got {other}"
            )),
        }
    }

    fn parse_union(&mut self, branches: &[Value], ns: &str, at: &str) -> Result<NodeId, String> {
        if branches.is_empty() {
            return Err(format!("{at}: a union needs at least one branch"));
        }
        let mut ids = Vec::with_capacity(branches.len());
        let mut seen: Vec<String> = Vec::new();
        for (i, branch) in branches.iter().enumerate() {
            let where_ = format!("{at}, union branch {i}");
            let id = self.parse(branch, ns, &where_)?;
            let identity = match &self.nodes[id] {
                Node::Union(_) => {
                    return Err(format!(
                        "{where_}: a union cannot directly contain another union"
                    ));
                }
                Node::Record(r) => r.name.clone(),
                Node::Enum { name, .. }
                | Node::Fixed { name, .. }
                | Node::Decimal {
                    fixed: Some((name, _)),
                    ..
                } => name.clone(),
                // Recursive reference to a record still being defined: named by its registration.
                Node::Placeholder => self
                    .names
                    .iter()
                    .find(|&(_, &v)| v == id)
                    .map(|(k, _)| k.clone())
                    .unwrap_or_default(),
                node => physical_type(node).to_string(),
            };
            if seen.contains(&identity) {
                return Err(format!(
                    "{where_}: the union already has a branch of type '{identity}'"
                ));
            }
            seen.push(identity);
            ids.push(id);
        }
        Ok(self.push(Node::Union(Box::new(Union {
            branches: ids,
            by_kind: Default::default(),
        }))))
    }

    fn parse_object(
        &mut self,
        obj: &Map<String, Value>,
        ns: &str,
        at: &str,
    ) -> Result<NodeId, String> {
        let type_name = match obj.get("type") {
            Some(Value::String(t)) => t.as_str(),
            Some(nested @ (Value::Object(_) | Value::Array(_))) => {
                return self.parse(nested, ns, at);
            }
            Some(other) => return Err(format!("{at}: \"type\" must be a string, got {other}")),
            None => return Err(format!("{at}: object without \"type\"")),
        };
        match type_name {
            "record" | "error" => self.parse_record(obj, ns, at),
            "enum" => self.parse_enum(obj, ns, at),
            "fixed" => self.parse_fixed(obj, ns, at),
            "array" => {
                let items = obj
                    .get("items")
                    .ok_or_else(|| format!("{at}: array without \"items\""))?;
                let items = self.parse(items, ns, &format!("{at} (array items)"))?;
                Ok(self.push(Node::Array { items }))
            }
            "map" => {
                let values = obj
                    .get("values")
                    .ok_or_else(|| format!("{at}: map without \"values\""))?;
                let values = self.parse(values, ns, &format!("{at} (map values)"))?;
                Ok(self.push(Node::Map { values }))
            }
            primitive if PRIMITIVES.contains(&primitive) => {
                let logical = obj.get("logicalType").and_then(Value::as_str);
                let node = match (primitive, logical) {
                    ("bytes", Some("decimal")) => {
                        let (precision, scale) = decimal_params(obj, None, at)?;
                        Node::Decimal {
                            precision,
                            scale,
                            fixed: None,
                        }
                    }
                    ("long", Some("timestamp-millis")) => Node::Timestamp {
                        unit: TimeUnit::Millis,
                        local: false,
                    },
                    ("long", Some("timestamp-micros")) => Node::Timestamp {
                        unit: TimeUnit::Micros,
                        local: false,
                    },
                    ("long", Some("local-timestamp-millis")) => Node::Timestamp {
                        unit: TimeUnit::Millis,
                        local: true,
                    },
                    ("long", Some("local-timestamp-micros")) => Node::Timestamp {
                        unit: TimeUnit::Micros,
                        local: true,
                    },
                    ("int", Some("date")) => Node::Date,
                    ("int", Some("time-millis")) => Node::TimeOfDay {
                        unit: TimeUnit::Millis,
                    },
                    ("long", Some("time-micros")) => Node::TimeOfDay {
                        unit: TimeUnit::Micros,
                    },
                    ("string", Some("uuid")) => Node::Uuid,
                    // Unknown or mismatched logical types fall back to the physical type (Avro spec).
                    _ => Self::primitive(primitive).expect("listed in PRIMITIVES"),
                };
                Ok(self.push(node))
            }
            reference => self.resolve(reference, ns, at),
        }
    }

    fn named(
        &mut self,
        obj: &Map<String, Value>,
        ns: &str,
        kind: &str,
        at: &str,
    ) -> Result<(String, String, NodeId), String> {
        let name = get_str(obj, "name", &format!("{at} ({kind})"))?;
        let namespace = match obj.get("namespace") {
            Some(Value::String(s)) => Some(s.as_str()),
            Some(Value::Null) | None => None,
            Some(other) => {
                return Err(format!(
                    "{at}: {kind} {name}: \"namespace\" must be a string, got {other}"
                ));
            }
        };
        let (full, own_ns) = split_fullname(name, namespace, ns);
        let id = self.register(&full, &format!("{at}: {kind} {full}"))?;
        Ok((full, own_ns, id))
    }

    fn parse_record(
        &mut self,
        obj: &Map<String, Value>,
        ns: &str,
        at: &str,
    ) -> Result<NodeId, String> {
        let (full, own_ns, id) = self.named(obj, ns, "record", at)?;
        let at = format!("record {full}");
        let fields_json = match obj.get("fields") {
            Some(Value::Array(f)) => f,
            Some(other) => return Err(format!("{at}: \"fields\" must be a list, got {other}")),
            None => return Err(format!("{at}: \"fields\" is missing")),
        };
        let mut fields: Vec<Field> = Vec::with_capacity(fields_json.len());
        for (i, field_json) in fields_json.iter().enumerate() {
            let Value::Object(field) = field_json else {
                return Err(format!(
                    "{at}: field {i} must be an object, got {field_json}"
                ));
            };
            let name = get_str(field, "name", &format!("{at}, field {i}"))?;
            if fields.iter().any(|f| f.name == name) {
                return Err(format!("{at}: field '{name}' is declared twice"));
            }
            let field_at = format!("{at}, field '{name}'");
            let type_json = field
                .get("type")
                .ok_or_else(|| format!("{field_at}: \"type\" is missing"))?;
            let node = self.parse(type_json, &own_ns, &field_at)?;
            fields.push(Field {
                name: name.to_string(),
                key: PyString::intern(self.py, name).unbind(),
                node,
                default: field.get("default").map(|json| FieldDefault {
                    json: json.clone(),
                    encoded: OnceLock::new(),
                }),
            });
        }
        self.nodes[id] = Node::Record(Record { name: full, fields });
        Ok(id)
    }

    fn parse_enum(
        &mut self,
        obj: &Map<String, Value>,
        ns: &str,
        at: &str,
    ) -> Result<NodeId, String> {
        let (full, _, id) = self.named(obj, ns, "enum", at)?;
        let Some(Value::Array(list)) = obj.get("symbols") else {
            return Err(format!(
                "enum {full}: \"symbols\" must be a list of strings"
            ));
        };
        let mut symbols: Vec<String> = Vec::with_capacity(list.len());
        for symbol in list {
            let Value::String(s) = symbol else {
                return Err(format!("enum {full}: symbol {symbol} is not a string"));
            };
            if symbols.contains(s) {
                return Err(format!("enum {full}: symbol '{s}' is listed twice"));
            }
            symbols.push(s.clone());
        }
        self.nodes[id] = Node::Enum {
            name: full,
            symbols,
        };
        Ok(id)
    }

    fn parse_fixed(
        &mut self,
        obj: &Map<String, Value>,
        ns: &str,
        at: &str,
    ) -> Result<NodeId, String> {
        let (full, _, id) = self.named(obj, ns, "fixed", at)?;
        let at = format!("fixed {full}");
        let size =
            get_uint(obj, "size", &at)?.ok_or_else(|| format!("{at}: \"size\" is missing"))?;
        let size = usize::try_from(size).map_err(|_| format!("{at}: size {size} is too large"))?;
        self.nodes[id] = if obj.get("logicalType").and_then(Value::as_str) == Some("decimal") {
            let (precision, scale) = decimal_params(obj, Some(size), &at)?;
            Node::Decimal {
                precision,
                scale,
                fixed: Some((full, size)),
            }
        } else {
            Node::Fixed { name: full, size }
        };
        Ok(id)
    }
}

fn decimal_params(
    obj: &Map<String, Value>,
    fixed_size: Option<usize>,
    at: &str,
) -> Result<(u32, u32), String> {
    let at = format!("{at} (decimal)");
    let precision = get_uint(obj, "precision", &at)?
        .ok_or_else(|| format!("{at}: \"precision\" is missing"))?;
    let scale = get_uint(obj, "scale", &at)?.unwrap_or(0);
    if precision == 0 || precision > u64::from(u32::MAX) {
        return Err(format!(
            "{at}: precision must be a positive integer, got {precision}"
        ));
    }
    if scale > precision {
        return Err(format!(
            "{at}: scale {scale} is larger than precision {precision}"
        ));
    }
    if let Some(size) = fixed_size {
        let max = max_fixed_precision(size);
        if precision > max {
            return Err(format!(
                "{at}: precision {precision} does not fit in {size} bytes (at most {max} digits)"
            ));
        }
    }
    // Both bounded by u32::MAX just above.
    Ok((precision as u32, scale as u32))
}

/// The Avro type a node is written as (unions may hold one branch per unnamed type).
fn physical_type(node: &Node) -> &'static str {
    match node {
        Node::Null => "null",
        Node::Boolean => "boolean",
        Node::Int | Node::Date => "int",
        Node::TimeOfDay {
            unit: TimeUnit::Millis,
        } => "int",
        Node::Long
        | Node::Timestamp { .. }
        | Node::TimeOfDay {
            unit: TimeUnit::Micros,
        } => "long",
        Node::Float => "float",
        Node::Double => "double",
        Node::Bytes | Node::Decimal { fixed: None, .. } => "bytes",
        Node::String | Node::Uuid => "string",
        Node::Array { .. } => "array",
        Node::Map { .. } => "map",
        Node::Fixed { .. } | Node::Enum { .. } | Node::Record(_) | Node::Decimal { .. } => "named",
        Node::Union(_) => "union",
        Node::Placeholder => "named",
    }
}

#[cfg(test)]
mod tests {
    use super::max_fixed_precision;

    #[test]
    fn fixed_precision_matches_the_spec_table() {
        // Avro spec: size 1 -> 2 digits, 2 -> 4, 3 -> 6, 8 -> 18, 16 -> 38.
        assert_eq!(max_fixed_precision(1), 2);
        assert_eq!(max_fixed_precision(2), 4);
        assert_eq!(max_fixed_precision(3), 6);
        assert_eq!(max_fixed_precision(8), 18);
        assert_eq!(max_fixed_precision(16), 38);
    }
}
