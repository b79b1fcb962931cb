use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};
use sha2::{Digest, Sha256};

use super::{find_card, pypi, ModelCard};
use crate::error::{Error, ModelError, Result};

/// Files every sentence encoder needs besides its weights.
const REQUIRED: [&str; 2] = ["config.json", "tokenizer.json"];
/// Single-file weights.
pub const WEIGHTS: &str = "model.safetensors";
/// The shard list of sharded weights (`weight_map`: tensor → shard file).
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
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
    /// sha256 of `model.safetensors` (of the shard digests for sharded weights, see
    /// [`weights_digest`]): the identity routers are checked against.
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
            .find(|card| card.weights_sha256().as_deref() == Some(self.weights_sha256.as_str()))
    }

    /// The safetensors files holding the weights.
    pub fn weights(&self) -> Result<Vec<PathBuf>> {
        Ok(weight_files(&self.dir)?
            .iter()
            .map(|name| self.dir.join(name))
            .collect())
    }
}

/// The weight files of a model directory, relative to it: `model.safetensors`, or the shards
/// `model.safetensors.index.json` lists, in name order.
pub fn weight_files(dir: &Path) -> Result<Vec<String>> {
    if dir.join(WEIGHTS).is_file() {
        return Ok(vec![WEIGHTS.to_string()]);
    }
    let index = dir.join(WEIGHTS_INDEX);
    if !index.is_file() {
        return Err(Error::Invalid(format!(
            "{}: no {WEIGHTS} nor {WEIGHTS_INDEX}",
            dir.display()
        )));
    }
    shards(&index)
}

/// The shard files an index names, in name order.
fn shards(index: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let bytes = std::fs::read(index).map_err(|e| Error::io(index, e))?;
    let index_file: Index = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Invalid(format!("{}: {e}", index.display())))?;
    let mut files: Vec<String> = index_file.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(Error::Invalid(format!("{}: no shards", index.display())));
    }
    Ok(files)
}

/// The identity of a set of weight files from their sha256s: the file's own for a single file,
/// else the sha256 of the `name  sha256` lines of the shards in name order (what
/// `sha256sum` prints), so sharded models hash each shard once, as the registry pins them.
pub fn weights_digest<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut files: Vec<(&str, &str)> = files.into_iter().collect();
    if let [(name, sha)] = files.as_slice() {
        if *name == WEIGHTS {
            return sha.to_string();
        }
    }
    files.sort();
    let listing: String = files
        .iter()
        .map(|(name, sha)| format!("{sha}  {name}\n"))
        .collect();
    hex::encode(Sha256::digest(listing.as_bytes()))
}

/// [`weights_digest`] of a directory's weights, hashing every file.
fn digest_dir(dir: &Path) -> Result<String> {
    let names = weight_files(dir)?;
    let shas = names
        .iter()
        .map(|name| sha256_file(&dir.join(name)))
        .collect::<Result<Vec<_>>>()?;
    Ok(weights_digest(
        names
            .iter()
            .map(String::as_str)
            .zip(shas.iter().map(String::as_str)),
    ))
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
        // A registered model's weights were just checked against the pins: no second hash.
        let weights_sha256 = match card.and_then(ModelCard::weights_sha256) {
            Some(digest) => digest,
            None => digest_dir(&dir)?,
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
    let mut missing: Vec<String> = REQUIRED
        .iter()
        .filter(|f| !dir.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    match weight_files(dir) {
        Ok(files) => missing.extend(files.into_iter().filter(|f| !dir.join(f).is_file())),
        Err(_) => missing.push(format!("{WEIGHTS} (or {WEIGHTS_INDEX} and its shards)")),
    }
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
        weights_sha256: digest_dir(dir)?,
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
/// the card does not pin (an unregistered model's are all unpinned; its weights are found by
/// [`verified_snapshot`]). Pinned shards bring their index along.
fn wanted_files(card: Option<&ModelCard>) -> Vec<(String, Option<String>)> {
    let pinned = card.map(|c| &c.files);
    let mut files: Vec<(String, Option<String>)> = pinned
        .into_iter()
        .flatten()
        .map(|(f, sha)| (f.clone(), Some(sha.clone())))
        .collect();
    let sharded = pinned.is_some_and(|p| !p.contains_key(WEIGHTS));
    let index = sharded.then_some(WEIGHTS_INDEX);
    for file in REQUIRED.into_iter().chain(index) {
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
/// snapshot directory that holds them. Without a card, the weights are `model.safetensors` or,
/// failing that, the shards of `model.safetensors.index.json`.
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
    if card.is_none() {
        if let Err(single) = get(WEIGHTS) {
            let index = get(WEIGHTS_INDEX).map_err(|sharded| format!("{single}; {sharded}"))?;
            for shard in shards(&index).map_err(|e| e.to_string())? {
                get(&shard)?;
            }
        }
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
