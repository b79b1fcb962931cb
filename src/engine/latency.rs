//! How fast each model's provider answers, as the server measures it: time to first byte and
//! output tokens per second, exponentially weighted, and the recent answers' 90th percentile
//! time to first byte for latency limits.
//!
//! Measurements older than the window are forgotten, so a model skipped for being slow is
//! tried again once its slow answers have aged out (it has no recent measurement then, and an
//! unmeasured model is never skipped): that is how it gets the traffic that shows it recovered.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Weight of the newest answer in the exponentially weighted means.
const EWMA_WEIGHT: f64 = 0.2;
/// Recent answers kept per model for the percentile.
const RECENT: usize = 64;

/// One model's latency as of now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModelLatency {
    /// Exponentially weighted time to first byte (the whole answer when not streamed).
    pub ttft_ms: f64,
    /// The 90th percentile over the recent answers.
    pub p90_ttft_ms: f64,
    /// Exponentially weighted output tokens per second, where answers reported their tokens.
    pub output_tokens_per_s: Option<f64>,
    /// Answers within the window.
    pub recent_answers: usize,
}

#[derive(Debug, Default)]
struct Track {
    ttft_ms: f64,
    tokens_per_s: Option<f64>,
    recent: VecDeque<(Instant, f64)>,
}

impl Track {
    fn forget_before(&mut self, oldest: Instant) {
        while self.recent.front().is_some_and(|&(at, _)| at < oldest) {
            self.recent.pop_front();
        }
    }
}

/// The latency of every model that has answered within the window.
#[derive(Debug)]
pub struct LatencyBook {
    window: Duration,
    models: Mutex<HashMap<String, Track>>,
}

impl LatencyBook {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            models: Mutex::default(),
        }
    }

    /// An answer of `model`: its time to first byte and, where known, how many output tokens
    /// it generated in how long. Returns the model's latency with it.
    pub fn observe(
        &self,
        model: &str,
        first_byte: Duration,
        output: Option<(u64, Duration)>,
    ) -> ModelLatency {
        let now = Instant::now();
        let ttft_ms = first_byte.as_secs_f64() * 1e3;
        let tokens_per_s = output
            .filter(|&(tokens, time)| tokens > 0 && !time.is_zero())
            .map(|(tokens, time)| tokens as f64 / time.as_secs_f64());
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        let track = models.entry(model.to_string()).or_default();
        track.forget_before(now.checked_sub(self.window).unwrap_or(now));
        let mean = |old: f64, new: f64| old + EWMA_WEIGHT * (new - old);
        track.ttft_ms = match track.recent.is_empty() {
            true => ttft_ms,
            false => mean(track.ttft_ms, ttft_ms),
        };
        if let Some(new) = tokens_per_s {
            track.tokens_per_s = Some(track.tokens_per_s.map_or(new, |old| mean(old, new)));
        }
        if track.recent.len() == RECENT {
            track.recent.pop_front();
        }
        track.recent.push_back((now, ttft_ms));
        summarise(track).expect("an answer was just added")
    }

    /// The latency of each of `models` that answered within the window (`None` for the rest).
    pub fn of(&self, models: &[String]) -> Vec<Option<ModelLatency>> {
        let now = Instant::now();
        let oldest = now.checked_sub(self.window).unwrap_or(now);
        let mut book = self.models.lock().unwrap_or_else(|e| e.into_inner());
        models
            .iter()
            .map(|name| {
                let track = book.get_mut(name.as_str())?;
                track.forget_before(oldest);
                summarise(track)
            })
            .collect()
    }

    /// Every model that answered within the window.
    pub fn report(&self) -> BTreeMap<String, ModelLatency> {
        let mut names: Vec<String> = {
            let book = self.models.lock().unwrap_or_else(|e| e.into_inner());
            book.keys().cloned().collect()
        };
        names.sort();
        let latencies = self.of(&names);
        names
            .into_iter()
            .zip(latencies)
            .filter_map(|(name, latency)| Some((name, latency?)))
            .collect()
    }
}

fn summarise(track: &Track) -> Option<ModelLatency> {
    if track.recent.is_empty() {
        return None;
    }
    let mut times: Vec<f64> = track.recent.iter().map(|&(_, ms)| ms).collect();
    times.sort_by(f64::total_cmp);
    // Nearest rank: the smallest time that at least 90 % of the answers do not exceed.
    let rank = ((0.9 * times.len() as f64).ceil() as usize).clamp(1, times.len());
    Some(ModelLatency {
        ttft_ms: track.ttft_ms,
        p90_ttft_ms: times[rank - 1],
        output_tokens_per_s: track.tokens_per_s,
        recent_answers: times.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn p90_is_the_nearest_rank_of_recent_answers() {
        let book = LatencyBook::new(Duration::from_secs(60));
        for i in 1..=10 {
            book.observe("a", ms(i * 10), Some((50, ms(500))));
        }
        let a = book.of(&["a".into(), "b".into()]);
        let latency = a[0].unwrap();
        assert_eq!(latency.p90_ttft_ms, 90.0);
        assert_eq!(latency.recent_answers, 10);
        assert_eq!(latency.output_tokens_per_s, Some(100.0));
        assert!(
            latency.ttft_ms > 50.0 && latency.ttft_ms < 100.0,
            "{latency:?}"
        );
        assert_eq!(a[1], None);
    }

    #[test]
    fn old_answers_age_out() {
        let book = LatencyBook::new(ms(50));
        book.observe("slow", ms(900), None);
        assert!(book.of(&["slow".into()])[0].is_some());
        std::thread::sleep(ms(80));
        assert_eq!(book.of(&["slow".into()])[0], None);
        assert!(book.report().is_empty());
        // A new answer starts the mean afresh rather than from the forgotten one.
        book.observe("slow", ms(10), None);
        assert_eq!(book.of(&["slow".into()])[0].unwrap().ttft_ms, 10.0);
    }
}
