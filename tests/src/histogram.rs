//! A Prometheus histogram read from a metrics endpoint's text, for benchmarks that want the
//! daemon's own view of a latency (its side of a call, without the client's process start and
//! scheduling) over one stretch of a run: read it before and after, take the difference.

/// The buckets (upper bound, cumulative count), sum and count of one histogram, added over
/// every series of it that matched.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Histogram {
    /// The histogram `name` (without `_bucket`) in `text`, over the series whose labels contain
    /// every one of `labels` (e.g. `method="CreateService"`); empty when none does.
    pub fn parse(text: &str, name: &str, labels: &[&str]) -> Histogram {
        let mut h = Histogram::default();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let Some(rest) = series.strip_prefix(name) else {
                continue;
            };
            let (kind, series_labels) = rest.split_once('{').unwrap_or((rest, ""));
            if !labels.iter().all(|l| series_labels.contains(l)) {
                continue;
            }
            match kind {
                "_sum" => h.sum += value,
                "_count" => h.count += value,
                "_bucket" => {
                    let Some(le) = bucket_bound(series_labels) else {
                        continue;
                    };
                    match h.buckets.iter_mut().find(|(b, _)| *b == le) {
                        Some((_, n)) => *n += value,
                        None => h.buckets.push((le, value)),
                    }
                }
                _ => {}
            }
        }
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        h
    }

    /// What was observed between `before` and this reading of the same histogram.
    pub fn since(&self, before: &Histogram) -> Histogram {
        let earlier = |le: f64| {
            before
                .buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, n)| *n)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, n)| (le, n - earlier(le)))
                .collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// How many observations.
    pub fn count(&self) -> f64 {
        self.count
    }

    /// The mean observation; `None` without any.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The `q`-quantile (0..=1), interpolated within its bucket as Prometheus's
    /// `histogram_quantile` does; `None` without observations, the highest finite bound when
    /// it falls in the `+Inf` bucket.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, n) in &self.buckets {
            if n >= rank {
                if le.is_infinite() {
                    return Some(lower);
                }
                let within = n - below;
                let share = if within > 0.0 {
                    (rank - below) / within
                } else {
                    1.0
                };
                return Some(lower + (le - lower) * share);
            }
            (lower, below) = (le, n);
        }
        Some(lower)
    }
}

/// The `le` label's value among a series' labels (`…le="0.5"}`).
fn bucket_bound(labels: &str) -> Option<f64> {
    let start = labels.find("le=\"")? + 4;
    let value = &labels[start..];
    let value = &value[..value.find('"')?];
    match value {
        "+Inf" => Some(f64::INFINITY),
        v => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# TYPE x_seconds histogram
x_seconds_sum{method="A",code="OK"} 3.0
x_seconds_count{method="A",code="OK"} 4
x_seconds_bucket{le="0.1",method="A",code="OK"} 1
x_seconds_bucket{le="1.0",method="A",code="OK"} 3
x_seconds_bucket{le="+Inf",method="A",code="OK"} 4
x_seconds_sum{method="B",code="OK"} 100.0
x_seconds_count{method="B",code="OK"} 1
x_seconds_bucket{le="0.1",method="B",code="OK"} 0
x_seconds_bucket{le="1.0",method="B",code="OK"} 0
x_seconds_bucket{le="+Inf",method="B",code="OK"} 1
x_seconds_sum{method="A",code="Unavailable"} 0.5
x_seconds_count{method="A",code="Unavailable"} 1
x_seconds_bucket{le="0.1",method="A",code="Unavailable"} 0
x_seconds_bucket{le="1.0",method="A",code="Unavailable"} 1
x_seconds_bucket{le="+Inf",method="A",code="Unavailable"} 1
"#;

    #[test]
    fn series_with_the_labels_are_added_and_quantiles_interpolate_within_a_bucket() {
        let a = Histogram::parse(PAGE, "x_seconds", &["method=\"A\""]);
        assert_eq!(a.count(), 5.0);
        assert_eq!(a.mean(), Some(3.5 / 5.0));
        // 1 of 5 at or under 0.1, 4 of 5 at or under 1.0.
        assert_eq!(a.quantile(0.2), Some(0.1));
        // Half (2.5) is 1.5 of the 3 in (0.1, 1.0]: halfway through it.
        assert!((a.quantile(0.5).unwrap_or_default() - 0.55).abs() < 1e-9);
        // In the +Inf bucket: the highest finite bound.
        assert_eq!(a.quantile(0.99), Some(1.0));
        let ok = Histogram::parse(PAGE, "x_seconds", &["method=\"A\"", "code=\"OK\""]);
        assert_eq!(ok.count(), 4.0);
        assert_eq!(
            Histogram::parse(PAGE, "x_seconds", &["method=\"C\""]).quantile(0.5),
            None
        );
    }

    #[test]
    fn the_difference_of_two_readings_is_what_was_observed_between() {
        let before = Histogram::parse(PAGE, "x_seconds", &["method=\"A\"", "code=\"OK\""]);
        let later = PAGE
            .replace(
                "x_seconds_count{method=\"A\",code=\"OK\"} 4",
                "x_seconds_count{method=\"A\",code=\"OK\"} 6",
            )
            .replace(
                "x_seconds_sum{method=\"A\",code=\"OK\"} 3.0",
                "x_seconds_sum{method=\"A\",code=\"OK\"} 3.4",
            )
            .replace(
                "x_seconds_bucket{le=\"0.1\",method=\"A\",code=\"OK\"} 1",
                "x_seconds_bucket{le=\"0.1\",method=\"A\",code=\"OK\"} 3",
            )
            .replace(
                "x_seconds_bucket{le=\"1.0\",method=\"A\",code=\"OK\"} 3",
                "x_seconds_bucket{le=\"1.0\",method=\"A\",code=\"OK\"} 5",
            )
            .replace(
                "x_seconds_bucket{le=\"+Inf\",method=\"A\",code=\"OK\"} 4",
                "x_seconds_bucket{le=\"+Inf\",method=\"A\",code=\"OK\"} 6",
            );
        let after = Histogram::parse(&later, "x_seconds", &["method=\"A\"", "code=\"OK\""]);
        let between = after.since(&before);
        assert_eq!(between.count(), 2.0);
        assert!((between.mean().unwrap_or_default() - 0.2).abs() < 1e-9);
        // Both new observations were under 0.1.
        assert_eq!(between.quantile(1.0), Some(0.1));
    }
}
