//! Avro decimals from the text of a Python Decimal (or int): the unscaled value as big-endian two's
//! complement, in exactly the bytes fastavro writes.
//!
//! `str(Decimal)` is parsed rather than `as_tuple()`: one C call and no tuple of digit objects. A
//! plain Decimal usually skips even that: mpd.rs reads it in place and `write_unscaled` writes it.

#[derive(Debug, PartialEq, Eq)]
pub enum DecimalError {
    /// NaN, sNaN, Infinity or text that is not a number.
    NotFinite,
    /// value * 10**scale is not an integer.
    TooManyPlaces,
    /// abs(unscaled) >= 10**precision.
    TooManyDigits,
    /// The unscaled value does not fit the fixed size (cannot happen once precision fits the size).
    TooWide,
}

/// Where the bytes go: Avro bytes (length-prefixed, fastavro's width) or a fixed of `size` bytes.
#[derive(Clone, Copy)]
pub enum Width {
    Bytes,
    Fixed(usize),
}

/// Digits that fit an i128 (10**38 < 2**127); beyond that a slower arbitrary-precision path is used.
const FAST_DIGITS: u64 = 38;

/// A decimal's text taken apart: the sign, the mantissa (digits and at most one '.'), how many of its
/// digits there are and how many follow the point, and the exponent after an E.
struct Parts<'t> {
    negative: bool,
    mantissa: &'t [u8],
    digit_count: usize,
    fraction_digits: i64,
    exponent: i64,
}

fn parts(text: &str) -> Result<Parts<'_>, DecimalError> {
    let b = text.as_bytes();
    let mut i = 0;
    let negative = match b.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let mantissa_start = i;
    let mut dot: Option<usize> = None;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        if b[i] == b'.' {
            if dot.is_some() {
                return Err(DecimalError::NotFinite);
            }
            dot = Some(i);
        }
        i += 1;
    }
    let mantissa = &b[mantissa_start..i];
    let digit_count = mantissa.len() - usize::from(dot.is_some());
    if digit_count == 0 {
        return Err(DecimalError::NotFinite);
    }
    let exponent = if i < b.len() {
        if b[i] != b'E' && b[i] != b'e' {
            return Err(DecimalError::NotFinite);
        }
        exponent(&b[i + 1..])?
    } else {
        0
    };
    Ok(Parts {
        negative,
        mantissa,
        digit_count,
        fraction_digits: dot.map_or(0, |d| mantissa_start + mantissa.len() - d - 1) as i64,
        exponent,
    })
}

/// The exponent's text after the E: an optional sign and at least one digit.
fn exponent(b: &[u8]) -> Result<i64, DecimalError> {
    let (negative, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() {
        return Err(DecimalError::NotFinite);
    }
    let mut exponent: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return Err(DecimalError::NotFinite);
        }
        // Saturating: exponents this large are out of range for any precision anyway.
        exponent = exponent
            .saturating_mul(10)
            .saturating_add(i64::from(c - b'0'));
    }
    Ok(if negative { -exponent } else { exponent })
}

/// Appends the Avro encoding of the decimal written as `text` (Python's str() of a Decimal or int).
pub fn write_decimal(
    text: &str,
    precision: u32,
    scale: u32,
    width: Width,
    out: &mut Vec<u8>,
) -> Result<(), DecimalError> {
    let Parts {
        negative,
        mantissa,
        digit_count,
        fraction_digits,
        exponent,
    } = parts(text)?;
    let shift = exponent
        .saturating_sub(fraction_digits)
        .saturating_add(i64::from(scale));

    // Significant digits are mantissa digits [0, keep) followed by `zeros` zeros.
    let (keep, zeros) = if shift >= 0 {
        (digit_count, shift as u64)
    } else {
        let drop = usize::try_from(shift.unsigned_abs())
            .unwrap_or(usize::MAX)
            .min(digit_count);
        let keep = digit_count - drop;
        if digits(mantissa).skip(keep).any(|d| d != 0) {
            return Err(DecimalError::TooManyPlaces);
        }
        (keep, 0)
    };
    let leading = digits(mantissa).take(keep).take_while(|&d| d == 0).count();
    let significant = keep - leading;
    if significant == 0 {
        return emit_small(0, width, out);
    }
    let total = (significant as u64).saturating_add(zeros);
    if total > u64::from(precision) {
        return Err(DecimalError::TooManyDigits);
    }
    if total <= FAST_DIGITS {
        let mut magnitude: i128 = 0;
        for d in digits(mantissa).take(keep).skip(leading) {
            magnitude = magnitude * 10 + i128::from(d);
        }
        for _ in 0..zeros {
            magnitude *= 10;
        }
        return emit_small(if negative { -magnitude } else { magnitude }, width, out);
    }
    let magnitude = big_magnitude(digits(mantissa).take(keep).skip(leading), zeros);
    emit_big(&magnitude, negative, width, out)
}

fn digits(mantissa: &[u8]) -> impl Iterator<Item = u8> + '_ {
    mantissa.iter().filter(|&&c| c != b'.').map(|&c| c - b'0')
}

fn write_zigzag_len(len: usize, out: &mut Vec<u8>) {
    crate::encode::write_long(out, len as i64);
}

/// Appends the Avro encoding of an unscaled value already checked against precision and scale.
pub fn write_unscaled(value: i128, width: Width, out: &mut Vec<u8>) -> Result<(), DecimalError> {
    emit_small(value, width, out)
}

/// |value| < 10**38, so it fits in 16 bytes with a sign bit to spare.
fn emit_small(value: i128, width: Width, out: &mut Vec<u8>) -> Result<(), DecimalError> {
    let be = value.to_be_bytes();
    let magnitude_bits = 128 - value.unsigned_abs().leading_zeros() as usize;
    match width {
        Width::Bytes => {
            // fastavro: (bit_length(|unscaled|) + 8) // 8 bytes, so -128 is ff80 and 0 is 00.
            let len = (magnitude_bits + 8) / 8;
            write_zigzag_len(len, out);
            out.extend_from_slice(&be[16 - len..]);
        }
        Width::Fixed(size) => {
            if magnitude_bits + 1 > size * 8 {
                return Err(DecimalError::TooWide);
            }
            if size > 16 {
                let fill = if value < 0 { 0xff } else { 0x00 };
                out.extend(std::iter::repeat_n(fill, size - 16));
                out.extend_from_slice(&be);
            } else {
                out.extend_from_slice(&be[16 - size..]);
            }
        }
    }
    Ok(())
}

/// Big-endian magnitude bytes without leading zeros, from decimal digits followed by `zeros` zeros.
fn big_magnitude(digits: impl Iterator<Item = u8>, zeros: u64) -> Vec<u8> {
    // Little-endian base-2^32 limbs; multiply by 10 and add a digit at a time.
    let mut limbs: Vec<u32> = vec![0];
    let mut mul_add = |digit: u32| {
        let mut carry = u64::from(digit);
        for limb in &mut limbs {
            let v = u64::from(*limb) * 10 + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            limbs.push(carry as u32);
        }
    };
    for d in digits {
        mul_add(u32::from(d));
    }
    for _ in 0..zeros {
        mul_add(0);
    }
    let mut bytes: Vec<u8> = limbs.iter().rev().flat_map(|l| l.to_be_bytes()).collect();
    let first = bytes.iter().position(|&x| x != 0).unwrap_or(bytes.len());
    bytes.drain(..first);
    bytes
}

fn emit_big(
    magnitude: &[u8],
    negative: bool,
    width: Width,
    out: &mut Vec<u8>,
) -> Result<(), DecimalError> {
    let bits = magnitude.len() * 8 - magnitude.first().map_or(8, |b| b.leading_zeros() as usize);
    let len = match width {
        Width::Bytes => (bits + 8) / 8,
        Width::Fixed(size) => {
            if bits + 1 > size * 8 {
                return Err(DecimalError::TooWide);
            }
            size
        }
    };
    let mut buf = vec![0u8; len];
    buf[len - magnitude.len()..].copy_from_slice(magnitude);
    if negative {
        // Two's complement: invert, then add one.
        for byte in &mut buf {
            *byte = !*byte;
        }
        for byte in buf.iter_mut().rev() {
            let (v, overflow) = byte.overflowing_add(1);
            *byte = v;
            if !overflow {
                break;
            }
        }
    }
    if let Width::Bytes = width {
        write_zigzag_len(len, out);
    }
    out.extend_from_slice(&buf);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(text: &str, precision: u32, scale: u32) -> Result<Vec<u8>, DecimalError> {
        let mut out = Vec::new();
        write_decimal(text, precision, scale, Width::Bytes, &mut out).map(|()| out[1..].to_vec())
    }

    fn fixed(text: &str, precision: u32, scale: u32, size: usize) -> Result<Vec<u8>, DecimalError> {
        let mut out = Vec::new();
        write_decimal(text, precision, scale, Width::Fixed(size), &mut out).map(|()| out)
    }

    #[test]
    fn bytes_match_fastavro() {
        assert_eq!(enc("-1.28", 4, 2).unwrap(), vec![0xff, 0x80]);
        assert_eq!(enc("0", 4, 2).unwrap(), vec![0x00]);
        assert_eq!(enc("-0.00", 4, 2).unwrap(), vec![0x00]);
        assert_eq!(enc("1.27", 4, 2).unwrap(), vec![0x7f]);
        assert_eq!(enc("1.5", 4, 2).unwrap(), vec![0x00, 0x96]);
        assert_eq!(enc("1E+1", 4, 2).unwrap(), vec![0x03, 0xe8]);
        assert_eq!(enc("1.500", 4, 2).unwrap(), vec![0x00, 0x96]);
    }

    #[test]
    fn rejects_bad_values() {
        assert_eq!(enc("1.005", 18, 2), Err(DecimalError::TooManyPlaces));
        assert_eq!(enc("100.00", 4, 2), Err(DecimalError::TooManyDigits));
        assert_eq!(enc("NaN", 4, 2), Err(DecimalError::NotFinite));
        assert_eq!(enc("-Infinity", 4, 2), Err(DecimalError::NotFinite));
        assert_eq!(
            enc("1E+999999999999999999999", 4, 2),
            Err(DecimalError::TooManyDigits)
        );
        assert_eq!(
            enc("1E-999999999999999999999", 4, 2),
            Err(DecimalError::TooManyPlaces)
        );
        assert_eq!(enc("0E-999999999999999999999", 4, 2).unwrap(), vec![0x00]);
    }

    #[test]
    fn fixed_is_sign_extended() {
        assert_eq!(fixed("-1.28", 6, 2, 3).unwrap(), vec![0xff, 0xff, 0x80]);
        assert_eq!(fixed("1.5", 6, 2, 3).unwrap(), vec![0x00, 0x00, 0x96]);
        assert_eq!(fixed("-0", 6, 2, 3).unwrap(), vec![0x00, 0x00, 0x00]);
    }

    #[test]
    fn big_path_agrees_with_small_path() {
        let mut small = Vec::new();
        let mut big = Vec::new();
        emit_small(
            -123_456_789_012_345_678_901_234_567_890,
            Width::Bytes,
            &mut small,
        )
        .unwrap();
        let magnitude = big_magnitude(digits(b"123456789012345678901234567890"), 0);
        emit_big(&magnitude, true, Width::Bytes, &mut big).unwrap();
        assert_eq!(small, big);
    }
}
