//! `service create` and `service update`: send the spec built from the flags, print the
//! service, then follow its tasks until the service converges (unless detached).

use anyhow::{anyhow, Result};
use shoal_proto::{CreateServiceRequest, ServiceMode, ServiceSpec};

use super::args::{CreateArgs, ModeArg, UpdateArgs};
use super::networks::{apply_network_update, network_ids};
use super::spec::apply_update;
use super::{get_service, update_spec};
use crate::client::{Client, RpcResult};
use crate::commands::progress;

pub(super) async fn create(client: &Client, args: &CreateArgs, spec: ServiceSpec) -> Result<()> {
    let service = client
        .control()
        .create_service(CreateServiceRequest { spec: Some(spec) })
        .await
        .or_daemon_error()?;
    println!("{}", service.id);
    // Convergence is shown slot by slot; a global service has no slots to show.
    if args.detach || args.mode == ModeArg::Global {
        return Ok(());
    }
    let since = service.meta.as_ref().map_or(0, |m| m.created_at_ms);
    progress::wait(client, &service, since, args.quiet).await
}

/// How often `update` re-reads and re-applies its flags when the service changed between its
/// read and its write (the autoscaler records its decisions in the service, so a busy
/// autoscaled service can change under a user's update).
const UPDATE_ATTEMPTS: usize = 3;

fn is_version_conflict(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition
        && status.message().contains("update out of sequence")
}

pub(super) async fn update(client: &Client, args: &UpdateArgs) -> Result<()> {
    // The stored spec names networks by ID; `--network-rm` may give a name.
    let removed = network_ids(client, &args.network_rm).await?;
    let mut attempt = 0;
    let (current, updated) = loop {
        attempt += 1;
        let service = get_service(client, &args.service).await?;
        let current = service
            .spec
            .clone()
            .ok_or_else(|| anyhow!("service {} has no spec", args.service))?;
        // The flags are relative to the current spec: applying them again to a newer one
        // loses nothing.
        let mut spec = apply_update(&current, args)?;
        apply_network_update(&mut spec, args, &removed);
        match update_spec(client, &service, spec).await {
            Err(status) if is_version_conflict(&status) && attempt < UPDATE_ATTEMPTS => continue,
            other => break (current, other.or_daemon_error()?),
        }
    };
    println!("{}", args.service);
    if args.detach || current.mode() == ServiceMode::Global {
        return Ok(());
    }
    let since = updated.meta.as_ref().map_or(0, |m| m.updated_at_ms);
    progress::wait(client, &updated, since, args.quiet).await
}
