//! The autoscaler's counters and gauges, for the manager's metrics endpoint. The registry
//! belongs to the metrics module; this keeps the values and renders them in Prometheus's text
//! format, so registering them is one call ([`AutoscalerStats::render`]).
//!
//! They live in the leader's memory and count what this manager decided while it led, as
//! counters of a restarted process do.

use std::collections::BTreeMap;
use std::fmt::Write;
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

/// A label value in the text format: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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

    pub(crate) fn observed(&self, service: &str, value: f64, target: f64) {
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

    /// Everything in Prometheus's text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP shoal_autoscaler_evaluations_total Autoscaler evaluation rounds run by this manager while leader.\n\
             # TYPE shoal_autoscaler_evaluations_total counter\n\
             shoal_autoscaler_evaluations_total {}",
            self.evaluations()
        );
        out.push_str(
            "# HELP shoal_autoscaler_decisions_total Replica count changes made by the autoscaler.\n\
             # TYPE shoal_autoscaler_decisions_total counter\n",
        );
        for (service, direction, n) in self.decisions() {
            let _ = writeln!(
                out,
                "shoal_autoscaler_decisions_total{{service=\"{}\",direction=\"{}\"}} {n}",
                label(&service),
                direction.as_str()
            );
        }
        out.push_str(
            "# HELP shoal_autoscaler_metric_errors_total Evaluations that held the replica count because the metric could not be read.\n\
             # TYPE shoal_autoscaler_metric_errors_total counter\n",
        );
        for (service, n) in self.metric_errors() {
            let _ = writeln!(
                out,
                "shoal_autoscaler_metric_errors_total{{service=\"{}\"}} {n}",
                label(&service)
            );
        }
        let observed = lock(&self.observed).clone();
        out.push_str(
            "# HELP shoal_autoscaler_observed_value Last value the autoscaler observed (percent for cpu and memory policies).\n\
             # TYPE shoal_autoscaler_observed_value gauge\n",
        );
        for (service, (value, _)) in &observed {
            let _ = writeln!(
                out,
                "shoal_autoscaler_observed_value{{service=\"{}\"}} {value}",
                label(service)
            );
        }
        out.push_str(
            "# HELP shoal_autoscaler_target_value The policy's target for that value.\n\
             # TYPE shoal_autoscaler_target_value gauge\n",
        );
        for (service, (_, target)) in &observed {
            let _ = writeln!(
                out,
                "shoal_autoscaler_target_value{{service=\"{}\"}} {target}",
                label(service)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let s = AutoscalerStats::default();
        s.evaluated();
        s.decided("web", Direction::Up);
        s.decided("web", Direction::Up);
        s.decided("web", Direction::Down);
        s.metric_failed("api");
        s.observed("web", 92.5, 50.0);
        let text = s.render();
        for line in [
            "shoal_autoscaler_evaluations_total 1",
            "shoal_autoscaler_decisions_total{service=\"web\",direction=\"up\"} 2",
            "shoal_autoscaler_decisions_total{service=\"web\",direction=\"down\"} 1",
            "shoal_autoscaler_metric_errors_total{service=\"api\"} 1",
            "shoal_autoscaler_observed_value{service=\"web\"} 92.5",
            "shoal_autoscaler_target_value{service=\"web\"} 50",
            "# TYPE shoal_autoscaler_decisions_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        s.retain_services(|_| false);
        assert!(!s.render().contains("observed_value{"));
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
