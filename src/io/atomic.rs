use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::{Error, Result};

/// A file written beside its destination under a temporary name and renamed over it on
/// [`AtomicFile::commit`]. Dropped without committing (error, panic, interrupt), the temporary
/// file is removed: readers never see a half-written output.
pub struct AtomicFile {
    target: PathBuf,
    writer: BufWriter<NamedTempFile>,
}

impl AtomicFile {
    pub fn create(target: &Path) -> Result<Self> {
        Self::create_in(target, parent_dir(target))
    }

    /// Writes the temporary file in `dir` (on `target`'s file system) instead of beside
    /// `target`.
    pub fn create_in(target: &Path, dir: &Path) -> Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix(".kroute-tmp-")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            writer: BufWriter::with_capacity(1 << 20, tmp),
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Writes `contents` to `path` in one go, atomically.
    pub fn write(path: &Path, contents: &[u8]) -> Result<()> {
        let mut file = Self::create(path)?;
        file.write_all(contents).map_err(|e| Error::io(path, e))?;
        file.commit()
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(self) -> Result<()> {
        let target = self.target;
        let tmp = self
            .writer
            .into_inner()
            .map_err(|e| Error::io(&target, e.into_error()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io(&target, e))?;
        tmp.persist(&target)
            .map_err(|e| Error::io(&target, e.error))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

/// A directory of outputs written under a temporary name beside its destination and renamed
/// into place on [`StagedDir::commit`]; dropped without committing, it is removed. An existing
/// destination is replaced only if it is empty or holds `marker` (an earlier output of the
/// same kind), and only once the new one is complete.
pub struct StagedDir {
    target: PathBuf,
    staging: tempfile::TempDir,
}

impl StagedDir {
    pub fn create(target: &Path, marker: &str, what: &str) -> Result<Self> {
        if target.exists() && !is_replaceable(target, marker) {
            return Err(Error::Invalid(format!(
                "{} exists and is not a {what} (no {marker}); refusing to overwrite it",
                target.display()
            )));
        }
        let parent = parent_dir(target);
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let staging = tempfile::Builder::new()
            .prefix(".kroute-tmp-")
            .tempdir_in(parent)
            .map_err(|e| Error::io(parent, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            staging,
        })
    }

    /// Where a file of the output goes until the commit.
    pub fn path(&self, name: &str) -> PathBuf {
        self.staging.path().join(name)
    }

    pub fn write(&self, name: &str, contents: &[u8]) -> Result<()> {
        let path = self.path(name);
        std::fs::write(&path, contents).map_err(|e| Error::io(&path, e))
    }

    /// Syncs the staged files, moves an existing destination aside, renames the staged
    /// directory into place, syncs the parent, then deletes the old one (restoring it if the
    /// rename fails). Once this returns the new directory survives a power cut.
    pub fn commit(self) -> Result<()> {
        let target = &self.target;
        let parent = parent_dir(target);
        let staging = self.staging.path();
        for entry in std::fs::read_dir(staging).map_err(|e| Error::io(staging, e))? {
            let path = entry.map_err(|e| Error::io(staging, e))?.path();
            sync_path(&path)?;
        }
        sync_path(staging)?;
        let old = if target.exists() {
            let aside = tempfile::Builder::new()
                .prefix(".kroute-old-")
                .tempdir_in(parent)
                .map_err(|e| Error::io(parent, e))?;
            // Only a unique name is wanted: the (empty) directory itself makes way for `target`.
            let aside = aside.keep();
            std::fs::remove_dir(&aside).map_err(|e| Error::io(&aside, e))?;
            std::fs::rename(target, &aside).map_err(|e| Error::io(target, e))?;
            Some(aside)
        } else {
            None
        };
        let staged = self.staging.keep();
        if let Err(e) = std::fs::rename(&staged, target) {
            let _ = std::fs::remove_dir_all(&staged);
            if let Some(old) = &old {
                let _ = std::fs::rename(old, target);
            }
            return Err(Error::io(target, e));
        }
        sync_path(parent)?;
        if let Some(old) = old {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
        Ok(())
    }
}

/// fsync of a file or a directory (a directory's entries).
fn sync_path(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An empty directory or an earlier output holding `marker`.
fn is_replaceable(dir: &Path, marker: &str) -> bool {
    dir.is_dir()
        && (dir.join(marker).is_file()
            || std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none()))
}
