//! The ZATCA rule table (streams/agents/zatca_rules.json) as the native fast path reads it: parsed once
//! when InvoiceJudge is made, then evaluated on the values the walk captured.
//!
//! Each predicate of the closed vocabulary is implemented here once, and once in Python
//! (streams/agents/rules.py, the reference). A table naming a predicate, path or parameter this module
//! does not implement is refused when the judge is made (a ValueError naming the rule), never skipped.
//! Evaluation answers only "surely passes" (Some) or "fails, or cannot tell" (None): the fast path
//! clears on Some and leaves everything else to Python.

use serde_json::{Map, Value};

use crate::schema::NodeId;

mod eval;

/// Decimals whose unscaled integer reaches this are left to Python.
pub const DECIMAL_LIMIT: i128 = 1_000_000_000_000_000;
/// The predicates evaluated on the invoice alone.
pub const STATELESS: [&str; 5] = ["digits", "lookup", "sum", "one_of", "not_after_now"];
/// The seller chain's checks: try_clear implements them against the partition state.
pub const CHAIN: [&str; 3] = [
    "first_submission",
    "counter_increases",
    "links_previous_hash",
];
/// The fields the chain checks read (try_clear captures them by name).
const CHAIN_FIELDS: [(&str, &str); 3] = [
    ("first_submission", "invoice_id"),
    ("counter_increases", "icv"),
    ("links_previous_hash", "previous_invoice_hash"),
];

/// Which record a captured field belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    Root,
    Seller,
    Buyer,
}

/// A captured field: an index into Captured::scalars (Root, Seller, Buyer) or into each line's fields.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FieldRef {
    Scalar(usize),
    Line(usize),
}

/// An exact decimal: unscaled * 10^-scale.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Dec {
    pub unscaled: i128,
    pub scale: u32,
}

/// One captured value, as the walk saw it.
#[derive(Clone, Copy, Debug, Default)]
pub enum Cap<'a> {
    /// Not read (an absent optional record's field).
    #[default]
    Missing,
    Null,
    Text(&'a [u8]),
    Dec(Dec),
    Symbol(NodeId, usize),
    Time(i64),
    /// Any other kind of value: every predicate on it leaves the record to Python.
    Other,
}

/// One term of a sum: the product of its factors, negated or not, over every line or not.
#[derive(Debug)]
struct Term {
    negative: bool,
    factors: Vec<FieldRef>,
    over_lines: bool,
}

#[derive(Debug)]
enum Pred {
    Digits {
        length: usize,
        first: u8,
        last: u8,
    },
    Lookup {
        key: FieldRef,
        table: Vec<(String, Dec)>,
    },
    Sum {
        terms: Vec<Term>,
        divide: u32,
        quantize: Option<u32>,
        tolerance: Dec,
    },
    OneOf {
        values: Vec<String>,
    },
    NotAfterNow {
        skew_micros: i64,
    },
}

#[derive(Debug)]
struct Rule {
    field: FieldRef,
    each: bool,
    when: Option<(FieldRef, String)>,
    pred: Pred,
}

/// The table's stateless rules, and the fields they read.
#[derive(Debug, Default)]
pub struct RuleTable {
    rules: Vec<Rule>,
    /// The invoice-level fields captured: (record, field name).
    pub scalars: Vec<(Scope, String)>,
    /// The per-line fields captured.
    pub line_fields: Vec<String>,
}

/// What the walk captured for the rules.
#[derive(Default)]
pub struct Captured<'a> {
    pub scalars: Vec<Cap<'a>>,
    /// Every line's fields, line after line (line_fields.len() per line).
    pub lines: Vec<Cap<'a>>,
}

type Parsed<T> = Result<T, String>;

fn text_param<'v>(params: &'v Map<String, Value>, name: &str) -> Parsed<&'v str> {
    params
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("needs a string {name:?}"))
}

fn int_param(params: &Map<String, Value>, name: &str) -> Parsed<u64> {
    params
        .get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("needs a non-negative integer {name:?}"))
}

/// A decimal's plain text ("15.00", "-0.5") as an exact Dec, if below DECIMAL_LIMIT.
pub fn parse_dec(text: &[u8]) -> Option<Dec> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (mut unscaled, mut scale, mut point) = (0i128, 0u32, false);
    for &b in digits {
        match b {
            b'.' if !point => point = true,
            b'0'..=b'9' => {
                unscaled = unscaled * 10 + i128::from(b - b'0');
                scale += u32::from(point);
                if unscaled >= DECIMAL_LIMIT {
                    return None;
                }
            }
            _ => return None,
        }
    }
    (!digits.is_empty()).then_some(Dec {
        unscaled: if negative { -unscaled } else { unscaled },
        scale,
    })
}

fn dec_param(value: Option<&Value>, what: &str) -> Parsed<Dec> {
    value
        .and_then(Value::as_str)
        .and_then(|text| parse_dec(text.as_bytes()))
        .ok_or_else(|| format!("{what} must be a decimal string such as \"0.01\""))
}

impl RuleTable {
    /// Parses the table's JSON; Err names the rule and what this side does not implement.
    pub fn parse(json: &str) -> Parsed<RuleTable> {
        let root: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let entries = root
            .get("rules")
            .and_then(Value::as_array)
            .ok_or("no \"rules\" list")?;
        let mut table = RuleTable::default();
        for (n, entry) in entries.iter().enumerate() {
            let code = entry.get("code").and_then(Value::as_str).unwrap_or("?");
            table
                .add(entry)
                .map_err(|e| format!("rule {} ({code}): {e}", n + 1))?;
        }
        Ok(table)
    }

    fn add(&mut self, entry: &Value) -> Parsed<()> {
        let predicate = entry
            .get("predicate")
            .and_then(Value::as_object)
            .ok_or("needs a predicate")?;
        let kind = text_param(predicate, "kind")?;
        let field = entry
            .get("field")
            .and_then(Value::as_str)
            .ok_or("needs a field")?;
        if let Some((_, expected)) = CHAIN_FIELDS.iter().find(|(k, _)| *k == kind) {
            // try_clear checks these against the state; the table must mean the same fields.
            return if field == *expected {
                Ok(())
            } else {
                Err(format!(
                    "{kind} is implemented natively on {expected}, not {field}"
                ))
            };
        }
        if !STATELESS.contains(&kind) {
            return Err(format!("predicate {kind:?} is not implemented natively"));
        }
        let each = match entry.get("each") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) if s == "lines" => true,
            Some(other) => return Err(format!("each {other} is not implemented natively")),
        };
        let when = match entry.get("when").and_then(Value::as_object) {
            None => None,
            Some(when) => Some((
                self.field(text_param(when, "field")?, false)?,
                text_param(when, "equals")?.to_owned(),
            )),
        };
        let pred = self.predicate(kind, predicate, each)?;
        let field = self.field(field, each)?;
        self.rules.push(Rule {
            field,
            each,
            when,
            pred,
        });
        Ok(())
    }

    fn predicate(&mut self, kind: &str, params: &Map<String, Value>, each: bool) -> Parsed<Pred> {
        Ok(match kind {
            "digits" => {
                let length =
                    usize::try_from(int_param(params, "length")?).map_err(|e| e.to_string())?;
                let edge = |name| match text_param(params, name)?.as_bytes() {
                    [b] if b.is_ascii() => Ok(*b),
                    _ => Err(format!("{name} must be one ASCII character")),
                };
                if length < 2 {
                    return Err("length must be at least 2".into());
                }
                Pred::Digits {
                    length,
                    first: edge("first")?,
                    last: edge("last")?,
                }
            }
            "lookup" => {
                let key = self.field(text_param(params, "key")?, each)?;
                let entries = params
                    .get("table")
                    .and_then(Value::as_object)
                    .ok_or("needs a table")?;
                let mut table = Vec::with_capacity(entries.len());
                for (name, value) in entries {
                    table.push((name.clone(), dec_param(Some(value), name)?));
                }
                Pred::Lookup { key, table }
            }
            "sum" => self.sum(params, each)?,
            "one_of" => Pred::OneOf {
                values: params
                    .get("values")
                    .and_then(Value::as_array)
                    .ok_or("needs values")?
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or("values must be strings")
                    })
                    .collect::<Result<_, _>>()?,
            },
            "not_after_now" => Pred::NotAfterNow {
                skew_micros: i64::try_from(int_param(params, "skew_seconds")?)
                    .ok()
                    .and_then(|s| s.checked_mul(1_000_000))
                    .ok_or("skew_seconds is too large")?,
            },
            _ => return Err(format!("predicate {kind:?} is not implemented natively")),
        })
    }

    fn sum(&mut self, params: &Map<String, Value>, each: bool) -> Parsed<Pred> {
        let raw_terms = params
            .get("terms")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty())
            .ok_or("needs terms")?;
        let mut terms = Vec::with_capacity(raw_terms.len());
        for raw in raw_terms {
            let names: Vec<&str> = match raw {
                Value::String(s) => vec![s.as_str()],
                Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_str().ok_or("a term's factors must be strings"))
                    .collect::<Result<_, _>>()?,
                _ => return Err("a term is a path or a list of paths".into()),
            };
            let Some((first, rest)) = names.split_first() else {
                return Err("an empty term".into());
            };
            let negative = first.starts_with('-');
            let mut factors = Vec::with_capacity(names.len());
            let mut over = Vec::with_capacity(names.len());
            for name in std::iter::once(first.trim_start_matches('-')).chain(rest.iter().copied()) {
                match name.strip_prefix("lines[].") {
                    Some(line_field) => {
                        over.push(true);
                        factors.push(self.field(line_field, true)?);
                    }
                    None => {
                        over.push(false);
                        factors.push(self.field(name, each)?);
                    }
                }
            }
            if over.iter().any(|&o| o != over[0]) {
                return Err("a term mixes per-line and invoice fields".into());
            }
            terms.push(Term {
                negative,
                factors,
                over_lines: over[0],
            });
        }
        let divide = match params.get("divide") {
            None => 0,
            Some(value) => {
                let n = value.as_u64().ok_or("divide must be a power of ten")?;
                let places = n.checked_ilog10().filter(|&p| 10u64.pow(p) == n);
                places.ok_or("divide must be a power of ten (natively)")?
            }
        };
        let quantize = match params.get("quantize") {
            None => None,
            Some(_) => {
                Some(u32::try_from(int_param(params, "quantize")?).map_err(|e| e.to_string())?)
            }
        };
        Ok(Pred::Sum {
            terms,
            divide,
            quantize,
            tolerance: dec_param(params.get("tolerance"), "tolerance")?,
        })
    }

    /// The capture for a path: relative to the line in an `each` rule, else "name", "seller.name" or
    /// "buyer.name".
    fn field(&mut self, path: &str, in_line: bool) -> Parsed<FieldRef> {
        if in_line {
            if path.contains('.') {
                return Err(format!("line path {path:?} is not implemented natively"));
            }
            let index = position_or_push(&mut self.line_fields, path.to_owned());
            return Ok(FieldRef::Line(index));
        }
        let (scope, name) = match path.split_once('.') {
            None => (Scope::Root, path),
            Some(("seller", name)) => (Scope::Seller, name),
            Some(("buyer", name)) => (Scope::Buyer, name),
            Some(_) => return Err(format!("path {path:?} is not implemented natively")),
        };
        if name.contains('.') || name.is_empty() {
            return Err(format!("path {path:?} is not implemented natively"));
        }
        Ok(FieldRef::Scalar(position_or_push(
            &mut self.scalars,
            (scope, name.to_owned()),
        )))
    }
}

fn position_or_push<T: PartialEq>(items: &mut Vec<T>, item: T) -> usize {
    items.iter().position(|i| *i == item).unwrap_or_else(|| {
        items.push(item);
        items.len() - 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The package's table: every predicate and path in it is implemented here. Deleting one from
    /// this file alone (or adding a rule this file cannot read) fails this test.
    #[test]
    fn the_package_table_is_implemented() {
        let json = include_str!("../../../agents/zatca_rules.json");
        let table = RuleTable::parse(json).unwrap();
        let root: Value = serde_json::from_str(json).unwrap();
        let entries = root["rules"].as_array().unwrap();
        let stateless = entries
            .iter()
            .filter(|e| STATELESS.contains(&e["predicate"]["kind"].as_str().unwrap()))
            .count();
        assert_eq!(table.rules.len(), stateless);
        for kind in CHAIN {
            assert!(
                entries.iter().any(|e| e["predicate"]["kind"] == kind),
                "{kind}"
            );
        }
    }

    #[test]
    fn unknown_predicates_and_paths_are_refused() {
        let table = |rule: &str| RuleTable::parse(&format!("{{\"rules\": [{rule}]}}"));
        let err = table(r#"{"code": "X", "field": "a", "predicate": {"kind": "frobnicate"}}"#);
        assert!(
            err.unwrap_err()
                .contains("\"frobnicate\" is not implemented natively")
        );
        let err = table(
            r#"{"code": "X", "field": "a.b.c", "predicate": {"kind": "one_of", "values": []}}"#,
        );
        assert!(err.unwrap_err().contains("not implemented natively"));
        let err = table(
            r#"{"code": "X", "field": "a", "predicate": {"kind": "sum", "terms": ["b"], "divide": 3, "tolerance": "0"}}"#,
        );
        assert!(err.unwrap_err().contains("power of ten"));
        let err = table(
            r#"{"code": "X", "field": "tenant_id", "predicate": {"kind": "counter_increases"}}"#,
        );
        assert!(err.unwrap_err().contains("on icv"));
    }

    #[test]
    fn decimal_text() {
        let dec = |u, s| {
            Some(Dec {
                unscaled: u,
                scale: s,
            })
        };
        assert_eq!(parse_dec(b"-871.00"), dec(-87100, 2));
        assert_eq!(parse_dec(b"0.005"), dec(5, 3));
        assert_eq!(parse_dec(b"9999999999999.99"), dec(999_999_999_999_999, 2));
        assert_eq!(parse_dec(b"10000000000000.00"), None);
        assert_eq!(parse_dec(b"1.2.3"), None);
        assert_eq!(parse_dec(b""), None);
    }
}
