use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};
use sha2::{Digest, Sha256};

use super::{find_card, pypi, ModelCard};
use crate::error::{Error, ModelError, Result};

/// Files every sentence encoder needs.
const REQUIRED: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];
/// sentence-transformers' own configs; without them the registry card or defaults apply.
const OPTIONAL: [&str; 4] = [
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "config_sentence_transformers.json",
];

/// Where a model's files were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    LocalDir,
    HfCache,
    Hub,
    PypiMirror(String),
}

/// A resolved model: a directory holding its files, and its identity.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The `--model` value's id: the repo id, or the directory as given.
    pub id: String,
    /// The commit of a hub model; `None` for a local directory.
    pub revision: Option<String>,
    pub dir: PathBuf,
    /// sha256 of `model.safetensors`: the identity routers are checked against.
    pub weights_sha256: String,
    pub source: ModelSource,
}

impl ModelFiles {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The registry card of these weights, wherever they were found (a local copy of a
    /// registered model included).
    pub fn card(&self) -> Option<&'static ModelCard> {
        super::registry()
            .iter()
            .find(|card| card.files["model.safetensors"] == self.weights_sha256)
    }
}

/// Resolves `--model` to verified files: a local directory as is; a hub id (`org/name` or
/// `org/name@revision`) through the HF cache, then the hub, then the registry's offline mirrors.
/// Registered models are checked file by file against their sha256s wherever they come from.
pub fn resolve(model: &str) -> Result<ModelFiles> {
    let local = Path::new(model);
    if local.is_dir() {
        return resolve_local(model, local);
    }
    let (id, explicit_revision) = match model.split_once('@') {
        Some((id, rev)) => (id, Some(rev)),
        None => (model, None),
    };
    let card = find_card(id).filter(|c| explicit_revision.is_none_or(|r| r == c.revision));
    let revision = explicit_revision
        .map(str::to_owned)
        .or_else(|| card.map(|c| c.revision.clone()))
        .unwrap_or_else(|| "main".into());
    let repo = Repo::with_revision(id.to_owned(), RepoType::Model, revision.clone());
    let cache = Cache::from_env();
    let snapshot_name = format!("{}/{}", cache.path().display(), repo.folder_name());
    let mut attempts = Vec::new();

    let found = |dir: PathBuf, source: ModelSource| -> Result<ModelFiles> {
        // A registered model's weights were just checked against the pin: no second hash.
        let weights_sha256 = match card {
            Some(card) => card.files["model.safetensors"].clone(),
            None => sha256_file(&dir.join("model.safetensors"))?,
        };
        Ok(ModelFiles {
            id: id.to_owned(),
            revision: Some(revision.clone()),
            weights_sha256,
            dir,
            source,
        })
    };

    match from_cache(&cache, &repo, card) {
        Ok(dir) => return found(dir, ModelSource::HfCache),
        Err(why) => attempts.push((format!("HF cache ({snapshot_name})"), why)),
    }

    if hub_offline() {
        attempts.push((
            "Hugging Face hub".into(),
            "skipped: HF_HUB_OFFLINE is set".into(),
        ));
    } else {
        match from_hub(&repo, card) {
            Ok(dir) => return found(dir, ModelSource::Hub),
            Err(why) => attempts.push(("Hugging Face hub".into(), why)),
        }
    }

    for mirror in card.map(|c| c.mirrors.as_slice()).unwrap_or_default() {
        let name = format!("PyPI mirror {}", mirror.name());
        let card = card.expect("mirrors come from a card");
        match from_pypi(&cache, &repo, card, mirror) {
            Ok(dir) => return found(dir, ModelSource::PypiMirror(name)),
            Err(why) => attempts.push((name, why)),
        }
    }
    if card.is_none() {
        attempts.push((
            "registry".into(),
            format!("`{model}` is not in models/registry.json, so no offline mirror is known"),
        ));
    }
    Err(ModelError {
        model: model.to_owned(),
        attempts,
    }
    .into())
}

fn resolve_local(model: &str, dir: &Path) -> Result<ModelFiles> {
    let missing: Vec<_> = REQUIRED.iter().filter(|f| !dir.join(f).is_file()).collect();
    if !missing.is_empty() {
        return Err(ModelError {
            model: model.to_owned(),
            attempts: vec![(
                format!("local directory {}", dir.display()),
                format!("missing {missing:?}"),
            )],
        }
        .into());
    }
    Ok(ModelFiles {
        id: model.to_owned(),
        revision: None,
        weights_sha256: sha256_file(&dir.join("model.safetensors"))?,
        dir: dir.to_path_buf(),
        source: ModelSource::LocalDir,
    })
}

fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// The files to fetch: the registry's pinned ones with their sha256, and every required file
/// the card does not pin (an unregistered model's are all unpinned).
fn wanted_files(card: Option<&ModelCard>) -> Vec<(String, Option<String>)> {
    let pinned = card.map(|c| &c.files);
    let mut files: Vec<(String, Option<String>)> = pinned
        .into_iter()
        .flatten()
        .map(|(f, sha)| (f.clone(), Some(sha.clone())))
        .collect();
    for file in REQUIRED {
        if !pinned.is_some_and(|p| p.contains_key(file)) {
            files.push((file.to_string(), None));
        }
    }
    files
}

fn from_cache(cache: &Cache, repo: &Repo, card: Option<&ModelCard>) -> Result<PathBuf, String> {
    let cached = cache.repo(repo.clone());
    verified_snapshot(card, |file| {
        cached.get(file).ok_or_else(|| format!("{file} not cached"))
    })
}

fn from_hub(repo: &Repo, card: Option<&ModelCard>) -> Result<PathBuf, String> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| e.to_string())?
        .repo(repo.clone());
    let dir = verified_snapshot(card, |file| {
        api.get(file).map_err(|e| format!("{file}: {e}"))
    })?;
    // sentence-transformers configs the card does not pin are fetched when the repo has them.
    for file in OPTIONAL {
        if !card.is_some_and(|c| c.files.contains_key(file)) {
            let _ = api.get(file);
        }
    }
    Ok(dir)
}

/// Gets every wanted file through `get`, checks each against its pinned sha256, and returns the
/// snapshot directory that holds them.
fn verified_snapshot(
    card: Option<&ModelCard>,
    get: impl Fn(&str) -> Result<PathBuf, String>,
) -> Result<PathBuf, String> {
    let mut dir = None;
    for (file, sha) in wanted_files(card) {
        let path = get(&file)?;
        verify(&path, &file, sha.as_deref())?;
        dir.get_or_insert_with(|| snapshot_dir(&path, &file));
    }
    dir.ok_or_else(|| "no files".into())
}

/// Unpacks the mirror's files into the HF cache snapshot for `repo`, each streamed to a
/// temporary file, checked, and only then renamed into place, so the cache never holds an
/// unverified file.
fn from_pypi(
    cache: &Cache,
    repo: &Repo,
    card: &ModelCard,
    mirror: &super::Mirror,
) -> Result<PathBuf, String> {
    let download = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut archive = pypi::MirrorArchive::fetch(mirror, download.path())?;
    let snapshot = cache
        .path()
        .join(repo.folder_name())
        .join("snapshots")
        .join(repo.revision());
    for (name, expected) in &card.files {
        let target = snapshot.join(name);
        let parent = target.parent().expect("snapshot files have a parent");
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| e.to_string())?;
        let actual = archive.extract(name, &mut tmp)?;
        if &actual != expected {
            return Err(format!(
                "{name}: sha256 {actual} does not match the registry's {expected}"
            ));
        }
        tmp.persist(&target)
            .map_err(|e| format!("{}: {e}", target.display()))?;
    }
    cache
        .repo(repo.clone())
        .create_ref(repo.revision())
        .map_err(|e| format!("writing cache ref: {e}"))?;
    Ok(snapshot)
}

fn verify(path: &Path, name: &str, expected: Option<&str>) -> Result<(), String> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let actual = sha256_file(path).map_err(|e| e.to_string())?;
    if actual == expected {
        Ok(())
    } else {
        Err(format!(
            "{name}: sha256 mismatch ({} has {actual}, the registry pins {expected})",
            path.display()
        ))
    }
}

/// The snapshot directory that holds `file` (which may sit in a subfolder such as `1_Pooling/`).
fn snapshot_dir(path: &Path, file: &str) -> PathBuf {
    let depth = Path::new(file).components().count();
    path.ancestors()
        .nth(depth)
        .expect("file lies inside its snapshot")
        .to_path_buf()
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
