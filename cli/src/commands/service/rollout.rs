//! `--update-*` and `--rollback-*`: how a new spec (or a rollback) is rolled out, with docker's
//! defaults filled in on `create` (so `inspect` shows them) and changed field by field on
//! `update`.

use std::time::Duration;

use clap::Args;
use shoal_proto::update_config::{FailureAction, Order};
use shoal_proto::update_status::State as UpdateState;
use shoal_proto::validate::rollout::{parse_failure_action, parse_order, parse_ratio};
use shoal_proto::{Service, ServiceSpec, UpdateConfig};

use crate::commands::flags::parse_duration_flag;
use crate::output::{self, Pretty};

/// Docker's default `--update-monitor`/`--rollback-monitor`.
const DEFAULT_MONITOR: Duration = Duration::from_secs(5);

fn update_action(s: &str) -> Result<FailureAction, String> {
    parse_failure_action("update-failure-action", s).map_err(|e| e.to_string())
}

fn rollback_action(s: &str) -> Result<FailureAction, String> {
    parse_failure_action("rollback-failure-action", s).map_err(|e| e.to_string())
}

fn update_order(s: &str) -> Result<Order, String> {
    parse_order("update-order", s).map_err(|e| e.to_string())
}

fn rollback_order(s: &str) -> Result<Order, String> {
    parse_order("rollback-order", s).map_err(|e| e.to_string())
}

fn update_ratio(s: &str) -> Result<f32, String> {
    parse_ratio("update-max-failure-ratio", s).map_err(|e| e.to_string())
}

fn rollback_ratio(s: &str) -> Result<f32, String> {
    parse_ratio("rollback-max-failure-ratio", s).map_err(|e| e.to_string())
}

/// The flags of one policy, whichever it is.
struct Policy {
    parallelism: Option<u64>,
    delay: Option<Duration>,
    failure_action: Option<FailureAction>,
    monitor: Option<Duration>,
    max_failure_ratio: Option<f32>,
    order: Option<Order>,
}

impl Policy {
    /// `base` (or docker's defaults) with the given flags applied.
    fn apply(&self, base: Option<UpdateConfig>) -> UpdateConfig {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut c = base.unwrap_or(UpdateConfig {
            parallelism: 1,
            monitor_ms: ms(DEFAULT_MONITOR),
            ..Default::default()
        });
        if let Some(p) = self.parallelism {
            c.parallelism = p;
        }
        if let Some(d) = self.delay {
            c.delay_ms = ms(d);
        }
        if let Some(a) = self.failure_action {
            c.failure_action = a as i32;
        }
        if let Some(m) = self.monitor {
            c.monitor_ms = ms(m);
        }
        if let Some(r) = self.max_failure_ratio {
            c.max_failure_ratio = r;
        }
        if let Some(o) = self.order {
            c.order = o as i32;
        }
        c
    }
}

#[derive(Debug, Args, Default)]
pub struct RolloutFlags {
    /// Maximum number of tasks updated simultaneously (0 to update all at once) (default 1)
    #[arg(long, value_name = "N")]
    pub update_parallelism: Option<u64>,
    /// Delay between updates (ns|us|ms|s|m|h) (default 0s)
    #[arg(long, value_parser = parse_duration_flag)]
    pub update_delay: Option<Duration>,
    /// Action on update failure ("pause", "continue", "rollback") (default "pause")
    #[arg(long, value_name = "ACTION", value_parser = update_action)]
    pub update_failure_action: Option<FailureAction>,
    /// Duration after each task update to monitor for failure (ns|us|ms|s|m|h) (default 5s)
    #[arg(long, value_parser = parse_duration_flag)]
    pub update_monitor: Option<Duration>,
    /// Failure rate to tolerate during an update (0 to 1)
    #[arg(long, value_name = "RATIO", value_parser = update_ratio)]
    pub update_max_failure_ratio: Option<f32>,
    /// Update order ("start-first", "stop-first") (default "stop-first")
    #[arg(long, value_name = "ORDER", value_parser = update_order)]
    pub update_order: Option<Order>,
    /// Maximum number of tasks rolled back simultaneously (0 to roll back all at once) (default 1)
    #[arg(long, value_name = "N")]
    pub rollback_parallelism: Option<u64>,
    /// Delay between task rollbacks (ns|us|ms|s|m|h) (default 0s)
    #[arg(long, value_parser = parse_duration_flag)]
    pub rollback_delay: Option<Duration>,
    /// Action on rollback failure ("pause", "continue") (default "pause")
    #[arg(long, value_name = "ACTION", value_parser = rollback_action)]
    pub rollback_failure_action: Option<FailureAction>,
    /// Duration after each task rollback to monitor for failure (ns|us|ms|s|m|h) (default 5s)
    #[arg(long, value_parser = parse_duration_flag)]
    pub rollback_monitor: Option<Duration>,
    /// Failure rate to tolerate during a rollback (0 to 1)
    #[arg(long, value_name = "RATIO", value_parser = rollback_ratio)]
    pub rollback_max_failure_ratio: Option<f32>,
    /// Rollback order ("start-first", "stop-first") (default "stop-first")
    #[arg(long, value_name = "ORDER", value_parser = rollback_order)]
    pub rollback_order: Option<Order>,
}

impl RolloutFlags {
    fn update(&self) -> Policy {
        Policy {
            parallelism: self.update_parallelism,
            delay: self.update_delay,
            failure_action: self.update_failure_action,
            monitor: self.update_monitor,
            max_failure_ratio: self.update_max_failure_ratio,
            order: self.update_order,
        }
    }

    fn rollback(&self) -> Policy {
        Policy {
            parallelism: self.rollback_parallelism,
            delay: self.rollback_delay,
            failure_action: self.rollback_failure_action,
            monitor: self.rollback_monitor,
            max_failure_ratio: self.rollback_max_failure_ratio,
            order: self.rollback_order,
        }
    }

    /// Both policies of `spec`, with the flags applied over what it has (docker's defaults
    /// where it has none).
    pub fn apply(&self, spec: &mut ServiceSpec) {
        spec.update = Some(self.update().apply(spec.update.take()));
        spec.rollback = Some(self.rollback().apply(spec.rollback.take()));
    }
}

/// docker's word for an update state: "updating", "rollback_started" …
pub fn state_word(state: UpdateState) -> String {
    output::enum_word(state.as_str_name(), "")
}

/// `UpdateStatus:`, then `UpdateConfig:` and `RollbackConfig:`, as docker's `inspect --pretty`.
pub fn pretty(p: &mut Pretty, service: &Service) {
    if let Some(status) = &service.update_status {
        let now = output::now_ms();
        p.section(0, "UpdateStatus");
        p.field(1, "State", state_word(status.state()));
        if status.started_at_ms > 0 {
            p.field(1, "Started", output::ago(status.started_at_ms, now));
        }
        if status.completed_at_ms > 0 {
            p.field(1, "Completed", output::ago(status.completed_at_ms, now));
        }
        p.field(1, "Message", status.message.clone());
    }
    let spec = service.spec.as_ref();
    for (section, order, config) in [
        ("UpdateConfig", "Update order", spec.and_then(|s| s.update)),
        (
            "RollbackConfig",
            "Rollback order",
            spec.and_then(|s| s.rollback),
        ),
    ] {
        let Some(c) = config else { continue };
        p.section(0, section);
        p.field(1, "Parallelism", c.parallelism.to_string());
        if c.delay_ms > 0 {
            p.field(1, "Delay", output::format_duration_ms(c.delay_ms));
        }
        let action = output::enum_word(c.failure_action().as_str_name(), "");
        p.field(1, "On failure", action);
        p.field(
            1,
            "Monitoring Period",
            output::format_duration_ms(c.monitor_ms),
        );
        p.field(1, "Max failure ratio", c.max_failure_ratio.to_string());
        let word = output::enum_word(c.order().as_str_name(), "").replace('_', "-");
        p.field(1, order, word);
    }
}

/// `update_status.state` by name in `inspect`'s JSON (other `state`s are other enums).
pub fn name_status_state(service: &Service, json: &mut serde_json::Value) {
    if let (Some(status), Some(map)) = (
        &service.update_status,
        json.get_mut("update_status")
            .and_then(|v| v.as_object_mut()),
    ) {
        map.insert("state".into(), state_word(status.state()).into());
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::service::spec::{apply_update, build_spec};
    use crate::commands::service::testing::{create_args, parse, update_args};

    use super::*;

    #[test]
    fn create_fills_in_dockers_defaults() {
        let spec = build_spec(&create_args(&["--name", "web", "busybox"])).unwrap();
        for c in [spec.update.unwrap(), spec.rollback.unwrap()] {
            assert_eq!(c.parallelism, 1);
            assert_eq!(c.monitor_ms, 5_000);
            assert_eq!(c.failure_action(), FailureAction::Pause);
            assert_eq!(c.order(), Order::StopFirst);
            assert_eq!(c.delay_ms, 0);
        }
    }

    #[test]
    fn flags_set_each_field_and_update_changes_only_those() {
        let spec = build_spec(&create_args(&[
            "--name",
            "web",
            "--update-parallelism",
            "2",
            "--update-delay",
            "10s",
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "1m",
            "--update-max-failure-ratio",
            "0.3",
            "--update-order",
            "start-first",
            "--rollback-parallelism",
            "0",
            "--rollback-failure-action",
            "continue",
            "busybox",
        ]))
        .unwrap();
        let u = spec.update.unwrap();
        assert_eq!(
            (u.parallelism, u.delay_ms, u.monitor_ms),
            (2, 10_000, 60_000)
        );
        assert_eq!(u.failure_action(), FailureAction::Rollback);
        assert_eq!(u.order(), Order::StartFirst);
        assert!((u.max_failure_ratio - 0.3).abs() < 1e-6);
        let r = spec.rollback.unwrap();
        assert_eq!(r.parallelism, 0);
        assert_eq!(r.failure_action(), FailureAction::Continue);

        let updated = apply_update(
            &spec,
            &update_args(&[
                "--update-delay",
                "1s",
                "--rollback-order",
                "start-first",
                "web",
            ]),
        )
        .unwrap();
        let u = updated.update.unwrap();
        assert_eq!(
            (u.parallelism, u.delay_ms),
            (2, 1_000),
            "only the delay changed"
        );
        assert_eq!(updated.rollback.unwrap().order(), Order::StartFirst);
    }

    #[test]
    fn pretty_shows_status_and_policies() {
        let mut spec = build_spec(&create_args(&[
            "--name",
            "web",
            "--update-delay",
            "3s",
            "busybox",
        ]))
        .unwrap();
        spec.update.as_mut().unwrap().failure_action = FailureAction::Rollback as i32;
        let service = Service {
            id: "s1".into(),
            spec: Some(Box::new(spec)),
            update_status: Some(shoal_proto::UpdateStatus {
                state: UpdateState::RollbackStarted as i32,
                started_at_ms: 1,
                completed_at_ms: 0,
                message: "update rolled back due to failure or early termination of task t1".into(),
            }),
            ..Default::default()
        };
        let mut p = Pretty::default();
        pretty(&mut p, &service);
        let text = p.render();
        for line in [
            "UpdateStatus:",
            " State:",
            "rollback_started",
            "update rolled back due to failure",
            "UpdateConfig:",
            " Delay:",
            "3s",
            " On failure:",
            "rollback",
            "RollbackConfig:",
            " Rollback order:",
            "stop-first",
            " Monitoring Period:",
            "5s",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        let mut json = output::inspect_json(&service).unwrap();
        name_status_state(&service, &mut json);
        assert_eq!(json["update_status"]["state"], "rollback_started");
        assert_eq!(json["spec"]["update"]["failure_action"], "rollback");
        assert_eq!(json["spec"]["rollback"]["order"], "stop-first");
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (flag, value, words) in [
            (
                "--update-failure-action",
                "stop",
                "pause, continue or rollback",
            ),
            ("--rollback-failure-action", "rollback", "never rolled back"),
            ("--update-order", "first", "stop-first or start-first"),
            ("--update-max-failure-ratio", "1.5", "between 0 and 1"),
            ("--rollback-max-failure-ratio", "x", "between 0 and 1"),
            ("--update-delay", "soon", ""),
            ("--update-parallelism", "-1", ""),
        ] {
            let err = parse(&["create", "--name", "web", flag, value, "busybox"])
                .expect_err(flag)
                .to_string();
            assert!(err.contains(flag) || err.contains(words), "{flag}: {err}");
            assert!(err.contains(words), "{flag}: {err}");
        }
    }
}
