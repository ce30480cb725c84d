//! `service logs`: the service's log lines as the daemon streams them, each with docker's
//! `service.slot.task@node |` prefix; node names are looked up again when a new node appears.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context, Result};
use shoal_proto::{ListTasksRequest, ServiceLogsRequest};

use super::args::LogsArgs;
use super::get_service;
use crate::client::{daemon_error, Client, RpcResult};
use crate::output;

/// How `service logs` prefixes each line.
#[derive(Debug, Clone, Default)]
pub struct LogFormat {
    pub raw: bool,
    pub timestamps: bool,
    pub task_ids: bool,
    pub no_trunc: bool,
    /// Digits of the widest slot number, so that prefixes line up.
    pub slot_width: usize,
}

impl LogFormat {
    /// `web.1.abcdefghijkl@node1    | ` (docker's context prefix), timestamp first with `-t`.
    pub fn prefix(
        &self,
        service: &str,
        slot: u64,
        task_id: &str,
        node: &str,
        timestamp_ms: i64,
    ) -> String {
        let mut out = String::new();
        if self.timestamps {
            out.push_str(&output::rfc3339_nano(timestamp_ms));
            out.push(' ');
        }
        if self.raw {
            return out;
        }
        out.push_str(&format!("{service}.{slot}"));
        if self.task_ids {
            let id = if self.no_trunc {
                task_id
            } else {
                output::short_id(task_id)
            };
            out.push('.');
            out.push_str(id);
        }
        out.push('@');
        out.push_str(node);
        let digits = slot.to_string().len();
        out.push_str(&" ".repeat(self.slot_width.saturating_sub(digits)));
        out.push_str("    | ");
        out
    }
}

pub(super) async fn logs(client: &Client, args: LogsArgs) -> Result<()> {
    let service = get_service(client, &args.service).await?;
    let spec = service.spec.clone().unwrap_or_default();
    let mut node_names = if args.no_resolve {
        HashMap::new()
    } else {
        node_names_of(client, &service.id).await?
    };
    let format = LogFormat {
        raw: args.raw,
        timestamps: args.timestamps,
        task_ids: !args.no_task_ids,
        no_trunc: args.no_trunc,
        slot_width: spec.replicas.max(1).to_string().len(),
    };
    let mut stream = client
        .control()
        .service_logs(ServiceLogsRequest {
            service: service.id.clone(),
            follow: args.follow,
            tail: args.tail,
            since_ms: args.since.unwrap_or(0),
        })
        .await
        .or_daemon_error()?;
    let mut refreshed_for: Option<String> = None;
    while let Some(msg) = stream.message().await.map_err(daemon_error)? {
        if !args.no_resolve
            && !node_names.contains_key(&msg.node_id)
            && refreshed_for.as_deref() != Some(msg.node_id.as_str())
        {
            // A task placed after we looked: look again, once per unknown node.
            refreshed_for = Some(msg.node_id.clone());
            node_names = node_names_of(client, &service.id).await?;
        }
        let node = node_names
            .get(&msg.node_id)
            .map_or(msg.node_id.as_str(), String::as_str);
        let service_name = if msg.service_name.is_empty() {
            spec.name.as_str()
        } else {
            msg.service_name.as_str()
        };
        let mut line = format
            .prefix(service_name, msg.slot, &msg.task_id, node, msg.timestamp_ms)
            .into_bytes();
        line.extend_from_slice(&msg.line);
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        let written = if msg.stream == "stderr" {
            std::io::stderr().lock().write_all(&line)
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(&line).and_then(|()| out.flush())
        };
        written.context("cannot write the log line")?;
    }
    Ok(())
}

async fn node_names_of(client: &Client, service_id: &str) -> Result<HashMap<String, String>> {
    Ok(client
        .control()
        .list_tasks(ListTasksRequest {
            service: service_id.to_string(),
            desired_running_only: false,
            node: String::new(),
        })
        .await
        .or_daemon_error()?
        .node_names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prefixes() {
        let f = LogFormat {
            task_ids: true,
            slot_width: 2,
            ..Default::default()
        };
        assert_eq!(
            f.prefix("web", 1, "abcdefghijklmnopqrstuvwxy", "node1", 0),
            "web.1.abcdefghijkl@node1     | "
        );
        assert_eq!(
            f.prefix("web", 10, "abcdefghijklmnopqrstuvwxy", "node1", 0),
            "web.10.abcdefghijkl@node1    | "
        );
        let raw = LogFormat {
            raw: true,
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            raw.prefix("web", 1, "t", "n", 1_700_000_000_123),
            "2023-11-14T22:13:20.123000000Z "
        );
        let no_ids = LogFormat {
            slot_width: 1,
            ..Default::default()
        };
        assert_eq!(no_ids.prefix("web", 3, "t", "n", 0), "web.3@n    | ");
    }
}
