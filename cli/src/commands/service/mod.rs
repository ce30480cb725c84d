//! `shoal service create | update | ls | ps | inspect | scale | rm | logs`.
//!
//! Resources and autoscaling flags are shared by `create` and `update`:
//! `--limit-cpu/--limit-memory` become the task's cgroup limits, `--reserve-cpu/--reserve-memory`
//! what the scheduler promises it on a node; `--autoscale-min/--autoscale-max` with one target
//! (`--autoscale-cpu`, `--autoscale-memory`, or `--autoscale-query` with `--autoscale-target`)
//! hand the replica count to the manager's autoscaler.
//!
//! One file per concern: [`args`] (flags), [`spec`] (flags → spec, checked offline),
//! [`networks`] (`--network*`, `--dns*`), [`publish`] (`--publish*`, `--endpoint-mode`),
//! [`health`] (`--health-*`, `--no-healthcheck`),
//! [`create`] (create, update), [`scale`] (scale, rm), [`list`] (ls, ps), [`inspect`],
//! [`logs`].

mod args;
mod create;
mod files;
mod health;
mod inspect;
mod list;
mod logs;
mod networks;
mod options;
mod publish;
mod rollout;
mod scale;
mod security;
mod spec;

use anyhow::Result;
use clap::Subcommand;
use shoal_proto::{Service, ServiceRef, ServiceSpec, UpdateServiceRequest};

use crate::client::{Client, RpcResult};

pub use args::*;

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a new service
    Create(Box<CreateArgs>),
    /// Update a service
    Update(Box<UpdateArgs>),
    /// List services
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// List the tasks of one or more services
    Ps(PsArgs),
    /// Display detailed information on one or more services
    Inspect(InspectArgs),
    /// Scale one or multiple replicated services
    Scale(ScaleArgs),
    /// Remove one or more services
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Fetch the logs of a service
    Logs(LogsArgs),
    /// Revert changes to a service's configuration
    Rollback(RollbackArgs),
}

pub async fn run(host: &str, command: ServiceCommand) -> Result<()> {
    match command {
        ServiceCommand::Create(args) => {
            // A bad flag or image name is reported before the daemon is dialled.
            let spec = spec::build_spec(&args)?;
            create::create(&Client::connect(host).await?, &args, spec).await
        }
        ServiceCommand::Update(args) => create::update(&Client::connect(host).await?, &args).await,
        ServiceCommand::Ls(args) => list::ls(&Client::connect(host).await?, args).await,
        ServiceCommand::Ps(args) => list::ps(&Client::connect(host).await?, args).await,
        ServiceCommand::Inspect(args) => {
            inspect::inspect(&Client::connect(host).await?, args).await
        }
        ServiceCommand::Scale(args) => scale::scale(&Client::connect(host).await?, args).await,
        ServiceCommand::Rm(args) => scale::rm(&Client::connect(host).await?, args).await,
        ServiceCommand::Logs(args) => logs::logs(&Client::connect(host).await?, args).await,
        ServiceCommand::Rollback(args) => {
            create::rollback(&Client::connect(host).await?, &args).await
        }
    }
}

/// The service a name, ID or ID prefix stands for (docker's lookup order is the manager's).
async fn get_service(client: &Client, name: &str) -> Result<Service> {
    client
        .control()
        .get_service(ServiceRef {
            service: name.to_string(),
        })
        .await
        .or_daemon_error()
}

/// Replaces `service`'s spec, provided the service is still at the version it was read at
/// (the manager refuses the update otherwise). The status is the caller's to judge.
async fn update_spec(
    client: &Client,
    service: &Service,
    spec: Box<ServiceSpec>,
) -> Result<tonic::Response<Service>, tonic::Status> {
    client
        .control()
        .update_service(UpdateServiceRequest {
            service: service.id.clone(),
            version: service.meta.as_ref().map_or(0, |m| m.version),
            spec: Some(spec),
            rollback: false,
        })
        .await
}

/// Parsing `service …` command lines in unit tests, as `main` does.
#[cfg(test)]
mod testing {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ServiceCommand,
    }

    pub fn parse(args: &[&str]) -> Result<ServiceCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("shoal-service").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    pub fn create_args(args: &[&str]) -> CreateArgs {
        match parse(&[&["create"], args].concat()) {
            Ok(ServiceCommand::Create(a)) => *a,
            other => panic!("not a create: {other:?}"),
        }
    }

    pub fn update_args(args: &[&str]) -> UpdateArgs {
        match parse(&[&["update"], args].concat()) {
            Ok(ServiceCommand::Update(a)) => *a,
            other => panic!("not an update: {other:?}"),
        }
    }
}
