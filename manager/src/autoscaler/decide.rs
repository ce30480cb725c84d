//! The scaling rule, as Kubernetes' HorizontalPodAutoscaler computes it, as pure functions:
//!
//! * **Recommendation**: `desired = ceil(current × observed / target)`, unchanged while
//!   `|observed / target − 1| ≤ tolerance`. For CPU and memory the observation is per task
//!   ([`utilisation`]): the mean over the tasks that have a reading, and, as HPA does, a slot
//!   without one (its task is starting, or has not been measured twice yet) counts as using
//!   nothing when the service would grow and as exactly on target when it would shrink, so a
//!   task that has only just started neither triggers nor hastens a change. A query yields one
//!   value for the whole service ([`value`]).
//! * **Bounds**: the recommendation is kept within `min..=max`.
//! * **Stabilization** ([`Stabilizer`]): every recommendation is remembered with its time; the
//!   service grows to the *lowest* recommendation of the scale-up window and shrinks to the
//!   *highest* of the scale-down window, so a short dip or spike changes nothing and the count
//!   does not flap.

use std::collections::VecDeque;

/// A raw recommendation, before stabilization.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub replicas: u64,
    /// The observed value (mean percent, or the query's value).
    pub observed: f64,
    /// How many tasks had a reading (utilisation), for the decision's reason.
    pub measured: usize,
}

fn within(ratio: f64, tolerance: f64) -> bool {
    (ratio - 1.0).abs() <= tolerance
}

fn ceil_replicas(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        // Rounding error must not add a replica: 3 × (0.5 / 0.5) is exactly 3.
        let rounded = x.round();
        if (x - rounded).abs() < 1e-9 {
            rounded as u64
        } else {
            x.ceil() as u64
        }
    } else {
        0
    }
}

/// HPA's rule for per-task utilisation. `readings` has one entry per slot of the service: the
/// task's usage in percent of its basis, or `None` when there is none yet. `None` when no
/// slot has a reading: there is nothing to decide on.
pub fn utilisation(
    current: u64,
    readings: &[Option<f64>],
    target: f64,
    tolerance: f64,
) -> Option<Recommendation> {
    let measured: Vec<f64> = readings.iter().flatten().copied().collect();
    if measured.is_empty() || target <= 0.0 {
        return None;
    }
    let mean = measured.iter().sum::<f64>() / measured.len() as f64;
    let ratio = mean / target;
    let missing = readings.len() - measured.len();
    let rec = |replicas| Recommendation {
        replicas,
        observed: mean,
        measured: measured.len(),
    };
    if missing == 0 {
        if within(ratio, tolerance) {
            return Some(rec(current));
        }
        return Some(rec(ceil_replicas(ratio * measured.len() as f64)));
    }
    if within(ratio, tolerance) {
        return Some(rec(current));
    }
    // Fill the gaps conservatively: 0 when growing, exactly the target when shrinking.
    let fill = if ratio < 1.0 { target } else { 0.0 };
    let total = measured.iter().sum::<f64>() + fill * missing as f64;
    let new_ratio = total / readings.len() as f64 / target;
    if within(new_ratio, tolerance) || (ratio < 1.0) != (new_ratio < 1.0) {
        return Some(rec(current));
    }
    let replicas = ceil_replicas(new_ratio * readings.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Some(rec(current));
    }
    Some(rec(replicas))
}

/// HPA's rule for one value for the whole service (a query, like HPA's object and external
/// metrics with a `Value` target): `ceil(current × observed / target)`.
pub fn value(current: u64, observed: f64, target: f64, tolerance: f64) -> Recommendation {
    let ratio = observed / target;
    let replicas = if !ratio.is_finite() || within(ratio, tolerance) {
        current
    } else {
        ceil_replicas(current as f64 * ratio)
    };
    Recommendation {
        replicas,
        observed,
        measured: 0,
    }
}

/// The recommendations of one service over the last stabilization window.
#[derive(Debug, Default, Clone)]
pub struct Stabilizer {
    recommendations: VecDeque<(i64, u64)>,
}

impl Stabilizer {
    /// A stabilizer that acts as if `replicas` had been recommended at `now_ms`: a manager that
    /// has just become leader knows nothing of the recommendations its predecessor saw, so it
    /// does not shrink the service until a full scale-down window has passed (and, with a
    /// scale-up window, does not grow it before that window has passed either).
    pub fn seeded(now_ms: i64, replicas: u64) -> Stabilizer {
        Stabilizer {
            recommendations: VecDeque::from([(now_ms, replicas)]),
        }
    }

    /// Records `recommended` and returns the replica count to have now, from `current`.
    pub fn stabilize(
        &mut self,
        now_ms: i64,
        current: u64,
        recommended: u64,
        up_window_ms: u64,
        down_window_ms: u64,
    ) -> u64 {
        self.recommendations.push_back((now_ms, recommended));
        let in_window =
            |window: u64| move |(at, _): &&(i64, u64)| now_ms.saturating_sub(*at) <= window as i64;
        let up = self
            .recommendations
            .iter()
            .filter(in_window(up_window_ms))
            .map(|(_, r)| *r)
            .min()
            .unwrap_or(recommended);
        let down = self
            .recommendations
            .iter()
            .filter(in_window(down_window_ms))
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(recommended);
        let keep = up_window_ms.max(down_window_ms) as i64;
        while self
            .recommendations
            .front()
            .is_some_and(|(at, _)| now_ms.saturating_sub(*at) > keep)
        {
            self.recommendations.pop_front();
        }
        let mut replicas = current;
        if replicas < up {
            replicas = up;
        }
        if replicas > down {
            replicas = down;
        }
        replicas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_rule_for_utilisation() {
        // 1 task at 100 % of a 50 % target: 2 tasks.
        assert_eq!(
            utilisation(1, &[Some(100.0)], 50.0, 0.1).unwrap().replicas,
            2
        );
        // Within the tolerance: no change.
        assert_eq!(
            utilisation(3, &[Some(54.0); 3], 50.0, 0.1)
                .unwrap()
                .replicas,
            3
        );
        // 4 tasks idle: ceil(4 × 0) = 0; the bounds bring it to min later.
        assert_eq!(
            utilisation(4, &[Some(0.0); 4], 50.0, 0.1).unwrap().replicas,
            0
        );
        // 3 × 70 % against 50 %: ceil(3 × 1.4) = 5 (4.2 → 5).
        let r = utilisation(3, &[Some(70.0); 3], 50.0, 0.1).unwrap();
        assert_eq!((r.replicas, r.observed, r.measured), (5, 70.0, 3));
        // Exact multiples do not gain a replica through rounding error.
        assert_eq!(
            utilisation(3, &[Some(100.0), Some(100.0), Some(100.0)], 50.0, 0.1)
                .unwrap()
                .replicas,
            6
        );
        assert_eq!(utilisation(2, &[None, None], 50.0, 0.1), None);
    }

    #[test]
    fn tasks_without_readings_count_conservatively() {
        // Growing: the new task (no reading yet) counts as idle, so one busy task at 100 %
        // next to it means 50 % overall: on target, no further growth.
        assert_eq!(
            utilisation(2, &[Some(100.0), None], 50.0, 0.1)
                .unwrap()
                .replicas,
            2
        );
        // Still too busy with the gap filled: grow, by what the filled mean says.
        assert_eq!(
            utilisation(2, &[Some(200.0), None], 50.0, 0.1)
                .unwrap()
                .replicas,
            4
        );
        // Shrinking: the unread task counts as on target, which slows the shrink.
        assert_eq!(
            utilisation(4, &[Some(0.0), Some(0.0), Some(0.0), None], 50.0, 0.1)
                .unwrap()
                .replicas,
            1
        );
        assert_eq!(
            utilisation(2, &[Some(30.0), None], 50.0, 0.1)
                .unwrap()
                .replicas,
            2,
            "(30 + 50) / 2 = 40 %: ceil(2 × 0.8) = 2"
        );
    }

    #[test]
    fn hpa_rule_for_one_value() {
        assert_eq!(value(1, 150.0, 100.0, 0.1).replicas, 2);
        assert_eq!(value(2, 150.0, 100.0, 0.1).replicas, 3);
        assert_eq!(value(3, 105.0, 100.0, 0.1).replicas, 3);
        assert_eq!(value(3, 10.0, 100.0, 0.1).replicas, 1);
        assert_eq!(value(3, f64::NAN, 100.0, 0.1).replicas, 3);
        assert_eq!(value(3, 0.0, 100.0, 0.1).replicas, 0);
    }

    #[test]
    fn scale_up_at_once_scale_down_after_the_window() {
        let mut s = Stabilizer::default();
        let (up, down) = (0, 60_000);
        assert_eq!(s.stabilize(0, 1, 3, up, down), 3, "no up window: at once");
        assert_eq!(s.stabilize(10_000, 3, 1, up, down), 3, "down window holds");
        assert_eq!(s.stabilize(50_000, 3, 1, up, down), 3);
        assert_eq!(
            s.stabilize(60_001, 3, 1, up, down),
            1,
            "the 3 has left the window"
        );
    }

    #[test]
    fn the_down_window_keeps_the_highest_recommendation() {
        let mut s = Stabilizer::default();
        let (up, down) = (0, 30_000);
        assert_eq!(s.stabilize(0, 4, 4, up, down), 4);
        assert_eq!(s.stabilize(10_000, 4, 2, up, down), 4);
        assert_eq!(s.stabilize(20_000, 4, 3, up, down), 4);
        assert_eq!(s.stabilize(31_000, 4, 1, up, down), 3, "max of 2, 3, 1");
        assert_eq!(s.stabilize(41_000, 3, 1, up, down), 3);
        assert_eq!(s.stabilize(51_000, 3, 1, up, down), 1);
    }

    #[test]
    fn an_up_window_needs_a_sustained_rise() {
        let mut s = Stabilizer::default();
        let (up, down) = (20_000, 0);
        assert_eq!(s.stabilize(0, 1, 1, up, down), 1);
        assert_eq!(s.stabilize(10_000, 1, 4, up, down), 1, "min(1, 4)");
        assert_eq!(s.stabilize(21_000, 1, 4, up, down), 4);
        // A spike that does not last changes nothing.
        assert_eq!(s.stabilize(30_000, 4, 9, up, down), 4);
    }

    #[test]
    fn a_new_leader_waits_a_full_down_window_before_shrinking() {
        let mut s = Stabilizer::seeded(100_000, 4);
        assert_eq!(s.stabilize(105_000, 4, 1, 0, 300_000), 4);
        assert_eq!(s.stabilize(399_000, 4, 1, 0, 300_000), 4);
        assert_eq!(s.stabilize(400_001, 4, 1, 0, 300_000), 1);
        // Growing is not held back (no up window).
        let mut s = Stabilizer::seeded(0, 2);
        assert_eq!(s.stabilize(1_000, 2, 5, 0, 300_000), 5);
    }
}
