//! A router judged along the whole accuracy–cost curve rather than at one α: the area under its
//! frontier, next to the same area for the single models and for the oracle.
//!
//! Costs are divided by the best single model's cost and capped at 1, so the area is the mean
//! accuracy one can reach over every budget from nothing up to what the best single model
//! spends. Any two policies can be mixed query by query at any ratio, so what is reachable is
//! the upper concave hull of their (cost, accuracy) points, anchored at (0, 0) (spending nothing
//! answers nothing), and flat beyond its most accurate point (spending more is never required).

use serde::Serialize;

use super::PolicyMetrics;

/// The frontier of `(cost, accuracy)` points as the hull vertices, costs already normalised.
pub fn frontier(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .chain([(0.0, 0.0)])
        .collect();
    // By cost, the most accurate first among equal costs, which alone is kept.
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    sorted.dedup_by(|later, kept| later.0 == kept.0);
    // Upper hull, left to right (Andrew's monotone chain).
    let mut hull: Vec<(f64, f64)> = Vec::new();
    for p in sorted {
        while hull.len() >= 2 {
            let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            let cross = (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0);
            if cross >= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(p);
    }
    // Up to the most accurate vertex; beyond it the frontier is flat.
    let peak = hull
        .iter()
        .enumerate()
        .max_by(|a, b| a.1 .1.total_cmp(&b.1 .1).then(b.0.cmp(&a.0)))
        .map_or(0, |(i, _)| i);
    hull.truncate(peak + 1);
    hull
}

/// The frontier's height at normalised cost `x`.
fn height(hull: &[(f64, f64)], x: f64) -> f64 {
    match hull.iter().position(|p| p.0 >= x) {
        None => hull.last().map_or(0.0, |p| p.1),
        Some(0) => hull[0].1,
        Some(i) => {
            let (a, b) = (hull[i - 1], hull[i]);
            a.1 + (b.1 - a.1) * (x - a.0) / (b.0 - a.0)
        }
    }
}

/// Area under the frontier of `points` over normalised costs `[0, 1]`: `points` are
/// `(cost, accuracy)` with costs divided by `reference_cost` here.
pub fn frontier_area(points: &[(f64, f64)], reference_cost: f64) -> f64 {
    if reference_cost <= 0.0 {
        return points.iter().map(|p| p.1).fold(0.0, f64::max);
    }
    let normalised: Vec<(f64, f64)> = points
        .iter()
        .map(|&(cost, accuracy)| (cost / reference_cost, accuracy))
        .collect();
    let hull = frontier(&normalised);
    // Trapezoids between the vertices inside [0, 1], then the rest up to 1.
    let mut area = 0.0;
    let mut last = (0.0, height(&hull, 0.0));
    for &p in hull.iter().filter(|p| p.0 > 0.0 && p.0 < 1.0) {
        area += (p.0 - last.0) * (p.1 + last.1) / 2.0;
        last = p;
    }
    area + (1.0 - last.0) * (height(&hull, 1.0) + last.1) / 2.0
}

/// The whole-curve numbers of one seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurveAreas {
    /// Area under the router's frontier (its points over the α sweep).
    pub router: f64,
    /// Area under the single models' frontier (their convex hull).
    pub singles: f64,
    /// Area under the oracle's frontier.
    pub oracle: f64,
}

impl CurveAreas {
    /// The areas of one seed: costs normalised by the most accurate single model's (the
    /// cheaper one among equals).
    pub fn of(singles: &[PolicyMetrics], oracle: &PolicyMetrics, router: &[PolicyMetrics]) -> Self {
        let reference = singles
            .iter()
            .reduce(|best, s| {
                let better = s.average_accuracy > best.average_accuracy
                    || (s.average_accuracy == best.average_accuracy && s.cost < best.cost);
                if better {
                    s
                } else {
                    best
                }
            })
            .map_or(0.0, |best| best.cost);
        let area = |policies: &[&PolicyMetrics]| {
            let points: Vec<(f64, f64)> = policies
                .iter()
                .map(|p| (p.cost, p.average_accuracy))
                .collect();
            frontier_area(&points, reference)
        };
        Self {
            router: area(&router.iter().collect::<Vec<_>>()),
            singles: area(&singles.iter().collect::<Vec<_>>()),
            oracle: area(&[oracle]),
        }
    }

    /// Share of the singles → oracle area the router adds; `None` when the oracle is no better.
    pub fn gap_closed(&self) -> Option<f64> {
        let gap = self.oracle - self.singles;
        (gap > 1e-12).then(|| (self.router - self.singles) / gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_by_hand() {
        // One point at half the reference cost, accuracy 0.8: the frontier rises from (0, 0)
        // to (0.5, 0.8) and stays flat: 0.5·0.8/2 + 0.5·0.8 = 0.6.
        assert!((frontier_area(&[(5.0, 0.8)], 10.0) - 0.6).abs() < 1e-12);
        // A point under the hull changes nothing; a dearer, better one past the cap counts up
        // to the cap only: (0,0)→(0.5,0.8)→(2,1.0): height at 1 is 0.8 + 0.2·(0.5/1.5).
        assert!((frontier_area(&[(5.0, 0.8), (4.0, 0.5)], 10.0) - 0.6).abs() < 1e-12);
        let h1 = 0.8 + 0.2 / 3.0;
        let want = 0.5 * 0.8 / 2.0 + 0.5 * (0.8 + h1) / 2.0;
        assert!((frontier_area(&[(5.0, 0.8), (20.0, 1.0)], 10.0) - want).abs() < 1e-12);
        // A free point (cost 0) lifts the whole curve.
        assert!((frontier_area(&[(0.0, 0.5)], 10.0) - 0.5).abs() < 1e-12);
        // Mixing: (0.2, 0.6) and (1.0, 0.9) with the origin; the line between the two
        // dominates the point (0.6, 0.7) under it.
        let area = frontier_area(&[(2.0, 0.6), (10.0, 0.9), (6.0, 0.7)], 10.0);
        let want = 0.2 * 0.6 / 2.0 + 0.8 * (0.6 + 0.9) / 2.0;
        assert!((area - want).abs() < 1e-12, "{area} vs {want}");
    }

    #[test]
    fn frontier_is_concave_and_stops_at_the_peak() {
        let hull = frontier(&[(0.3, 0.5), (0.5, 0.9), (0.9, 0.8), (0.4, 0.6)]);
        // (0.3, 0.5) and (0.4, 0.6) lie under the line from the origin to (0.5, 0.9); (0.9,
        // 0.8) is past the peak.
        assert_eq!(hull, vec![(0.0, 0.0), (0.5, 0.9)]);
    }

    #[test]
    fn gap_closed() {
        let areas = CurveAreas {
            router: 0.7,
            singles: 0.6,
            oracle: 1.0,
        };
        assert!((areas.gap_closed().unwrap() - 0.25).abs() < 1e-12);
        let none = CurveAreas {
            oracle: 0.6,
            ..areas
        };
        assert_eq!(none.gap_closed(), None);
    }
}
