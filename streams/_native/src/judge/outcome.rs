//! What the cleared event carries besides the invoice's own fields: the outcome id (uuid5, as
//! zatca.outcome_id) and the ZATCA QR payload (as zatca.qr_payload).

use sha1::{Digest, Sha1};

use crate::canonical::write_base64;
use crate::logical_read::{MICROS_PER_DAY, civil_from_days, clock};

use super::sink::Invoice;

/// zatca.OUTCOME_NAMESPACE (6f1c1c8e-8d0a-4b7e-9a43-6c3f5f0f2a11): outcome ids are uuid5 in it.
const OUTCOME_NAMESPACE: [u8; 16] = [
    0x6f, 0x1c, 0x1c, 0x8e, 0x8d, 0x0a, 0x4b, 0x7e, 0x9a, 0x43, 0x6c, 0x3f, 0x5f, 0x0f, 0x2a, 0x11,
];

/// zatca.outcome_id(event_id, what): str(uuid5(OUTCOME_NAMESPACE, f"{event_id}:{what}")).
pub fn outcome_id(event_id: &str, what: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(OUTCOME_NAMESPACE);
    hasher.update(event_id.as_bytes());
    hasher.update(b":");
    hasher.update(what.as_bytes());
    let mut raw: [u8; 20] = hasher.finalize().into();
    raw[6] = (raw[6] & 0x0F) | 0x50;
    raw[8] = (raw[8] & 0x3F) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, &b) in raw[..16].iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// zatca.qr_payload: base64 of the TLV (tag, length, at most 255 bytes) of the seller's name and
/// VAT number, the issue time "YYYY-MM-DDTHH:MM:SSZ", the total with VAT and the VAT total.
pub fn qr_payload(invoice: &Invoice<'_>) -> Option<String> {
    let micros = invoice.issued_at?;
    let (year, month, day) = civil_from_days(micros.div_euclid(MICROS_PER_DAY));
    let (hour, minute, second, _) = clock(micros.rem_euclid(MICROS_PER_DAY));
    // "YYYY-MM-DDTHH:MM:SSZ" (years 1 to 9999, as the walk checked).
    let mut issued = *b"0000-00-00T00:00:00Z";
    let year = u32::try_from(year).ok()?;
    for (at, value, width) in [
        (0, year, 4),
        (5, u32::from(month), 2),
        (8, u32::from(day), 2),
        (11, u32::from(hour), 2),
        (14, u32::from(minute), 2),
        (17, u32::from(second), 2),
    ] {
        let mut rest = value;
        for digit in issued[at..at + width].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
    }
    let values: [&[u8]; 5] = [
        invoice.seller_name?,
        invoice.seller_vat?,
        &issued,
        invoice.tax_inclusive_text.as_str().as_bytes(),
        invoice.vat_total_text.as_str().as_bytes(),
    ];
    let mut tlv = Vec::with_capacity(160);
    for (tag, value) in (1u8..).zip(values) {
        let value = &value[..value.len().min(255)];
        tlv.push(tag);
        tlv.push(value.len() as u8);
        tlv.extend_from_slice(value);
    }
    let mut out = Vec::with_capacity(tlv.len().div_ceil(3) * 4);
    write_base64(&mut out, &tlv);
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_ids_are_uuid5() {
        // str(uuid.uuid5(uuid.UUID("6f1c1c8e-8d0a-4b7e-9a43-6c3f5f0f2a11"), "evt-1:cleared"))
        assert_eq!(
            outcome_id("evt-1", "cleared"),
            "f1ff6d09-d2e4-5abe-89f3-76349ee4ac1d"
        );
    }
}
