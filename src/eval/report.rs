//! The evaluation report: the paper's table (single models, oracle, router per α; columns per
//! dataset, average accuracy, cost), headline lines computed from the sweep, selection shares.
//!
//! Rules for the headlines, applied to the mean over seeds and to the swept α values only (no
//! interpolation between them):
//! - the best single model is the one with the highest average accuracy (cheaper wins a tie);
//! - "matches it" = the cheapest α whose average accuracy is ≥ the best single model's;
//! - "reaches 90 % of it" = the cheapest α whose average accuracy is ≥ 0.9 × the best single's;
//! - the best router point has the highest average accuracy (the cheaper α wins a tie);
//! - a single model is dominated when some α has accuracy ≥ and cost ≤ its own, one strictly;
//! - the share of the oracle gap closed is (best router − best single) / (oracle − best single);
//! - along the whole curve (`curve.rs`), per seed then averaged: the area under each frontier
//!   with costs relative to the best single model's, and the share of the single models' →
//!   oracle area the router's frontier adds.

use std::path::Path;

use serde::Serialize;

use super::{write_plots, Evaluation, PolicyMetrics};
use crate::error::Result;
use crate::io::StagedDir;

/// The machine-readable report; its presence marks a directory as a kroute report.
pub const REPORT_FILE: &str = "report.json";

/// Mean and sample standard deviation over seeds (0 with one seed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
}

impl Stat {
    pub(crate) fn of(values: impl Iterator<Item = f64>) -> Self {
        let values: Vec<f64> = values.collect();
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Self {
            mean,
            std: var.sqrt(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    Single,
    Oracle,
    Router,
}

/// One line of the table, averaged over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub label: String,
    pub kind: RowKind,
    pub alpha: Option<f64>,
    pub accuracy_by_dataset: Vec<Stat>,
    pub average_accuracy: Stat,
    /// Dollars over the test set.
    pub cost: Stat,
    pub cost_per_query: Stat,
    /// Mean seconds per answer, where the records have latencies.
    pub latency_per_query: Option<Stat>,
    /// Mean share of test queries sent to each model.
    pub selection: Vec<f64>,
}

impl Row {
    fn new(label: String, kind: RowKind, alpha: Option<f64>, runs: &[&PolicyMetrics]) -> Self {
        let stat = |f: &dyn Fn(&PolicyMetrics) -> f64| Stat::of(runs.iter().map(|r| f(r)));
        let datasets = runs[0].accuracy_by_dataset.len();
        let models = runs[0].selection.len();
        Self {
            label,
            kind,
            alpha,
            accuracy_by_dataset: (0..datasets)
                .map(|d| stat(&|r| r.accuracy_by_dataset[d]))
                .collect(),
            average_accuracy: stat(&|r| r.average_accuracy),
            cost: stat(&|r| r.cost),
            cost_per_query: stat(&|r| r.cost_per_query),
            latency_per_query: runs
                .iter()
                .map(|r| r.latency_per_query)
                .collect::<Option<Vec<f64>>>()
                .map(|seconds| Stat::of(seconds.into_iter())),
            selection: (0..models)
                .map(|m| stat(&|r| r.selection[m]).mean)
                .collect(),
        }
    }

    fn accuracy(&self) -> f64 {
        self.average_accuracy.mean
    }

    fn cost(&self) -> f64 {
        self.cost.mean
    }
}

/// A router point quoted in a headline.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub alpha: f64,
    pub accuracy: f64,
    pub cost: f64,
    /// 1 − cost / the best single model's cost.
    pub cost_saving: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Headlines {
    pub best_single: String,
    pub best_single_accuracy: f64,
    pub best_single_cost: f64,
    pub matches_best_single: Option<Point>,
    pub reaches_90_percent: Option<Point>,
    pub best_router: Point,
    /// Best router accuracy − best single accuracy, in points (×100).
    pub accuracy_gain_points: f64,
    pub oracle_accuracy: f64,
    /// Share of the gap from the best single model to the oracle that the best router point
    /// closes; none when the oracle is no better than the best single model.
    pub oracle_gap_closed: Option<f64>,
    /// Single models some α beats on both axes.
    pub dominated: Vec<String>,
    /// The above as sentences.
    pub lines: Vec<String>,
}

/// The whole-curve metric over seeds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CurveSummary {
    pub router: Stat,
    pub singles: Stat,
    pub oracle: Stat,
    /// Share of the singles → oracle area the router adds; none when the oracle is no better.
    pub gap_closed: Option<Stat>,
}

impl CurveSummary {
    fn of(runs: &[super::SeedRun]) -> Self {
        let stat = |f: fn(&super::CurveAreas) -> f64| Stat::of(runs.iter().map(|r| f(&r.curve)));
        let closed: Option<Vec<f64>> = runs.iter().map(|r| r.curve.gap_closed()).collect();
        Self {
            router: stat(|c| c.router),
            singles: stat(|c| c.singles),
            oracle: stat(|c| c.oracle),
            gap_closed: closed.map(|c| Stat::of(c.into_iter())),
        }
    }

    fn line(&self) -> String {
        let mut line = format!(
            "Whole curve (area under the accuracy–cost frontier, costs relative to the best single model's, up to its cost): router {:.4}, single models {:.4}, oracle {:.4}",
            self.router.mean, self.singles.mean, self.oracle.mean
        );
        if let Some(closed) = self.gap_closed {
            line += &format!(
                "; the router closes {:.1} % of the single models' gap to the oracle",
                100.0 * closed.mean
            );
        }
        line + "."
    }
}

/// Everything an evaluation produced, ready to write.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub models: Vec<String>,
    pub datasets: Vec<String>,
    pub seeds: Vec<u64>,
    pub alphas: Vec<f64>,
    pub rows: Vec<Row>,
    pub headlines: Headlines,
    pub curve: CurveSummary,
    pub runs: Evaluation,
}

impl Report {
    pub fn new(evaluation: Evaluation) -> Self {
        let runs = &evaluation.runs;
        let mut rows: Vec<Row> = evaluation
            .models
            .iter()
            .enumerate()
            .map(|(m, name)| {
                let points: Vec<_> = runs.iter().map(|r| &r.singles[m]).collect();
                Row::new(name.clone(), RowKind::Single, None, &points)
            })
            .collect();
        let oracle: Vec<_> = runs.iter().map(|r| &r.oracle).collect();
        rows.push(Row::new("oracle".into(), RowKind::Oracle, None, &oracle));
        for (a, &alpha) in evaluation.alphas.iter().enumerate() {
            let points: Vec<_> = runs.iter().map(|r| &r.router[a]).collect();
            rows.push(Row::new(
                format!("router α={alpha:.2}"),
                RowKind::Router,
                Some(alpha),
                &points,
            ));
        }
        let curve = CurveSummary::of(runs);
        let mut headlines = headlines(&rows, runs.len());
        headlines.lines.push(curve.line());
        Self {
            models: evaluation.models.clone(),
            datasets: evaluation.datasets.clone(),
            seeds: runs.iter().map(|r| r.seed).collect(),
            alphas: evaluation.alphas.clone(),
            rows,
            headlines,
            curve,
            runs: evaluation,
        }
    }

    pub fn rows_of(&self, kind: RowKind) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(move |r| r.kind == kind)
    }

    /// Writes the report directory (`report.md`, `report.json` and, with `plots`, the figures)
    /// under a temporary name and renames it into place when complete.
    pub fn write(&self, dir: &Path, plots: bool) -> Result<()> {
        let staged = StagedDir::create(dir, REPORT_FILE, "kroute report directory")?;
        staged.write("report.md", self.markdown().as_bytes())?;
        let json = serde_json::to_string_pretty(self).expect("report serialises");
        staged.write(REPORT_FILE, (json + "\n").as_bytes())?;
        if plots {
            write_plots(self, &staged.path(""))?;
        }
        staged.commit()
    }

    /// `report.md`: headlines, the table, selection shares.
    pub fn markdown(&self) -> String {
        let with_std = self.seeds.len() > 1;
        let acc = |s: &Stat| {
            if with_std {
                format!("{:.3} ± {:.3}", s.mean, s.std)
            } else {
                format!("{:.3}", s.mean)
            }
        };
        let dollars = |s: &Stat| {
            if with_std {
                format!("${:.2} ± {:.2}", s.mean, s.std)
            } else {
                format!("${:.2}", s.mean)
            }
        };
        let mut md = String::from("# kroute evaluation\n\n");
        let runs = &self.runs.runs;
        md += &format!(
            "Evaluated on the {} split: {} queries (training: {}); seeds: {}; α: {} values from {} to {}.\n\n",
            self.runs.holdout,
            runs[0].test_queries,
            runs[0].train_queries,
            self.seeds
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            self.alphas.len(),
            self.alphas.first().copied().unwrap_or_default(),
            self.alphas.last().copied().unwrap_or_default(),
        );
        for line in &self.headlines.lines {
            md += &format!("- {line}\n");
        }
        let timed = self.rows.iter().all(|r| r.latency_per_query.is_some());
        md += "\nAccuracy per dataset is the mean score of the chosen model; **Avg. A** is the mean over datasets; **Cost** is the dollars of the chosen models over the test set.";
        if timed {
            md += " **Latency** is the mean seconds per answer (`usages.<model>.latency_s`).";
        }
        if with_std {
            md += " Values are mean ± standard deviation over the seeds.";
        }
        md += "\n\n| Setting | ";
        md += &self.datasets.join(" | ");
        md += " | Avg. A | Cost |";
        md += if timed {
            " Latency |\n|---|"
        } else {
            "\n|---|"
        };
        md += &"---:|".repeat(self.datasets.len() + 2 + usize::from(timed));
        md += "\n";
        for row in &self.rows {
            let label = match row.kind {
                RowKind::Router => format!("**{}**", row.label),
                _ => row.label.clone(),
            };
            let cells: Vec<String> = row.accuracy_by_dataset.iter().map(acc).collect();
            md += &format!(
                "| {label} | {} | {} | {} |",
                cells.join(" | "),
                acc(&row.average_accuracy),
                dollars(&row.cost)
            );
            if let (true, Some(latency)) = (timed, &row.latency_per_query) {
                md += &format!(" {:.2} s |", latency.mean);
            }
            md += "\n";
        }
        md += "\n## Models chosen by the router (share of test queries)\n\n| α | ";
        let used: Vec<usize> = (0..self.models.len())
            .filter(|&m| self.rows_of(RowKind::Router).any(|r| r.selection[m] > 0.0))
            .collect();
        md += &used
            .iter()
            .map(|&m| self.models[m].as_str())
            .collect::<Vec<_>>()
            .join(" | ");
        md += " |\n|---:|";
        md += &"---:|".repeat(used.len());
        md += "\n";
        for row in self.rows_of(RowKind::Router) {
            let cells: Vec<String> = used
                .iter()
                .map(|&m| format!("{:.1} %", 100.0 * row.selection[m]))
                .collect();
            md += &format!(
                "| {:.2} | {} |\n",
                row.alpha.unwrap_or_default(),
                cells.join(" | ")
            );
        }
        md +=
            "\nPlots: `accuracy_vs_cost`, `alpha_sweep`, `selection_share` (`.svg` and `.png`).\n";
        md
    }
}

/// The row with the highest average accuracy; the cheaper one among equals.
fn most_accurate<'a>(rows: &[&'a Row]) -> Option<&'a Row> {
    rows.iter().copied().reduce(|best, row| {
        let better = row.accuracy() > best.accuracy()
            || (row.accuracy() == best.accuracy() && row.cost() < best.cost());
        if better {
            row
        } else {
            best
        }
    })
}

fn headlines(rows: &[Row], seeds: usize) -> Headlines {
    let singles: Vec<&Row> = rows.iter().filter(|r| r.kind == RowKind::Single).collect();
    let routers: Vec<&Row> = rows.iter().filter(|r| r.kind == RowKind::Router).collect();
    let oracle = rows
        .iter()
        .find(|r| r.kind == RowKind::Oracle)
        .expect("oracle row");
    let best = most_accurate(&singles).expect("at least one model");
    let point = |r: &Row| Point {
        alpha: r.alpha.unwrap_or_default(),
        accuracy: r.accuracy(),
        cost: r.cost(),
        cost_saving: if best.cost() > 0.0 {
            1.0 - r.cost() / best.cost()
        } else {
            0.0
        },
    };
    let cheapest_reaching = |level: f64| {
        routers
            .iter()
            .filter(|r| r.accuracy() >= level)
            .min_by(|a, b| a.cost().total_cmp(&b.cost()))
            .map(|r| point(r))
    };
    let matches = cheapest_reaching(best.accuracy());
    let ninety = cheapest_reaching(0.9 * best.accuracy());
    let top = most_accurate(&routers).expect("at least one α");
    let top = point(top);
    let gain = 100.0 * (top.accuracy - best.accuracy());
    let gap = oracle.accuracy() - best.accuracy();
    let gap_closed = (gap > 0.0).then(|| (top.accuracy - best.accuracy()) / gap);
    let dominated: Vec<String> = singles
        .iter()
        .filter(|s| {
            routers.iter().any(|r| {
                r.accuracy() >= s.accuracy()
                    && r.cost() <= s.cost()
                    && (r.accuracy() > s.accuracy() || r.cost() < s.cost())
            })
        })
        .map(|s| s.label.clone())
        .collect();

    let of_seeds = if seeds > 1 {
        format!(" (means over {seeds} seeds)")
    } else {
        String::new()
    };
    let mut lines = vec![format!(
        "Best single model: {} with average accuracy {:.3} at ${:.2}{of_seeds}.",
        best.label,
        best.accuracy(),
        best.cost()
    )];
    match &matches {
        Some(p) => lines.push(format!(
            "α={:.2} matches the best single model ({}, {:.3}) at {:+.0} % cost: accuracy {:.3} for ${:.2}.",
            p.alpha, best.label, best.accuracy(), -100.0 * p.cost_saving, p.accuracy, p.cost
        )),
        None => lines.push(format!(
            "No α reaches the best single model's accuracy ({:.3}); the best router point is {:.3} at α={:.2}.",
            best.accuracy(), top.accuracy, top.alpha
        )),
    }
    if let Some(p) = &ninety {
        lines.push(format!(
            "α={:.2} reaches 90 % of its accuracy ({:.3} ≥ {:.3}) at {:+.0} % cost (${:.2}).",
            p.alpha,
            p.accuracy,
            0.9 * best.accuracy(),
            -100.0 * p.cost_saving,
            p.cost
        ));
    }
    lines.push(format!(
        "Best router accuracy {:.3} at α={:.2} ({:+.1} pts over {}), cost ${:.2} ({:+.0} %).",
        top.accuracy,
        top.alpha,
        gain,
        best.label,
        top.cost,
        -100.0 * top.cost_saving
    ));
    match gap_closed {
        Some(closed) if closed > 0.0 => lines.push(format!(
            "It closes {:.0} % of the gap from the best single model ({:.3}) to the oracle ({:.3}).",
            100.0 * closed,
            best.accuracy(),
            oracle.accuracy()
        )),
        Some(_) => lines.push(format!(
            "No router point is more accurate than the best single model, so none of the gap to the oracle ({:.3}) is closed.",
            oracle.accuracy()
        )),
        None => {}
    }
    lines.push(if dominated.is_empty() {
        "No single model is dominated by a router point.".to_string()
    } else {
        format!(
            "Router points dominate (as accurate or more, for as little or less) {} of {} single models: {}.",
            dominated.len(),
            singles.len(),
            dominated.join(", ")
        )
    });
    Headlines {
        best_single: best.label.clone(),
        best_single_accuracy: best.accuracy(),
        best_single_cost: best.cost(),
        matches_best_single: matches,
        reaches_90_percent: ninety,
        best_router: top,
        accuracy_gain_points: gain,
        oracle_accuracy: oracle.accuracy(),
        oracle_gap_closed: gap_closed,
        dominated,
        lines,
    }
}
