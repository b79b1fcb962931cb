//! An added model's accuracy in every cluster, from few answers: borrowed from how the trained
//! models' accuracies vary together across clusters.
//!
//! The trained models' per-cluster accuracies are samples of what a model's profile over the
//! clusters looks like: their mean is the prior's centre and their scatter about it the
//! prior's covariance, `f ~ N(μ, U·Uᵀ)` with `U`'s columns the `M` trained models' deviations
//! from `μ` over `√(M−1)` (and a constant column for the model's overall level, which the
//! trained models may not span: a new model may be better than all of them). An added model's
//! answers are noisy linear measurements of its profile (a cluster's mean answer, or a declared
//! mean over all clusters), and its profile's posterior mean is
//!
//! ```text
//! f̂ = μ + U·w,   w = Gᵀ·(G·Gᵀ + S)⁻¹·(y − A·μ),   G = A·U
//! ```
//!
//! for measurements `y = A·f + noise` of variances `S` (diagonal). A few answers then move the
//! added model toward the trained models whose answers they resemble, in every cluster at once:
//! a model that answers like the strong models on ten queries is taken for a strong model
//! where those differ from the rest, not everywhere alike.

use super::stats::answer_variance;

/// A new model's accuracy profile over one k-means solution's clusters before it answers:
/// the prior mean `mean` and covariance `Σ_j u_j·u_jᵀ` over `directions`, and how noisy its
/// answers are.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ProfilePrior {
    mean: Vec<f64>,
    directions: Vec<Vec<f64>>,
    /// Prior strength, as answers: how far a cell's mean lies from the profile (its own
    /// scatter) and how uncertain the level is, each the variance of a mean of this many
    /// answers.
    pseudo_answers: f64,
}

impl ProfilePrior {
    /// From the trained models' accuracy estimates (`estimates[cluster][model]`, at least one
    /// model): their mean profile, their deviations from it over `√(M−1)`, and a constant
    /// direction for the level, as uncertain as a mean of `pseudo_answers` answers at the
    /// pool's mean accuracy.
    pub fn new(estimates: &[Vec<f64>], pseudo_answers: f64) -> Self {
        let models = estimates.first().map_or(0, Vec::len);
        let mean: Vec<f64> = estimates
            .iter()
            .map(|row| row.iter().sum::<f64>() / models.max(1) as f64)
            .collect();
        let scale = ((models.max(2) - 1) as f64).sqrt();
        let mut directions: Vec<Vec<f64>> = (0..models)
            .map(|m| {
                estimates
                    .iter()
                    .zip(&mean)
                    .map(|(row, mu)| (row[m] - mu) / scale)
                    .collect()
            })
            .collect();
        let pool = mean.iter().sum::<f64>() / mean.len().max(1) as f64;
        let level = answer_variance(pool) / pseudo_answers;
        directions.push(vec![level.sqrt(); mean.len()]);
        Self {
            mean,
            directions,
            pseudo_answers,
        }
    }

    /// The variance of the mean of `answers` answers in `cluster`, as a measurement of the
    /// profile there: the answers' own plus the cell's scatter about the profile.
    pub fn noise(&self, cluster: usize, answers: f64) -> f64 {
        let variance = answer_variance(self.mean[cluster]);
        variance / answers + variance / self.pseudo_answers
    }

    /// The profile's posterior mean after `measurements`.
    pub fn posterior(&self, measurements: &[Measurement]) -> Vec<f64> {
        posterior_profile(&self.mean, &self.directions, measurements)
    }

    /// The prior covariance, `(clusters × clusters)` row-major.
    pub fn covariance(&self) -> Vec<f64> {
        let k = self.mean.len();
        let mut covariance = vec![0.0; k * k];
        for u in &self.directions {
            for i in 0..k {
                for j in 0..k {
                    covariance[i * k + j] += u[i] * u[j];
                }
            }
        }
        covariance
    }
}

/// `Σ weights·f = value`, seen with variance `noise`, for a profile `f` over clusters.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Measurement {
    /// `(cluster, weight)` pairs.
    pub weights: Vec<(usize, f64)>,
    pub value: f64,
    pub noise: f64,
}

/// The posterior mean of a profile over `mean.len()` clusters with prior mean `mean` and
/// prior covariance `Σ_j u_j·u_jᵀ` over the `directions` `u_j` (each as long as `mean`),
/// after `measurements`. Without directions or measurements it is `mean`. Every
/// measurement's noise must be positive.
fn posterior_profile(
    mean: &[f64],
    directions: &[Vec<f64>],
    measurements: &[Measurement],
) -> Vec<f64> {
    // In the directions' space, w = (Gᵀ·S⁻¹·G + I)⁻¹·Gᵀ·S⁻¹·(y − A·μ) (the same w by Woodbury's
    // identity): a system as large as the directions, however many the measurements, since a
    // server learns a changed model again after each of its outcomes.
    let d = directions.len();
    let mut precision = vec![0.0; d * d];
    for j in 0..d {
        precision[j * d + j] = 1.0;
    }
    let mut weights = vec![0.0; d];
    for measure in measurements {
        let g: Vec<f64> = directions
            .iter()
            .map(|u| measure.weights.iter().map(|&(c, w)| w * u[c]).sum())
            .collect();
        let predicted: f64 = measure.weights.iter().map(|&(c, w)| w * mean[c]).sum();
        let residual = (measure.value - predicted) / measure.noise;
        for j in 0..d {
            weights[j] += g[j] * residual;
            for l in 0..d {
                precision[j * d + l] += g[j] * g[l] / measure.noise;
            }
        }
    }
    if d > 0 {
        cholesky_solve(&mut precision, d, &mut weights);
    }
    mean.iter()
        .enumerate()
        .map(|(c, mu)| {
            mu + directions
                .iter()
                .zip(&weights)
                .map(|(u, w)| u[c] * w)
                .sum::<f64>()
        })
        .collect()
}

/// Solves `a·x = b` in place (`b` becomes `x`) for a symmetric positive-definite `n × n` `a`
/// (row-major, overwritten by its Cholesky factor).
fn cholesky_solve(a: &mut [f64], n: usize, b: &mut [f64]) {
    for j in 0..n {
        let diagonal = (a[j * n + j] - (0..j).map(|k| a[j * n + k].powi(2)).sum::<f64>()).sqrt();
        a[j * n + j] = diagonal;
        for i in j + 1..n {
            let dot: f64 = (0..j).map(|k| a[i * n + k] * a[j * n + k]).sum();
            a[i * n + j] = (a[i * n + j] - dot) / diagonal;
        }
    }
    for i in 0..n {
        b[i] = (b[i] - (0..i).map(|k| a[i * n + k] * b[k]).sum::<f64>()) / a[i * n + i];
    }
    for i in (0..n).rev() {
        b[i] = (b[i] - (i + 1..n).map(|k| a[k * n + i] * b[k]).sum::<f64>()) / a[i * n + i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(c: usize, value: f64, noise: f64) -> Measurement {
        Measurement {
            weights: vec![(c, 1.0)],
            value,
            noise,
        }
    }

    #[test]
    fn the_prior_mean_stands_without_measurements() {
        let mean = [0.5, 0.7, 0.9];
        let directions = vec![vec![0.1, -0.1, 0.0], vec![-0.1, 0.1, 0.0]];
        assert_eq!(posterior_profile(&mean, &directions, &[]), mean.to_vec());
    }

    #[test]
    fn a_precise_measurement_of_a_trained_models_cluster_finds_that_model_everywhere() {
        // Two trained models that differ only in sign: measuring cluster 0 at the first one's
        // value, almost exactly, identifies it, so clusters 1 and 2 follow it too.
        let mean = [0.5, 0.5, 0.5];
        let directions = vec![vec![0.2, -0.1, 0.3], vec![-0.2, 0.1, -0.3]];
        let profile = posterior_profile(&mean, &directions, &[cluster(0, 0.7, 1e-9)]);
        for (got, want) in profile.iter().zip([0.7, 0.4, 0.8]) {
            assert!((got - want).abs() < 1e-6, "{profile:?}");
        }
    }

    #[test]
    fn noisy_measurements_move_the_profile_less_and_agree_with_the_direct_formula() {
        // One measurement: f̂ = μ + k·(y − μ_0)/(k_00 + s) with k = K[:, 0].
        let mean = [0.6, 0.4];
        let directions = vec![vec![0.1, 0.05], vec![-0.1, 0.0], vec![0.0, -0.05]];
        let k00 = 0.01 + 0.01;
        let k10 = 0.1 * 0.05;
        for noise in [0.01, 0.1, 1.0] {
            let profile = posterior_profile(&mean, &directions, &[cluster(0, 1.0, noise)]);
            let gain = 0.4 / (k00 + noise);
            assert!((profile[0] - (0.6 + k00 * gain)).abs() < 1e-12);
            assert!((profile[1] - (0.4 + k10 * gain)).abs() < 1e-12);
        }
    }

    #[test]
    fn a_declared_mean_over_clusters_is_met() {
        let mean = [0.3, 0.9];
        let directions = vec![vec![0.2, 0.05], vec![-0.2, -0.05]];
        let declared = Measurement {
            weights: vec![(0, 0.5), (1, 0.5)],
            value: 0.725,
            noise: 1e-12,
        };
        let profile = posterior_profile(&mean, &directions, &[declared]);
        assert!(((profile[0] + profile[1]) / 2.0 - 0.725).abs() < 1e-9);
        // It moves along the trained models' direction: most where they differ most.
        assert!((profile[0] - 0.5).abs() < 1e-9 && (profile[1] - 0.95).abs() < 1e-9);
    }
}
