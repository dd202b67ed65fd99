//! The rule table evaluated on what the walk captured: every rule surely passes (Some), or one fails
//! or cannot be decided natively (None). Decimal arithmetic is exact on scaled integers and agrees
//! with Python's `decimal` (28 digits, ROUND_HALF_EVEN) because every intermediate result is refused
//! once it reaches EXACT_LIMIT, below where that context would round.

use crate::schema::{Node, Schema};

use super::{Cap, Captured, Dec, FieldRef, Pred, Rule, RuleTable, Term};

/// Intermediate results must stay below this (Python's 28-digit decimal context, with a digit to spare).
const EXACT_LIMIT: i128 = 1_000_000_000_000_000_000_000_000_000;

impl RuleTable {
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
fn round_half_even(x: i128, divisor: i128) -> i128 {
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
