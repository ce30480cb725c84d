//! IPv4 routes inside a namespace: a task's default route through its network's gateway, and
//! any other route the worker needs. Adding replaces (so repeating it converges) and deleting
//! what is gone is not an error.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::{RouteMessage, RouteScope};
use rtnetlink::RouteMessageBuilder;

use crate::error::{errno, Result};
use crate::link::validate_ifname;
use crate::netlink::Netlink;

/// An IPv4 route: where to (`destination`), through which `gateway` and/or out of which
/// `device`, in the main table unless `table` says otherwise (policy routing). A route without
/// a gateway is a link-scope route (`ip route add … dev X`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub device: Option<String>,
    pub table: Option<u32>,
}

impl Route {
    /// The default route through `gateway`.
    pub fn default_via(gateway: Ipv4Addr) -> Self {
        Self {
            destination: Ipv4Net::default(),
            gateway: Some(gateway),
            device: None,
            table: None,
        }
    }

    /// A route to `destination` straight out of `device`, without a gateway.
    pub fn direct(destination: Ipv4Net, device: impl Into<String>) -> Self {
        Self {
            destination,
            gateway: None,
            device: Some(device.into()),
            table: None,
        }
    }

    /// The same route in routing table `table` instead of the main one.
    pub fn in_table(self, table: u32) -> Self {
        Self {
            table: Some(table),
            ..self
        }
    }
}

impl Netlink {
    /// Adds `route`, replacing a route to the same destination.
    pub async fn ensure_route(&self, route: &Route) -> Result<()> {
        let msg = self.route_message(route).await?;
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|err| self.err(format!("adding route {route:?}"), err))?;
        tracing::info!(netns = %self.netns, destination = %route.destination,
            gateway = ?route.gateway, device = ?route.device, "set route");
        Ok(())
    }

    /// Deletes `route`; returns whether it was there.
    pub async fn delete_route(&self, route: &Route) -> Result<bool> {
        let msg = self.route_message(route).await?;
        match self.handle.route().del(msg).execute().await {
            Ok(()) => {
                tracing::info!(netns = %self.netns, destination = %route.destination,
                    "deleted route");
                Ok(true)
            }
            Err(err) if errno(&err) == Some(libc::ESRCH) => Ok(false),
            Err(err) => Err(self.err(format!("deleting route {route:?}"), err)),
        }
    }

    async fn route_message(&self, route: &Route) -> Result<RouteMessage> {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.destination.network(), route.destination.prefix_len());
        if let Some(gateway) = route.gateway {
            builder = builder.gateway(gateway);
        } else {
            builder = builder.scope(RouteScope::Link);
        }
        if let Some(device) = &route.device {
            validate_ifname(device)?;
            builder = builder.output_interface(self.index_of(device).await?);
        }
        if let Some(table) = route.table {
            builder = builder.table_id(table);
        }
        Ok(builder.build())
    }
}
