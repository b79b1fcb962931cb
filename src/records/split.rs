//! Train/test splits: the file's `split` field when it has one, else a seeded shuffle within
//! each dataset (so every dataset keeps its share on both sides), plus dataset exclusions.

use std::str::FromStr;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::RoutingData;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

impl FromStr for Split {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            _ => Err(()),
        }
    }
}

/// What `--exclude-datasets` does with the named datasets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exclusion {
    /// Left out of training and testing.
    #[default]
    Hard,
    /// Used for training only, never tested on.
    Soft,
}

impl FromStr for Exclusion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hard" => Ok(Exclusion::Hard),
            "soft" => Ok(Exclusion::Soft),
            _ => Err(format!("`{s}`: expected hard or soft")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitOptions {
    /// Share of each dataset that trains, when the file has no `split` field.
    pub train_ratio: f64,
    pub seed: u64,
    pub exclude_datasets: Vec<String>,
    pub exclusion: Exclusion,
}

impl Default for SplitOptions {
    fn default() -> Self {
        Self {
            train_ratio: 0.7,
            seed: 42,
            exclude_datasets: Vec::new(),
            exclusion: Exclusion::Hard,
        }
    }
}

/// Record positions on each side of a split, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrainTest {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

impl RoutingData {
    /// Whether the records carry their own `split` field (then `train_ratio` and `seed` are
    /// not used).
    pub fn has_split_field(&self) -> bool {
        self.records.first().is_some_and(|r| r.split.is_some())
    }

    pub fn split(&self, options: &SplitOptions) -> Result<TrainTest> {
        if !(options.train_ratio > 0.0 && options.train_ratio <= 1.0) {
            return Err(Error::Invalid(format!(
                "--train-ratio must be in (0, 1], got {}",
                options.train_ratio
            )));
        }
        let datasets = self.datasets();
        for name in &options.exclude_datasets {
            if !datasets.contains(name) {
                return Err(Error::Invalid(format!(
                    "--exclude-datasets: no dataset `{name}` in {} (datasets: {})",
                    self.path.display(),
                    datasets.join(", ")
                )));
            }
        }
        let mut sides = TrainTest::default();
        for dataset in &datasets {
            let rows: Vec<usize> = (0..self.records.len())
                .filter(|&i| &self.records[i].dataset == dataset)
                .collect();
            if options.exclude_datasets.contains(dataset) {
                if options.exclusion == Exclusion::Soft {
                    sides.train.extend(rows);
                }
                continue;
            }
            if self.has_split_field() {
                for i in rows {
                    match self.records[i].split {
                        Some(Split::Test) => sides.test.push(i),
                        _ => sides.train.push(i),
                    }
                }
            } else {
                let (train, test) = seeded_split(rows, dataset, options);
                sides.train.extend(train);
                sides.test.extend(test);
            }
        }
        sides.train.sort_unstable();
        sides.test.sort_unstable();
        if sides.train.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no training records left after the split and exclusions",
                self.path.display()
            )));
        }
        Ok(sides)
    }
}

impl RoutingData {
    /// `k` folds of `rows` for cross-validation: each dataset's rows shuffled (seeded as in
    /// [`RoutingData::split`]) and dealt out in turn, so every fold holds each dataset in
    /// proportion. Each fold is sorted.
    pub fn folds(&self, rows: &[usize], k: usize, seed: u64) -> Vec<Vec<usize>> {
        let k = k.max(1);
        let mut folds = vec![Vec::new(); k];
        let mut next = 0;
        for dataset in self.datasets() {
            let mut of_dataset: Vec<usize> = rows
                .iter()
                .copied()
                .filter(|&i| self.records[i].dataset == dataset)
                .collect();
            shuffle(&mut of_dataset, &dataset, seed);
            for row in of_dataset {
                folds[next % k].push(row);
                next += 1;
            }
        }
        folds.iter_mut().for_each(|f| f.sort_unstable());
        folds
    }

    /// Splits `rows` again, per dataset, with the same seeded shuffle as [`RoutingData::split`]:
    /// `keep_ratio` of each dataset's rows go to `train` (e.g. to carve a validation set out of
    /// a training set).
    pub fn carve(&self, rows: &[usize], keep_ratio: f64, seed: u64) -> TrainTest {
        let options = SplitOptions {
            train_ratio: keep_ratio,
            seed,
            ..Default::default()
        };
        let mut sides = TrainTest::default();
        for dataset in self.datasets() {
            let of_dataset: Vec<usize> = rows
                .iter()
                .copied()
                .filter(|&i| self.records[i].dataset == dataset)
                .collect();
            let (train, test) = seeded_split(of_dataset, &dataset, &options);
            sides.train.extend(train);
            sides.test.extend(test);
        }
        sides.train.sort_unstable();
        sides.test.sort_unstable();
        sides
    }
}

/// The first ⌊ratio·n⌋ rows of a shuffle seeded by `seed` and the dataset's name, so one
/// dataset's split does not change when other datasets are added or removed.
fn seeded_split(
    mut rows: Vec<usize>,
    dataset: &str,
    options: &SplitOptions,
) -> (Vec<usize>, Vec<usize>) {
    shuffle(&mut rows, dataset, options.seed);
    let n_train = (options.train_ratio * rows.len() as f64).floor() as usize;
    let test = rows.split_off(n_train);
    (rows, test)
}

/// A shuffle seeded by `seed` and the dataset's name.
fn shuffle(rows: &mut [usize], dataset: &str, seed: u64) {
    let digest = Sha256::digest(dataset.as_bytes());
    let name_seed = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    let mut rng = StdRng::seed_from_u64(seed ^ name_seed);
    rows.shuffle(&mut rng);
}
