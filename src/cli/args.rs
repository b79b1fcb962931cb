//! Flag groups shared by several commands.

use std::path::PathBuf;

use clap::Args;
use kroute::cluster::KMeansConfig;
use kroute::device::{parse_dtype, DeviceSpec, Precision};
use kroute::embed::{EmbeddingInfo, Pooling};
use kroute::model::{resolve, DEFAULT_MODEL};
use kroute::records::{Exclusion, MissingCost, RoutingData, SplitOptions, TrainTest};
use kroute::router::{ReferenceScoring, RouteParams, Router, Scoring};
use kroute::{Embedder, EmbedderOptions, Error, Result};

/// Model, device and batching flags of every command that embeds.
#[derive(Args, Debug, Clone)]
pub struct EmbedderArgs {
    /// Embedding model: a local directory or a Hugging Face repo id (`org/name[@revision]`).
    /// Registered models (`kroute models list`) are verified by sha256 and have offline mirrors.
    /// [default: sentence-transformers/all-MiniLM-L6-v2; for a trained router: its own model]
    #[arg(long, env = "KROUTE_MODEL")]
    pub model: Option<String>,

    /// Compute device: cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu", env = "KROUTE_DEVICE", value_parser = parse_device)]
    pub device: DeviceSpec,

    /// Model precision: f32, f16, bf16, or int8 (CPU only: dense layers in 8-bit integers, the
    /// rest in f32; the same model as f32 for routers and embedding files) [default: f32 on cpu,
    /// f16 on cuda/metal, bf16 for Qwen3 there].
    #[arg(long, value_parser = parse_dtype_arg)]
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

impl EmbedderArgs {
    /// Loads `--model` with `chunk_size` texts per chunk (what `kroute embed` checkpoints).
    pub fn load_with_chunk_size(&self, normalize: bool, chunk_size: usize) -> Result<Embedder> {
        self.load_options(None, normalize, chunk_size)
    }

    /// Loads `--model`, or `default_model` when it is not given.
    pub fn load(&self, default_model: Option<&str>, normalize: bool) -> Result<Embedder> {
        self.load_options(
            default_model,
            normalize,
            EmbedderOptions::default().chunk_size,
        )
    }

    fn load_options(
        &self,
        default_model: Option<&str>,
        normalize: bool,
        chunk_size: usize,
    ) -> Result<Embedder> {
        let model = self
            .model
            .as_deref()
            .or(default_model)
            .unwrap_or(DEFAULT_MODEL);
        let options = EmbedderOptions {
            chunk_size,
            normalize,
            ..self.options()
        };
        Embedder::from_files(resolve(model)?, &self.device.open()?, self.dtype, options)
    }

    /// The options these flags give (the library's defaults elsewhere).
    fn options(&self) -> EmbedderOptions {
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
#[derive(Args, Debug, Clone)]
pub struct RecordsArgs {
    /// Routing records: `.jsonl` or `.jsonl.gz`, one query per line with `records` (model →
    /// score in [0, 1], true/false, or null = not evaluated) and `usages` (model → {"cost": $}).
    pub data: PathBuf,

    /// An evaluated model without `usages.<model>.cost`: `error` refuses the file, `zero`
    /// counts the cost as 0 and reports how many.
    #[arg(long, default_value = "error", value_name = "error|zero")]
    pub missing_cost: MissingCost,

    /// Leave these models out entirely (comma-separated names as in `records`).
    #[arg(long, value_delimiter = ',', value_name = "MODEL,...")]
    pub exclude_models: Vec<String>,

    /// Leave these datasets out (comma-separated), as `--exclusion` says.
    #[arg(long, value_delimiter = ',', value_name = "DATASET,...")]
    pub exclude_datasets: Vec<String>,

    /// `hard`: excluded datasets are dropped; `soft`: they train but are never tested on.
    #[arg(long, default_value = "hard", value_name = "hard|soft")]
    pub exclusion: Exclusion,

    /// Share of each dataset used for training when the records have no `split` field.
    #[arg(long, default_value_t = 0.7)]
    pub train_ratio: f64,
}

impl RecordsArgs {
    /// Reads, validates and applies `--exclude-models`.
    pub fn read(&self) -> Result<RoutingData> {
        let mut data = RoutingData::read(&self.data, self.missing_cost)?;
        if data.missing_costs > 0 {
            tracing::warn!(
                "{}: {} evaluated answers have no cost; counted as $0 (--missing-cost zero)",
                self.data.display(),
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
#[derive(Args, Debug, Clone)]
pub struct KMeansArgs {
    /// Number of k-means clusters (the paper uses 60).
    #[arg(long, default_value_t = 60)]
    pub clusters: usize,

    /// k-means restarts from fresh k-means++ seeds; the lowest inertia wins.
    #[arg(long, default_value_t = 10)]
    pub n_init: usize,

    /// Lloyd iterations per restart at most.
    #[arg(long, default_value_t = 300)]
    pub max_iter: usize,

    /// Convergence: centroid shift below tol × mean feature variance (scikit-learn's rule).
    #[arg(long, default_value_t = 1e-4)]
    pub tol: f64,

    /// Bagging: train B k-means solutions from different seeds and average their votes
    /// (1 is the paper's router; 3 was chosen by cross-validation, see docs/EVALUATION.md).
    #[arg(long, default_value_t = kroute::router::RECOMMENDED_BAG, value_name = "B")]
    pub bag: usize,
}

impl KMeansArgs {
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
#[derive(Args, Debug, Clone, Default)]
pub struct RoutingArgs {
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

impl RoutingArgs {
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

/// Accuracy/cost targets for picking α on a validation set.
#[derive(Args, Debug, Clone, Default)]
pub struct TargetArgs {
    /// Pick the cheapest α whose validation accuracy (mean over datasets) is at least this.
    #[arg(long, conflicts_with = "target_cost")]
    pub target_accuracy: Option<f64>,

    /// Pick the most accurate α whose validation cost per query is at most this many dollars.
    #[arg(long)]
    pub target_cost: Option<f64>,

    /// Share of each dataset's training rows held out to pick α on.
    #[arg(long, default_value_t = 0.2)]
    pub validation_ratio: f64,
}

impl TargetArgs {
    pub fn target(&self) -> Option<kroute::eval::Target> {
        use kroute::eval::Target;
        self.target_accuracy
            .map(Target::Accuracy)
            .or(self.target_cost.map(Target::CostPerQuery))
    }
}

/// The settings `kroute tune` (and `kroute train --auto`) tries, and how.
#[derive(Args, Debug, Clone)]
pub struct TuneArgs {
    /// Cross-validation folds of the training rows.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,

    /// Cluster counts to try (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "20,40,60,80",
        value_name = "K,..."
    )]
    pub clusters_grid: Vec<usize>,

    /// Top-p values to try.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2,4,8",
        value_name = "P,..."
    )]
    pub top_p_grid: Vec<usize>,

    /// β values to try.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "3,9,27",
        value_name = "B,..."
    )]
    pub beta_grid: Vec<f64>,

    /// Prior strengths to try (0: the paper's estimator).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,5,20,50",
        value_name = "M,..."
    )]
    pub prior_strength_grid: Vec<f64>,

    /// Bag sizes to try (1: the paper's router).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,3,5",
        value_name = "B,..."
    )]
    pub bag_grid: Vec<usize>,

    /// k-means restarts per fit while tuning.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub tune_n_init: usize,
}

impl TuneArgs {
    /// The tuning configuration over `alphas`, seeded by `seed`.
    pub fn config(
        &self,
        seed: u64,
        alphas: Vec<f64>,
        scoring: Scoring,
    ) -> kroute::eval::TuneConfig {
        kroute::eval::TuneConfig {
            grid: kroute::eval::TuneGrid {
                clusters: self.clusters_grid.clone(),
                top_p: self.top_p_grid.clone(),
                beta: self.beta_grid.clone(),
                prior_strength: self.prior_strength_grid.clone(),
                bag: self.bag_grid.clone(),
            },
            folds: self.folds,
            seed,
            alphas,
            kmeans: KMeansConfig {
                n_init: self.tune_n_init,
                ..Default::default()
            },
            scoring,
        }
    }
}

/// How outcomes are taken in (`kroute serve`, `kroute update`).
#[derive(Args, Debug, Clone, Default)]
pub struct FeedbackArgs {
    /// Forget with this half-life, in observations per cell: each outcome first discounts
    /// what its cluster × model cell knew (training answers included) by 2^(−w/N), so that a
    /// model whose quality changed is followed [default: never forget].
    #[arg(long, value_name = "N", env = "KROUTE_FEEDBACK_HALF_LIFE")]
    pub feedback_half_life: Option<f64>,
}

/// A duration such as `500ms`, `30s`, `5m`, `2h` or `7d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (e.g. 30s, 5m, 7d)"))
}
