//! Settings shared by the command line and the Python package, each defined once: the same
//! struct is a group of clap flags (flattened into every command that takes them) and the
//! JSON the Python bindings pass (keyword arguments with the flags' names, values in the flags'
//! text form), with the same defaults and the same checks.

use std::fmt::Display;
use std::path::Path;
use std::str::FromStr;

use clap::Args;
use serde::{Deserialize, Deserializer};

use crate::cluster::KMeansConfig;
use crate::device::{parse_dtype, DeviceSpec, Precision};
use crate::embed::EmbeddingInfo;
use crate::model::{resolve, Pooling, DEFAULT_MODEL};
use crate::records::{Exclusion, MissingCost, RoutingData, SplitOptions, TrainTest};
use crate::router::{ReferenceScoring, RouteParams, Router, Scoring, RECOMMENDED_BAG};
use crate::{Embedder, EmbedderOptions, Error, Result};

/// Share of each dataset that trains when the records have no `split` field.
const TRAIN_RATIO: f64 = 0.7;

/// Model, device and batching flags of every command that embeds.
#[derive(Args, Deserialize, Debug, Clone, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderSettings {
    /// Embedding model: a local directory or a Hugging Face repo id (`org/name[@revision]`).
    /// Registered models (`kroute models list`) are verified by sha256 and have offline mirrors.
    /// [default: sentence-transformers/all-MiniLM-L6-v2; for a trained router: its own model]
    #[arg(long, env = "KROUTE_MODEL")]
    pub model: Option<String>,

    /// Compute device: cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu", env = "KROUTE_DEVICE", value_parser = parse_device)]
    #[serde(deserialize_with = "from_text")]
    pub device: DeviceSpec,

    /// Model precision: f32, f16, bf16, or int8 (CPU only: dense layers in 8-bit integers, the
    /// rest in f32; the same model as f32 for routers and embedding files) [default: f32 on cpu,
    /// f16 on cuda/metal, bf16 for Qwen3 there].
    #[arg(long, value_parser = parse_dtype_arg)]
    #[serde(deserialize_with = "from_optional_text")]
    pub dtype: Option<Precision>,

    /// Padded tokens per batch (rows × longest row) [default: 2048 on cpu, 16384 on cuda/metal].
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,

    /// Truncate inputs to this many tokens, prompt and special tokens included [default: the
    /// model's max_seq_length, 256 for MiniLM; for a trained router: its own].
    #[arg(long)]
    pub max_seq_length: Option<usize>,

    /// Text prepended to every input before tokenization, e.g. "query: " for e5 models
    /// (quote it; "" for none) [default: the model's default prompt if it has one; for a trained
    /// router: its own].
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub prompt: Option<String>,

    /// Prepend the model's prompt of this name (from config_sentence_transformers.json, or the
    /// registry card), e.g. `query`.
    #[arg(long, value_name = "NAME", conflicts_with = "prompt")]
    pub prompt_name: Option<String>,

    /// Override the model's pooling: mean, cls (first token) or last (last real token)
    /// [default: the model's 1_Pooling/config.json; for a trained router: its own].
    #[arg(long, value_name = "mean|cls|last", value_parser = parse_pooling)]
    pub pooling: Option<Pooling>,

    /// Keep the first N dimensions of every vector, then L2-normalise again (Matryoshka models
    /// such as Qwen3-Embedding) [default: all; for a trained router: its own].
    #[arg(long, value_name = "N")]
    pub dimensions: Option<usize>,
}

impl EmbedderSettings {
    /// Loads `--model` with `chunk_size` texts per chunk (what `kroute embed` checkpoints).
    pub fn load_with_chunk_size(&self, normalize: bool, chunk_size: usize) -> Result<Embedder> {
        self.load_options(normalize, chunk_size)
    }

    /// Loads `--model` (the default model when it is not given).
    pub fn load(&self, normalize: bool) -> Result<Embedder> {
        self.load_options(normalize, EmbedderOptions::default().chunk_size)
    }

    fn load_options(&self, normalize: bool, chunk_size: usize) -> Result<Embedder> {
        let model = self.model.as_deref().unwrap_or(DEFAULT_MODEL);
        let options = EmbedderOptions {
            chunk_size,
            normalize,
            ..self.options()
        };
        Embedder::from_files(resolve(model)?, &self.device.open()?, self.dtype, options)
    }

    /// The options these settings give (the library's defaults elsewhere).
    pub fn options(&self) -> EmbedderOptions {
        EmbedderOptions {
            max_batch_tokens: self.max_batch_tokens,
            max_seq_length: self.max_seq_length,
            prompt: self.prompt.clone(),
            prompt_name: self.prompt_name.clone(),
            pooling: self.pooling,
            dimensions: self.dimensions,
            ..EmbedderOptions::default()
        }
    }

    /// Loads the embedding model a router was trained with (or `--model`, which must then give
    /// the same vectors), with the router's prompt, pooling and truncation unless flags say
    /// otherwise; vectors that would differ from the router's are refused.
    pub fn load_for(&self, router: &Router) -> Result<Embedder> {
        self.load_matching(&router.embedding, "the router")
    }

    /// Loads an embedder that gives vectors of the kind `expected` describes (see
    /// [`Embedder::load_matching`]); `expected_by` names who expects them in the error.
    pub fn load_matching(&self, expected: &EmbeddingInfo, expected_by: &str) -> Result<Embedder> {
        Embedder::load_matching(
            expected,
            self.model.as_deref(),
            &self.device.open()?,
            self.dtype,
            self.options(),
            expected_by,
        )
    }

    /// Whether any flag that changes the vectors was given.
    pub fn changes_vectors(&self) -> bool {
        self.model.is_some()
            || self.max_seq_length.is_some()
            || self.prompt.is_some()
            || self.prompt_name.is_some()
            || self.pooling.is_some()
            || self.dimensions.is_some()
    }
}

fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

fn parse_pooling(s: &str) -> Result<Pooling, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

fn parse_dtype_arg(s: &str) -> Result<Precision, String> {
    parse_dtype(s).map_err(|e| e.to_string())
}

/// Reading routing records and splitting them.
#[derive(Args, Deserialize, Debug, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct RecordsSettings {
    /// An evaluated model without `usages.<model>.cost`: `error` refuses the file, `zero`
    /// counts the cost as 0 and reports how many.
    #[arg(long, default_value = "error", value_name = "error|zero")]
    #[serde(deserialize_with = "from_text")]
    pub missing_cost: MissingCost,

    /// Leave these models out entirely (comma-separated names as in `records`).
    #[arg(long, value_delimiter = ',', value_name = "MODEL,...")]
    pub exclude_models: Vec<String>,

    /// Leave these datasets out (comma-separated), as `--exclusion` says.
    #[arg(long, value_delimiter = ',', value_name = "DATASET,...")]
    pub exclude_datasets: Vec<String>,

    /// `hard`: excluded datasets are dropped; `soft`: they train but are never tested on.
    #[arg(long, default_value = "hard", value_name = "hard|soft")]
    #[serde(deserialize_with = "from_text")]
    pub exclusion: Exclusion,

    /// Share of each dataset used for training when the records have no `split` field.
    #[arg(long, default_value_t = TRAIN_RATIO)]
    pub train_ratio: f64,
}

impl RecordsSettings {
    /// Reads and validates `path`, then applies `--exclude-models`.
    pub fn read(&self, path: &Path) -> Result<RoutingData> {
        let data = RoutingData::read(path, self.missing_cost)?;
        self.prepare(data)
    }

    /// Applies `--exclude-models` to records read elsewhere (e.g. from memory), saying what
    /// the reading rules did.
    pub fn prepare(&self, mut data: RoutingData) -> Result<RoutingData> {
        if data.missing_costs > 0 {
            tracing::warn!(
                "{}: {} evaluated answers have no cost; counted as $0 (--missing-cost zero)",
                data.path.display(),
                data.missing_costs
            );
        }
        data.exclude_models(&self.exclude_models)?;
        if data.has_split_field() {
            tracing::info!("using the records' `split` field (--train-ratio is not used)");
        }
        Ok(data)
    }

    /// The split options; `seed` shuffles each dataset when there is no `split` field.
    pub fn split_options(&self, seed: u64) -> SplitOptions {
        SplitOptions {
            train_ratio: self.train_ratio,
            seed,
            exclude_datasets: self.exclude_datasets.clone(),
            exclusion: self.exclusion,
        }
    }

    pub fn split(&self, data: &RoutingData, seed: u64) -> Result<TrainTest> {
        data.split(&self.split_options(seed))
    }
}

/// k-means settings.
#[derive(Args, Deserialize, Debug, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct KMeansSettings {
    /// Number of k-means clusters (the paper uses 60).
    #[arg(long, default_value_t = KMeansConfig::default().k)]
    pub clusters: usize,

    /// k-means restarts from fresh k-means++ seeds; the lowest inertia wins. Restart r starts
    /// from seed `--seed + r`: runs whose seeds differ by less than this share restarts (and
    /// often their clustering), so space seeds by at least this much to compare them.
    #[arg(long, default_value_t = KMeansConfig::default().n_init)]
    pub n_init: usize,

    /// Lloyd iterations per restart at most.
    #[arg(long, default_value_t = KMeansConfig::default().max_iter)]
    pub max_iter: usize,

    /// Convergence: centroid shift below tol × mean feature variance (scikit-learn's rule).
    #[arg(long, default_value_t = KMeansConfig::default().tol)]
    pub tol: f64,

    /// Bagging: train B k-means solutions from different seeds and average their votes
    /// (1 is the paper's router; 3 was chosen by cross-validation, see docs/EVALUATION.md).
    #[arg(long, default_value_t = RECOMMENDED_BAG, value_name = "B")]
    pub bag: usize,
}

impl KMeansSettings {
    /// The k-means configuration for `train_queries` points, refusing an impossible `k`.
    pub fn config(&self, seed: u64, train_queries: usize) -> Result<KMeansConfig> {
        KMeansConfig {
            k: self.clusters,
            n_init: self.n_init,
            max_iter: self.max_iter,
            tol: self.tol,
            seed,
            ..Default::default()
        }
        .for_points(train_queries)
    }
}

/// Scoring and routing knobs. Unset ones keep the router's stored defaults.
#[derive(Args, Deserialize, Debug, Clone, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingSettings {
    /// Scoring rule: `paper` (α·p̃ + (1−α)·(1−q̃), min-max normalised accuracy and cost per
    /// cluster) or `reference` (the AvengersPro code's weighted score and rank votes)
    /// [default: the router's, else paper].
    #[arg(long, value_name = "paper|reference")]
    pub scoring: Option<String>,

    /// Paper scoring: accuracy weight α in [0, 1]; 1 = most accurate, 0 = cheapest
    /// [default: the router's, else 0.5].
    #[arg(long)]
    pub alpha: Option<f64>,

    /// Reference scoring: weight of normalised accuracy [default: 0.7].
    #[arg(long)]
    pub performance_weight: Option<f64>,

    /// Reference scoring: weight of the cost term 1 − cost/max_cost [default: 0.3].
    #[arg(long)]
    pub cost_sensitivity: Option<f64>,

    /// Reference scoring: models below this cluster accuracy score 0 [default: 0].
    #[arg(long)]
    pub min_accuracy: Option<f64>,

    /// Nearest clusters that vote on a query [default: the router's, else 4].
    #[arg(long)]
    pub top_p: Option<usize>,

    /// Vote weights are softmax(−β·cosine distance) [default: the router's, else 9].
    #[arg(long)]
    pub beta: Option<f64>,

    /// Shrink each cluster's accuracy and cost toward the model's mean over all training
    /// queries, as if M answers at that mean were added: (Σ + M·global) / (n + M). A model with
    /// no answers in a cluster then votes with its global means. 0 is the paper's estimator
    /// (`--prior-strength 0 --bag 1` is the paper's router) [default: the router's, else 5].
    #[arg(long, value_name = "M")]
    pub prior_strength: Option<f64>,
}

impl RoutingSettings {
    /// These flags on top of `base`. Flags of the other scoring rule are refused rather than
    /// silently ignored.
    pub fn resolve(&self, base: RouteParams) -> Result<RouteParams> {
        let mode = self.scoring.as_deref().unwrap_or(match base.scoring {
            Scoring::Paper { .. } => "paper",
            Scoring::Reference(_) => "reference",
        });
        let reference_flags = self.performance_weight.is_some()
            || self.cost_sensitivity.is_some()
            || self.min_accuracy.is_some();
        let scoring = match (mode, base.scoring) {
            ("paper", _) if reference_flags => {
                return Err(Error::Invalid(
                    "--performance-weight, --cost-sensitivity and --min-accuracy apply to --scoring reference".into(),
                ))
            }
            ("paper", base) => Scoring::Paper {
                alpha: self.alpha.unwrap_or(match base {
                    Scoring::Paper { alpha } => alpha,
                    _ => Scoring::DEFAULT_ALPHA,
                }),
            },
            ("reference", _) if self.alpha.is_some() => {
                return Err(Error::Invalid(
                    "--alpha applies to --scoring paper (reference scoring uses --performance-weight and --cost-sensitivity)".into(),
                ))
            }
            ("reference", base) => {
                let base = match base {
                    Scoring::Reference(reference) => reference,
                    Scoring::Paper { .. } => ReferenceScoring::default(),
                };
                Scoring::Reference(ReferenceScoring {
                    performance_weight: self.performance_weight.unwrap_or(base.performance_weight),
                    cost_sensitivity: self.cost_sensitivity.unwrap_or(base.cost_sensitivity),
                    min_accuracy: self.min_accuracy.unwrap_or(base.min_accuracy),
                })
            }
            (other, _) => {
                return Err(Error::Invalid(format!(
                    "--scoring `{other}`: expected paper or reference"
                )))
            }
        };
        let params = RouteParams {
            scoring,
            top_p: self.top_p.unwrap_or(base.top_p),
            beta: self.beta.unwrap_or(base.beta),
            prior_strength: self.prior_strength.unwrap_or(base.prior_strength),
        };
        params.validate()?;
        Ok(params)
    }
}

impl Default for RecordsSettings {
    fn default() -> Self {
        Self {
            missing_cost: MissingCost::Error,
            exclude_models: Vec::new(),
            exclude_datasets: Vec::new(),
            exclusion: Exclusion::Hard,
            train_ratio: TRAIN_RATIO,
        }
    }
}

impl Default for KMeansSettings {
    fn default() -> Self {
        let kmeans = KMeansConfig::default();
        Self {
            clusters: kmeans.k,
            n_init: kmeans.n_init,
            max_iter: kmeans.max_iter,
            tol: kmeans.tol,
            bag: RECOMMENDED_BAG,
        }
    }
}

/// A value given as its flag's text (`"cuda:0"`, `"int8"`, `"soft"`), parsed as the flag is.
fn from_text<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    String::deserialize(deserializer)?
        .parse()
        .map_err(serde::de::Error::custom)
}

fn from_optional_text<'de, D, T>(deserializer: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    Option::<String>::deserialize(deserializer)?
        .map(|text| text.parse().map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The settings groups as a command flattens them.
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        embedder: EmbedderSettings,
        #[command(flatten)]
        records: RecordsSettings,
        #[command(flatten)]
        kmeans: KMeansSettings,
        #[command(flatten)]
        routing: RoutingSettings,
    }

    fn from_flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("kroute").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flags_and_json_give_the_same_settings() {
        let flags = from_flags(&[
            "--dtype",
            "int8",
            "--pooling",
            "cls",
            "--dimensions",
            "128",
            "--exclusion",
            "soft",
            "--missing-cost",
            "zero",
            "--clusters",
            "20",
            "--bag",
            "1",
            "--alpha",
            "0.7",
            "--top-p",
            "3",
        ]);
        let embedder: EmbedderSettings =
            serde_json::from_str(r#"{"dtype": "int8", "pooling": "cls", "dimensions": 128}"#)
                .unwrap();
        assert_eq!(format!("{embedder:?}"), format!("{:?}", flags.embedder));
        let records: RecordsSettings =
            serde_json::from_str(r#"{"exclusion": "soft", "missing_cost": "zero"}"#).unwrap();
        assert_eq!(format!("{records:?}"), format!("{:?}", flags.records));
        let kmeans: KMeansSettings = serde_json::from_str(r#"{"clusters": 20, "bag": 1}"#).unwrap();
        assert_eq!(format!("{kmeans:?}"), format!("{:?}", flags.kmeans));
        let routing: RoutingSettings =
            serde_json::from_str(r#"{"alpha": 0.7, "top_p": 3}"#).unwrap();
        let base = RouteParams::recommended();
        assert_eq!(
            routing.resolve(base).unwrap(),
            flags.routing.resolve(base).unwrap()
        );
    }

    #[test]
    fn defaults_are_the_same_without_flags_or_keys() {
        let flags = from_flags(&[]);
        assert_eq!(
            format!(
                "{:?}",
                serde_json::from_str::<EmbedderSettings>("{}").unwrap()
            ),
            format!("{:?}", flags.embedder)
        );
        assert_eq!(
            format!(
                "{:?}",
                serde_json::from_str::<RecordsSettings>("{}").unwrap()
            ),
            format!("{:?}", flags.records)
        );
        assert_eq!(
            format!(
                "{:?}",
                serde_json::from_str::<KMeansSettings>("{}").unwrap()
            ),
            format!("{:?}", flags.kmeans)
        );
    }

    #[test]
    fn bad_values_and_unknown_keys_are_refused_by_name() {
        let error = serde_json::from_str::<EmbedderSettings>(r#"{"dtype": "int4"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("int4"), "{error}");
        let error = serde_json::from_str::<KMeansSettings>(r#"{"clusterz": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("clusterz"), "{error}");
    }
}
