//! The autoscaler's counters (`shoal_autoscaler_*`), exported by the leader that runs it.

use std::borrow::Cow;
use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;

use super::encode::{counter, counters, gauges};
use crate::autoscaler::AutoscalerStats;

pub fn encode(enc: &mut DescriptorEncoder, stats: &AutoscalerStats) -> fmt::Result {
    counter(
        enc,
        "shoal_autoscaler_evaluations",
        "Rounds in which the autoscaler evaluated every policy.",
        None,
        stats.evaluations(),
    )?;
    counters(
        enc,
        "shoal_autoscaler_decisions",
        "Replica changes the autoscaler made, by service and direction.",
        None,
        stats.decisions().into_iter().map(|(service, dir, n)| {
            (
                vec![
                    ("service", Cow::Owned(service)),
                    ("direction", Cow::Borrowed(dir.as_str())),
                ],
                n,
            )
        }),
    )?;
    counters(
        enc,
        "shoal_autoscaler_metric_errors",
        "Evaluations that held the replica count because the metric could not be read.",
        None,
        stats
            .metric_errors()
            .into_iter()
            .map(|(service, n)| (vec![("service", Cow::Owned(service))], n)),
    )?;
    let observed = stats.observed();
    gauges(
        enc,
        "shoal_autoscaler_observed_value",
        "The metric value the autoscaler last observed for the service.",
        None,
        observed.iter().map(|(service, value, _)| {
            (vec![("service", Cow::Borrowed(service.as_str()))], *value)
        }),
    )?;
    gauges(
        enc,
        "shoal_autoscaler_target_value",
        "The target value of the service's autoscaling policy.",
        None,
        observed.iter().map(|(service, _, target)| {
            (vec![("service", Cow::Borrowed(service.as_str()))], *target)
        }),
    )
}
