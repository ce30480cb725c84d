//! Waiting for a service to converge after `create` or `scale`, shown as docker ≥ 17.10 does:
//!
//! ```text
//! overall progress: 2 out of 3 tasks
//! 1/3: running   [==================================================>]
//! 2/3: running   [==================================================>]
//! 3/3: preparing [=================================>                 ]
//! verify: Waiting 2 seconds to verify that tasks are stable...
//! ```
//!
//! Unlike docker, the wait ends with an error when the service cannot converge (an image the
//! node does not have, a task failing over and over, a restart policy that will not restart),
//! instead of waiting forever.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use shoal_proto::{
    restart_policy::Condition, update_status::State as UpdateState, ListTasksRequest, Service,
    ServiceRef, Task, TaskState,
};

use crate::client::{Client, RpcResult};

/// How often the task list is polled.
pub(crate) const POLL: Duration = Duration::from_millis(200);
/// How long the service must stay converged before it is declared so: a container that exits
/// right after starting is caught here rather than reported as running. Docker uses 5s; a
/// Shoal task that fails to start is marked within a poll or two, so less suffices.
const VERIFY: Duration = Duration::from_secs(2);
/// Above this many replicas only the overall line is shown (docker's limit).
const MAX_PROGRESS_BARS: u64 = 20;
/// A slot whose task failed this many times since the change is not going to converge.
pub(crate) const MAX_FAILURES_PER_SLOT: usize = 3;
/// Width of the state column: the longest state name docker prints ("preparing").
const STATE_WIDTH: usize = 9;
const BAR_WIDTH: usize = 50;

/// Where the service stands, from one look at its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub running: u64,
    pub replicas: u64,
    pub converged: bool,
    /// `(slot, text)` per slot, empty above [`MAX_PROGRESS_BARS`].
    pub slots: Vec<(u64, String)>,
    /// Why the service cannot converge, when it cannot.
    pub fatal: Option<String>,
}

fn created(t: &Task) -> (i64, u64) {
    t.meta
        .as_ref()
        .map_or((0, 0), |m| (m.created_at_ms, m.version))
}

fn err_of(t: &Task) -> &str {
    t.status.as_ref().map_or("", |s| s.err.as_str())
}

fn exit_code_of(t: &Task) -> i32 {
    t.status.as_ref().map_or(0, |s| s.exit_code)
}

/// How a finished task ended, as a phrase: "completed (exit code 0)", "failed: task:
/// non-zero exit (3)", "was rejected: No such image …".
pub(crate) fn describe_end(t: &Task) -> String {
    let err = err_of(t);
    let code = exit_code_of(t);
    let verb = match t.state() {
        TaskState::Complete => "completed",
        TaskState::Rejected => "was rejected",
        TaskState::Shutdown => "was shut down",
        _ => "failed",
    };
    if err.is_empty() {
        format!("{verb} (exit code {code})")
    } else if code == 0 || err.contains(&code.to_string()) {
        format!("{verb}: {err}")
    } else {
        format!("{verb}: {err} (exit code {code})")
    }
}

/// docker's `stateToProgress`: how far along the lifecycle a state is, out of 9.
fn progress_of(state: TaskState) -> usize {
    match state {
        TaskState::New => 1,
        TaskState::Pending => 3,
        TaskState::Assigned => 4,
        TaskState::Accepted => 5,
        TaskState::Preparing => 6,
        TaskState::Starting => 8,
        _ => 9,
    }
}

/// `[=========>        ]` as docker's jsonmessage draws it.
pub fn bar(current: usize, total: usize) -> String {
    let filled = (current * 100 / total.max(1) / 2).min(BAR_WIDTH);
    format!(
        "[{}>{}]",
        "=".repeat(filled),
        " ".repeat(BAR_WIDTH - filled)
    )
}

/// One look at the service's tasks. Tasks count when their container spec, networks and
/// published ports are the service's current ones (docker's "up to date"): scaling leaves the existing tasks valid, a new spec does
/// not. Only failures of tasks created at or after `since_ms` (the change being waited for)
/// count towards giving up.
pub fn assess(service: &Service, tasks: &[Task], since_ms: i64) -> Assessment {
    let spec = service.spec.clone().unwrap_or_default();
    let replicas = spec.replicas;
    let name = spec.name.as_str();
    let restart = spec.restart.unwrap_or_default();
    let condition = Condition::try_from(restart.condition).unwrap_or(Condition::Any);
    let up_to_date = |t: &Task| {
        t.spec.as_deref() == spec.container.as_ref()
            && t.has_networks_of(&spec)
            && t.has_endpoint_of(service)
    };
    let live = |t: &Task| t.desired() <= TaskState::Running && !t.state().is_terminal();

    let mut by_slot: HashMap<u64, Vec<&Task>> = HashMap::new();
    for t in tasks.iter().filter(|t| t.service_id == service.id) {
        by_slot.entry(t.slot).or_default().push(t);
    }
    for history in by_slot.values_mut() {
        history.sort_by_key(|t| Reverse(created(t)));
    }

    let mut running = 0;
    let mut slots = Vec::new();
    let mut fatal = None;
    let mut stale = false;
    for slot in 1..=replicas {
        let history: Vec<&Task> = by_slot
            .get(&slot)
            .map(|h| h.iter().copied().filter(|t| up_to_date(t)).collect())
            .unwrap_or_default();
        let current = history
            .iter()
            .copied()
            .find(|t| live(t))
            .or_else(|| history.first().copied());
        let is_running = current
            .is_some_and(|t| t.desired() == TaskState::Running && t.state() == TaskState::Running);
        if is_running {
            running += 1;
        }
        let failures: Vec<&Task> = history
            .iter()
            .copied()
            .filter(|t| matches!(t.state(), TaskState::Failed | TaskState::Rejected))
            .filter(|t| created(t).0 >= since_ms)
            .collect();
        if fatal.is_none() {
            fatal = slot_fatal(
                name,
                slot,
                current,
                &failures,
                condition,
                restart.max_attempts,
            );
        }
        if replicas <= MAX_PROGRESS_BARS {
            slots.push((slot, slot_text(current)));
        }
    }
    // Scaled-away slots and tasks of an older spec must be gone before the service has
    // converged.
    for (slot, history) in &by_slot {
        if history
            .iter()
            .any(|t| live(t) && (*slot > replicas || !up_to_date(t)))
        {
            stale = true;
        }
    }
    Assessment {
        running,
        replicas,
        converged: running == replicas && !stale,
        slots,
        fatal,
    }
}

fn slot_fatal(
    service: &str,
    slot: u64,
    current: Option<&Task>,
    failures: &[&Task],
    condition: Condition,
    max_attempts: u64,
) -> Option<String> {
    let task = format!("{service}.{slot}");
    if let Some(rejected) = failures
        .iter()
        .find(|t| t.state() == TaskState::Rejected && err_of(t).to_lowercase().contains("image"))
    {
        return Some(format!("task {task} was rejected: {}", err_of(rejected)));
    }
    if let Some(last) = failures.first() {
        if failures.len() >= MAX_FAILURES_PER_SLOT {
            return Some(format!(
                "task {task} failed {} times; the last one {}",
                failures.len(),
                describe_end(last)
            ));
        }
    }
    let current = current?;
    let state = current.state();
    if !state.is_terminal() || state == TaskState::Shutdown {
        return None;
    }
    let clean_exit = state == TaskState::Complete && exit_code_of(current) == 0;
    let restarts = match condition {
        Condition::Any => true,
        Condition::None => false,
        Condition::OnFailure => !clean_exit,
    };
    if !restarts {
        let word = match condition {
            Condition::None => "none",
            _ => "on-failure",
        };
        return Some(format!(
            "task {task} {} and the restart condition \"{word}\" does not restart it",
            describe_end(current)
        ));
    }
    if max_attempts > 0 && failures.len() as u64 > max_attempts {
        return Some(format!(
            "task {task} used all {max_attempts} restart attempts; the last one {}",
            describe_end(current)
        ));
    }
    None
}

fn slot_text(current: Option<&Task>) -> String {
    let Some(t) = current else {
        return String::new();
    };
    let state = t.state();
    let err = err_of(t);
    if !err.is_empty() {
        // Why it is stuck or failed, e.g. "no suitable node (…)": docker shows the error
        // instead of the bar.
        return err.to_string();
    }
    if state.is_terminal() {
        return describe_end(t);
    }
    let word = state.display_name().to_lowercase();
    format!(
        "{word:<STATE_WIDTH$} {}",
        bar(progress_of(state), progress_of(TaskState::Running))
    )
}

/// Progress lines as `(key, text)`: the key identifies a line across redraws.
fn lines(a: &Assessment, verify: Option<&str>) -> Vec<(String, String)> {
    let mut out = vec![(
        "overall".to_string(),
        format!(
            "overall progress: {} out of {} tasks",
            a.running, a.replicas
        ),
    )];
    for (slot, text) in &a.slots {
        let key = format!("{slot}/{}", a.replicas);
        out.push((key.clone(), format!("{key}: {text}").trim_end().to_string()));
    }
    if let Some(v) = verify {
        out.push(("verify".into(), format!("verify: {v}")));
    }
    out
}

/// Draws the progress: redrawn in place on a terminal, only changed lines otherwise, nothing
/// when quiet.
pub(crate) struct Display {
    mode: Mode,
    on_screen: Vec<String>,
    printed: HashMap<String, String>,
}

#[derive(PartialEq, Eq)]
enum Mode {
    Quiet,
    Terminal,
    Plain,
}

impl Display {
    pub(crate) fn new(quiet: bool) -> Display {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stdout().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        Display {
            mode,
            on_screen: Vec::new(),
            printed: HashMap::new(),
        }
    }

    pub(crate) fn show(&mut self, lines: &[(String, String)]) {
        let mut out = String::new();
        match self.mode {
            Mode::Quiet => return,
            Mode::Plain => {
                for (key, text) in lines {
                    if self.printed.get(key) != Some(text) {
                        out.push_str(text);
                        out.push('\n');
                        self.printed.insert(key.clone(), text.clone());
                    }
                }
            }
            Mode::Terminal => {
                let width = terminal_width().saturating_sub(1).max(20);
                let texts: Vec<String> = lines
                    .iter()
                    .map(|(_, t)| crate::output::ellipsize(t, width))
                    .collect();
                if texts == self.on_screen {
                    return;
                }
                if !self.on_screen.is_empty() {
                    out.push_str(&format!("\x1b[{}A", self.on_screen.len()));
                }
                for text in &texts {
                    out.push_str(&format!("\r\x1b[2K{text}\n"));
                }
                // Fewer lines than last time: blank the leftovers and come back up.
                let extra = self.on_screen.len().saturating_sub(texts.len());
                if extra > 0 {
                    out.push_str(&"\x1b[2K\n".repeat(extra));
                    out.push_str(&format!("\x1b[{extra}A"));
                }
                self.on_screen = texts;
            }
        }
        let mut stdout = std::io::stdout().lock();
        // Progress is cosmetic: a closed or full stdout must not abort the wait.
        let _ = stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush());
    }
}

fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ only writes a `winsize` into the struct we pass; a failure leaves it
    // zeroed, which we treat as unknown.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

/// Every task of `service_id`, whatever its desired state.
pub(crate) async fn tasks_of(
    control: &mut shoal_proto::control_client::ControlClient<tonic::transport::Channel>,
    service_id: &str,
) -> Result<Vec<Task>> {
    Ok(control
        .list_tasks(ListTasksRequest {
            service: service_id.to_string(),
            desired_running_only: false,
            node: String::new(),
        })
        .await
        .or_daemon_error()?
        .tasks)
}

/// What the service's update status (of the change being waited for) says about the wait.
#[derive(Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Nothing to say: go on judging by the tasks.
    Going,
    /// Paused: the wait ends with this error.
    Stopped(String),
    /// The update failed and the service is going back to its previous spec.
    RolledBack(String),
}

/// Reads the update status the manager keeps, if it belongs to the change made at `since_ms`.
pub fn update_outcome(service: &Service, since_ms: i64) -> UpdateOutcome {
    let Some(status) = service.update_status.as_ref() else {
        return UpdateOutcome::Going;
    };
    let name = service.spec.as_ref().map_or("", |s| s.name.as_str());
    if status.started_at_ms < since_ms {
        return UpdateOutcome::Going;
    }
    match status.state() {
        UpdateState::Paused => UpdateOutcome::Stopped(format!(
            "service update paused: {}\nFix the service and run `shoal service update {name}` \
             to resume, or go back with `shoal service rollback {name}`.",
            status.message
        )),
        UpdateState::RollbackPaused => UpdateOutcome::Stopped(format!(
            "service rollback paused: {}\nSee `shoal service ps {name}`; \
             `shoal service update {name}` resumes it.",
            status.message
        )),
        UpdateState::RollbackStarted | UpdateState::RollbackCompleted
            if status.message != MANUAL_ROLLBACK && status.message != "rollback completed" =>
        {
            UpdateOutcome::RolledBack(status.message.clone())
        }
        _ => UpdateOutcome::Going,
    }
}

/// The message of a rollback the user asked for (not a failure).
const MANUAL_ROLLBACK: &str = "manually requested rollback";

/// Polls until the service has converged (and stayed so for [`VERIFY`]), it cannot converge,
/// or the user presses Ctrl-C (the change goes on in the background, as with docker).
pub async fn wait(client: &Client, service: &Service, since_ms: i64, quiet: bool) -> Result<()> {
    let name = service
        .spec
        .as_ref()
        .map_or(service.id.clone(), |s| s.name.clone());
    let mut display = Display::new(quiet);
    let mut converged_at: Option<Instant> = None;
    let mut rolled_back: Option<String> = None;
    let mut control = client.control();
    loop {
        // Re-read the service each round: another client may scale it meanwhile.
        let current = control
            .get_service(ServiceRef {
                service: service.id.clone(),
            })
            .await
            .or_daemon_error()?;
        let tasks = tasks_of(&mut control, &service.id).await?;
        let a = assess(&current, &tasks, since_ms);
        match update_outcome(&current, since_ms) {
            UpdateOutcome::Stopped(why) => {
                display.show(&lines(&a, Some("Detected task failure")));
                bail!("{why}");
            }
            UpdateOutcome::RolledBack(message) if rolled_back.is_none() => {
                display.show(&[("rollback".into(), format!("rollback: {message}"))]);
                rolled_back = Some(message);
            }
            _ => {}
        }
        if let Some(fatal) = &a.fatal {
            display.show(&lines(&a, Some("Detected task failure")));
            bail!(
                "service {name} cannot converge: {fatal}\n\
                 The service stays as it is: see its tasks with `shoal service ps {name}`, remove it with `shoal service rm {name}`."
            );
        }
        let verify = if a.converged {
            let since = *converged_at.get_or_insert_with(Instant::now);
            if since.elapsed() >= VERIFY {
                display.show(&lines(&a, Some("Service converged")));
                if let Some(message) = rolled_back {
                    bail!(
                        "service {name} was rolled back: {message}; it runs its previous spec \
                         again (see `shoal service inspect {name}` and `shoal service ps {name}`)"
                    );
                }
                return Ok(());
            }
            Some(format!(
                "Waiting {} seconds to verify that tasks are stable...",
                VERIFY.as_secs()
            ))
        } else {
            converged_at = None;
            None
        };
        display.show(&lines(&a, verify.as_deref()));
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::signal::ctrl_c() => {
                if !quiet {
                    println!();
                }
                eprintln!(
                    "Operation continuing in background.\nUse `shoal service ps {name}` to check progress."
                );
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::fixtures::{container, task};
    use shoal_proto::{ContainerSpec, RestartPolicy, ServiceSpec};

    fn service(replicas: u64, condition: Condition) -> Service {
        Service {
            id: "s1".into(),
            spec: Some(Box::new(ServiceSpec {
                name: "web".into(),
                replicas,
                container: container(),
                restart: Some(RestartPolicy {
                    condition: condition as i32,
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn failed(id: &str, slot: u64, at: i64, state: TaskState, err: &str) -> Task {
        let mut t = task(id, slot, at, state, TaskState::Shutdown);
        if let Some(s) = t.status.as_mut() {
            s.err = err.into();
            s.exit_code = 1;
        }
        t
    }

    use TaskState::{Preparing, Rejected, Running, Shutdown};

    #[test]
    fn bars_like_docker() {
        assert_eq!(bar(9, 9), format!("[{}>]", "=".repeat(50)));
        assert_eq!(bar(1, 9), format!("[{}>{}]", "=".repeat(5), " ".repeat(45)));
    }

    #[test]
    fn partial_progress() {
        let tasks = vec![
            task("a", 1, 10, Running, Running),
            task("b", 2, 10, Preparing, Running),
        ];
        let a = assess(&service(3, Condition::Any), &tasks, 0);
        assert_eq!(a.running, 1);
        assert!(!a.converged);
        assert_eq!(a.fatal, None);
        assert_eq!(a.slots[0].1, format!("running   {}", bar(9, 9)));
        assert_eq!(a.slots[1].1, format!("preparing {}", bar(6, 9)));
        assert_eq!(a.slots[2].1, "");
        let text: Vec<String> = lines(&a, None).into_iter().map(|(_, t)| t).collect();
        assert_eq!(text[0], "overall progress: 1 out of 3 tasks");
        assert_eq!(text[3], "3/3:");
    }

    #[test]
    fn converged_when_every_slot_runs_and_extras_are_gone() {
        let mut tasks: Vec<Task> = (1..=2)
            .map(|i| task(&format!("t{i}"), i, 10, Running, Running))
            .collect();
        assert!(assess(&service(2, Condition::Any), &tasks, 0).converged);
        // Scaled down to 1 but slot 2 still wanted running: not yet.
        assert!(!assess(&service(1, Condition::Any), &tasks, 0).converged);
        tasks[1].desired_state = Shutdown as i32;
        assert!(assess(&service(1, Condition::Any), &tasks, 0).converged);
        assert!(assess(&service(0, Condition::Any), &[], 0).converged);
    }

    #[test]
    fn tasks_of_another_spec_do_not_count() {
        let mut t = task("a", 1, 10, Running, Running);
        t.spec = Some(Box::new(ContainerSpec {
            image: "docker.io/library/nginx:latest".into(),
            ..Default::default()
        }));
        let a = assess(&service(1, Condition::Any), &[t], 0);
        assert_eq!(a.running, 0);
        assert!(!a.converged);
    }

    #[test]
    fn tasks_on_other_networks_do_not_count() {
        let mut s = service(1, Condition::Any);
        if let Some(spec) = s.spec.as_mut() {
            spec.networks = vec![shoal_proto::NetworkAttachmentConfig {
                target: "net1".into(),
                aliases: vec![],
            }];
        }
        let mut t = task("a", 1, 10, Running, Running);
        assert!(!assess(&s, std::slice::from_ref(&t), 0).converged);
        t.networks = vec![shoal_proto::NetworkAttachment {
            network: Some(shoal_proto::Network {
                id: "net1".into(),
                ..Default::default()
            }),
            address: "198.18.128.2/24".into(),
            aliases: vec![],
        }];
        assert!(assess(&s, &[t], 0).converged);
    }

    #[test]
    fn tasks_for_other_ports_do_not_count_and_ingress_is_not_a_spec_network() {
        let port = |published: u32| shoal_proto::PortConfig {
            target_port: 80,
            published_port: published,
            ..Default::default()
        };
        let mut s = service(1, Condition::Any);
        s.endpoint = Some(shoal_proto::Endpoint {
            ports: vec![port(8081)],
            ..Default::default()
        });
        let mut t = task("a", 1, 10, Running, Running);
        t.endpoint = Some(shoal_proto::Endpoint {
            ports: vec![port(8080)],
            ..Default::default()
        });
        assert!(!assess(&s, std::slice::from_ref(&t), 0).converged);
        t.endpoint = s.endpoint.clone();
        // The routing mesh's attachment comes with the ports, not the spec's networks.
        t.networks = vec![shoal_proto::NetworkAttachment {
            network: Some(shoal_proto::Network {
                id: "ing".into(),
                spec: Some(shoal_proto::NetworkSpec {
                    name: "ingress".into(),
                    ingress: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            address: "198.18.128.3/24".into(),
            aliases: vec![],
        }];
        assert!(assess(&s, &[t], 0).converged);
    }

    #[test]
    fn image_rejection_is_fatal_at_once() {
        let tasks = vec![failed(
            "a",
            1,
            10,
            Rejected,
            "No such image: docker.io/library/nope:latest",
        )];
        let a = assess(&service(1, Condition::Any), &tasks, 0);
        assert_eq!(
            a.fatal.as_deref(),
            Some("task web.1 was rejected: No such image: docker.io/library/nope:latest")
        );
        assert_eq!(a.slots[0].1, "No such image: docker.io/library/nope:latest");
    }

    #[test]
    fn repeated_failures_are_fatal_but_old_ones_do_not_count() {
        let mut tasks: Vec<Task> = (0..3)
            .map(|i| {
                failed(
                    &format!("f{i}"),
                    1,
                    10 + i,
                    TaskState::Failed,
                    "exit status 1",
                )
            })
            .collect();
        tasks.push(task("n", 1, 20, TaskState::Pending, Running));
        let a = assess(&service(1, Condition::Any), &tasks, 0);
        let fatal = a.fatal.unwrap_or_default();
        assert!(fatal.starts_with("task web.1 failed 3 times"), "{fatal}");
        assert!(fatal.contains("exit status 1"), "{fatal}");
        // The same history from before the change being waited for is not a verdict on it.
        assert_eq!(assess(&service(1, Condition::Any), &tasks, 15).fatal, None);
    }

    #[test]
    fn restart_policy_that_will_not_restart_is_fatal() {
        let done = task("a", 1, 10, TaskState::Complete, Shutdown);
        let a = assess(&service(1, Condition::None), std::slice::from_ref(&done), 0);
        let fatal = a.fatal.unwrap_or_default();
        assert!(fatal.contains("restart condition \"none\""), "{fatal}");
        let a = assess(
            &service(1, Condition::OnFailure),
            std::slice::from_ref(&done),
            0,
        );
        assert!(a.fatal.is_some());
        // With "any" the orchestrator starts a new task: keep waiting.
        assert_eq!(assess(&service(1, Condition::Any), &[done], 0).fatal, None);
    }

    #[test]
    fn many_replicas_show_only_the_overall_line() {
        let a = assess(&service(25, Condition::Any), &[], 0);
        assert!(a.slots.is_empty());
        assert_eq!(lines(&a, None).len(), 1);
    }
}
