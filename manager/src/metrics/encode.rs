//! Helpers for collectors that compute their series at scrape time: one descriptor, then one
//! sample per label set.

use std::fmt;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, MetricEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// Labels as (name, value) pairs, in the order they are written.
pub type Labels<'a> = Vec<(&'static str, std::borrow::Cow<'a, str>)>;

/// A gauge without labels.
pub fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    enc.encode_descriptor(name, help, unit, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A gauge with one sample per label set.
pub fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    each_sample(&mut metric, samples, |sample, value| {
        sample.encode_gauge(value)
    })
}

/// A counter (the encoder appends `_total`) with one sample per label set.
pub fn counters<L: EncodeLabelSet, V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    each_sample(&mut metric, samples, |sample, value| {
        sample.encode_counter::<NoLabelSet, V, f64>(value, None)
    })
}

/// Writes one sample of `metric` per label set, its value through `encode_value`: the loop
/// [`gauges`] and [`counters`] share.
fn each_sample<L: EncodeLabelSet, V>(
    metric: &mut MetricEncoder,
    samples: impl IntoIterator<Item = (L, V)>,
    encode_value: impl Fn(&mut MetricEncoder, &V) -> fmt::Result,
) -> fmt::Result {
    for (labels, value) in samples {
        encode_value(&mut metric.encode_family(&labels)?, &value)?;
    }
    Ok(())
}

/// A counter without labels.
pub fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl EncodeCounterValue,
) -> fmt::Result {
    enc.encode_descriptor(name, help, unit, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, f64>(&value, None)
}

/// A lower-case label value for an enum name such as `NODE_STATE_READY` or `Running`.
pub fn snake(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}
