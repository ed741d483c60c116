//! Exact percentiles over every recorded sample (no histogram bucketing error).

/// Percentile summary of a set of durations, all in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median (nearest rank).
    pub p50: u64,
    /// 90th percentile (nearest rank).
    pub p90: u64,
    /// 99th percentile (nearest rank).
    pub p99: u64,
    /// Largest sample.
    pub max: u64,
    /// Arithmetic mean, rounded down.
    pub mean: u64,
}

/// Nearest-rank percentile of ascending `sorted`: the smallest sample such that at least
/// `p` percent of all samples are less than or equal to it. `None` when there are no samples.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    // Integer arithmetic on per-mille ranks avoids float rounding picking the neighbour
    // (e.g. 0.99 * 100 = 98.99999999999999).
    let per_mille = (p.clamp(0.0, 100.0) * 10.0).round() as u128;
    let rank = (per_mille * n as u128).div_ceil(1000).max(1) as usize;
    Some(sorted[rank.min(n) - 1])
}

impl Summary {
    /// Sorts `samples` in place and summarises them; all zero when empty.
    pub fn of(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |p| percentile(samples, p).unwrap_or(0);
        let total: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Self {
            count: samples.len(),
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            max: samples[samples.len() - 1],
            mean: (total / samples.len() as u128) as u64,
        }
    }
}

/// Nanoseconds as milliseconds rounded to 3 decimals (microsecond resolution).
pub fn ms(nanos: u64) -> f64 {
    (nanos as f64 / 1_000.0).round() / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50));
        assert_eq!(percentile(&samples, 90.0), Some(90));
        assert_eq!(percentile(&samples, 99.0), Some(99));
        assert_eq!(percentile(&samples, 99.9), Some(100));
        assert_eq!(percentile(&samples, 100.0), Some(100));
        assert_eq!(percentile(&samples, 0.0), Some(1));
    }

    #[test]
    fn nearest_rank_on_small_sets() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 0.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        // Four samples: p50 is rank 2, p90 and p99 round up to rank 4.
        let four = [10, 20, 30, 40];
        assert_eq!(percentile(&four, 50.0), Some(20));
        assert_eq!(percentile(&four, 51.0), Some(30));
        assert_eq!(percentile(&four, 90.0), Some(40));
        assert_eq!(percentile(&four, 25.0), Some(10));
    }

    #[test]
    fn p99_of_a_thousand_is_the_990th() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 99.0), Some(990));
        assert_eq!(percentile(&samples, 99.9), Some(999));
    }

    #[test]
    fn summary_sorts_and_averages() {
        let mut samples = vec![5, 1, 4, 2, 3];
        let summary = Summary::of(&mut samples);
        assert_eq!(
            summary,
            Summary {
                count: 5,
                p50: 3,
                p90: 5,
                p99: 5,
                max: 5,
                mean: 3,
            }
        );
        assert_eq!(Summary::of(&mut []), Summary::default());
    }

    #[test]
    fn milliseconds_keep_three_decimals() {
        assert_eq!(ms(1_234_567), 1.235);
        assert_eq!(ms(999), 0.001);
        assert_eq!(ms(0), 0.0);
    }
}
