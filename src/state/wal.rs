//! A write-ahead log of numbered records in segment files, each record framed with its length
//! and a checksum so that a write cut short by a crash is recognised and dropped.
//!
//! ```text
//! segment  wal-<first sequence, 20 digits>.log: "KRWAL001", then records
//! record   length u32 LE | crc32 u32 LE (of sequence and payload) | sequence u64 LE | payload
//! ```
//!
//! A writer only ever appends to a segment it created, and a new writer starts a new segment,
//! so a torn record can only be the last thing in a segment. Reading tolerates exactly that
//! (with a warning naming the file and offset); a bad record followed by more data is
//! corruption, and reading stops with an error naming where.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, InputError, Result};

const MAGIC: &[u8; 8] = b"KRWAL001";
const FRAME: usize = 16;
/// Larger records are refused when writing, and read as damage.
pub const MAX_RECORD: usize = 1 << 24;
/// A segment past this size is closed and a new one started at the next append.
const SEGMENT_BYTES: u64 = 64 << 20;

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub sequence: u64,
    pub payload: Vec<u8>,
}

/// What reading a log found.
#[derive(Debug, Default)]
pub struct Replay {
    pub records: Vec<Record>,
    /// Torn tails dropped, one line each (file and offset).
    pub warnings: Vec<String>,
}

impl Replay {
    /// The last sequence read, or 0 for an empty log.
    pub fn last_sequence(&self) -> u64 {
        self.records.last().map_or(0, |r| r.sequence)
    }
}

fn segment_name(first: u64) -> String {
    format!("wal-{first:020}.log")
}

/// The log's segments, by first sequence.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok());
        if let Some(first) = first {
            found.push((first, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads every record of the log in `dir` (none if it does not exist), in sequence order.
pub fn read(dir: &Path) -> Result<Replay> {
    let mut replay = Replay::default();
    for (_, path) in segments(dir)? {
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        read_segment(&path, &bytes, &mut replay)?;
    }
    Ok(replay)
}

/// Parses one segment's bytes into `replay`.
pub fn read_segment(path: &Path, bytes: &[u8], replay: &mut Replay) -> Result<()> {
    let damaged = |offset: usize, what: &str| {
        Error::from(InputError::new(
            path,
            format!("write-ahead log damaged at byte {offset}: {what}, and more data follows"),
        ))
    };
    if bytes.len() < MAGIC.len() {
        // Created, then cut off before its header was whole.
        replay.warnings.push(format!(
            "{}: a segment of {} bytes without a whole header; ignored",
            path.display(),
            bytes.len()
        ));
        return Ok(());
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(InputError::new(path, "not a kroute write-ahead log segment").into());
    }
    let mut offset = MAGIC.len();
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let torn = |replay: &mut Replay, what: &str| {
            replay.warnings.push(format!(
                "{}: torn record at byte {offset} ({what}); dropped",
                path.display()
            ));
        };
        if rest.len() < FRAME {
            torn(replay, "incomplete frame");
            break;
        }
        let length = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let checksum = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let sequence = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
        if length > MAX_RECORD || rest.len() < FRAME + length {
            // A length that runs past the end can only be a cut-off write if nothing follows,
            // which is the case here by construction.
            torn(replay, "incomplete record");
            break;
        }
        let payload = &rest[FRAME..FRAME + length];
        let end = offset + FRAME + length;
        if crc(sequence, payload) != checksum {
            if end == bytes.len() {
                torn(replay, "checksum mismatch");
                break;
            }
            return Err(damaged(offset, "checksum mismatch"));
        }
        if sequence <= replay.last_sequence() {
            return Err(damaged(
                offset,
                &format!("sequence {sequence} after {}", replay.last_sequence()),
            ));
        }
        replay.records.push(Record {
            sequence,
            payload: payload.to_vec(),
        });
        offset = end;
    }
    Ok(())
}

fn crc(sequence: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&sequence.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends records to the log in a directory, a new segment per writer.
pub struct WalWriter {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    written: u64,
    /// Records framed but not yet written, and how many.
    pending: Vec<u8>,
    pending_records: u64,
    /// Written since the last fsync.
    unsynced: bool,
    next: u64,
}

impl WalWriter {
    /// Starts a segment whose first record will be `next` (one past the last in the log).
    pub fn open(dir: &Path, next: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (file, path) = new_segment(dir, next)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            file,
            path,
            written: MAGIC.len() as u64,
            pending: Vec::new(),
            pending_records: 0,
            unsynced: false,
            next,
        })
    }

    /// The sequence the next record gets.
    pub fn next_sequence(&self) -> u64 {
        self.next
    }

    /// Frames `payload` as the next record (written by [`WalWriter::sync`]); returns its
    /// sequence.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64> {
        if payload.len() > MAX_RECORD {
            return Err(Error::Invalid(format!(
                "a log record of {} bytes is over the limit of {MAX_RECORD}",
                payload.len()
            )));
        }
        let sequence = self.next;
        self.pending
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.pending
            .extend_from_slice(&crc(sequence, payload).to_le_bytes());
        self.pending.extend_from_slice(&sequence.to_le_bytes());
        self.pending.extend_from_slice(payload);
        self.pending_records += 1;
        self.next += 1;
        Ok(sequence)
    }

    /// Writes the appended records and waits until they are on disk: one `fdatasync` for all
    /// of them (group commit).
    pub fn sync(&mut self) -> Result<()> {
        self.write()?;
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(|e| Error::io(&self.path, e))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Writes the appended records without waiting for the disk: they survive the process
    /// being killed, and a power cut once [`WalWriter::sync`] has run.
    pub fn write(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.written > SEGMENT_BYTES {
            self.rotate()?;
        }
        self.file
            .write_all(&self.pending)
            .map_err(|e| Error::io(&self.path, e))?;
        self.written += self.pending.len() as u64;
        self.unsynced = true;
        self.pending.clear();
        self.pending_records = 0;
        Ok(())
    }

    /// Closes the current segment and starts another at the next sequence, so that the old
    /// one can be removed once a snapshot covers it.
    pub fn rotate(&mut self) -> Result<()> {
        if self.written == MAGIC.len() as u64 {
            return Ok(()); // nothing in this one yet
        }
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(|e| Error::io(&self.path, e))?;
            self.unsynced = false;
        }
        let (file, path) = new_segment(&self.dir, self.next - self.pending_records)?;
        self.file = file;
        self.path = path;
        self.written = MAGIC.len() as u64;
        Ok(())
    }

    /// Removes the segments whose records all have sequences up to `sequence` (a snapshot
    /// holds them), starting a new segment first if the current one is among them.
    pub fn remove_through(&mut self, sequence: u64) -> Result<()> {
        let current_first = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| {
                n.strip_prefix("wal-")?
                    .strip_suffix(".log")?
                    .parse::<u64>()
                    .ok()
            });
        if current_first.is_some_and(|first| first <= sequence) && self.next > sequence + 1 {
            // Holds records past the snapshot too: it stays until the next one.
        } else if current_first.is_some_and(|first| first <= sequence) {
            self.rotate()?;
        }
        let all = segments(&self.dir)?;
        for (i, (_, path)) in all.iter().enumerate() {
            // A segment ends where the next begins; the newest is the one being written.
            let Some((next_first, _)) = all.get(i + 1) else {
                break;
            };
            if *next_first <= sequence + 1 && *path != self.path {
                std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
            }
        }
        sync_dir(&self.dir)
    }
}

fn new_segment(dir: &Path, first: u64) -> Result<(File, PathBuf)> {
    let path = dir.join(segment_name(first));
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
    if len == 0 {
        file.write_all(MAGIC)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&path, e))?;
    } else if len != MAGIC.len() as u64 {
        // A segment holding only its header (left by a server that logged nothing) is reused;
        // one holding records means the sequence went backwards.
        return Err(Error::Invalid(format!(
            "{} already exists; the log's sequence went backwards",
            path.display()
        )));
    }
    sync_dir(dir)?;
    Ok((file, path))
}

/// Makes a directory's entries (files created, renamed or removed in it) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, next: u64, payloads: &[&str]) -> WalWriter {
        let mut wal = WalWriter::open(dir, next).unwrap();
        for p in payloads {
            wal.append(p.as_bytes()).unwrap();
        }
        wal.sync().unwrap();
        wal
    }

    fn payloads(replay: &Replay) -> Vec<String> {
        replay
            .records
            .iter()
            .map(|r| String::from_utf8(r.payload.clone()).unwrap())
            .collect()
    }

    #[test]
    fn records_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        drop(write(dir.path(), 1, &["a", "b"]));
        drop(write(dir.path(), 3, &["c"]));
        let replay = read(dir.path()).unwrap();
        assert_eq!(payloads(&replay), ["a", "b", "c"]);
        assert_eq!(replay.last_sequence(), 3);
        assert!(replay.warnings.is_empty());
    }

    #[test]
    fn a_torn_tail_is_dropped_with_its_offset_and_damage_inside_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        drop(write(dir.path(), 1, &["first", "second"]));
        let path = dir.path().join(segment_name(1));
        let whole = std::fs::read(&path).unwrap();
        let second_at = MAGIC.len() + FRAME + "first".len();
        for cut in [whole.len() - 1, second_at + 3, second_at + FRAME] {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let replay = read(dir.path()).unwrap();
            assert_eq!(payloads(&replay), ["first"], "cut at {cut}");
            assert!(
                replay.warnings[0].contains(&format!("torn record at byte {second_at}")),
                "{:?}",
                replay.warnings
            );
        }
        // A flipped byte in the last record: torn; in the first (more follows): damage.
        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(payloads(&read(dir.path()).unwrap()), ["first"]);
        let mut flipped = whole.clone();
        flipped[MAGIC.len() + FRAME] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let error = read(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("damaged at byte 8: checksum mismatch"),
            "{error}"
        );
    }

    #[test]
    fn segments_covered_by_a_snapshot_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = write(dir.path(), 1, &["a", "b"]);
        wal.remove_through(2).unwrap();
        // The covered segment went; appends continue in a fresh one.
        wal.append(b"c").unwrap();
        wal.sync().unwrap();
        let replay = read(dir.path()).unwrap();
        assert_eq!(payloads(&replay), ["c"]);
        // A snapshot through 2 of a segment holding 3..: nothing to remove.
        wal.remove_through(2).unwrap();
        assert_eq!(payloads(&read(dir.path()).unwrap()), ["c"]);
    }
}
