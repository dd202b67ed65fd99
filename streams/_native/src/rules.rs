//! The ZATCA rule table (streams/agents/zatca_rules.json) as the native fast path reads it: parsed once
//! when InvoiceJudge is made, then evaluated on the values the walk captured.
//!
//! Each predicate of the closed vocabulary is implemented here once, and once in Python
//! (streams/agents/rules.py, the reference). A table naming a predicate, path or parameter this file
//! does not implement is refused when the judge is made (a ValueError naming the rule), never skipped.
//! Evaluation answers only "surely passes" (Some) or "fails, or cannot tell" (None): the fast path
//! clears on Some and leaves everything else to Python.

use serde_json::{Map, Value};

use crate::schema::{Node, NodeId, Schema};

/// Decimals whose unscaled integer reaches this are left to Python.
pub const DECIMAL_LIMIT: i128 = 1_000_000_000_000_000;
/// Intermediate results must stay below this (Python's 28-digit decimal context, with a digit to spare).
const EXACT_LIMIT: i128 = 1_000_000_000_000_000_000_000_000_000;
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

    /// Every rule surely passes (Some), or one fails or cannot be decided here (None).
    pub fn passes(&self, schema: &Schema, caps: &Captured<'_>, now_micros: i64) -> Option<()> {
        let ctx = Context {
            schema,
            scalars: &caps.scalars,
            lines: &caps.lines,
            stride: self.line_fields.len(),
        };
        for rule in &self.rules {
            if let Some((field, equals)) = &rule.when {
                if ctx.text(ctx.get(*field, None)?)? != equals.as_bytes() {
                    continue;
                }
            }
            if rule.each {
                for line in ctx.each_line() {
                    ctx.check(rule, Some(line), now_micros)?;
                }
            } else {
                ctx.check(rule, None, now_micros)?;
            }
        }
        Some(())
    }
}

fn position_or_push<T: PartialEq>(items: &mut Vec<T>, item: T) -> usize {
    items.iter().position(|i| *i == item).unwrap_or_else(|| {
        items.push(item);
        items.len() - 1
    })
}

struct Context<'c, 'a> {
    schema: &'c Schema,
    scalars: &'c [Cap<'a>],
    /// Every line's captures, `stride` per line.
    lines: &'c [Cap<'a>],
    stride: usize,
}

impl<'c, 'a> Context<'c, 'a> {
    fn each_line(&self) -> impl Iterator<Item = &'c [Cap<'a>]> + use<'c, 'a> {
        // A table without line fields has no line captures (chunks_exact(0) would panic).
        self.lines.chunks_exact(self.stride.max(1))
    }

    fn get(&self, field: FieldRef, line: Option<&[Cap<'a>]>) -> Option<Cap<'a>> {
        match field {
            FieldRef::Scalar(i) => self.scalars.get(i).copied(),
            FieldRef::Line(i) => line?.get(i).copied(),
        }
    }

    /// A string's bytes or an enum symbol's name.
    fn text(&self, cap: Cap<'a>) -> Option<&[u8]> {
        match cap {
            Cap::Text(raw) => Some(raw),
            Cap::Symbol(node, index) => match self.schema.node(node) {
                Node::Enum { symbols, .. } => symbols.get(index).map(String::as_bytes),
                _ => None,
            },
            _ => None,
        }
    }

    fn dec(&self, field: FieldRef, line: Option<&[Cap<'a>]>) -> Option<Dec> {
        match self.get(field, line)? {
            Cap::Dec(dec) => Some(dec),
            _ => None,
        }
    }

    fn check(&self, rule: &Rule, line: Option<&[Cap<'a>]>, now_micros: i64) -> Option<()> {
        let value = self.get(rule.field, line)?;
        let ok = match &rule.pred {
            Pred::Digits {
                length,
                first,
                last,
            } => {
                // What the Python pattern surely matches: ASCII digits only (it also takes other
                // Unicode digits and a trailing newline: those are left to Python).
                let Cap::Text(t) = value else { return None };
                t.len() == *length
                    && t[0] == *first
                    && t[t.len() - 1] == *last
                    && t[1..t.len() - 1].iter().all(u8::is_ascii_digit)
            }
            Pred::Lookup { key, table } => {
                let key = self.text(self.get(*key, line)?)?;
                let (_, expected) = table.iter().find(|(name, _)| name.as_bytes() == key)?;
                let Cap::Dec(value) = value else { return None };
                sub(value, *expected)?.unscaled == 0
            }
            Pred::Sum {
                terms,
                divide,
                quantize,
                tolerance,
            } => {
                let Cap::Dec(value) = value else { return None };
                let expected = self.sum(terms, *divide, *quantize, line)?;
                within(sub(value, expected)?, *tolerance)?
            }
            Pred::OneOf { values } => {
                let text = self.text(value)?;
                values.iter().any(|v| v.as_bytes() == text)
            }
            Pred::NotAfterNow { skew_micros } => {
                let Cap::Time(micros) = value else {
                    return None;
                };
                micros <= now_micros.checked_add(*skew_micros)?
            }
        };
        ok.then_some(())
    }

    fn sum(
        &self,
        terms: &[Term],
        divide: u32,
        quantize: Option<u32>,
        line: Option<&[Cap<'a>]>,
    ) -> Option<Dec> {
        let mut total = Dec::default();
        for term in terms {
            let mut value = if term.over_lines {
                let mut acc = Dec::default();
                for item in self.each_line() {
                    acc = add(acc, self.product(&term.factors, divide, Some(item))?)?;
                }
                acc
            } else {
                self.product(&term.factors, divide, line)?
            };
            if term.negative {
                value.unscaled = -value.unscaled;
            }
            total = add(total, value)?;
        }
        match quantize {
            None => Some(total),
            Some(places) => rescale(total, places),
        }
    }

    fn product(&self, factors: &[FieldRef], divide: u32, line: Option<&[Cap<'a>]>) -> Option<Dec> {
        let mut out = Dec {
            unscaled: 1,
            scale: divide,
        };
        for &factor in factors {
            let f = self.dec(factor, line)?;
            out = exact(Dec {
                unscaled: out.unscaled.checked_mul(f.unscaled)?,
                scale: out.scale + f.scale,
            })?;
        }
        Some(out)
    }
}

/// `dec`, if its unscaled integer is below EXACT_LIMIT (where Python's context is still exact).
fn exact(dec: Dec) -> Option<Dec> {
    (dec.unscaled.abs() < EXACT_LIMIT).then_some(dec)
}

fn pow10(n: u32) -> Option<i128> {
    const POWERS: [i128; 30] = {
        let mut table = [1i128; 30];
        let mut i = 1;
        while i < 30 {
            table[i] = table[i - 1] * 10;
            i += 1;
        }
        table
    };
    POWERS.get(usize::try_from(n).ok()?).copied()
}

/// `dec` at `scale` places: exact when widening, half to even when narrowing (Decimal.quantize).
fn rescale(dec: Dec, scale: u32) -> Option<Dec> {
    let unscaled = if scale >= dec.scale {
        dec.unscaled.checked_mul(pow10(scale - dec.scale)?)?
    } else {
        round_half_even(dec.unscaled, pow10(dec.scale - scale)?)
    };
    exact(Dec { unscaled, scale })
}

fn add(a: Dec, b: Dec) -> Option<Dec> {
    let scale = a.scale.max(b.scale);
    let (a, b) = (rescale(a, scale)?, rescale(b, scale)?);
    exact(Dec {
        unscaled: a.unscaled.checked_add(b.unscaled)?,
        scale,
    })
}

fn sub(a: Dec, b: Dec) -> Option<Dec> {
    add(
        a,
        Dec {
            unscaled: -b.unscaled,
            scale: b.scale,
        },
    )
}

/// Whether |diff| <= tolerance.
fn within(diff: Dec, tolerance: Dec) -> Option<bool> {
    let scale = diff.scale.max(tolerance.scale);
    Some(rescale(diff, scale)?.unscaled.abs() <= rescale(tolerance, scale)?.unscaled)
}

/// `x / divisor` rounded half to even (Decimal.quantize under ROUND_HALF_EVEN).
pub fn round_half_even(x: i128, divisor: i128) -> i128 {
    let quotient = x / divisor;
    let twice = 2 * (x % divisor).abs();
    if twice > divisor || (twice == divisor && quotient % 2 != 0) {
        quotient + x.signum()
    } else {
        quotient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The package's table: every predicate and path in it is implemented here. Deleting one from
    /// this file alone (or adding a rule this file cannot read) fails this test.
    #[test]
    fn the_package_table_is_implemented() {
        let json = include_str!("../../agents/zatca_rules.json");
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
    fn half_even() {
        assert_eq!(round_half_even(1500, 1000), 2);
        assert_eq!(round_half_even(2500, 1000), 2);
        assert_eq!(round_half_even(-2500, 1000), -2);
        assert_eq!(round_half_even(-2501, 1000), -3);
        assert_eq!(round_half_even(2499, 1000), 2);
        assert_eq!(round_half_even(-1500, 1000), -2);
        assert_eq!(round_half_even(0, 1000), 0);
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

    #[test]
    fn sums_quantize_and_tolerate() {
        let d = |u, s| Dec {
            unscaled: u,
            scale: s,
        };
        assert_eq!(add(d(150, 2), d(5, 3)), Some(d(1505, 3)));
        assert_eq!(rescale(d(18_450_000, 6), 2), Some(d(1845, 2)));
        assert_eq!(rescale(d(5, 3), 2), Some(d(0, 2)));
        assert_eq!(rescale(d(15, 3), 2), Some(d(2, 2)));
        assert_eq!(within(d(-1, 2), d(1, 2)), Some(true));
        assert_eq!(within(d(11, 3), d(1, 2)), Some(false));
    }
}
