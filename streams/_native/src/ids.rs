//! Event and trace ids from a fast in-process generator, and RFC 3339 timestamps of the clock.
//!
//! The generator is SplitMix64 over one atomic counter (lock-free, distinct outputs for every call
//! in a process), seeded from the OS and reseeded in a forked child, so prefork workers never share
//! ids. Like Python's `random` it is not for secrets: ids only have to be unique.

use std::io::Read;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::logical_read::civil_from_days;

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
static STATE: AtomicU64 = AtomicU64::new(0);
static SEEDED: AtomicBool = AtomicBool::new(false);
static AT_FORK: Once = Once::new();

#[cfg(unix)]
extern "C" fn forget_seed_in_child() {
    SEEDED.store(false, Ordering::SeqCst);
}

fn seed() {
    #[cfg(unix)]
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic; valid for the process lifetime.
        unsafe {
            libc::pthread_atfork(None, None, Some(forget_seed_in_child));
        }
    });
    #[cfg(not(unix))]
    AT_FORK.call_once(|| {});
    let mut bytes = [0u8; 8];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    let mut seed = u64::from_le_bytes(bytes);
    if from_os.is_err() {
        seed = clock_nanos();
    }
    // The pid too: two children of one parent differ even if the OS source were unavailable.
    seed ^= u64::from(std::process::id()).rotate_left(32);
    STATE.store(seed, Ordering::SeqCst);
    SEEDED.store(true, Ordering::SeqCst);
}

fn clock_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The next 64 random bits.
pub fn next_u64() -> u64 {
    if !SEEDED.load(Ordering::Relaxed) {
        seed();
    }
    let mut z = STATE
        .fetch_add(GAMMA, Ordering::Relaxed)
        .wrapping_add(GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A random (version 4, RFC 4122 variant) UUID as its 36 lower-case ASCII characters (on the stack:
/// this runs once per event).
pub fn uuid4() -> [u8; 36] {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&next_u64().to_be_bytes());
    raw[8..].copy_from_slice(&next_u64().to_be_bytes());
    raw[6] = (raw[6] & 0x0F) | 0x40;
    raw[8] = (raw[8] & 0x3F) | 0x80;
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, &b) in raw.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1; // the dash
        }
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 15)];
        at += 2;
    }
    out
}

/// A new W3C traceparent: version 00, random trace id and parent id, sampled.
pub fn traceparent() -> [u8; 55] {
    let mut out = [b'-'; 55];
    out[..2].copy_from_slice(b"00");
    let mut ids = [0u8; 24];
    ids[..8].copy_from_slice(&next_u64().to_be_bytes());
    ids[8..16].copy_from_slice(&next_u64().to_be_bytes());
    ids[16..].copy_from_slice(&next_u64().to_be_bytes());
    for (i, &b) in ids.iter().enumerate() {
        // Trace id at 3..35, parent id at 36..52 (one dash between them).
        let at = 3 + 2 * i + usize::from(i >= 16);
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 15)];
    }
    out[53..].copy_from_slice(b"01");
    out
}

/// Whether `text` is a W3C traceparent: "00-<32 hex>-<16 hex>-<2 hex>", lower-case hex.
pub fn is_traceparent(text: &[u8]) -> bool {
    let hex = |part: &[u8]| part.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    text.len() == 55
        && text.starts_with(b"00-")
        && text[35] == b'-'
        && text[52] == b'-'
        && hex(&text[3..35])
        && hex(&text[36..52])
        && hex(&text[53..55])
}

/// Whether `text` is a tenant id: 1-64 of [A-Za-z0-9._-], starting with a letter or digit.
pub fn is_tenant(text: &[u8]) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text[0].is_ascii_alphanumeric()
        && text
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// RFC 3339 UTC with milliseconds: "2026-11-01T08:00:00.123Z".
pub fn rfc3339_millis(millis: i64) -> Vec<u8> {
    let days = millis.div_euclid(86_400_000);
    let in_day = millis.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, ms) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_millis(0), b"1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_793_520_000_123),
            b"2026-11-01T08:00:00.123Z"
        );
        assert_eq!(rfc3339_millis(951_782_400_000), b"2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_millis(-1), b"1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn uuids_are_version_4_and_distinct() {
        let a = uuid4();
        let b = uuid4();
        assert_ne!(a, b);
        let text = std::str::from_utf8(&a).unwrap();
        let groups: Vec<usize> = text.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert!(text.bytes().all(|c| c == b'-' || HEX.contains(&c)));
        assert_eq!(a[14], b'4');
        assert!(matches!(a[19], b'8' | b'9' | b'a' | b'b'));
        assert!(is_traceparent(&traceparent()));
        assert_ne!(traceparent(), traceparent());
    }

    #[test]
    fn checks() {
        assert!(is_tenant(b"acme"));
        assert!(is_tenant(b"a.b_c-9"));
        assert!(!is_tenant(b""));
        assert!(!is_tenant(b"-acme"));
        assert!(!is_tenant(b"acme corp!"));
        assert!(!is_tenant(&[b'a'; 65]));
        assert!(!is_traceparent(b"00-abc"));
        assert!(!is_traceparent(
            b"00-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-bbbbbbbbbbbbbbbb-01"
        ));
    }
}
