//! Value parsers for the flags that several command groups share (labels, environment, CPUs,
//! memory, durations, replica counts, roles…). clap reports their messages as usage errors, so
//! each says what was wrong and what is expected. Every command group takes them from here
//! rather than from another group.

use std::time::Duration;

use clap::ValueEnum;

use crate::output;

pub fn parse_replicas(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("invalid replicas value {s:?}: must be a non-negative integer"))
}

pub fn parse_duration_flag(s: &str) -> Result<Duration, String> {
    output::parse_duration(s)
}

/// `KEY=VALUE`; a bare `KEY` takes its value from this shell's environment, as docker does,
/// and is an error when the shell does not have it (docker would silently drop it).
pub fn parse_env(s: &str) -> Result<String, String> {
    let (key, value) = match s.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (s, None),
    };
    if key.is_empty() {
        return Err(format!(
            "invalid environment variable {s:?}: the name before '=' is empty (expected KEY=VALUE)"
        ));
    }
    if key.chars().any(char::is_whitespace) {
        return Err(format!(
            "invalid environment variable {s:?}: the name {key:?} contains whitespace"
        ));
    }
    match value {
        Some(_) => Ok(s.to_string()),
        None => match std::env::var(key) {
            Ok(v) => Ok(format!("{key}={v}")),
            Err(_) => Err(format!(
                "invalid environment variable {s:?}: expected KEY=VALUE ({key} is not set in this shell to copy it from)"
            )),
        },
    }
}

/// `KEY=VALUE` or `KEY` (empty value), as docker's `--label`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').unwrap_or((s, ""));
    if key.trim().is_empty() {
        return Err(format!(
            "invalid label {s:?}: the name before '=' is empty (expected KEY=VALUE)"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

/// A signal by name (`SIGTERM`, `term`) or number; names are sent in their `SIGXXX` form.
pub fn parse_stop_signal(s: &str) -> Result<String, String> {
    use std::str::FromStr;
    let text = s.trim();
    if let Ok(n) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|_| text.to_string())
            .map_err(|_| format!("invalid stop signal {s:?}: no signal has number {n}"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map(|sig| sig.as_str().to_string())
        .map_err(|_| {
            format!(
                "invalid stop signal {s:?}: expected a name such as SIGTERM or SIGINT, or a number"
            )
        })
}

/// A CPU count as docker's `--limit-cpu 0.5`, in nano CPUs.
pub fn parse_cpus(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid CPU count {s:?}: expected a number of CPUs such as 0.5 or 2");
    let cpus: f64 = s.trim().parse().map_err(|_| bad())?;
    if !(0.0..=1e9).contains(&cpus) {
        return Err(bad());
    }
    Ok((cpus * 1e9).round() as u64)
}

/// A memory size as docker's `--limit-memory`: a number and an optional binary unit (b, k, m,
/// g, t; `KiB`, `MB`… spellings too), e.g. `64M`, `1.5g`, `1048576`.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid memory size {s:?}: expected a number with an optional unit b, k, m, g or t \
             (e.g. 64M, 1.5G)"
        )
    };
    let text = s.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// `70%` or `70`: above 0, at most 100.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let text = s.trim();
    let number = text.strip_suffix('%').unwrap_or(text).trim();
    let value = number
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("invalid percentage {s:?}: expected a number such as 70%"))?;
    if value <= 0.0 || value > 100.0 {
        return Err(format!(
            "percentage {s:?} is out of range: give a percentage above 0 and at most 100"
        ));
    }
    Ok(value)
}

/// CPUs for display: `0.5`, `2`.
pub fn cpus_text(nano: u64) -> String {
    let text = format!("{:.9}", nano as f64 / 1e9);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Worker,
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Manager => "manager",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_values_parse_like_docker() {
        assert_eq!(parse_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("half")
            .unwrap_err()
            .contains("invalid CPU count"));
        assert_eq!(parse_memory("64M"), Ok(64 << 20));
        assert_eq!(parse_memory("64m"), Ok(64 << 20));
        assert_eq!(parse_memory("64MiB"), Ok(64 << 20));
        assert_eq!(parse_memory("1.5g"), Ok(3 << 29));
        assert_eq!(parse_memory("1024"), Ok(1024));
        assert_eq!(parse_memory("2kb"), Ok(2048));
        assert!(parse_memory("64Q")
            .unwrap_err()
            .contains("invalid memory size"));
        assert!(parse_memory("M").is_err());
        assert_eq!(parse_percent("70%"), Ok(70.0));
        assert_eq!(parse_percent("12.5"), Ok(12.5));
        assert!(parse_percent("lots").is_err());
        assert!(parse_percent("0").is_err());
        assert_eq!(cpus_text(500_000_000), "0.5");
        assert_eq!(cpus_text(2_000_000_000), "2");
    }

    #[test]
    fn env_without_value_comes_from_the_shell() {
        std::env::set_var("SHOAL_TEST_ENV_COPY", "v1");
        assert_eq!(
            parse_env("SHOAL_TEST_ENV_COPY").unwrap(),
            "SHOAL_TEST_ENV_COPY=v1"
        );
        assert!(parse_env("SHOAL_TEST_ENV_SURELY_UNSET").is_err());
        assert_eq!(parse_env("A=").unwrap(), "A=");
        assert_eq!(parse_env("A=b=c").unwrap(), "A=b=c");
        assert!(parse_env("A B=c").is_err());
    }
}
