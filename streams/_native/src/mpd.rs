//! A Python Decimal's sign, coefficient and exponent read straight from the C decimal object, so the
//! common decimal costs no `str()` call (that call was ~2/3 of an invoice's encoding time).
//!
//! CPython's `_decimal` exports no C API for this (3.11 has no capsule for it), but its
//! object layout has not changed since 3.3: `PyObject_HEAD`, a cached hash, then libmpdec's `mpd_t`
//! (flags, exp, digits, len, alloc, data) whose coefficient is little-endian base-10**19 words on
//! 64-bit builds. `DecimalLayout::probe` checks that layout against known values once per encoder,
//! reading only inside the object, and everything falls back to the `str()` path when the check
//! fails, on other builds, for subclasses and for values it does not cover (NaN, Infinity, more than
//! 38 digits, anything that does not fit the schema: the text path words those errors).

use pyo3::prelude::*;
use pyo3::types::PyType;

/// `PyDecObject` on a 64-bit CPython: `PyObject_HEAD`, `Py_hash_t hash`, `mpd_t dec`, inline words.
#[cfg(target_pointer_width = "64")]
#[repr(C)]
struct PyDecObject {
    ob_refcnt: isize,
    ob_type: *const u8,
    hash: isize,
    flags: u8,
    exp: isize,
    digits: isize,
    len: isize,
    alloc: isize,
    data: *const u64,
}

const MPD_NEG: u8 = 1;
const MPD_SPECIAL: u8 = 2 | 4 | 8; // Infinity, NaN, sNaN
const RADIX: u128 = 10_000_000_000_000_000_000; // 10**19, one mpd_uint_t word
const MAX_I128_DIGITS: u32 = 38;

/// Whether Decimals can be read in place; decided once per encoder by `probe`.
#[derive(Clone, Copy)]
pub struct DecimalLayout {
    usable: bool,
}

/// A finite Decimal as (negative, coefficient, exponent): value = (-1)**negative * coefficient * 10**exp.
#[derive(Debug, PartialEq, Eq)]
pub struct Parts {
    pub negative: bool,
    pub coefficient: u128,
    pub exp: i64,
}

impl DecimalLayout {
    /// Reads known Decimals and keeps the fast path only if every one reads back exactly.
    pub fn probe(py: Python<'_>, decimal_type: &Bound<'_, PyType>) -> DecimalLayout {
        DecimalLayout {
            usable: probe(py, decimal_type).unwrap_or(false),
        }
    }

    /// The parts of `v`, an object whose exact type is the probed `decimal.Decimal`; None when the
    /// layout is unknown or the value is special or longer than 38 digits.
    pub fn parts(self, v: &Bound<'_, PyAny>) -> Option<Parts> {
        if !self.usable {
            return None;
        }
        // SAFETY: `usable` means probe() found this type's objects laid out as PyDecObject; the
        // caller checked the exact type, and the object is alive (borrowed) and immutable.
        unsafe { read(v.as_ptr().cast::<u8>()) }
    }
}

#[cfg(target_pointer_width = "64")]
unsafe fn read(object: *const u8) -> Option<Parts> {
    // SAFETY: see DecimalLayout::parts; the object is at least size_of::<PyDecObject>() bytes.
    let dec = unsafe { &*object.cast::<PyDecObject>() };
    if dec.flags & MPD_SPECIAL != 0
        || dec.len < 1
        || dec.len > 2
        || dec.digits > MAX_I128_DIGITS as isize
    {
        return None;
    }
    // SAFETY: libmpdec keeps `len` initialised words at `data` for a finite value.
    let words = unsafe { std::slice::from_raw_parts(dec.data, dec.len as usize) };
    let mut coefficient = 0u128;
    for &word in words.iter().rev() {
        coefficient = coefficient * RADIX + u128::from(word);
    }
    Some(Parts {
        negative: dec.flags & MPD_NEG != 0,
        coefficient,
        exp: dec.exp as i64,
    })
}

#[cfg(not(target_pointer_width = "64"))]
unsafe fn read(_object: *const u8) -> Option<Parts> {
    None
}

/// Decimals whose layout `probe` reads back: zero, negative zero, exponents, a coefficient of two words.
#[cfg(target_pointer_width = "64")]
const PROBES: [(&str, Parts); 6] = [
    (
        "0",
        Parts {
            negative: false,
            coefficient: 0,
            exp: 0,
        },
    ),
    (
        "-1.28",
        Parts {
            negative: true,
            coefficient: 128,
            exp: -2,
        },
    ),
    (
        "-0.00",
        Parts {
            negative: true,
            coefficient: 0,
            exp: -2,
        },
    ),
    (
        "7E+5",
        Parts {
            negative: false,
            coefficient: 7,
            exp: 5,
        },
    ),
    (
        "1234567890123456789.5",
        Parts {
            negative: false,
            coefficient: 12_345_678_901_234_567_895,
            exp: -1,
        },
    ),
    (
        "-99999999999999999999999999999999999999",
        Parts {
            negative: true,
            coefficient: 99_999_999_999_999_999_999_999_999_999_999_999_999,
            exp: 0,
        },
    ),
];

#[cfg(target_pointer_width = "64")]
fn probe(py: Python<'_>, decimal_type: &Bound<'_, PyType>) -> PyResult<bool> {
    // Only the C implementation, and only if its objects are at least as large as the layout read.
    let Ok(c_decimal) = py.import("_decimal") else {
        return Ok(false);
    };
    if !c_decimal.getattr("Decimal")?.is(decimal_type)
        || decimal_type.getattr("__basicsize__")?.extract::<usize>()? < size_of::<PyDecObject>()
    {
        return Ok(false);
    }
    for (text, expected) in PROBES {
        let value = decimal_type.call1((text,))?;
        let object = value.as_ptr().cast::<u8>();
        // SAFETY: an instance of _decimal.Decimal with __basicsize__ >= size_of::<PyDecObject>().
        let dec = unsafe { &*object.cast::<PyDecObject>() };
        // A small coefficient lives in the object's own words, right after the mpd_t: checking the
        // pointer before following it means nothing outside the object is read if the layout differs.
        let inline = object.wrapping_add(size_of::<PyDecObject>()).cast::<u64>();
        if dec.len != 1 && dec.len != 2 || !std::ptr::eq(dec.data, inline) {
            return Ok(false);
        }
        // SAFETY: data points into this object (checked above), which holds its inline words.
        if unsafe { read(object) } != Some(expected) {
            return Ok(false);
        }
    }
    // NaN must read as special, or special values could be taken for numbers.
    let nan = decimal_type.call1(("NaN",))?;
    // SAFETY: as above; `read` checks the flags before following any pointer.
    Ok(unsafe { read(nan.as_ptr().cast::<u8>()) }.is_none())
}

#[cfg(not(target_pointer_width = "64"))]
fn probe(_py: Python<'_>, _decimal_type: &Bound<'_, PyType>) -> PyResult<bool> {
    Ok(false)
}

/// The unscaled integer of `parts` at `scale`, if it is exact and within `precision` digits; None
/// sends the value to the text path, which raises the precise error.
pub fn unscaled(parts: &Parts, precision: u32, scale: u32) -> Option<i128> {
    if parts.coefficient == 0 {
        return Some(0);
    }
    let shift = parts.exp.checked_add(i64::from(scale))?;
    let magnitude = if shift >= 0 {
        let shift = u32::try_from(shift)
            .ok()
            .filter(|&s| s <= MAX_I128_DIGITS)?;
        parts.coefficient.checked_mul(10u128.pow(shift))?
    } else {
        let drop = u32::try_from(shift.unsigned_abs())
            .ok()
            .filter(|&d| d <= MAX_I128_DIGITS)?;
        let divisor = 10u128.pow(drop);
        if parts.coefficient % divisor != 0 {
            return None;
        }
        parts.coefficient / divisor
    };
    // Within the precision, and below 10**38 like every value the text path writes as an i128.
    if magnitude >= 10u128.pow(precision.min(MAX_I128_DIGITS)) {
        return None;
    }
    let magnitude = i128::try_from(magnitude).ok()?;
    Some(if parts.negative {
        -magnitude
    } else {
        magnitude
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(negative: bool, coefficient: u128, exp: i64) -> Parts {
        Parts {
            negative,
            coefficient,
            exp,
        }
    }

    #[test]
    fn rescales_exactly_or_declines() {
        assert_eq!(unscaled(&parts(true, 128, -2), 4, 2), Some(-128));
        assert_eq!(unscaled(&parts(false, 15, -1), 4, 2), Some(150));
        assert_eq!(unscaled(&parts(false, 1500, -3), 4, 2), Some(150));
        assert_eq!(unscaled(&parts(false, 1, 1), 4, 2), Some(1000));
        assert_eq!(unscaled(&parts(true, 0, -2), 4, 2), Some(0));
        assert_eq!(unscaled(&parts(false, 0, -999_999), 4, 2), Some(0));
        assert_eq!(unscaled(&parts(false, 1005, -3), 18, 2), None); // too many places
        assert_eq!(unscaled(&parts(false, 10000, -2), 4, 2), None); // too many digits
        assert_eq!(unscaled(&parts(false, 9999, -2), 4, 2), Some(9999));
        assert_eq!(unscaled(&parts(false, 1, 40), 60, 2), None); // beyond i128: text path
        assert_eq!(unscaled(&parts(false, 1, 36), 60, 2), None); // 39 digits: text path
        assert_eq!(unscaled(&parts(false, 1, i64::MAX), 60, 2), None);
        assert_eq!(unscaled(&parts(false, 1, i64::MIN), 60, 2), None);
    }
}
