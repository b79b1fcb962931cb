//! Budgets that hold: a tenant's spend over a period is paced by lowering its α as spend runs
//! ahead of the budget's even pace, so that the period ends on budget without being cut off
//! half-way.
//!
//! The pacer looks at the budget left against the time left, `r = (1 − s) / (1 − t)` (`s` the
//! share of the budget spent, `t` the share of the period gone): at `r ≥ 1` spend is at or under
//! an even pace and the tenant routes at its own α; below, α falls linearly to 0 at
//! `r = R_FLOOR`. Spend then settles where the rate at the paced α keeps `r` constant, and a
//! constant `r` means the budget left shrinks in step with the time left: the period ends on
//! budget. At the budget itself the tenant gets the cheapest model (α = 0) or is refused.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the pacer's α reaches 0: the budget left is this share of an even pace's.
pub const R_FLOOR: f64 = 0.5;

/// A tenant's budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub usd: f64,
    pub period: Duration,
    pub on_exhausted: OnExhausted,
}

/// What a tenant gets once its period's budget is spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExhausted {
    /// Routing at α = 0: the cheapest model for each query.
    #[default]
    Cheapest,
    /// 429 until the next period.
    Reject,
}

/// Where a budget stands at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pace {
    /// The α to route at.
    pub alpha: f64,
    /// Spent this period, in dollars.
    pub spent: f64,
    /// The share of the period gone.
    pub elapsed: f64,
    /// The budget is spent.
    pub exhausted: bool,
}

impl Budget {
    /// The start of the period holding `now_ms` (periods start at multiples of the period since
    /// the Unix epoch: a `1d` budget runs from midnight UTC), and the share of it gone.
    pub fn period_at(&self, now_ms: u64) -> (u64, f64) {
        let length = (self.period.as_millis() as u64).max(1);
        let start = now_ms - now_ms % length;
        (start, (now_ms - start) as f64 / length as f64)
    }

    /// The α to route at, for a tenant whose own α is `alpha`, having spent `spent` dollars
    /// with `elapsed` of the period gone.
    pub fn pace(&self, alpha: f64, spent: f64, elapsed: f64) -> Pace {
        let share = spent / self.usd;
        let exhausted = share >= 1.0;
        let left = (1.0 - share).max(0.0) / (1.0 - elapsed.clamp(0.0, 1.0)).max(1e-9);
        let scale = ((left - R_FLOOR) / (1.0 - R_FLOOR)).clamp(0.0, 1.0);
        Pace {
            alpha: if exhausted { 0.0 } else { alpha * scale },
            spent,
            elapsed,
            exhausted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget {
            usd: 10.0,
            period: Duration::from_secs(3600),
            on_exhausted: OnExhausted::Cheapest,
        }
    }

    #[test]
    fn periods_start_at_multiples_of_their_length() {
        let (start, elapsed) = budget().period_at(3_600_000 * 5 + 900_000);
        assert_eq!(start, 3_600_000 * 5);
        assert_eq!(elapsed, 0.25);
    }

    #[test]
    fn alpha_falls_as_spend_runs_ahead_and_recovers_when_under() {
        let b = budget();
        // On or under an even pace: the tenant's own α.
        assert_eq!(b.pace(0.8, 2.0, 0.5).alpha, 0.8);
        assert_eq!(b.pace(0.8, 5.0, 0.5).alpha, 0.8);
        // Ahead: budget left 4 against an even 5 (r = 0.8) gives 60 % of α.
        let ahead = b.pace(0.8, 6.0, 0.5);
        assert!((ahead.alpha - 0.8 * 0.6).abs() < 1e-12, "{ahead:?}");
        // Far ahead (r ≤ 0.5): the cheapest routing, before the budget is spent.
        let far = b.pace(0.8, 7.5, 0.5);
        assert_eq!((far.alpha, far.exhausted), (0.0, false));
        // Spent: exhausted.
        assert!(b.pace(0.8, 10.0, 0.2).exhausted);
    }
}
