//! The autoscaler's counters and gauges, for the manager's metrics endpoint. The registry
//! belongs to the metrics module, which reads them at scrape time through the accessors here
//! ([`crate::roles::Manager::autoscaler_stats`]) and exports them as
//!
//! * `shoal_autoscaler_evaluations_total` ([`AutoscalerStats::evaluations`]),
//! * `shoal_autoscaler_decisions_total{service,direction}` ([`AutoscalerStats::decisions`]),
//! * `shoal_autoscaler_metric_errors_total{service}` ([`AutoscalerStats::metric_errors`]),
//! * `shoal_autoscaler_observed_value{service}` and `shoal_autoscaler_target_value{service}`
//!   ([`AutoscalerStats::observed`]).
//!
//! They live in the leader's memory and count what this manager decided while it led, as
//! counters of a restarted process do.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Which way a decision moved the replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

#[derive(Debug, Default)]
pub struct AutoscalerStats {
    evaluations: AtomicU64,
    decisions: Mutex<BTreeMap<(String, Direction), u64>>,
    metric_errors: Mutex<BTreeMap<String, u64>>,
    /// Last observation and target per service.
    observed: Mutex<BTreeMap<String, (f64, f64)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AutoscalerStats {
    pub(crate) fn evaluated(&self) {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn decided(&self, service: &str, direction: Direction) {
        *lock(&self.decisions)
            .entry((service.to_string(), direction))
            .or_default() += 1;
    }

    pub(crate) fn metric_failed(&self, service: &str) {
        *lock(&self.metric_errors)
            .entry(service.to_string())
            .or_default() += 1;
    }

    pub(crate) fn record_observation(&self, service: &str, value: f64, target: f64) {
        lock(&self.observed).insert(service.to_string(), (value, target));
    }

    /// Drops the gauges of services that are gone or no longer autoscaled.
    pub(crate) fn retain_services(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.observed).retain(|s, _| keep(s));
    }

    /// Evaluation rounds run (all services at once).
    pub fn evaluations(&self) -> u64 {
        self.evaluations.load(Ordering::Relaxed)
    }

    /// `(service, direction, count)` of the replica changes made.
    pub fn decisions(&self) -> Vec<(String, Direction, u64)> {
        lock(&self.decisions)
            .iter()
            .map(|((s, d), n)| (s.clone(), *d, *n))
            .collect()
    }

    /// `(service, count)` of the evaluations whose metric could not be read.
    pub fn metric_errors(&self) -> Vec<(String, u64)> {
        lock(&self.metric_errors)
            .iter()
            .map(|(s, n)| (s.clone(), *n))
            .collect()
    }

    /// `(service, last observed value, target)`: percent for CPU and memory policies, the
    /// query's value otherwise.
    pub fn observed(&self) -> Vec<(String, f64, f64)> {
        lock(&self.observed)
            .iter()
            .map(|(s, (v, t))| (s.clone(), *v, *t))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_service_and_direction() {
        let s = AutoscalerStats::default();
        s.evaluated();
        s.evaluated();
        s.decided("web", Direction::Up);
        s.decided("web", Direction::Up);
        s.decided("web", Direction::Down);
        s.metric_failed("api");
        s.record_observation("web", 92.5, 50.0);
        s.record_observation("api", 3.0, 10.0);
        assert_eq!(s.evaluations(), 2);
        assert_eq!(
            s.decisions(),
            vec![
                ("web".to_string(), Direction::Up, 2),
                ("web".to_string(), Direction::Down, 1)
            ]
        );
        assert_eq!(s.metric_errors(), vec![("api".to_string(), 1)]);
        s.retain_services(|name| name == "web");
        assert_eq!(s.observed(), vec![("web".to_string(), 92.5, 50.0)]);
        assert_eq!(Direction::Down.as_str(), "down");
    }
}
