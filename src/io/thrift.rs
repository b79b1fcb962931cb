//! A bounds check of Thrift compact-protocol bytes (a Parquet file's footer and page headers)
//! before the parquet crate decodes them. Its skipper walks a list of booleans element by
//! element at no byte each, so a corrupted footer or page header declaring a list of a billion
//! booleans costs seconds of CPU in a file of a kilobyte. In well-formed bytes every element
//! of a list, set or map takes at least one byte, so a container may not declare more elements
//! than bytes remain; this walk checks that in time linear in the bytes.

/// Nesting deeper than this is refused (a Parquet footer nests about ten levels).
const MAX_DEPTH: u32 = 64;

/// Checks that `bytes` begin with one well-bounded compact-protocol struct; the error says
/// what is wrong and at which byte.
pub(crate) fn check_struct(bytes: &[u8]) -> Result<(), String> {
    walk_struct(bytes).map(drop)
}

/// A Parquet page header at the start of `bytes`, checked: its length in bytes and the length
/// of the page that follows it (`compressed_page_size`, field 3).
pub(crate) fn page_header(bytes: &[u8]) -> Result<(usize, u64), String> {
    let (len, fields) = walk_struct(bytes)?;
    match fields
        .iter()
        .find(|(id, _)| *id == 3)
        .map(|(_, size)| *size)
    {
        Some(size) if size >= 0 => Ok((len, size as u64)),
        Some(size) => Err(format!("a page header gives a page size of {size}")),
        None => Err("a page header without a page size".into()),
    }
}

/// Walks one struct: its length in bytes and its top-level integer fields (id, value).
fn walk_struct(bytes: &[u8]) -> Result<(usize, Vec<(i64, i64)>), String> {
    let mut cursor = Cursor {
        bytes,
        at: 0,
        top_level: Vec::new(),
    };
    cursor.value(STRUCT, 0, false)?;
    Ok((cursor.at, cursor.top_level))
}

const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;
const UUID: u8 = 13;

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The integer fields of the outermost struct.
    top_level: Vec<(i64, i64)>,
}

fn zigzag(n: u64) -> i64 {
    (n >> 1) as i64 ^ -((n & 1) as i64)
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn byte(&mut self) -> Result<u8, String> {
        let byte = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| format!("ends inside a value at byte {}", self.at))?;
        self.at += 1;
        Ok(byte)
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        if n > self.remaining() as u64 {
            return Err(format!(
                "a value at byte {} claims {n} bytes, {} remain",
                self.at,
                self.remaining()
            ));
        }
        self.at += n as usize;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, String> {
        let start = self.at;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!(
            "an integer at byte {start} is longer than 10 bytes"
        ))
    }

    /// Refuses a container at `start` declaring more elements than `min_bytes` each can fit.
    fn elements(&self, start: usize, declared: u64, min_bytes: u64) -> Result<u64, String> {
        match declared.checked_mul(min_bytes) {
            Some(need) if need <= self.remaining() as u64 => Ok(declared),
            _ => Err(format!(
                "a container at byte {start} declares {declared} elements, {} bytes remain",
                self.remaining()
            )),
        }
    }

    /// Walks one value of compact type `kind`; a boolean takes a byte only inside a container
    /// (a struct's boolean field lives in its field header).
    fn value(&mut self, kind: u8, depth: u32, in_container: bool) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "nested deeper than {MAX_DEPTH} levels at byte {}",
                self.at
            ));
        }
        match kind {
            BOOL_TRUE | BOOL_FALSE => self.skip(u64::from(in_container)),
            BYTE => self.skip(1),
            I16 | I32 | I64 => self.varint().map(drop),
            DOUBLE => self.skip(8),
            BINARY => {
                let len = self.varint()?;
                self.skip(len)
            }
            UUID => self.skip(16),
            LIST | SET => {
                let start = self.at;
                let header = self.byte()?;
                let declared = match header >> 4 {
                    15 => self.varint()?,
                    short => u64::from(short),
                };
                for _ in 0..self.elements(start, declared, 1)? {
                    self.value(header & 0x0f, depth + 1, true)?;
                }
                Ok(())
            }
            MAP => {
                let start = self.at;
                let declared = self.varint()?;
                if declared > 0 {
                    let kinds = self.byte()?;
                    for _ in 0..self.elements(start, declared, 2)? {
                        self.value(kinds >> 4, depth + 1, true)?;
                        self.value(kinds & 0x0f, depth + 1, true)?;
                    }
                }
                Ok(())
            }
            STRUCT => {
                let mut field = 0i64;
                loop {
                    let header = self.byte()?;
                    if header == 0 {
                        return Ok(());
                    }
                    // A field id is a delta from the last in the header, or follows it.
                    field = match header >> 4 {
                        0 => zigzag(self.varint()?),
                        delta => field + i64::from(delta),
                    };
                    match header & 0x0f {
                        I16 | I32 | I64 if depth == 0 => {
                            let value = zigzag(self.varint()?);
                            self.top_level.push((field, value));
                        }
                        kind => self.value(kind, depth + 1, false)?,
                    }
                }
            }
            other => Err(format!(
                "unknown value type {other} at byte {}",
                self.at.saturating_sub(1)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_struct_passes() {
        // {1: i32 150, 2: true, 3: list<binary> ["ab"], 4: map<i32,bool> {1: false}, 20: {}}
        let bytes = [
            0x15, 0xac, 0x02, 0x11, 0x19, 0x18, 0x02, b'a', b'b', 0x1b, 0x01, 0x51, 0x02, 0x02,
            0x0c, 0x28, 0x00, 0x00,
        ];
        assert_eq!(check_struct(&bytes), Ok(()));
        assert_eq!(walk_struct(&bytes), Ok((bytes.len(), vec![(1, 150)])));
    }

    #[test]
    fn a_page_header_gives_its_length_and_its_page_size() {
        // {1: type 0, 2: uncompressed 100, 3: compressed -> 60, 5: {1: 7}} then page bytes.
        let bytes = [
            0x15, 0x00, 0x15, 0xc8, 0x01, 0x15, 0x78, 0x2c, 0x15, 0x0e, 0x00, 0x00, 9,
        ];
        assert_eq!(page_header(&bytes), Ok((12, 60)));
        let negative = [0x35, 0x01, 0x00];
        assert!(page_header(&negative)
            .unwrap_err()
            .contains("page size of -1"));
        assert!(page_header(&[0x15, 0x00, 0x00])
            .unwrap_err()
            .contains("without"));
    }

    #[test]
    fn a_list_of_more_booleans_than_bytes_is_refused() {
        // Field 1: a list declaring 2^28 booleans, in a buffer of a few bytes.
        let bytes = [0x19, 0xf1, 0x80, 0x80, 0x80, 0x80, 0x01, 0x01, 0x00];
        let error = check_struct(&bytes).unwrap_err();
        assert!(error.contains("declares 268435456 elements"), "{error}");
        // The same list with its elements present is fine.
        let mut well_formed = vec![0x19, 0x31];
        well_formed.extend([1, 2, 1]);
        well_formed.push(0x00);
        assert_eq!(check_struct(&well_formed), Ok(()));
    }

    #[test]
    fn truncation_unknown_types_and_depth_are_refused() {
        assert!(check_struct(&[0x18, 0x05, b'a'])
            .unwrap_err()
            .contains("claims 5 bytes"));
        assert!(check_struct(&[0x1e, 0x00])
            .unwrap_err()
            .contains("unknown value type 14"));
        let nested = [0x1c; 100];
        assert!(check_struct(&nested).unwrap_err().contains("nested deeper"));
        assert!(check_struct(&[0x15]).unwrap_err().contains("ends inside"));
    }
}
