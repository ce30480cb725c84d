//! `service scale` and `service rm`: act on each named service in turn, report the ones that
//! failed at the end (docker's way), and for `scale` follow each to convergence.

use anyhow::{anyhow, Result};
use shoal_proto::{Service, ServiceRef};

use super::args::{RmArgs, ScaleArgs};
use super::{get_service, update_spec};
use crate::client::{Client, RpcResult};
use crate::commands::{each, progress, remove_each, report_each};

pub(super) async fn scale(client: &Client, args: ScaleArgs) -> Result<()> {
    let (scaled, mut errors) = each(&args.scales, |(name, replicas)| async move {
        let service = scale_one(client, name, *replicas).await?;
        println!("{name} scaled to {replicas}");
        Ok(service)
    })
    .await;
    if !args.detach {
        for service in &scaled {
            let since = service.meta.as_ref().map_or(0, |m| m.updated_at_ms);
            if let Err(e) = progress::wait(client, service, since, false).await {
                errors.push(e);
            }
        }
    }
    report_each(&errors)
}

async fn scale_one(client: &Client, name: &str, replicas: u64) -> Result<Service> {
    let service = get_service(client, name).await?;
    let mut spec = service
        .spec
        .clone()
        .ok_or_else(|| anyhow!("service {name} has no spec"))?;
    spec.replicas = replicas;
    update_spec(client, &service, spec).await.or_daemon_error()
}

pub(super) async fn rm(client: &Client, args: RmArgs) -> Result<()> {
    remove_each(&args.services, |name| async move {
        let request = ServiceRef {
            service: name.clone(),
        };
        client
            .control()
            .remove_service(request)
            .await
            .or_daemon_error()?;
        Ok(())
    })
    .await
}
