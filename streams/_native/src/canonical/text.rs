//! The JSON text pieces canonical JSON is written with: strings escaped as orjson escapes them,
//! integers, dates, base64 and UUIDs (the module above owns the rules and cites the Python they match).

use crate::logical_read::write_u64;

/// 0: written as it is; b'u': `\u00XX`; anything else: a backslash and that byte.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether any of the eight bytes in `word` is below 0x20, `"` or `\` (the bytes ESCAPE marks).
#[inline]
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Bit Twiddling Hacks' haszero and hasless(x, 0x20): exact as whole-word tests, since a borrow
    // can only flag a byte above one that really matches, and bytes from 0x80 never match (`& !x`).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    below_space | zero(word ^ (ONES * u64::from(b'"'))) | zero(word ^ (ONES * u64::from(b'\\')))
        != 0
}

/// A JSON string of valid UTF-8 text, escaped as orjson escapes it.
pub fn write_str(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < text.len() {
        // Eight bytes at a time while none of them needs escaping (most text).
        if let Some(chunk) = text[i..].first_chunk::<8>()
            && !needs_escape(u64::from_le_bytes(*chunk))
        {
            i += 8;
            continue;
        }
        let b = text[i];
        i += 1;
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        let i = i - 1;
        out.extend_from_slice(&text[start..i]);
        if escape == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
        } else {
            out.push(b'\\');
            out.push(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
    out.push(b'"');
}

pub(super) fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(n.unsigned_abs(), out);
}

/// `n` as exactly `width` digits (n < 10**width).
#[inline]
pub(super) fn write_digits(out: &mut Vec<u8>, n: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        out.push(b'0' + (n / div % 10) as u8);
        div /= 10;
    }
}

/// `YYYY-MM-DD` (years 1 to 9999, zero-padded as Python's isoformat pads them).
pub(super) fn write_ymd(out: &mut Vec<u8>, year: i32, month: u8, day: u8) {
    write_digits(out, year.unsigned_abs(), 4);
    out.push(b'-');
    write_digits(out, u32::from(month), 2);
    out.push(b'-');
    write_digits(out, u32::from(day), 2);
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as `base64.b64encode`.
pub fn write_base64(out: &mut Vec<u8>, data: &[u8]) {
    out.reserve(data.len().div_ceil(3) * 4);
    let mut chunks = data.chunks_exact(3);
    for chunk in &mut chunks {
        let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        out.extend_from_slice(&[
            BASE64[(n >> 18) as usize & 63],
            BASE64[(n >> 12) as usize & 63],
            BASE64[(n >> 6) as usize & 63],
            BASE64[n as usize & 63],
        ]);
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[
                BASE64[(n >> 18) as usize & 63],
                BASE64[(n >> 12) as usize & 63],
                b'=',
                b'=',
            ]);
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend_from_slice(&[
                BASE64[(n >> 18) as usize & 63],
                BASE64[(n >> 12) as usize & 63],
                BASE64[(n >> 6) as usize & 63],
                b'=',
            ]);
        }
        _ => {}
    }
}

/// `str(uuid.UUID(text))` for the usual text, 8-4-4-4-12 hex digits in either case: the same
/// digits in lowercase. None for anything else (left to uuid.UUID).
pub(super) fn canonical_uuid(raw: &[u8]) -> Option<[u8; 36]> {
    let text: &[u8; 36] = raw.try_into().ok()?;
    let mut out = [0u8; 36];
    for (i, &b) in text.iter().enumerate() {
        out[i] = if matches!(i, 8 | 13 | 18 | 23) {
            (b == b'-').then_some(b'-')?
        } else if b.is_ascii_hexdigit() {
            b.to_ascii_lowercase()
        } else {
            return None;
        };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, text.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_like_orjson() {
        assert_eq!(json("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json("\u{8}\u{c}\n\r\t"), r#""\b\f\n\r\t""#);
        assert_eq!(json("\u{0}\u{b}\u{1f}"), r#""\u0000\u000b\u001f""#);
        assert_eq!(json("\u{7f}\u{2028}é😀"), "\"\u{7f}\u{2028}é😀\"");
    }

    #[test]
    fn the_eight_byte_check_agrees_with_the_table() {
        for b in 0..=255u8 {
            for at in 0..8 {
                for fill in [b'a', 0x80, 0xff, 0x21, b'"' + 1] {
                    let mut word = [fill; 8];
                    word[at] = b;
                    let expected = word.iter().any(|&w| ESCAPE[usize::from(w)] != 0);
                    assert_eq!(needs_escape(u64::from_le_bytes(word)), expected, "{word:?}");
                }
            }
        }
        let long = "0123456789abcdef\u{7}0123456789\"abcdefé\n";
        assert_eq!(
            json(long),
            "\"0123456789abcdef\\u00070123456789\\\"abcdefé\\n\""
        );
    }

    #[test]
    fn base64_pads_like_b64encode() {
        for (data, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\xff\xfe\xfd\x00", "//79AA=="),
        ] {
            let mut out = Vec::new();
            write_base64(&mut out, data);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn usual_uuids_are_lowercased_and_others_left_to_python() {
        let upper = b"12345678-ABCD-5678-1234-567812345678";
        assert_eq!(
            canonical_uuid(upper).map(|t| String::from_utf8(t.to_vec()).unwrap()),
            Some("12345678-abcd-5678-1234-567812345678".into())
        );
        assert_eq!(canonical_uuid(b"12345678123456781234567812345678"), None);
        assert_eq!(
            canonical_uuid(b"12345678-1234-5678-1234-56781234567g"),
            None
        );
        assert_eq!(
            canonical_uuid(b"1234567-81234-5678-1234-567812345678"),
            None
        );
    }

    #[test]
    fn integers_and_padded_fields() {
        let mut out = Vec::new();
        write_i64(&mut out, i64::MIN);
        out.push(b' ');
        write_i64(&mut out, 0);
        out.push(b' ');
        write_ymd(&mut out, 1, 2, 3);
        out.push(b' ');
        write_digits(&mut out, 7, 3);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-9223372036854775808 0 0001-02-03 007"
        );
    }
}
