//! Logical types read back, exactly (no floats): a decimal's unscaled bytes as the text a Python
//! Decimal is built from, and days or microseconds since the epoch as calendar fields.

/// date(1970, 1, 1).toordinal(): fastavro's DAYS_SHIFT.
pub const EPOCH_ORDINAL: i64 = 719_163;
/// date(9999, 12, 31).toordinal(), the last day Python's date holds.
pub const MAX_ORDINAL: i64 = 3_652_059;
pub const MICROS_PER_DAY: i64 = 86_400_000_000;
/// datetime(1, 1, 1) and datetime(9999, 12, 31, 23, 59, 59, 999999) in microseconds since 1970.
pub const MIN_MICROS: i64 = (1 - EPOCH_ORDINAL) * MICROS_PER_DAY;
pub const MAX_MICROS: i64 = (MAX_ORDINAL + 1 - EPOCH_ORDINAL) * MICROS_PER_DAY - 1;

/// Writes the text of the Decimal with unscaled value `bytes` (big-endian two's complement, as Avro
/// stores it) and exponent -scale, e.g. "-871.00" for unscaled -87100 at scale 2: the value fastavro
/// reads, `Context(prec=precision).create_decimal(unscaled).scaleb(-scale)`, when the unscaled value
/// has at most `precision` digits. Err(()) when it has more (fastavro would round it).
///
/// Plain positional text with exactly `scale` places keeps the exponent and is the quickest text for
/// `Decimal()` to read (no exponent to parse).
pub fn decimal_text(bytes: &[u8], precision: u32, scale: u32, out: &mut Vec<u8>) -> Result<(), ()> {
    out.clear();
    out.reserve(64);
    let negative = bytes.first().is_some_and(|&b| b & 0x80 != 0);
    // Drop sign-extension bytes: 00 before a byte below 0x80, ff before one from 0x80.
    let fill = if negative { 0xff } else { 0x00 };
    let mut start = 0;
    while start + 1 < bytes.len()
        && bytes[start] == fill
        && (bytes[start + 1] & 0x80 != 0) == negative
    {
        start += 1;
    }
    let bytes = &bytes[start..];
    if negative {
        out.push(b'-');
    }
    let digits_start = out.len();
    if bytes.len() <= 16 {
        let mut value: i128 = if negative { -1 } else { 0 };
        for &b in bytes {
            value = (value << 8) | i128::from(b);
        }
        write_u128(value.unsigned_abs(), out);
    } else {
        let magnitude = magnitude(bytes, negative);
        // 2**(bits-1) <= magnitude, so it has more than (bits-1)*log10(2) digits; 0.30102 < log10(2).
        // Checked first so that an absurdly long value costs no quadratic conversion.
        let bits = magnitude.len() * 8 - magnitude[0].leading_zeros() as usize;
        let at_least = (bits as u64).saturating_sub(1) * 30_102 / 100_000 + 1;
        if at_least > u64::from(precision) {
            return Err(());
        }
        write_big(&magnitude, out);
    }
    let digits = out.len() - digits_start;
    if digits as u64 > u64::from(precision) {
        return Err(());
    }
    let scale = scale as usize;
    if scale > 0 {
        if digits > scale {
            out.insert(out.len() - scale, b'.');
        } else {
            // 0.000ddd: the point, then zeros up to `scale` places.
            let pad = std::iter::once(b'0')
                .chain(std::iter::once(b'.'))
                .chain(std::iter::repeat_n(b'0', scale - digits));
            out.splice(digits_start..digits_start, pad);
        }
    }
    Ok(())
}

/// |value| of big-endian two's complement bytes (more than 16 of them, sign extension dropped),
/// without leading zero bytes.
fn magnitude(bytes: &[u8], negative: bool) -> Vec<u8> {
    let mut m = bytes.to_vec();
    if negative {
        for byte in &mut m {
            *byte = !*byte;
        }
        for byte in m.iter_mut().rev() {
            let (v, overflow) = byte.overflowing_add(1);
            *byte = v;
            if !overflow {
                break;
            }
        }
    }
    let first = m.iter().position(|&b| b != 0).unwrap_or(m.len() - 1);
    m.drain(..first);
    m
}

pub fn write_u64(mut n: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

const TEN_19: u128 = 10_000_000_000_000_000_000;

fn write_u128(n: u128, out: &mut Vec<u8>) {
    if let Ok(small) = u64::try_from(n) {
        return write_u64(small, out);
    }
    write_u128(n / TEN_19, out);
    let low = (n % TEN_19) as u64;
    let mark = out.len();
    write_u64(low, out);
    // Left-pad the low part to 19 digits.
    let written = out.len() - mark;
    out.splice(mark..mark, std::iter::repeat_n(b'0', 19 - written));
}

/// The decimal digits of a big-endian magnitude with no leading zero bytes.
fn write_big(magnitude: &[u8], out: &mut Vec<u8>) {
    // Big-endian base-2**32 limbs, divided by 10**9 until zero; the remainders are the digit groups.
    let mut limbs: Vec<u32> = Vec::with_capacity(magnitude.len() / 4 + 1);
    let head = magnitude.len() % 4;
    if head > 0 {
        limbs.push(
            magnitude[..head]
                .iter()
                .fold(0u32, |acc, &b| (acc << 8) | u32::from(b)),
        );
    }
    for chunk in magnitude[head..].chunks_exact(4) {
        limbs.push(u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
    }
    let mut groups: Vec<u32> = Vec::new();
    let mut first = 0;
    while first < limbs.len() {
        let mut remainder: u64 = 0;
        for limb in &mut limbs[first..] {
            let v = (remainder << 32) | u64::from(*limb);
            *limb = (v / 1_000_000_000) as u32;
            remainder = v % 1_000_000_000;
        }
        groups.push(remainder as u32);
        while first < limbs.len() && limbs[first] == 0 {
            first += 1;
        }
    }
    let mut groups = groups.iter().rev();
    if let Some(&top) = groups.next() {
        write_u64(u64::from(top), out);
    }
    for &group in groups {
        let mark = out.len();
        write_u64(u64::from(group), out);
        let written = out.len() - mark;
        out.splice(mark..mark, std::iter::repeat_n(b'0', 9 - written));
    }
}

/// (year, month, day) of the proleptic Gregorian day `days` after 1970-01-01 (H. Hinnant's
/// civil_from_days), for any day Python's date holds.
pub fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month as u8, day as u8)
}

/// (hour, minute, second, microsecond) of a time of day in microseconds, 0 <= micros < one day.
pub fn clock(micros: i64) -> (u8, u8, u8, u32) {
    let seconds = micros / 1_000_000;
    (
        (seconds / 3600) as u8,
        (seconds / 60 % 60) as u8,
        (seconds % 60) as u8,
        (micros % 1_000_000) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8], precision: u32, scale: u32) -> Option<String> {
        let mut out = Vec::new();
        decimal_text(bytes, precision, scale, &mut out)
            .ok()
            .map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn decimal_texts() {
        assert_eq!(text(&[0xff, 0x80], 4, 2).as_deref(), Some("-1.28"));
        assert_eq!(text(&[0x00], 4, 2).as_deref(), Some("0.00"));
        assert_eq!(text(&[], 4, 2).as_deref(), Some("0.00"));
        assert_eq!(text(&[0x00, 0x96], 4, 2).as_deref(), Some("1.50"));
        assert_eq!(text(&[0x00, 0x00, 0x96], 4, 0).as_deref(), Some("150"));
        assert_eq!(text(&[0xff, 0xff, 0xff], 1, 0).as_deref(), Some("-1"));
        assert_eq!(text(&[0x05], 4, 4).as_deref(), Some("0.0005"));
        assert_eq!(text(&[0xfb], 4, 4).as_deref(), Some("-0.0005"));
        assert_eq!(text(&[0x00, 0xc8], 3, 3).as_deref(), Some("0.200"));
        assert_eq!(text(&[0x00, 0xc8], 3, 2).as_deref(), Some("2.00"));
        assert_eq!(text(&[0x27, 0x10], 4, 2), None); // 10000: five digits
        assert_eq!(text(&[0x27, 0x0f], 4, 2).as_deref(), Some("99.99"));
        // i128::MIN and MAX, then past them.
        let mut min = vec![0x80];
        min.extend([0u8; 15]);
        assert_eq!(
            text(&min, 39, 0).as_deref(),
            Some("-170141183460469231731687303715884105728")
        );
        let mut max = vec![0x7f];
        max.extend([0xffu8; 15]);
        assert_eq!(
            text(&max, 39, 1).as_deref(),
            Some("17014118346046923173168730371588410572.7")
        );
        let mut past = vec![0x00, 0x80];
        past.extend([0u8; 15]);
        assert_eq!(
            text(&past, 60, 0).as_deref(),
            Some("170141183460469231731687303715884105728")
        );
        let mut minus_past = vec![0xff, 0x7f];
        minus_past.extend([0xffu8; 15]);
        assert_eq!(
            text(&minus_past, 60, 0).as_deref(),
            Some("-170141183460469231731687303715884105729")
        );
        // 10**40 and -(10**40 + 5): digit groups that need zero padding.
        let ten_40 = [
            29, 99, 41, 241, 195, 92, 164, 191, 171, 185, 245, 97, 0, 0, 0, 0, 0,
        ];
        assert_eq!(
            text(&ten_40, 41, 3).as_deref(),
            Some("10000000000000000000000000000000000000.000")
        );
        assert_eq!(text(&ten_40, 40, 3), None);
        let minus = [
            226, 156, 214, 14, 60, 163, 91, 64, 84, 70, 10, 158, 255, 255, 255, 255, 251,
        ];
        assert_eq!(
            text(&minus, 41, 0).as_deref(),
            Some("-10000000000000000000000000000000000000005")
        );
    }

    #[test]
    fn big_values_agree_with_u128() {
        for n in [
            1u128,
            9,
            10,
            999_999_999,
            1_000_000_000,
            u128::from(u64::MAX),
            u128::from(u64::MAX) + 1,
            10u128.pow(19),
            10u128.pow(27) + 7,
            u128::MAX / 3,
            u128::MAX,
        ] {
            let mut small = Vec::new();
            write_u128(n, &mut small);
            assert_eq!(String::from_utf8(small.clone()).unwrap(), n.to_string());
            let bytes = n.to_be_bytes();
            let first = bytes.iter().position(|&b| b != 0).unwrap();
            let mut big = Vec::new();
            write_big(&bytes[first..], &mut big);
            assert_eq!(big, small, "{n}");
        }
    }

    #[test]
    fn absurd_lengths_are_refused_before_conversion() {
        let mut huge = vec![0x01];
        huge.extend(vec![0u8; 1 << 20]);
        assert_eq!(text(&huge, 38, 2), None);
    }

    #[test]
    fn calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(1 - EPOCH_ORDINAL), (1, 1, 1));
        assert_eq!(civil_from_days(MAX_ORDINAL - EPOCH_ORDINAL), (9999, 12, 31));
        assert_eq!(MIN_MICROS, -62_135_596_800_000_000);
        assert_eq!(MAX_MICROS, 253_402_300_799_999_999);
        assert_eq!(clock(MICROS_PER_DAY - 1), (23, 59, 59, 999_999));
        assert_eq!(clock(3_723_000_004), (1, 2, 3, 4));
    }
}
