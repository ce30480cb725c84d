//! `service create` and `service update`: send the spec built from the flags, print the
//! service, then follow its tasks until the service converges (unless detached).

use anyhow::{anyhow, bail, Result};
use shoal_proto::{CreateServiceRequest, Service, ServiceMode, ServiceSpec, UpdateServiceRequest};

use super::args::{CreateArgs, ModeArg, RollbackArgs, UpdateArgs};
use super::networks::{apply_network_update, network_ids};
use super::spec::apply_update;
use super::{get_service, update_spec};
use crate::client::{Client, RpcResult};
use crate::commands::{job_progress, progress};

pub(super) async fn create(client: &Client, args: &CreateArgs, spec: ServiceSpec) -> Result<()> {
    let service = client
        .control()
        .create_service(CreateServiceRequest {
            spec: Some(Box::new(spec)),
        })
        .await
        .or_daemon_error()?;
    println!("{}", service.id);
    if args.detach {
        return Ok(());
    }
    match args.mode {
        ModeArg::ReplicatedJob | ModeArg::GlobalJob => {
            return job_progress::wait(client, &service, args.quiet).await;
        }
        // Convergence is shown slot by slot; a global service has no slots to show.
        ModeArg::Global => return Ok(()),
        ModeArg::Replicated => {}
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
    if args.rollback {
        let service = get_service(client, &args.service).await?;
        let current = service.spec.clone().unwrap_or_default();
        let mut changed = apply_update(&current, args)?;
        apply_network_update(&mut changed, args, &removed);
        // Docker ignores the other flags here; refusing says what happens instead.
        if changed != with_policies(&current, &changed) {
            bail!(
                "--rollback goes back to the previous spec and cannot be combined with flags \
                 that change the service; run the rollback, then `shoal service update` with \
                 the flags"
            );
        }
        return roll_back(client, service, &args.service, args.detach, args.quiet).await;
    }
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
        match update_spec(client, &service, Box::new(spec)).await {
            Err(status) if is_version_conflict(&status) && attempt < UPDATE_ATTEMPTS => continue,
            other => break (current, other.or_daemon_error()?),
        }
    };
    println!("{}", args.service);
    if args.detach || current.mode() == ServiceMode::Global {
        return Ok(());
    }
    if matches!(
        current.mode(),
        ServiceMode::ReplicatedJob | ServiceMode::GlobalJob
    ) {
        return job_progress::wait(client, &updated, args.quiet).await;
    }
    let since = updated.meta.as_ref().map_or(0, |m| m.updated_at_ms);
    progress::wait(client, &updated, since, args.quiet).await
}

/// `current` with the update and rollback policies of `changed`: a plain `service update`
/// fills in the policies of a service created without them, which changes nothing it does.
fn with_policies(current: &ServiceSpec, changed: &ServiceSpec) -> ServiceSpec {
    ServiceSpec {
        update: changed.update,
        rollback: changed.rollback,
        ..current.clone()
    }
}

/// `service rollback`.
pub(super) async fn rollback(client: &Client, args: &RollbackArgs) -> Result<()> {
    let service = get_service(client, &args.service).await?;
    roll_back(client, service, &args.service, args.detach, args.quiet).await
}

/// Sends the service back to its previous spec and follows the rollback (docker's
/// `service rollback` and `service update --rollback`).
async fn roll_back(
    client: &Client,
    service: Service,
    key: &str,
    detach: bool,
    quiet: bool,
) -> Result<()> {
    let updated = client
        .control()
        .update_service(UpdateServiceRequest {
            service: service.id.clone(),
            version: service.meta.as_ref().map_or(0, |m| m.version),
            spec: None,
            rollback: true,
        })
        .await
        .or_daemon_error()?;
    println!("{key}");
    let global = updated
        .spec
        .as_ref()
        .is_some_and(|s| s.mode() == ServiceMode::Global);
    if detach || global {
        return Ok(());
    }
    let since = updated.meta.as_ref().map_or(0, |m| m.updated_at_ms);
    progress::wait(client, &updated, since, quiet).await
}
