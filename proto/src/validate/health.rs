//! A container's healthcheck as docker takes it: `--health-cmd`, `--health-interval`,
//! `--health-timeout`, `--health-retries`, `--health-start-period` and `--no-healthcheck`
//! (docker's `HealthConfig`). The CLI parses the flags with [`duration_ms`] and
//! [`parse_retries`] and the control API checks the stored form with [`container`], so both
//! refuse the same values with the same words.
//!
//! The defaults (used by the worker for a field neither the service nor the image sets) are
//! docker's: every 30s, 30s to answer, unhealthy after 3 failures in a row, no start period.

use std::time::Duration;

use crate::{ContainerSpec, HealthConfig};

/// Docker's defaults for a field left 0.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRIES: u64 = 3;
pub const DEFAULT_START_PERIOD: Duration = Duration::ZERO;
/// The shortest interval, timeout or start period docker accepts (other than 0, the default).
pub const MINIMUM_DURATION: Duration = Duration::from_millis(1);

/// The test kinds of docker's `HealthConfig.Test`.
pub const TEST_NONE: &str = "NONE";
pub const TEST_CMD: &str = "CMD";
pub const TEST_CMD_SHELL: &str = "CMD-SHELL";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    #[error("--no-healthcheck conflicts with --health-* options: give one or the other")]
    NoHealthcheckConflict,
    #[error(
        "invalid {flag} {value:?}: the duration cannot be negative (give 0 for the default, or \
         e.g. 5s, 1m30s, 500ms)"
    )]
    NegativeDuration { flag: &'static str, value: String },
    #[error(
        "invalid {flag} {value:?}: {flag} must be 0 (the default) or at least 1ms, e.g. 5s, \
         1m30s, 500ms"
    )]
    DurationTooShort { flag: &'static str, value: String },
    #[error("invalid --health-retries {0:?}: must be a non-negative integer (0 = the default, 3)")]
    InvalidRetries(String),
    #[error(
        "invalid healthcheck test {0:?}: it starts with NONE, CMD or CMD-SHELL (docker's forms; \
         `--health-cmd CMD` gives CMD-SHELL)"
    )]
    UnknownTest(String),
    #[error("invalid healthcheck test: NONE takes no command (got {0:?})")]
    NoneWithCommand(Vec<String>),
    #[error("invalid healthcheck test: CMD needs the command to run, e.g. [\"CMD\", \"true\"]")]
    CmdWithoutCommand,
    #[error(
        "invalid healthcheck test: CMD-SHELL takes one non-empty command string (got {0:?}); \
         pass it as `--health-cmd 'CMD'`"
    )]
    ShellArity(Vec<String>),
}

/// A duration flag's value in milliseconds (the unit the spec holds): 0 for the default,
/// otherwise at least [`MINIMUM_DURATION`]. `text` is what the user typed, for the message.
pub fn duration_ms(flag: &'static str, text: &str, d: Duration) -> Result<u64, HealthError> {
    if !d.is_zero() && d < MINIMUM_DURATION {
        return Err(HealthError::DurationTooShort {
            flag,
            value: text.to_string(),
        });
    }
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `--health-retries N`: a count, never negative.
pub fn parse_retries(text: &str) -> Result<u64, HealthError> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| HealthError::InvalidRetries(text.to_string()))
}

/// The test forms docker accepts: none (the image's), `NONE` alone, `CMD` with a command,
/// `CMD-SHELL` with one command string.
pub fn test(test: &[String]) -> Result<(), HealthError> {
    let Some((kind, rest)) = test.split_first() else {
        return Ok(());
    };
    match kind.as_str() {
        TEST_NONE if rest.is_empty() => Ok(()),
        TEST_NONE => Err(HealthError::NoneWithCommand(rest.to_vec())),
        TEST_CMD if rest.is_empty() || rest[0].is_empty() => Err(HealthError::CmdWithoutCommand),
        TEST_CMD => Ok(()),
        TEST_CMD_SHELL if rest.len() == 1 && !rest[0].trim().is_empty() => Ok(()),
        TEST_CMD_SHELL => Err(HealthError::ShellArity(rest.to_vec())),
        other => Err(HealthError::UnknownTest(other.to_string())),
    }
}

/// The container's healthcheck, if it has one, as the control API checks it before storing.
/// Durations are whole milliseconds there, so every value is 0 or at least 1ms.
pub fn container(c: &ContainerSpec) -> Result<(), HealthError> {
    match &c.healthcheck {
        Some(h) => test(&h.test),
        None => Ok(()),
    }
}

/// Whether `h` turns the image's check off (`--no-healthcheck`).
pub fn disabled(h: &HealthConfig) -> bool {
    h.test.first().is_some_and(|t| t == TEST_NONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn durations_are_zero_or_at_least_a_millisecond() {
        let ms = |d| duration_ms("--health-interval", "x", d);
        assert_eq!(ms(Duration::ZERO), Ok(0));
        assert_eq!(ms(Duration::from_millis(1)), Ok(1));
        assert_eq!(ms(Duration::from_secs(90)), Ok(90_000));
        let err = duration_ms("--health-timeout", "500us", Duration::from_micros(500));
        assert_eq!(
            err.unwrap_err().to_string(),
            "invalid --health-timeout \"500us\": --health-timeout must be 0 (the default) or at \
             least 1ms, e.g. 5s, 1m30s, 500ms"
        );
    }

    #[test]
    fn retries_are_non_negative_integers() {
        assert_eq!(parse_retries("0"), Ok(0));
        assert_eq!(parse_retries(" 5 "), Ok(5));
        for bad in ["-1", "x", "1.5", ""] {
            let err = parse_retries(bad).unwrap_err().to_string();
            assert!(err.contains("non-negative integer"), "{bad}: {err}");
        }
    }

    #[test]
    fn test_forms_follow_docker() {
        for ok in [
            &[][..],
            &["NONE"][..],
            &["CMD", "true"][..],
            &["CMD", "test", "-f", "/tmp/ok"][..],
            &["CMD-SHELL", "test -f /tmp/ok"][..],
        ] {
            assert_eq!(test(&strings(ok)), Ok(()), "{ok:?}");
        }
        assert_eq!(
            test(&strings(&["NONE", "x"])),
            Err(HealthError::NoneWithCommand(strings(&["x"])))
        );
        assert_eq!(
            test(&strings(&["CMD"])),
            Err(HealthError::CmdWithoutCommand)
        );
        assert_eq!(
            test(&strings(&["CMD-SHELL"])),
            Err(HealthError::ShellArity(vec![]))
        );
        assert_eq!(
            test(&strings(&["CMD-SHELL", "a", "b"])),
            Err(HealthError::ShellArity(strings(&["a", "b"])))
        );
        assert_eq!(
            test(&strings(&["curl", "x"])),
            Err(HealthError::UnknownTest("curl".into()))
        );
        assert!(disabled(&HealthConfig {
            test: strings(&["NONE"]),
            ..Default::default()
        }));
        assert!(!disabled(&HealthConfig::default()));
    }
}
