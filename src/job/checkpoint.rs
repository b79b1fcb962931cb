//! Checkpoints of a batch embedding run, so that an interrupted `kroute embed` (error, Ctrl-C,
//! SIGKILL, power loss) can resume where it stopped.
//!
//! A run into `OUT` keeps its finished chunks in the sibling directory `OUT.partial/`:
//! `manifest.json` (the input's fingerprint, the reading options, the model identity, the
//! rows), then `chunk-00000000.f32`, `chunk-00000001.f32`, … (little-endian f32 rows, one per
//! embedder chunk). Each file is written under a temporary name, fsync'd, renamed and the
//! directory fsync'd, so a chunk either exists whole or not at all. The output itself is
//! assembled from the chunks into a temporary file inside the directory and renamed to `OUT`;
//! the directory is removed last. Nothing is ever half-written at `OUT`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::embed::EmbeddingInfo;
use crate::error::{Error, Result};
use crate::io::{AtomicFile, IdKind, TextReaderOptions};

const MANIFEST: &str = "manifest.json";
/// Bytes of each input file hashed into its fingerprint.
const HEAD_BYTES: usize = 1 << 20;

/// What a resumed run must share with the interrupted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub kroute_version: String,
    pub inputs: Vec<InputFingerprint>,
    pub reader: TextReaderOptions,
    /// `[index, count]` of `--shard`.
    pub shard: Option<[usize; 2]>,
    /// Rows per chunk (the embedder's chunk).
    pub chunk_rows: usize,
    pub embedding: EmbeddingInfo,
    /// Rows the output holds.
    pub rows: usize,
    pub ids: Option<IdKind>,
}

/// An input file as it was: size, modification time and a hash of its first MiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFingerprint {
    pub path: PathBuf,
    pub size: u64,
    pub modified_ns: u128,
    pub head_sha256: String,
}

impl InputFingerprint {
    pub fn of(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let mut head = Vec::with_capacity(HEAD_BYTES);
        File::open(path)
            .map_err(|e| Error::io(path, e))?
            .take(HEAD_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            size: meta.len(),
            modified_ns,
            head_sha256: hex::encode(Sha256::digest(&head)),
        })
    }
}

impl Manifest {
    /// Why a run described by `self` cannot resume the one `before` describes, if it cannot.
    fn change_since(&self, before: &Manifest) -> Option<String> {
        if self.inputs.len() != before.inputs.len() {
            return Some(format!(
                "the input changed: it had {} files, it has {}",
                before.inputs.len(),
                self.inputs.len()
            ));
        }
        for (now, then) in self.inputs.iter().zip(&before.inputs) {
            let file = now.path.display();
            let changed = if now.path != then.path {
                Some(format!("{} became {file}", then.path.display()))
            } else if now.size != then.size {
                Some(format!("{file}: size {} → {}", then.size, now.size))
            } else if now.head_sha256 != then.head_sha256 {
                Some(format!("{file}: its content"))
            } else if now.modified_ns != then.modified_ns {
                Some(format!("{file}: its modification time"))
            } else {
                None
            };
            if let Some(what) = changed {
                return Some(format!(
                    "the input changed since the interrupted run ({what})"
                ));
            }
        }
        let option = |flag: &str, then: String, now: String| {
            (then != now).then(|| format!("{flag} was {then}, now {now}"))
        };
        let shard =
            |s: Option<[usize; 2]>| s.map_or("not given".to_string(), |[i, n]| format!("{i}/{n}"));
        option(
            "--field",
            format!("`{}`", before.reader.field),
            format!("`{}`", self.reader.field),
        )
        .or_else(|| {
            option(
                "--id-field",
                format!("{:?}", before.reader.id_field),
                format!("{:?}", self.reader.id_field),
            )
        })
        .or_else(|| {
            option(
                "--skip-empty",
                before.reader.skip_empty.to_string(),
                self.reader.skip_empty.to_string(),
            )
        })
        .or_else(|| option("--shard", shard(before.shard), shard(self.shard)))
        .or_else(|| {
            option(
                "--chunk-rows",
                before.chunk_rows.to_string(),
                self.chunk_rows.to_string(),
            )
        })
        .or_else(|| {
            before
                .embedding
                .difference(&self.embedding, "the interrupted run")
                .map(|why| format!("the embedding model changed in {why}"))
        })
    }
}

/// The checkpoint directory of a run into `output`.
pub fn partial_dir(output: &Path) -> PathBuf {
    let mut name = output
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    output.with_file_name(name)
}

/// The finished chunks of a run and where its next ones go.
pub struct Checkpoint {
    dir: PathBuf,
    manifest: Manifest,
    /// Finished chunks, contiguous from 0.
    chunks: usize,
    rows_done: usize,
}

impl Checkpoint {
    /// Starts checkpointing a run into `output`. An earlier interrupted run's directory is
    /// continued with `resume` (refused, naming what changed, if the input, options or model
    /// differ) and refused without it.
    pub fn begin(output: &Path, manifest: Manifest, resume: bool) -> Result<Self> {
        let dir = partial_dir(output);
        if dir.exists() {
            let before = read_manifest(&dir)?;
            let mut checkpoint = Self {
                dir,
                manifest: before,
                chunks: 0,
                rows_done: 0,
            };
            checkpoint.count_chunks()?;
            if !resume {
                return Err(Error::Invalid(format!(
                    "{} holds an interrupted run of {} ({} of {} rows done): pass --resume to \
                     continue it, or delete it to start over",
                    checkpoint.dir.display(),
                    output.display(),
                    checkpoint.rows_done,
                    checkpoint.manifest.rows
                )));
            }
            if let Some(why) = manifest.change_since(&checkpoint.manifest) {
                return Err(Error::Invalid(format!(
                    "cannot resume {}: {why}; delete {} to start over",
                    output.display(),
                    checkpoint.dir.display()
                )));
            }
            remove_temporaries(&checkpoint.dir)?;
            return Ok(checkpoint);
        }
        std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        AtomicFile::write(&dir.join(MANIFEST), &json)?;
        sync_dir(&dir)?;
        Ok(Self {
            dir,
            manifest,
            chunks: 0,
            rows_done: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rows already embedded (the resumed ones, then every chunk written since).
    pub fn rows_done(&self) -> usize {
        self.rows_done
    }

    fn dim(&self) -> usize {
        self.manifest.embedding.dim
    }

    fn chunk_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("chunk-{index:08}.f32"))
    }

    /// Counts the finished chunks: contiguous from 0, each whole (`chunk_rows` rows, the last
    /// one of the run possibly fewer).
    fn count_chunks(&mut self) -> Result<()> {
        let row_bytes = 4 * self.dim() as u64;
        let full = self.manifest.chunk_rows as u64 * row_bytes;
        loop {
            let path = self.chunk_path(self.chunks);
            let Ok(meta) = std::fs::metadata(&path) else {
                return Ok(());
            };
            let rows = (meta.len() / row_bytes) as usize;
            let is_last = self.rows_done + rows == self.manifest.rows;
            if meta.len() % row_bytes != 0 || (meta.len() != full && !is_last) {
                return Err(Error::Invalid(format!(
                    "{}: {} bytes is not a whole chunk; delete {} to start over",
                    path.display(),
                    meta.len(),
                    self.dir.display()
                )));
            }
            self.rows_done += rows;
            self.chunks += 1;
        }
    }

    /// Stores the next chunk's rows durably.
    pub fn write_chunk(&mut self, rows: &[f32]) -> Result<()> {
        let path = self.chunk_path(self.chunks);
        let mut file = AtomicFile::create_in(&path, &self.dir)?;
        let mut bytes = Vec::with_capacity(rows.len() * 4);
        for v in rows {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        file.write_all(&bytes).map_err(|e| Error::io(&path, e))?;
        file.commit()?;
        sync_dir(&self.dir)?;
        self.chunks += 1;
        self.rows_done += rows.len() / self.dim().max(1);
        Ok(())
    }

    /// The chunks' rows in order, one chunk at a time.
    pub fn chunks(&self) -> impl Iterator<Item = Result<Vec<f32>>> + '_ {
        (0..self.chunks).map(|index| {
            let path = self.chunk_path(index);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            Ok(bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect())
        })
    }

    /// Removes the directory once the output is in place.
    pub fn remove(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::Invalid(format!(
            "{} exists but is not a kroute checkpoint ({}: {e}); delete it to start over",
            dir.display(),
            path.display()
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::Invalid(format!(
            "{}: unreadable checkpoint manifest ({e}); delete {} to start over",
            path.display(),
            dir.display()
        ))
    })
}

/// Temporary files a killed run left in the directory.
fn remove_temporaries(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".kroute-tmp-"))
        {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Makes a directory's entries (a rename) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
