//! `--health-cmd`, `--health-interval`, `--health-timeout`, `--health-retries`,
//! `--health-start-period` and `--no-healthcheck`, on `create` and `update`, as docker's:
//! create builds the container's `HealthConfig` (none without a flag: the image's
//! `HEALTHCHECK` applies), update changes only the fields whose flags are given (docker's
//! `updateHealthcheck`). Values are checked by `shoal_proto::validate::health`, so the daemon
//! refuses the same ones with the same words; `--pretty` shows the config.

use anyhow::Result;
use clap::Args;
use shoal_proto::validate::health::{
    self as rules, HealthError, TEST_CMD, TEST_CMD_SHELL, TEST_NONE,
};
use shoal_proto::{ContainerSpec, HealthConfig};

use crate::output::{self, Pretty};

/// A health duration flag's value in ms: not negative, 0 or at least 1ms.
fn health_duration(flag: &'static str, s: &str) -> Result<u64, String> {
    if s.trim().starts_with('-') {
        return Err(HealthError::NegativeDuration {
            flag,
            value: s.to_string(),
        }
        .to_string());
    }
    let d = output::parse_duration(s).map_err(|_| {
        format!("invalid {flag} {s:?}: expected a duration such as 5s, 1m30s or 500ms (0 = the default)")
    })?;
    rules::duration_ms(flag, s, d).map_err(|e| e.to_string())
}

fn interval_flag(s: &str) -> Result<u64, String> {
    health_duration("--health-interval", s)
}

fn timeout_flag(s: &str) -> Result<u64, String> {
    health_duration("--health-timeout", s)
}

fn start_period_flag(s: &str) -> Result<u64, String> {
    health_duration("--health-start-period", s)
}

fn retries_flag(s: &str) -> Result<u64, String> {
    rules::parse_retries(s).map_err(|e| e.to_string())
}

/// The healthcheck flags, the same on `create` and `update`.
#[derive(Debug, Args, Default)]
pub struct HealthFlags {
    /// Command to run to check health (inside the container, with /bin/sh -c)
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 30s)
    #[arg(long, value_name = "DURATION", value_parser = interval_flag, allow_hyphen_values = true)]
    pub health_interval: Option<u64>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 30s)
    #[arg(long, value_name = "DURATION", value_parser = timeout_flag, allow_hyphen_values = true)]
    pub health_timeout: Option<u64>,
    /// Consecutive failures needed to report unhealthy (default 3)
    #[arg(long, value_name = "N", value_parser = retries_flag, allow_hyphen_values = true)]
    pub health_retries: Option<u64>,
    /// Start period for the container to initialize before failed checks count (ms|s|m|h)
    /// (default 0s)
    #[arg(long, value_name = "DURATION", value_parser = start_period_flag, allow_hyphen_values = true)]
    pub health_start_period: Option<u64>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long)]
    pub no_healthcheck: bool,
}

impl HealthFlags {
    /// Whether any `--health-*` flag is given.
    fn any_health(&self) -> bool {
        self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
    }

    /// `--no-healthcheck` alone: `NONE`, which turns the image's check off.
    fn disabled(&self) -> Result<Option<HealthConfig>, HealthError> {
        if self.any_health() {
            return Err(HealthError::NoHealthcheckConflict);
        }
        Ok(Some(HealthConfig {
            test: vec![TEST_NONE.to_string()],
            ..Default::default()
        }))
    }

    /// A new service's healthcheck: none unless a flag is given.
    pub fn create(&self) -> Result<Option<HealthConfig>, HealthError> {
        if self.no_healthcheck {
            return self.disabled();
        }
        if !self.any_health() {
            return Ok(None);
        }
        let mut h = HealthConfig::default();
        self.set_fields(&mut h);
        Ok(Some(h))
    }

    /// `current` with the given flags applied, the rest kept (docker's `updateHealthcheck`).
    pub fn update(
        &self,
        current: Option<HealthConfig>,
    ) -> Result<Option<HealthConfig>, HealthError> {
        if self.no_healthcheck {
            return self.disabled();
        }
        if !self.any_health() {
            return Ok(current);
        }
        let mut h = current.unwrap_or_default();
        if rules::disabled(&h) {
            h.test.clear();
        }
        self.set_fields(&mut h);
        Ok(Some(h))
    }

    fn set_fields(&self, h: &mut HealthConfig) {
        if let Some(cmd) = &self.health_cmd {
            // An empty command falls back to the image's test, as docker's.
            h.test = if cmd.is_empty() {
                Vec::new()
            } else {
                vec![TEST_CMD_SHELL.to_string(), cmd.clone()]
            };
        }
        let set = |field: &mut u64, value: Option<u64>| {
            if let Some(v) = value {
                *field = v;
            }
        };
        set(&mut h.interval_ms, self.health_interval);
        set(&mut h.timeout_ms, self.health_timeout);
        set(&mut h.retries, self.health_retries);
        set(&mut h.start_period_ms, self.health_start_period);
    }
}

/// `--pretty`'s `Healthcheck:` block: the test and every field set (0 = the image's or the
/// default, left out).
pub fn pretty_health(p: &mut Pretty, c: &ContainerSpec) {
    let Some(h) = &c.healthcheck else {
        return;
    };
    p.section(1, "Healthcheck");
    let test = match h.test.split_first() {
        None => "(the image's)".to_string(),
        Some((kind, _)) if kind == TEST_NONE => "NONE (disabled)".to_string(),
        Some((kind, [cmd])) if kind == TEST_CMD_SHELL => cmd.clone(),
        Some((kind, args)) if kind == TEST_CMD => args.join(" "),
        Some(_) => h.test.join(" "),
    };
    p.field(2, "Test", test);
    for (name, ms) in [
        ("Interval", h.interval_ms),
        ("Timeout", h.timeout_ms),
        ("StartPeriod", h.start_period_ms),
    ] {
        if ms > 0 {
            p.field(2, name, output::format_duration_ms(ms));
        }
    }
    if h.retries > 0 {
        p.field(2, "Retries", h.retries.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::service::spec::{apply_update, build_spec};
    use crate::commands::service::testing::{create_args, parse, update_args};
    use shoal_proto::ServiceSpec;

    /// `create --name web --health-cmd 'test -f /tmp/ok' FLAGS… busybox`.
    fn checked(flags: &[&str]) -> ServiceSpec {
        let args = [
            &["--name", "web", "--health-cmd", "test -f /tmp/ok"],
            flags,
            &["busybox"],
        ]
        .concat();
        build_spec(&create_args(&args)).unwrap()
    }

    fn health_of(spec: &ServiceSpec) -> Option<HealthConfig> {
        spec.container.as_ref().and_then(|c| c.healthcheck.clone())
    }

    #[test]
    fn create_builds_dockers_health_config() {
        let spec = checked(&[
            "--health-interval",
            "500ms",
            "--health-timeout",
            "1m30s",
            "--health-retries",
            "2",
            "--health-start-period",
            "5s",
        ]);
        assert_eq!(
            health_of(&spec),
            Some(HealthConfig {
                test: vec!["CMD-SHELL".into(), "test -f /tmp/ok".into()],
                interval_ms: 500,
                timeout_ms: 90_000,
                retries: 2,
                start_period_ms: 5_000,
            })
        );
        let spec = build_spec(&create_args(&["--name", "web", "busybox"])).unwrap();
        assert_eq!(health_of(&spec), None, "no flag: the image's check");
        let spec = build_spec(&create_args(&[
            "--name",
            "web",
            "--no-healthcheck",
            "busybox",
        ]))
        .unwrap();
        assert_eq!(health_of(&spec).unwrap().test, ["NONE"]);
    }

    #[test]
    fn bad_health_values_are_refused_clearly() {
        let err = |args: &[&str]| parse(args).unwrap_err().to_string();
        let e = err(&["create", "--health-interval", "-1s", "busybox"]);
        assert!(e.contains("the duration cannot be negative"), "{e}");
        let e = err(&["create", "--health-timeout", "soon", "busybox"]);
        assert!(
            e.contains("invalid --health-timeout \"soon\": expected a duration"),
            "{e}"
        );
        let e = err(&["create", "--health-start-period", "500us", "busybox"]);
        assert!(e.contains("must be 0 (the default) or at least 1ms"), "{e}");
        let e = err(&["create", "--health-retries", "many", "busybox"]);
        assert!(e.contains("must be a non-negative integer"), "{e}");
        let e = err(&["create", "--health-retries", "-2", "busybox"]);
        assert!(e.contains("must be a non-negative integer"), "{e}");
        let e = build_spec(&create_args(&[
            "--name",
            "web",
            "--no-healthcheck",
            "--health-cmd",
            "true",
            "busybox",
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--no-healthcheck conflicts with --health-* options"),
            "{e}"
        );
    }

    #[test]
    fn pretty_shows_the_check() {
        let spec = checked(&["--health-interval", "1m30s", "--health-retries", "4"]);
        let service = shoal_proto::Service {
            spec: Some(Box::new(spec)),
            ..Default::default()
        };
        let out = crate::commands::service::inspect::pretty(&service);
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        let at = lines
            .iter()
            .position(|l| *l == "Healthcheck:")
            .unwrap_or_else(|| panic!("{out}"));
        let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
        let block: Vec<String> = lines[at + 1..at + 4].iter().map(|l| words(l)).collect();
        assert_eq!(
            block,
            ["Test: test -f /tmp/ok", "Interval: 1m30s", "Retries: 4"],
            "{out}"
        );
    }

    #[test]
    fn update_changes_only_the_given_fields() {
        let spec = build_spec(&create_args(&[
            "--name",
            "web",
            "--health-cmd",
            "true",
            "--health-interval",
            "2s",
            "busybox",
        ]))
        .unwrap();
        let spec = apply_update(&spec, &update_args(&["--health-retries", "5", "web"])).unwrap();
        let h = health_of(&spec).unwrap();
        assert_eq!(
            (h.test.join(" "), h.interval_ms, h.retries),
            ("CMD-SHELL true".to_string(), 2_000, 5)
        );
        let spec =
            apply_update(&spec, &update_args(&["--health-cmd", "test -f /x", "web"])).unwrap();
        let h = health_of(&spec).unwrap();
        assert_eq!(
            (h.test.join(" "), h.interval_ms, h.retries),
            ("CMD-SHELL test -f /x".to_string(), 2_000, 5)
        );
        // Unrelated flags leave it alone; --no-healthcheck replaces it with NONE, and a
        // later --health-* flag starts from an empty test again.
        let same = apply_update(&spec, &update_args(&["--env-add", "A=1", "web"])).unwrap();
        assert_eq!(health_of(&same), health_of(&spec));
        let off = apply_update(&spec, &update_args(&["--no-healthcheck", "web"])).unwrap();
        assert_eq!(health_of(&off).unwrap().test, ["NONE"]);
        let on = apply_update(&off, &update_args(&["--health-interval", "1s", "web"])).unwrap();
        assert_eq!(
            health_of(&on),
            Some(HealthConfig {
                interval_ms: 1_000,
                ..Default::default()
            })
        );
        let e = apply_update(
            &spec,
            &update_args(&["--no-healthcheck", "--health-retries", "1", "web"]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--no-healthcheck conflicts"), "{e}");
    }
}
