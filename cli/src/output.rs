//! Formatting shared by the commands: docker-style tables, `--format`, human durations and
//! sizes, Go-style durations, and the JSON shape of `inspect`.
//!
//! Everything here is pure so that it is unit-tested without a daemon.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

/// Renders rows as docker does (Go's tabwriter with minwidth 10 and padding 3): every column but
/// the last is padded to its widest cell plus three spaces. Trailing blanks are trimmed, which
/// docker does not do, so that an empty last column leaves no whitespace behind.
pub fn render_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        // The last cell of a row is not a tabwriter cell: it does not widen its column.
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            widths[i] = widths[i].max(display_width(cell) + 3).max(10);
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i].saturating_sub(display_width(cell));
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn display_width(s: &str) -> usize {
    s.chars().count()
}

/// How a listing is printed, from `--format`: docker's `table`, `json` (one object per line) or
/// a Go-template subset (`{{.Field}}`, `{{json .}}`, `{{json .Field}}`, optionally `table …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Template { table: bool, template: String },
}

impl Format {
    pub fn parse(format: Option<&str>) -> Format {
        let Some(format) = format else {
            return Format::Table;
        };
        // Docker lets `\t` and `\n` be typed as two characters on the command line.
        let format = format.replace("\\t", "\t").replace("\\n", "\n");
        match format.trim() {
            "" | "table" => Format::Table,
            "json" | "{{json .}}" => Format::Json,
            _ => match format.strip_prefix("table ") {
                Some(rest) => Format::Template {
                    table: true,
                    template: rest.to_string(),
                },
                None => Format::Template {
                    table: false,
                    template: format,
                },
            },
        }
    }
}

/// One row of a listing: the table cells, and the fields `json` and templates see.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub cells: Vec<String>,
    pub fields: Map<String, Value>,
}

/// A listing as `ls`/`ps` print it. `columns` pairs each table column's field name with its
/// header, so `table {{.Field}}` templates get docker's headers too.
#[derive(Debug, Clone)]
pub struct Listing {
    pub columns: &'static [(&'static str, &'static str)],
    pub rows: Vec<Row>,
}

impl Listing {
    pub fn render(&self, format: &Format) -> Result<String> {
        match format {
            Format::Table => {
                let mut all = Vec::with_capacity(self.rows.len() + 1);
                all.push(self.columns.iter().map(|(_, h)| h.to_string()).collect());
                all.extend(self.rows.iter().map(|r| r.cells.clone()));
                Ok(render_table(&all))
            }
            Format::Json => {
                let mut out = String::new();
                for row in &self.rows {
                    out.push_str(&serde_json::to_string(&row.fields)?);
                    out.push('\n');
                }
                Ok(out)
            }
            Format::Template { table, template } => {
                let mut lines = Vec::with_capacity(self.rows.len() + 1);
                if *table {
                    lines.push(render_template(
                        template,
                        &TemplateInput::Headers(self.columns),
                    )?);
                }
                for row in &self.rows {
                    lines.push(render_template(template, &TemplateInput::Row(&row.fields))?);
                }
                if *table {
                    let rows: Vec<Vec<String>> = lines
                        .iter()
                        .map(|l| l.split('\t').map(str::to_string).collect())
                        .collect();
                    Ok(render_table(&rows))
                } else {
                    Ok(lines.iter().map(|l| format!("{l}\n")).collect())
                }
            }
        }
    }
}

enum TemplateInput<'a> {
    Row(&'a Map<String, Value>),
    /// The header line of a `table` template: each field is replaced by its column header.
    Headers(&'static [(&'static str, &'static str)]),
}

fn render_template(template: &str, input: &TemplateInput<'_>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            bail!("template: unclosed action in {template:?}");
        };
        let action = after[..end]
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-');
        out.push_str(&eval_action(action.trim(), input)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn eval_action(action: &str, input: &TemplateInput<'_>) -> Result<String> {
    let (json, arg) = match action.strip_prefix("json ") {
        Some(arg) => (true, arg.trim()),
        None => (false, action),
    };
    let Some(field) = arg.strip_prefix('.') else {
        bail!("template: unsupported action {{{{{action}}}}} (supported: {{{{.Field}}}}, {{{{json .}}}}, {{{{json .Field}}}})");
    };
    match input {
        TemplateInput::Headers(columns) => Ok(if field.is_empty() {
            String::new()
        } else {
            columns
                .iter()
                .find(|(k, _)| *k == field)
                .map_or_else(|| field.to_uppercase(), |(_, h)| h.to_string())
        }),
        TemplateInput::Row(fields) => {
            if field.is_empty() {
                return Ok(if json {
                    serde_json::to_string(fields)?
                } else {
                    Value::Object((*fields).clone()).to_string()
                });
            }
            let Some(value) = fields.get(field) else {
                let known: Vec<&str> = fields.keys().map(String::as_str).collect();
                bail!(
                    "template: can't evaluate field {field} (fields: {})",
                    known.join(", ")
                );
            };
            Ok(match (json, value) {
                (true, v) => serde_json::to_string(v)?,
                (false, Value::String(s)) => s.clone(),
                (false, v) => v.to_string(),
            })
        }
    }
}

/// Key/value blocks as `inspect --pretty` prints them: values aligned in one column, sections
/// (keys without a value) introducing indented fields.
#[derive(Debug, Default)]
pub struct Pretty {
    lines: Vec<(usize, String, Option<String>)>,
}

impl Pretty {
    pub fn section(&mut self, indent: usize, key: &str) {
        self.lines.push((indent, key.to_string(), None));
    }

    pub fn field(&mut self, indent: usize, key: &str, value: impl Into<String>) {
        self.lines
            .push((indent, key.to_string(), Some(value.into())));
    }

    /// A `Labels:` section of `KEY=VALUE` lines, sorted; nothing when there are none.
    pub fn labels(&mut self, indent: usize, labels: &HashMap<String, String>) {
        if labels.is_empty() {
            return;
        }
        self.section(indent, "Labels");
        let mut sorted: Vec<_> = labels.iter().collect();
        sorted.sort();
        for (k, v) in sorted {
            self.field(indent + 1, "-", format!("{k}={v}"));
        }
    }

    pub fn render(&self) -> String {
        let width = self
            .lines
            .iter()
            .filter(|(_, _, v)| v.is_some())
            .map(|(indent, key, _)| indent + display_width(key) + 1)
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (indent, key, value) in &self.lines {
            let label = format!("{}{key}:", " ".repeat(*indent));
            match value {
                Some(value) => {
                    let pad = width + 1 - display_width(&label);
                    out.push_str(format!("{label}{}{value}", " ".repeat(pad)).trim_end());
                }
                None => out.push_str(&label),
            }
            out.push('\n');
        }
        out
    }
}

/// `--format` for a single object (`info`): `json`, or a template over its JSON fields.
pub fn render_object(format: &str, value: &Value) -> Result<String> {
    match Format::parse(Some(format)) {
        Format::Table => Ok(format!("{}\n", serde_json::to_string_pretty(value)?)),
        Format::Json => Ok(format!("{}\n", serde_json::to_string(value)?)),
        Format::Template { template, .. } => {
            let empty = Map::new();
            let fields = value.as_object().unwrap_or(&empty);
            Ok(format!(
                "{}\n",
                render_template(&template, &TemplateInput::Row(fields))?
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Times and sizes
// ---------------------------------------------------------------------------------------------

/// Docker's `units.HumanDuration`: "Less than a second", "About a minute", "3 hours", ….
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 1 {
        return "Less than a second".into();
    }
    if seconds == 1 {
        return "1 second".into();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = seconds / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", seconds / 3600 / 24 / 365)
}

/// "2 minutes ago" for a timestamp in ms since the epoch, relative to `now_ms`. A timestamp in
/// the future (clock skew between nodes) reads as "Less than a second ago".
pub fn ago(timestamp_ms: i64, now_ms: i64) -> String {
    let elapsed = Duration::from_millis(now_ms.saturating_sub(timestamp_ms).max(0) as u64);
    format!("{} ago", human_duration(elapsed))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// RFC 3339 in UTC, for inspect output; empty for an unset (zero) timestamp.
pub fn rfc3339(timestamp_ms: i64) -> String {
    if timestamp_ms == 0 {
        return String::new();
    }
    chrono::DateTime::from_timestamp_millis(timestamp_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Docker's fixed-width RFC 3339 with nanoseconds, as `logs -t` prints it.
pub fn rfc3339_nano(timestamp_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(timestamp_ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string())
        .unwrap_or_default()
}

/// Docker's `units.HumanSizeWithPrecision(size, 3)` (decimal units, as `image ls` prints them):
/// "4.26MB", "187MB", "512B". Unlike docker, 999.9kB rounds up to "1MB" rather than "1e+03kB".
pub fn human_size(bytes: u64) -> String {
    scaled(
        bytes as f64,
        1000.0,
        &["B", "kB", "MB", "GB", "TB", "PB", "EB"],
        3,
    )
}

/// Docker's `units.BytesSize` (binary units, 4 significant digits): "1.944GiB".
pub fn bytes_size(bytes: u64) -> String {
    scaled(
        bytes as f64,
        1024.0,
        &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"],
        4,
    )
}

fn scaled(mut value: f64, base: f64, units: &[&str], digits: usize) -> String {
    let mut unit = 0;
    loop {
        let text = significant(value, digits);
        // Rounding can carry into the next unit (999.96 → "1000"): move on then.
        let rounded: f64 = text.parse().unwrap_or(value);
        if rounded < base || unit + 1 == units.len() {
            return format!("{text}{}", units[unit]);
        }
        value /= base;
        unit += 1;
    }
}

/// Go's `%.Ng`: `digits` significant digits, trailing zeros dropped.
fn significant(value: f64, digits: usize) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let magnitude = value.abs().log10().floor() as i64;
    let decimals = (digits as i64 - 1 - magnitude).max(0) as usize;
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Go durations (docker's flags take them: `10s`, `1m30s`, `1.5s`, `300ms`)
// ---------------------------------------------------------------------------------------------

/// Parses a Go duration (`1h2m3.5s`, `300ms`, `0`). Human forms humantime knows (`1min`,
/// `2 hours`) are accepted too, since nothing is lost by being lenient here.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let text = s.trim();
    match parse_go_duration(text) {
        Some(d) => Ok(d),
        None => humantime::parse_duration(text).map_err(|_| {
            format!(
                "invalid duration {s:?}: expected a number with a unit, as in 10s, 1m30s, 1.5s, 300ms or 2h"
            )
        }),
    }
}

fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total_ns: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ns += number * scale;
    }
    if !total_ns.is_finite() || total_ns > u64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total_ns.round() as u64))
}

/// Go's `time.Duration.String()` for whole milliseconds: "5s", "1m30s", "1h0m0s", "300ms", "0s".
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = (ms / 60_000) % 60;
    let seconds = (ms / 1000) % 60;
    let millis = ms % 1000;
    let secs = if millis == 0 {
        format!("{seconds}s")
    } else {
        let frac = format!("{millis:03}");
        format!("{seconds}.{}s", frac.trim_end_matches('0'))
    };
    if hours > 0 {
        format!("{hours}h{minutes}m{secs}")
    } else if minutes > 0 {
        format!("{minutes}m{secs}")
    } else {
        secs
    }
}

// ---------------------------------------------------------------------------------------------
// IDs and names
// ---------------------------------------------------------------------------------------------

/// The first 12 characters of an ID, as docker's tables show them.
pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(12) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

/// Cuts `s` to at most `max` characters, ending with "…" when cut.
pub fn ellipsize(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// An enum's wire name made readable: `NODE_ROLE_MANAGER` with prefix `NODE_ROLE_` → "manager".
pub fn enum_word(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix).unwrap_or(full).to_lowercase()
}

/// Capitalised as docker prints states and roles: "ready" → "Ready".
pub fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Inspect JSON
// ---------------------------------------------------------------------------------------------

/// The wire object as JSON with enums by name and timestamps in RFC 3339, so `inspect` reads
/// without the proto at hand. Field names stay the proto's.
pub fn inspect_json<T: serde::Serialize>(object: &T) -> Result<Value> {
    let mut value = serde_json::to_value(object)?;
    readable(&mut value);
    Ok(value)
}

fn readable(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let Some(v) = map.get_mut(&key) else { continue };
                if let Some(name) = enum_name(&key, v) {
                    *v = Value::String(name);
                    continue;
                }
                readable(v);
                if let (Some(stem), Some(ms)) = (key.strip_suffix("_at_ms"), v.as_i64()) {
                    map.remove(&key);
                    map.insert(format!("{stem}_at"), Value::String(rfc3339(ms)));
                } else if let (true, Some(ms)) = (key == "timestamp_ms", v.as_i64()) {
                    map.remove(&key);
                    map.insert("timestamp".into(), Value::String(rfc3339(ms)));
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(readable),
        _ => {}
    }
}

/// The enum fields of the wire objects, by field name. Node.state and TaskStatus.state share a
/// name but not an enum: `node_json` names a node's; a task's status stays a number.
fn enum_name(key: &str, value: &Value) -> Option<String> {
    use shoal_proto::update_config::{FailureAction, Order};
    use shoal_proto::{restart_policy::Condition, NodeAvailability, NodeRole, TaskState};
    let n = i32::try_from(value.as_i64()?).ok()?;
    let name = match key {
        "role" => enum_word(NodeRole::try_from(n).ok()?.as_str_name(), "NODE_ROLE_"),
        "availability" => enum_word(
            NodeAvailability::try_from(n).ok()?.as_str_name(),
            "NODE_AVAILABILITY_",
        ),
        "desired_state" => enum_word(TaskState::try_from(n).ok()?.as_str_name(), "TASK_STATE_"),
        "condition" => enum_word(Condition::try_from(n).ok()?.as_str_name(), "CONDITION_"),
        "failure_action" => enum_word(FailureAction::try_from(n).ok()?.as_str_name(), ""),
        "order" => enum_word(Order::try_from(n).ok()?.as_str_name(), ""),
        _ => return None,
    };
    Some(name.replace('_', "-"))
}

/// `inspect_json` for a node: its `state` is a NodeState.
pub fn node_json(node: &shoal_proto::Node) -> Result<Value> {
    let mut value = inspect_json(node)?;
    if let Some(state) = value.get_mut("state") {
        if let Some(n) = state.as_i64().and_then(|n| i32::try_from(n).ok()) {
            if let Ok(s) = shoal_proto::NodeState::try_from(n) {
                *state = Value::String(enum_word(s.as_str_name(), "NODE_STATE_"));
            }
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that `f` writes each input as its expected text.
    fn writes<T: Copy + std::fmt::Debug>(f: fn(T) -> String, cases: &[(T, &str)]) {
        for (input, want) in cases {
            assert_eq!(f(*input), *want, "{input:?}");
        }
    }

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn table_pads_like_docker() {
        let out = render_table(&[
            row(&["ID", "NAME", "REPLICAS", "PORTS"]),
            row(&["abcdefghijkl", "web", "3/3", ""]),
        ]);
        assert_eq!(
            out,
            "ID             NAME      REPLICAS   PORTS\n\
             abcdefghijkl   web       3/3\n"
        );
    }

    #[test]
    fn table_last_column_does_not_widen() {
        let out = render_table(&[row(&["A", "B"]), row(&["x", "a very long last cell"])]);
        assert_eq!(out, "A         B\nx         a very long last cell\n");
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let out = render_table(&[row(&["ÉÉÉÉÉÉÉÉÉÉ", "x"]), row(&["a", "y"])]);
        assert_eq!(out, "ÉÉÉÉÉÉÉÉÉÉ   x\na            y\n");
    }

    #[test]
    fn human_durations() {
        let s = Duration::from_secs;
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(s(1)), "1 second");
        assert_eq!(human_duration(s(45)), "45 seconds");
        assert_eq!(human_duration(s(90)), "About a minute");
        assert_eq!(human_duration(s(120)), "2 minutes");
        assert_eq!(human_duration(s(3600)), "About an hour");
        assert_eq!(human_duration(s(5 * 3600)), "5 hours");
        assert_eq!(human_duration(s(3 * 86400)), "3 days");
        assert_eq!(human_duration(s(21 * 86400)), "3 weeks");
        assert_eq!(human_duration(s(90 * 86400)), "3 months");
        assert_eq!(human_duration(s(800 * 86400)), "2 years");
        assert_eq!(ago(1_000, 121_000), "2 minutes ago");
        assert_eq!(ago(10_000, 5_000), "Less than a second ago");
    }

    #[test]
    fn sizes() {
        writes(
            human_size,
            &[
                (0, "0B"),
                (512, "512B"),
                (4_261_000, "4.26MB"),
                (187_300_000, "187MB"),
                (1_500, "1.5kB"),
                (999_960, "1MB"),
            ],
        );
        writes(bytes_size, &[(2_087_354_368, "1.944GiB"), (1024, "1KiB")]);
    }

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("10s"), Ok(ms(10_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("300ms"), Ok(ms(300)));
        assert_eq!(parse_duration("1h2m"), Ok(ms(3_720_000)));
        assert_eq!(parse_duration("0"), Ok(ms(0)));
        assert_eq!(parse_duration("2 min"), Ok(ms(120_000)));
        for bad in ["", "10", "-1s", "abc", "1x", "s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("invalid duration"), "{bad}: {err}");
        }
        writes(
            format_duration_ms,
            &[
                (0, "0s"),
                (300, "300ms"),
                (5_000, "5s"),
                (1_500, "1.5s"),
                (90_000, "1m30s"),
                (3_600_000, "1h0m0s"),
            ],
        );
    }

    #[test]
    fn formats_and_templates() {
        let columns: &'static [(&str, &str)] = &[("ID", "ID"), ("Name", "NAME")];
        let mut fields = Map::new();
        fields.insert("ID".into(), "abc".into());
        fields.insert("Name".into(), "web".into());
        fields.insert("Self".into(), true.into());
        let listing = Listing {
            columns,
            rows: vec![Row {
                cells: row(&["abc", "web"]),
                fields,
            }],
        };
        assert_eq!(
            listing.render(&Format::parse(None)).unwrap(),
            "ID        NAME\nabc       web\n"
        );
        assert_eq!(
            listing.render(&Format::parse(Some("json"))).unwrap(),
            "{\"ID\":\"abc\",\"Name\":\"web\",\"Self\":true}\n"
        );
        assert_eq!(
            listing
                .render(&Format::parse(Some("{{.Name}}={{.Self}}")))
                .unwrap(),
            "web=true\n"
        );
        assert_eq!(
            listing
                .render(&Format::parse(Some("table {{.Name}}\\t{{.ID}}")))
                .unwrap(),
            "NAME      ID\nweb       abc\n"
        );
        assert_eq!(
            listing
                .render(&Format::parse(Some("{{json .Name}}")))
                .unwrap(),
            "\"web\"\n"
        );
        let err = listing
            .render(&Format::parse(Some("{{.Nope}}")))
            .unwrap_err();
        assert!(err.to_string().contains("can't evaluate field Nope"));
    }

    #[test]
    fn pretty_aligns_values() {
        let mut p = Pretty::default();
        p.field(0, "ID", "abc");
        p.section(0, "Status");
        p.field(1, "Availability", "Active");
        p.field(0, "Labels", "");
        assert_eq!(
            p.render(),
            "ID:            abc\nStatus:\n Availability: Active\nLabels:\n"
        );
    }

    #[test]
    fn ids_and_text() {
        assert_eq!(short_id("abcdefghijklmnopqrstuvwxy"), "abcdefghijkl");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(
            ellipsize("No such image: busybox:latest!", 10),
            "No such i…"
        );
        assert_eq!(ellipsize("short", 10), "short");
        assert_eq!(enum_word("NODE_ROLE_MANAGER", "NODE_ROLE_"), "manager");
        assert_eq!(capitalise("ready"), "Ready");
    }

    #[test]
    fn inspect_json_names_enums_and_times() {
        let node = shoal_proto::Node {
            id: "n1".into(),
            role: shoal_proto::NodeRole::Manager as i32,
            state: shoal_proto::NodeState::Ready as i32,
            meta: Some(shoal_proto::Meta {
                version: 3,
                created_at_ms: 0,
                updated_at_ms: 1_700_000_000_000,
            }),
            ..Default::default()
        };
        let v = node_json(&node).unwrap();
        assert_eq!(v["role"], "manager");
        assert_eq!(v["state"], "ready");
        assert_eq!(v["availability"], "active");
        assert_eq!(v["meta"]["updated_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["meta"]["version"], 3);
    }
}
