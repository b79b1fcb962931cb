//! k-means as tensor ops on the embedding device: k-means++ seeding (greedy, as scikit-learn
//! does it), Lloyd iterations with distances from one matmul per tile (a fused kernel on
//! CUDA), centroid updates by segment sums, restarts keeping the lowest inertia. Large inputs
//! are first clustered on a random sample (as faiss does) and then refined on every point.

use candle_core::{DType, Device, Tensor, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::kernels;

#[derive(Debug, Clone)]
pub struct KMeansConfig {
    pub k: usize,
    /// Restarts from fresh seeds; the lowest inertia wins.
    pub n_init: usize,
    pub max_iter: usize,
    /// Stop when the squared centroid shift falls below `tol × mean feature variance`
    /// (scikit-learn's rule).
    pub tol: f64,
    /// Also stop when an iteration lowers the inertia by less than this fraction: past that,
    /// Lloyd only trades labels back and forth at the level of f32 rounding.
    pub min_improvement: f64,
    pub seed: u64,
    /// Rows per distance tile: bounds device memory at `tile_rows × k` floats.
    pub tile_rows: usize,
    /// With more than `k × sample_per_cluster` points, each restart iterates on a random sample
    /// of that many points first and then refines on all of them, which needs far fewer full
    /// passes; k-means++ seeds from `k × 64` random points. 0: every step uses every point.
    pub sample_per_cluster: usize,
}

impl Default for KMeansConfig {
    fn default() -> Self {
        Self {
            k: 60,
            n_init: 10,
            max_iter: 300,
            tol: 1e-4,
            min_improvement: 1e-5,
            seed: 42,
            tile_rows: 65_536,
            sample_per_cluster: 256,
        }
    }
}

impl KMeansConfig {
    /// This configuration for `points` training queries, refusing a `k` they cannot fill.
    pub fn for_points(self, points: usize) -> Result<Self> {
        if self.k == 0 || self.k > points {
            return Err(Error::Invalid(format!(
                "--clusters must be between 1 and the {points} training queries, got {}",
                self.k
            )));
        }
        Ok(self)
    }

    /// Restarts a fit runs: `n_init`, and at least one.
    pub fn restarts(&self) -> usize {
        self.n_init.max(1)
    }

    /// The seed of restart `run`: restarts of one fit start from consecutive seeds.
    fn restart_seed(&self, run: usize) -> u64 {
        self.seed.wrapping_add(run as u64)
    }

    /// How many restarts a fit seeded `other` shares with this one (same seeds, so the same
    /// starting centroids on the same points): fits whose seeds lie closer than `n_init` end in
    /// nearly the same clustering.
    pub fn shared_restarts(&self, other: u64) -> usize {
        (self.restarts() as u64).saturating_sub(self.seed.abs_diff(other)) as usize
    }
}

/// A fitted clustering.
#[derive(Debug, Clone)]
pub struct KMeans {
    /// `(k, dim)` f32 on the input's device.
    pub centroids: Tensor,
    /// Cluster of each input row.
    pub labels: Vec<u32>,
    /// Sum of squared distances from each row to its centroid.
    pub inertia: f64,
    /// Lloyd iterations of the winning restart.
    pub iterations: usize,
}

impl KMeans {
    /// Clusters the rows of `x` (`(n, dim)`, any float dtype; computed in f32).
    pub fn fit(x: &Tensor, config: &KMeansConfig) -> Result<Self> {
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let (n, _) = x.dims2()?;
        if n == 0 || config.k == 0 {
            return Err(Error::Invalid(format!(
                "k-means needs at least one point and one cluster (got {n} points, k = {})",
                config.k
            )));
        }
        let data = Data::new(&x, config.tile_rows)?;
        let stop = Stop::new(config, &data)?;
        let mut best: Option<KMeans> = None;
        for run in 0..config.restarts() {
            let mut rng = StdRng::seed_from_u64(config.restart_seed(run));
            let start = if config.sample_per_cluster == 0 {
                data.kmeans_plus_plus(config.k, &mut rng)?
            } else {
                // k-means++ reads every point once per centre; a random `k × 64` of them give
                // seeds that Lloyd turns into as good a clustering (docs/BENCHMARKS.md).
                let sample_size = config.k.saturating_mul(config.sample_per_cluster);
                let seed_size = config.k.saturating_mul(SEED_POINTS_PER_CLUSTER);
                let rows = random_rows(&mut rng, data.n(), sample_size.max(seed_size));
                let seeder = data.select(&Tensor::new(
                    &rows[..seed_size.min(rows.len())],
                    data.device(),
                )?)?;
                let seeds = seeder.kmeans_plus_plus(config.k, &mut rng)?;
                if rows.len() < data.n() {
                    data.select(&Tensor::new(rows, data.device())?)?
                        .lloyd(seeds, &stop)?
                        .centroids
                } else {
                    seeds
                }
            };
            let fitted = data.lloyd(start, &stop)?;
            if best.as_ref().is_none_or(|b| fitted.inertia < b.inertia) {
                best = Some(fitted);
            }
        }
        Ok(best.expect("n_init ≥ 1"))
    }

    /// Lloyd iterations on all of `x` from the given `(k, dim)` centroids (no seeding, no
    /// sampling, no restarts): for warm starts and for timing iterations.
    pub fn refine(x: &Tensor, centroids: Tensor, config: &KMeansConfig) -> Result<Self> {
        let data = Data::new(&x.to_dtype(DType::F32)?, config.tile_rows)?;
        let stop = Stop::new(config, &data)?;
        data.lloyd(centroids.to_dtype(DType::F32)?, &stop)
    }

    /// Assigns rows of `x` to the nearest centroid; returns labels and squared distances.
    pub fn predict(&self, x: &Tensor) -> Result<(Vec<u32>, Vec<f32>)> {
        nearest_centroids(x, &self.centroids)
    }
}

/// Each row of `x`'s nearest row of `centroids` `(k, dim)` by Euclidean distance (as k-means
/// assigns them), and the squared distance to it.
pub fn nearest_centroids(x: &Tensor, centroids: &Tensor) -> Result<(Vec<u32>, Vec<f32>)> {
    let x = x.to_device(centroids.device())?.to_dtype(DType::F32)?;
    let data = Data::new(&x, usize::MAX)?;
    let (labels, distances) = data.assign(&centroids.to_dtype(DType::F32)?)?;
    Ok((labels.to_vec1()?, distances.to_vec1()?))
}

const SEED_POINTS_PER_CLUSTER: usize = 64;

/// `count` distinct rows of `0..n` in random order (all of them, shuffled, if `count ≥ n`).
fn random_rows(rng: &mut StdRng, n: usize, count: usize) -> Vec<u32> {
    rand::seq::index::sample(rng, n, count.min(n))
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

/// When Lloyd iterations end; `tol` is absolute here (scaled by the data's variance).
struct Stop {
    max_iter: usize,
    tol: f64,
    min_improvement: f64,
}

impl Stop {
    fn new(config: &KMeansConfig, data: &Data) -> Result<Self> {
        Ok(Self {
            max_iter: config.max_iter,
            tol: config.tol * data.mean_variance()?,
            min_improvement: config.min_improvement,
        })
    }
}

/// The points, each with a 1 appended so that one matmul against `[−2c | ‖c‖²]` yields
/// `‖c‖² − 2x·c` (the squared distance less the row's constant ‖x‖²), and their squared norms.
struct Data {
    x_aug: Tensor,
    sq_norms: Tensor,
    dim: usize,
    tile_rows: usize,
}

impl Data {
    fn new(x: &Tensor, tile_rows: usize) -> Result<Self> {
        let (n, dim) = x.dims2()?;
        let ones = Tensor::ones((n, 1), DType::F32, x.device())?;
        Ok(Self {
            x_aug: Tensor::cat(&[x, &ones], 1)?,
            sq_norms: x.sqr()?.sum(1)?,
            dim,
            tile_rows: tile_rows.max(1),
        })
    }

    /// The rows `index` of the data, as a new data set.
    fn select(&self, index: &Tensor) -> Result<Self> {
        Ok(Self {
            x_aug: self.x_aug.index_select(index, 0)?,
            sq_norms: self.sq_norms.index_select(index, 0)?,
            dim: self.dim,
            tile_rows: self.tile_rows,
        })
    }

    fn n(&self) -> usize {
        self.x_aug.dim(0).unwrap_or(0)
    }

    fn device(&self) -> &Device {
        self.x_aug.device()
    }

    fn points(&self) -> Result<Tensor> {
        Ok(self.x_aug.narrow(1, 0, self.dim)?)
    }

    /// Mean over features of the per-feature variance, as `(E‖x‖² − ‖E x‖²) / dim`: one pass
    /// for the mean instead of materialising `x − mean`.
    fn mean_variance(&self) -> Result<f64> {
        let scalar = |t: Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
        let mean = self.points()?.mean(0)?;
        let mean_sq_norm = scalar(self.sq_norms.mean_all()?)?;
        let sq_norm_of_mean = scalar(mean.sqr()?.sum_all()?)?;
        Ok(((mean_sq_norm - sq_norm_of_mean) / self.dim as f64).max(0.0))
    }

    /// `[−2c | ‖c‖²]`, the right-hand side of the distance matmul.
    fn augment(centroids: &Tensor) -> Result<Tensor> {
        let c_sq = centroids.sqr()?.sum_keepdim(1)?;
        Ok(Tensor::cat(&[&centroids.affine(-2.0, 0.0)?, &c_sq], 1)?)
    }

    /// Nearest centroid and its squared distance for every row. On CUDA the fused kernel keeps
    /// the `(rows, k)` scores in registers. Elsewhere tile by tile: one matmul, an argmin and a
    /// gather per tile, so the scores never exist for all rows at once; on CPU that beats the
    /// kernel's CPU version, which has no matmul's cache blocking (docs/BENCHMARKS.md).
    fn assign(&self, centroids: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.device().is_cuda() && kernels::active(self.device()) {
            let nearest = kernels::nearest_centroid(&self.points()?, &self.sq_norms, centroids)?;
            return Ok((nearest.labels, nearest.distances));
        }
        let rhs = Self::augment(centroids)?.t()?;
        let (mut labels, mut distances) = (Vec::new(), Vec::new());
        for start in (0..self.n()).step_by(self.tile_rows) {
            let len = self.tile_rows.min(self.n() - start);
            let scores = self.x_aug.narrow(0, start, len)?.matmul(&rhs)?;
            let nearest = scores.argmin_keepdim(D::Minus1)?;
            let distance = (scores.gather(&nearest, 1)?.squeeze(1)?
                + self.sq_norms.narrow(0, start, len)?)?
            .relu()?;
            labels.push(nearest.squeeze(1)?);
            distances.push(distance);
        }
        Ok((Tensor::cat(&labels, 0)?, Tensor::cat(&distances, 0)?))
    }

    /// Squared distances `(n, rows.len())` of every point to the points `rows`.
    fn distances_to_rows(&self, rows: &[u32]) -> Result<Tensor> {
        let index = Tensor::new(rows, self.device())?;
        let points = self.x_aug.index_select(&index, 0)?.narrow(1, 0, self.dim)?;
        let scores = self.x_aug.matmul(&Self::augment(&points)?.t()?)?;
        Ok(scores.broadcast_add(&self.sq_norms.unsqueeze(1)?)?.relu()?)
    }

    /// Greedy k-means++: each new centre is the best of `2 + ln k` candidates drawn with
    /// probability proportional to the squared distance to the nearest chosen centre. The
    /// candidates of one step are scored together: one `(n, trials)` distance matmul.
    fn kmeans_plus_plus(&self, k: usize, rng: &mut StdRng) -> Result<Tensor> {
        let trials = 2 + (k as f64).ln().floor() as usize;
        let first = rng.random_range(0..self.n()) as u32;
        let mut chosen = vec![first];
        let mut closest = self.distances_to_rows(&[first])?.squeeze(1)?;
        for _ in 1..k {
            // Sampling runs on the host: one transfer of n floats per centre.
            let cumulative: Vec<f64> = closest
                .to_vec1::<f32>()?
                .iter()
                .scan(0f64, |sum, &d| {
                    *sum += d as f64;
                    Some(*sum)
                })
                .collect();
            let total = cumulative.last().copied().unwrap_or(0.0);
            let candidates: Vec<u32> = (0..trials)
                .map(|_| {
                    // All points coincide with a centre: any point will do (k > distinct points).
                    if total > 0.0 {
                        let target = rng.random::<f64>() * total;
                        cumulative
                            .partition_point(|&c| c <= target)
                            .min(self.n() - 1) as u32
                    } else {
                        rng.random_range(0..self.n()) as u32
                    }
                })
                .collect();
            let updated = self
                .distances_to_rows(&candidates)?
                .broadcast_minimum(&closest.unsqueeze(1)?)?;
            let potentials: Vec<f32> = updated.sum(0)?.to_vec1()?;
            // The first of equal potentials wins, like a sequential scan would pick it.
            let best = (0..trials).fold(0, |best, t| {
                if potentials[t] < potentials[best] {
                    t
                } else {
                    best
                }
            });
            chosen.push(candidates[best]);
            closest = updated.narrow(1, best, 1)?.squeeze(1)?.contiguous()?;
        }
        let chosen = Tensor::new(chosen, self.device())?;
        Ok(self
            .x_aug
            .index_select(&chosen, 0)?
            .narrow(1, 0, self.dim)?
            .contiguous()?)
    }

    /// Lloyd iterations from `centroids` until the shift is below `tol` or labels stop changing.
    fn lloyd(&self, mut centroids: Tensor, stop: &Stop) -> Result<KMeans> {
        let k = centroids.dim(0)?;
        let mut previous: Option<Vec<u32>> = None;
        let mut previous_inertia = f64::INFINITY;
        let mut iterations = 0;
        for _ in 0..stop.max_iter.max(1) {
            iterations += 1;
            let (labels, distances) = self.assign(&centroids)?;
            let inertia = distances.sum_all()?.to_scalar::<f32>()? as f64;
            // Segment sums of the augmented rows: the appended 1s sum to the cluster sizes.
            let sums = if kernels::active(self.device()) {
                kernels::segment_sum(&self.x_aug, &labels, k)?
            } else {
                Tensor::zeros((k, self.dim + 1), DType::F32, self.device())?.index_add(
                    &labels,
                    &self.x_aug,
                    0,
                )?
            };
            let counts = sums.narrow(1, self.dim, 1)?;
            let mut updated = sums
                .narrow(1, 0, self.dim)?
                .broadcast_div(&counts.clamp(1.0, f64::MAX)?)?;
            let counts = counts.squeeze(1)?;
            let counts_host: Vec<f32> = counts.to_vec1()?;
            if counts_host.contains(&0.0) {
                updated = self.reseed_empty(updated, &counts_host, &distances)?;
            }
            let shift = (&updated - &centroids)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f32>()? as f64;
            centroids = updated;
            let labels_host: Vec<u32> = labels.to_vec1()?;
            let stable = previous.as_ref() == Some(&labels_host);
            previous = Some(labels_host);
            let stalled = previous_inertia - inertia < stop.min_improvement * inertia;
            previous_inertia = inertia;
            if stable || shift <= stop.tol || stalled {
                break;
            }
        }
        // Final assignment against the final centroids, as scikit-learn reports it.
        let (labels, distances) = self.assign(&centroids)?;
        Ok(KMeans {
            centroids,
            labels: labels.to_vec1()?,
            inertia: distances
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?,
            iterations,
        })
    }

    /// Moves each empty cluster's centroid onto the point farthest from its own centroid
    /// (a different point for each), which is how scikit-learn relocates them.
    fn reseed_empty(
        &self,
        centroids: Tensor,
        counts: &[f32],
        distances: &Tensor,
    ) -> Result<Tensor> {
        let distances: Vec<f32> = distances.to_vec1()?;
        let mut order: Vec<usize> = (0..distances.len()).collect();
        order.sort_by(|&a, &b| distances[b].total_cmp(&distances[a]));
        let mut rows: Vec<Tensor> = (0..counts.len())
            .map(|c| centroids.get(c))
            .collect::<candle_core::Result<_>>()?;
        let mut farthest = order.into_iter();
        for (cluster, _) in counts.iter().enumerate().filter(|(_, &c)| c == 0.0) {
            if let Some(point) = farthest.next() {
                rows[cluster] = self.x_aug.get(point)?.narrow(0, 0, self.dim)?;
            }
        }
        Ok(Tensor::stack(&rows, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_closer_than_the_restarts_share_them() {
        let fit = |seed| KMeansConfig {
            seed,
            n_init: 10,
            ..Default::default()
        };
        assert_eq!(fit(42).shared_restarts(43), 9);
        assert_eq!(fit(43).shared_restarts(42), 9);
        assert_eq!(fit(42).shared_restarts(42), 10);
        assert_eq!(fit(42).shared_restarts(52), 0);
        assert_eq!(fit(42).shared_restarts(142), 0);
        // Restart r of one fit is restart r − 1 of the next seed's.
        assert_eq!(fit(42).restart_seed(1), fit(43).restart_seed(0));
    }

    fn fit(points: &[[f32; 2]], k: usize, seed: u64) -> KMeans {
        let flat: Vec<f32> = points.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, (points.len(), 2), &Device::Cpu).unwrap();
        let config = KMeansConfig {
            k,
            n_init: 3,
            seed,
            tile_rows: 3,
            ..Default::default()
        };
        KMeans::fit(&x, &config).unwrap()
    }

    #[test]
    fn separates_obvious_clusters_exactly() {
        let points = [
            [0.0, 0.0],
            [0.1, 0.0],
            [0.0, 0.1],
            [10.0, 10.0],
            [10.1, 10.0],
            [10.0, 10.1],
        ];
        let km = fit(&points, 2, 7);
        assert_eq!(km.labels[0], km.labels[1]);
        assert_eq!(km.labels[0], km.labels[2]);
        assert_eq!(km.labels[3], km.labels[4]);
        assert_ne!(km.labels[0], km.labels[3]);
        // Each cluster: three points at squared distances 2/900, 5/900, 5/900 from the mean.
        assert!(
            (km.inertia - 2.0 * 0.0133333).abs() < 1e-4,
            "{}",
            km.inertia
        );
    }

    #[test]
    fn same_seed_same_result() {
        let points: Vec<[f32; 2]> = (0..50)
            .map(|i| [(i * 7 % 13) as f32, (i * 3 % 11) as f32])
            .collect();
        let a = fit(&points, 4, 3);
        let b = fit(&points, 4, 3);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.inertia, b.inertia);
    }

    #[test]
    fn more_clusters_than_distinct_points() {
        let points = [[1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [2.0, 2.0]];
        let km = fit(&points, 3, 1);
        assert_eq!(km.inertia, 0.0);
        assert_eq!(km.labels.len(), 4);
        assert_eq!(km.centroids.dims(), &[3, 2]);
    }
}
