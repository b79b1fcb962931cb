//! Flag groups of the command line alone (the groups the Python package shares are in
//! `kroute::settings`).

use std::path::PathBuf;

use clap::Args;
use kroute::cluster::KMeansConfig;
use kroute::eval::alpha_grid;
use kroute::records::RoutingData;
use kroute::router::Scoring;
use kroute::settings::RecordsSettings;
use kroute::Result;

/// A routing-records file and how to read and split it.
#[derive(Args, Debug, Clone)]
pub struct RecordsArgs {
    /// Routing records: `.jsonl` or `.jsonl.gz`, one query per line with `records` (model →
    /// score in [0, 1], true/false, or null = not evaluated) and `usages` (model → {"cost": $}).
    pub data: PathBuf,

    #[command(flatten)]
    pub settings: RecordsSettings,
}

impl RecordsArgs {
    /// Reads, validates and applies `--exclude-models`.
    pub fn read(&self) -> Result<RoutingData> {
        self.settings.read(&self.data)
    }
}

/// The α values of a sweep.
#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// α values to sweep: the points of each frontier, or the candidates to choose from
    /// (comma-separated) [default: 0, 0.05, …, 1].
    #[arg(long, value_delimiter = ',')]
    pub alphas: Vec<f64>,
}

impl SweepArgs {
    pub fn grid(&self) -> Vec<f64> {
        alpha_grid(&self.alphas)
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

/// Where a long command's one-line JSON summary goes, and whether it shows progress.
#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Write the one-line JSON summary to this file instead of stderr.
    #[arg(long)]
    pub summary: Option<PathBuf>,

    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

impl ReportArgs {
    /// Writes `summary` where `--summary` says (atomically), else on stderr.
    pub fn emit(&self, summary: &serde_json::Value) -> Result<()> {
        super::emit_summary(summary, self.summary.as_deref())
    }
}
