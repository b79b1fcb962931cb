//! A check of a Parquet file's Thrift footer and page headers before the parquet crate decodes
//! them, walking the bytes exactly as the crate will. Its skipper (used for fields it does not
//! know) walks a list of booleans element by element at no byte each, so a corrupted footer or
//! page header declaring a list of a billion booleans costs seconds of CPU in a file of a
//! kilobyte. Where the crate knows a field it reads the type Parquet gives it whatever the
//! bytes say, so a walk by the bytes alone would not see what the crate sees: this one follows
//! Parquet's own schema for the fields the crate knows (`parquet.thrift`, as parquet 60 reads
//! it) and refuses a field whose encoded type differs, and in fields it does not know refuses a
//! non-empty container of booleans (Parquet writes none) and any container declaring more
//! elements than bytes remain. What it accepts the crate then decodes in time linear in the
//! bytes.

/// Nesting deeper than this is refused (a Parquet footer nests about ten levels).
const MAX_DEPTH: u32 = 64;

/// Checks a Parquet footer (`FileMetaData`); the error says what is wrong and at which byte.
pub(crate) fn check_footer(bytes: &[u8]) -> Result<(), String> {
    walk(bytes, FILE_META_DATA).map(drop)
}

/// A Parquet page header at the start of `bytes`, checked: its length in bytes and the length
/// of the page that follows it (`compressed_page_size`, field 3).
pub(crate) fn page_header(bytes: &[u8]) -> Result<(usize, u64), String> {
    let (len, fields) = walk(bytes, PAGE_HEADER)?;
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

/// Walks one struct of `shape`: its length in bytes and its top-level integer fields.
fn walk(bytes: &[u8], shape: Shape) -> Result<(usize, Vec<(i16, i64)>), String> {
    let mut cursor = Cursor {
        bytes,
        at: 0,
        top_level: Vec::new(),
    };
    let Shape::Struct(fields) = shape else {
        unreachable!("a walk starts at a struct")
    };
    cursor.fields(fields, 0)?;
    Ok((cursor.at, cursor.top_level))
}

/// What the parquet crate reads for a field it knows (enums are `I32`).
#[derive(Clone, Copy)]
enum Shape {
    Bool,
    I8,
    I16,
    I32,
    I64,
    Double,
    Binary,
    List(&'static Shape),
    Struct(&'static [(i16, Shape)]),
}

use Shape::{Binary, Bool, Double, List, I16, I32, I64, I8};

// Parquet's schema (`parquet.thrift`); unions are structs with one field set.
const EMPTY: Shape = Shape::Struct(&[]);
const KEY_VALUE: Shape = Shape::Struct(&[(1, Binary), (2, Binary)]);
const STATISTICS: Shape = Shape::Struct(&[
    (1, Binary),
    (2, Binary),
    (3, I64),
    (4, I64),
    (5, Binary),
    (6, Binary),
    (7, Bool),
    (8, Bool),
    (9, I64),
]);
const TIME_UNIT: Shape = Shape::Struct(&[(1, EMPTY), (2, EMPTY), (3, EMPTY)]);
const TIMESTAMP: Shape = Shape::Struct(&[(1, Bool), (2, TIME_UNIT)]);
const LOGICAL_TYPE: Shape = Shape::Struct(&[
    (1, EMPTY),
    (2, EMPTY),
    (3, EMPTY),
    (4, EMPTY),
    (5, Shape::Struct(&[(1, I32), (2, I32)])),
    (6, EMPTY),
    (7, TIMESTAMP),
    (8, TIMESTAMP),
    (10, Shape::Struct(&[(1, I8), (2, Bool)])),
    (11, EMPTY),
    (12, EMPTY),
    (13, EMPTY),
    (14, EMPTY),
    (15, EMPTY),
    (16, Shape::Struct(&[(1, I8)])),
    (17, Shape::Struct(&[(1, Binary)])),
    (18, Shape::Struct(&[(1, Binary), (2, I32)])),
    (19, EMPTY),
]);
const SCHEMA_ELEMENT: Shape = Shape::Struct(&[
    (1, I32),
    (2, I32),
    (3, I32),
    (4, Binary),
    (5, I32),
    (6, I32),
    (7, I32),
    (8, I32),
    (9, I32),
    (10, LOGICAL_TYPE),
]);
const BOUNDING_BOX: Shape = Shape::Struct(&[
    (1, Double),
    (2, Double),
    (3, Double),
    (4, Double),
    (5, Double),
    (6, Double),
    (7, Double),
    (8, Double),
]);
const COLUMN_META_DATA: Shape = Shape::Struct(&[
    (1, I32),
    (2, List(&I32)),
    (3, List(&Binary)),
    (4, I32),
    (5, I64),
    (6, I64),
    (7, I64),
    (8, List(&KEY_VALUE)),
    (9, I64),
    (10, I64),
    (11, I64),
    (12, STATISTICS),
    (13, List(&Shape::Struct(&[(1, I32), (2, I32), (3, I32)]))),
    (14, I64),
    (15, I32),
    (
        16,
        Shape::Struct(&[(1, I64), (2, List(&I64)), (3, List(&I64))]),
    ),
    (17, Shape::Struct(&[(1, BOUNDING_BOX), (2, List(&I32))])),
]);
const COLUMN_CHUNK: Shape = Shape::Struct(&[
    (1, Binary),
    (2, I64),
    (3, COLUMN_META_DATA),
    (4, I64),
    (5, I32),
    (6, I64),
    (7, I32),
    (
        8,
        Shape::Struct(&[
            (1, EMPTY),
            (2, Shape::Struct(&[(1, List(&Binary)), (2, Binary)])),
        ]),
    ),
    (9, Binary),
]);
const ROW_GROUP: Shape = Shape::Struct(&[
    (1, List(&COLUMN_CHUNK)),
    (2, I64),
    (3, I64),
    (4, List(&Shape::Struct(&[(1, I32), (2, Bool), (3, Bool)]))),
    (5, I64),
    (6, I64),
    (7, I16),
]);
const AES_GCM: Shape = Shape::Struct(&[(1, Binary), (2, Binary), (3, Bool)]);
const FILE_META_DATA: Shape = Shape::Struct(&[
    (1, I32),
    (2, List(&SCHEMA_ELEMENT)),
    (3, I64),
    (4, List(&ROW_GROUP)),
    (5, List(&KEY_VALUE)),
    (6, Binary),
    (7, List(&Shape::Struct(&[(1, EMPTY)]))),
    (8, Shape::Struct(&[(1, AES_GCM), (2, AES_GCM)])),
    (9, Binary),
]);
const PAGE_HEADER: Shape = Shape::Struct(&[
    (1, I32),
    (2, I32),
    (3, I32),
    (4, I32),
    (
        5,
        Shape::Struct(&[(1, I32), (2, I32), (3, I32), (4, I32), (5, STATISTICS)]),
    ),
    (6, EMPTY),
    (7, Shape::Struct(&[(1, I32), (2, I32), (3, Bool)])),
    (
        8,
        Shape::Struct(&[
            (1, I32),
            (2, I32),
            (3, I32),
            (4, I32),
            (5, I32),
            (6, I32),
            (7, Bool),
            (8, STATISTICS),
        ]),
    ),
]);

// Compact-protocol type codes.
const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const WIRE_I16: u8 = 4;
const WIRE_I32: u8 = 5;
const WIRE_I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;
const UUID: u8 = 13;

impl Shape {
    /// Whether a field encoded as `kind` is read by the crate as this shape would be.
    fn encoded_as(self, kind: u8) -> bool {
        kind == match self {
            Bool if kind == BOOL_FALSE => BOOL_FALSE,
            Bool => BOOL_TRUE,
            I8 => BYTE,
            I16 => WIRE_I16,
            I32 => WIRE_I32,
            I64 => WIRE_I64,
            Double => DOUBLE,
            Binary => BINARY,
            List(_) => LIST,
            Shape::Struct(_) => STRUCT,
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The integer fields of the outermost struct.
    top_level: Vec<(i16, i64)>,
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

    /// A list or set header: its element type and declared size (header 0 is an empty list,
    /// as the crate reads it).
    fn list_header(&mut self) -> Result<(u8, u64), String> {
        let start = self.at;
        let header = self.byte()?;
        if header == 0 {
            return Ok((0, 0));
        }
        let declared = match header >> 4 {
            15 => self.varint()?,
            short => u64::from(short),
        };
        Ok((header & 0x0f, self.elements(start, declared, 1)?))
    }

    fn within_depth(&self, depth: u32) -> Result<(), String> {
        match depth > MAX_DEPTH {
            true => Err(format!(
                "nested deeper than {MAX_DEPTH} levels at byte {}",
                self.at
            )),
            false => Ok(()),
        }
    }

    /// The fields of a struct whose known fields are `known`, up to its stop. Field ids are
    /// computed as the crate computes them (a delta from the last in the header, or a
    /// zigzag varint taken as i16 after it).
    fn fields(&mut self, known: &[(i16, Shape)], depth: u32) -> Result<(), String> {
        self.within_depth(depth)?;
        let mut id = 0i16;
        loop {
            let start = self.at;
            let header = self.byte()?;
            let kind = header & 0x0f;
            if kind == 0 {
                return Ok(());
            }
            id = match header >> 4 {
                0 => zigzag(self.varint()?) as i16,
                delta => id
                    .checked_add(i16::from(delta))
                    .ok_or_else(|| format!("a field id past {} at byte {start}", i16::MAX))?,
            };
            let shape = known.iter().find(|(known_id, _)| *known_id == id);
            match shape {
                Some(&(_, shape)) if !shape.encoded_as(kind) => {
                    return Err(format!(
                        "field {id} at byte {start} is encoded as type {kind}, not as Parquet \
                         defines it"
                    ))
                }
                _ if depth == 0 && matches!(kind, WIRE_I16 | WIRE_I32 | WIRE_I64) => {
                    let value = zigzag(self.varint()?);
                    self.top_level.push((id, value));
                }
                Some(&(_, shape)) => self.known(shape, kind, depth)?,
                None => self.unknown(kind, depth + 1)?,
            }
        }
    }

    /// A value of a field the crate knows, encoded (as `kind`) as its shape says.
    fn known(&mut self, shape: Shape, kind: u8, depth: u32) -> Result<(), String> {
        match shape {
            List(element) => {
                let start = self.at;
                let (element_kind, declared) = self.list_header()?;
                if declared > 0 && !element.encoded_as(element_kind) {
                    return Err(format!(
                        "a list at byte {start} holds type {element_kind}, not as Parquet \
                         defines it"
                    ));
                }
                for _ in 0..declared {
                    self.known(*element, element_kind, depth + 1)?;
                }
                Ok(())
            }
            Shape::Struct(fields) => self.fields(fields, depth + 1),
            // A scalar encoded as the crate reads it takes the bytes its skipper skips.
            _ => self.unknown(kind, depth),
        }
    }

    /// A value of a field the crate does not know, walked as its skipper walks it: booleans
    /// take no byte, so a non-empty container of them is refused.
    fn unknown(&mut self, kind: u8, depth: u32) -> Result<(), String> {
        self.within_depth(depth)?;
        let start = self.at;
        let no_booleans = |kinds: &[u8]| {
            if kinds.iter().any(|k| matches!(*k, BOOL_TRUE | BOOL_FALSE)) {
                Err(format!(
                    "a container of booleans at byte {start}, which Parquet does not write"
                ))
            } else {
                Ok(())
            }
        };
        match kind {
            BOOL_TRUE | BOOL_FALSE => Ok(()),
            BYTE => self.skip(1),
            WIRE_I16 | WIRE_I32 | WIRE_I64 => self.varint().map(drop),
            DOUBLE => self.skip(8),
            BINARY => {
                let len = self.varint()?;
                self.skip(len)
            }
            UUID => self.skip(16),
            LIST | SET => {
                let (element, declared) = self.list_header()?;
                if declared > 0 {
                    no_booleans(&[element])?;
                }
                for _ in 0..declared {
                    self.unknown(element, depth + 1)?;
                }
                Ok(())
            }
            MAP => {
                let declared = self.varint()?;
                if declared > 0 {
                    let kinds = self.byte()?;
                    no_booleans(&[kinds >> 4, kinds & 0x0f])?;
                    for _ in 0..self.elements(start, declared, 2)? {
                        self.unknown(kinds >> 4, depth + 1)?;
                        self.unknown(kinds & 0x0f, depth + 1)?;
                    }
                }
                Ok(())
            }
            STRUCT => self.fields(&[], depth),
            other => Err(format!("unknown value type {other} at byte {start}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{1: version 2, 2: [{4: "s", 5: 1}], 3: rows 10, 4: [], 99: [1, 2] (unknown)}`.
    const FOOTER: [u8; 19] = [
        0x15, 0x04, 0x19, 0x1c, 0x48, 0x01, b's', 0x15, 0x02, 0x00, 0x16, 0x14, 0x19, 0x0c, 0x09,
        0xc6, 0x01, 0x25, 0x02,
    ];

    fn footer(tail: &[u8]) -> Vec<u8> {
        [&FOOTER[..], tail, &[0x00]].concat()
    }

    #[test]
    fn a_well_formed_footer_passes_and_stop_is_read_as_the_crate_reads_it() {
        // The unknown field 99's list ends with its second element (0x04), then the stop.
        let bytes = footer(&[0x04]);
        assert_eq!(check_footer(&bytes), Ok(()));
        assert_eq!(walk(&bytes, FILE_META_DATA).unwrap().0, bytes.len());
        // A header byte whose type nibble is 0 is a stop whatever its delta.
        assert_eq!(walk(&[0x10, 0xff], FILE_META_DATA).unwrap().0, 1);
    }

    #[test]
    fn a_container_of_booleans_in_an_unknown_field_is_refused() {
        // Field 100 (after 99): a list declaring 2^28 booleans in a few bytes.
        let huge = footer(&[0x04, 0x19, 0xf1, 0x80, 0x80, 0x80, 0x80, 0x01]);
        assert!(check_footer(&huge)
            .unwrap_err()
            .contains("declares 268435456 elements"));
        // Three booleans fit the bytes, yet the crate would read them as taking none.
        let short = footer(&[0x04, 0x19, 0x31, 0x01, 0x01, 0x01]);
        assert!(check_footer(&short)
            .unwrap_err()
            .contains("container of booleans"));
        let map = footer(&[0x04, 0x1b, 0x05, 0x12]);
        assert!(check_footer(&map)
            .unwrap_err()
            .contains("container of booleans"));
        assert_eq!(check_footer(&footer(&[0x04, 0x19, 0x01])), Ok(()));
    }

    #[test]
    fn a_known_field_encoded_otherwise_is_refused() {
        // Version (field 1, an i32) encoded as a list.
        let error = check_footer(&[0x19, 0x00, 0x00]).unwrap_err();
        assert!(
            error.contains("field 1 at byte 0 is encoded as type 9"),
            "{error}"
        );
        // The schema (field 2, a list of structs) holding i32s.
        let error = check_footer(&[0x29, 0x15, 0x02, 0x00]).unwrap_err();
        assert!(error.contains("holds type 5"), "{error}");
        // A long field id is taken as i16, as the crate takes it: 65538 is field 2, the
        // schema, so its list must hold structs.
        let error = check_footer(&[0x09, 0x84, 0x80, 0x08, 0x15, 0x02, 0x00]).unwrap_err();
        assert!(error.contains("a list at byte 4 holds type 5"), "{error}");
    }

    #[test]
    fn a_page_header_gives_its_length_and_its_page_size() {
        // {1: type 0, 2: uncompressed 100, 3: compressed 60, 5: {1: 7}} then page bytes.
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
    fn truncation_unknown_types_and_depth_are_refused() {
        let error = check_footer(&[0x68, 0x05, b'a']).unwrap_err();
        assert!(error.contains("claims 5 bytes"), "{error}");
        let error = check_footer(&[0xae, 0x00]).unwrap_err();
        assert!(error.contains("unknown value type 14"), "{error}");
        let nested = [0xfc; 100];
        assert!(check_footer(&nested).unwrap_err().contains("nested deeper"));
        assert!(check_footer(&[0x15]).unwrap_err().contains("ends inside"));
    }
}
