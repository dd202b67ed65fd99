//! The bytes of one Avro datum, read front to back with every length, count and index checked
//! against what is left before it is used: nothing is read out of bounds and nothing is allocated
//! for more items than the input can hold.
//!
//! Errors are plain messages; the decoder adds the field path on the way out.

use crate::failure::{Failure, Res};

/// Items that take no bytes (null, an empty record, a fixed of size 0) cost nothing to declare, so
/// their count cannot be checked against the input: one datum may hold at most this many.
pub const ZERO_SIZE_ITEMS: u64 = 1 << 16;

pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
    zero_size_left: u64,
    /// Reused by every decimal of the datum for its text.
    pub scratch: Vec<u8>,
}

/// An array or map block: `count` items, and for a negative count on the wire the block's byte size
/// (with the offset its items start at), which is checked once they are read.
pub struct Block {
    pub count: usize,
    declared: Option<(usize, usize)>,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input {
            data,
            pos: 0,
            zero_size_left: ZERO_SIZE_ITEMS,
            scratch: Vec::new(),
        }
    }

    /// The offset of the next byte.
    #[inline]
    pub fn pos(&self) -> usize {
        self.pos
    }

    #[inline]
    pub fn left(&self) -> usize {
        self.data.len() - self.pos
    }

    fn truncated(&self, n: usize) -> Box<Failure> {
        Failure::value(format!(
            "truncated datum: needs {} at offset {}, {} left",
            bytes(n as u64),
            self.pos,
            self.left()
        ))
    }

    /// The next `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        if n > self.left() {
            return Err(self.truncated(n));
        }
        let bytes = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    /// The next `N` bytes as an array (float, double).
    #[inline]
    pub fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        match self.data[self.pos..].first_chunk::<N>() {
            Some(bytes) => {
                self.pos += N;
                Ok(*bytes)
            }
            None => Err(self.truncated(N)),
        }
    }

    #[inline]
    pub fn byte(&mut self) -> Res<u8> {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.truncated(1)),
        }
    }

    /// A zig-zag varint long: at most 10 bytes, and the 10th may only hold the 64th bit.
    #[inline]
    pub fn long(&mut self) -> Res<i64> {
        let start = self.pos;
        let mut z: u64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.data.get(self.pos) else {
                return Err(Failure::value(format!(
                    "truncated datum: the varint at offset {start} is cut off at offset {}",
                    self.pos
                )));
            };
            self.pos += 1;
            if shift == 63 {
                if b > 1 {
                    return Err(Failure::value(format!(
                        "the varint at offset {start} does not fit in 64 bits"
                    )));
                }
                z |= u64::from(b) << 63;
                break;
            }
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// An Avro int: a long that must fit in 32 bits.
    #[inline]
    pub fn int(&mut self) -> Res<i32> {
        let at = self.pos;
        let n = self.long()?;
        i32::try_from(n).map_err(|_| {
            Failure::value(format!(
                "{n} at offset {at} is out of range for Avro int (32-bit)"
            ))
        })
    }

    /// The length of a string, bytes or decimal: not negative, and no more than the bytes left.
    #[inline]
    pub fn length(&mut self, what: &str) -> Res<usize> {
        let at = self.pos;
        let n = self.long()?;
        if n < 0 {
            return Err(Failure::value(format!(
                "negative {what} length {n} at offset {at}"
            )));
        }
        if n as u64 > self.left() as u64 {
            return Err(Failure::value(format!(
                "{what} length {n} at offset {at} runs past the end of the datum ({} left)",
                bytes(self.left() as u64)
            )));
        }
        Ok(n as usize)
    }

    /// The next block header of an array or map whose items take at least `min_size` bytes each;
    /// None at the end (count 0).
    pub fn block(&mut self, min_size: usize, what: &str) -> Res<Option<Block>> {
        let at = self.pos;
        let count = self.long()?;
        if count == 0 {
            return Ok(None);
        }
        let (count, declared) = if count > 0 {
            (count as u64, None)
        } else {
            let size_at = self.pos;
            let size = self.long()?;
            if size < 0 {
                return Err(Failure::value(format!(
                    "negative {what} block size {size} at offset {size_at}"
                )));
            }
            if size as u64 > self.left() as u64 {
                return Err(Failure::value(format!(
                    "{what} block size {size} at offset {size_at} runs past the end of the datum ({} left)",
                    bytes(self.left() as u64)
                )));
            }
            (count.unsigned_abs(), Some((self.pos, size as usize)))
        };
        let room = declared.map_or(self.left(), |(_, size)| size);
        match room.checked_div(min_size) {
            Some(most) => {
                if count > most as u64 {
                    return Err(Failure::value(format!(
                        "{what} block of {} at offset {at} cannot fit in the {} {}",
                        items(count),
                        bytes(room as u64),
                        if declared.is_some() {
                            "it declares"
                        } else {
                            "left"
                        }
                    )));
                }
            }
            None => {
                if count > self.zero_size_left {
                    return Err(Failure::value(format!(
                        "{what} block of {} at offset {at} is more than the {ZERO_SIZE_ITEMS} \
                         items that take no bytes one datum may hold",
                        items(count)
                    )));
                }
                self.zero_size_left -= count;
            }
        }
        Ok(Some(Block {
            // count <= room <= the input's length, or <= ZERO_SIZE_ITEMS: fits a usize.
            count: count as usize,
            declared,
        }))
    }

    /// Checks a block's declared byte size against the bytes its items took.
    pub fn end_block(&self, block: &Block, what: &str) -> Res<()> {
        if let Some((start, size)) = block.declared {
            let used = self.pos - start;
            if used != size {
                return Err(Failure::value(format!(
                    "{what} block at offset {start} declares {size} bytes but its items take {used}"
                )));
            }
        }
        Ok(())
    }

    /// Refuses bytes after the datum.
    pub fn finish(&self) -> Res<()> {
        match self.left() {
            0 => Ok(()),
            n => Err(Failure::value(format!(
                "{} left over after the datum, which ends at offset {}",
                bytes(n as u64),
                self.pos
            ))),
        }
    }
}

/// "1 byte", "5 bytes".
fn bytes(n: u64) -> String {
    if n == 1 {
        "1 byte".into()
    } else {
        format!("{n} bytes")
    }
}

/// "1 item", "5 items".
fn items(n: u64) -> String {
    if n == 1 {
        "1 item".into()
    } else {
        format!("{n} items")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::write_long;

    fn message<T>(r: Res<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(f) => f.render(),
        }
    }

    #[test]
    fn longs_round_trip() {
        for n in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            write_long(&mut out, n);
            let mut input = Input::new(&out);
            assert_eq!(input.long().ok(), Some(n));
            assert_eq!(input.left(), 0);
        }
    }

    #[test]
    fn bad_varints_are_errors() {
        assert_eq!(
            message(Input::new(&[0x80, 0x80]).long()),
            "truncated datum: the varint at offset 0 is cut off at offset 2"
        );
        let mut eleven = vec![0xff; 10];
        eleven.push(0x01);
        assert_eq!(
            message(Input::new(&eleven).long()),
            "the varint at offset 0 does not fit in 64 bits"
        );
        // A non-canonical but in-range encoding (zero in two bytes) is read, as other readers do.
        assert_eq!(Input::new(&[0x80, 0x00]).long().ok(), Some(0));
    }

    #[test]
    fn lengths_are_checked_before_use() {
        assert_eq!(
            message(Input::new(&[0x03]).length("string")),
            "negative string length -2 at offset 0"
        );
        assert_eq!(
            message(Input::new(&[0x0a, b'a']).length("bytes")),
            "bytes length 5 at offset 0 runs past the end of the datum (1 byte left)"
        );
        assert_eq!(
            message(Input::new(&[0x01]).take(2)),
            "truncated datum: needs 2 bytes at offset 0, 1 left"
        );
    }

    #[test]
    fn block_counts_are_checked_before_use() {
        // 2**62 items of at least one byte.
        let mut huge = Vec::new();
        write_long(&mut huge, 1 << 62);
        assert!(
            message(Input::new(&huge).block(1, "array"))
                .starts_with("array block of 4611686018427387904 items at offset 0 cannot fit")
        );
        let mut min = Vec::new();
        write_long(&mut min, i64::MIN);
        write_long(&mut min, 0);
        assert!(
            message(Input::new(&min).block(1, "array"))
                .contains("cannot fit in the 0 bytes it declares")
        );
        let mut nulls = Vec::new();
        write_long(&mut nulls, ZERO_SIZE_ITEMS as i64 + 1);
        assert!(message(Input::new(&nulls).block(0, "array")).contains("take no bytes"));
    }
}
