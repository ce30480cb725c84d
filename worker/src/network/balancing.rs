//! One task's side of load balancing: its `shoal_lb` table (VIPs, mesh reply marks) and, on the
//! ingress network, the policy routing that sends each mesh reply back through the node that
//! forwarded the connection: `fwmark M lookup M`, with table M's default route through that
//! node's ingress load balancer (M is the balancer's address, see [`lb::mesh_mark`]). Written
//! only when what the task should have changed; everything lives in the task's namespace, so it
//! goes with it.

use std::net::Ipv4Addr;

use shoal_netns::{FwmarkRule, Netlink, Netns, Route};

use super::lb::{self, MeshReturn, Vip};
use super::{nft, NetworkError};

#[derive(Debug, Default)]
pub(super) struct TaskBalancing {
    /// The table as last written ("" = never).
    script: String,
    /// The mesh reply routes as last written: interface and balancers.
    routes: Option<MeshReturn>,
}

impl TaskBalancing {
    /// The state of a namespace just created: it has no table yet, which is what a task
    /// without VIPs or mesh replies should have, so its first sync writes nothing (an `nft`
    /// run per task start would otherwise be the costliest step of attaching it).
    pub(super) fn fresh() -> Self {
        Self {
            script: lb::task_script(&[], None),
            routes: None,
        }
    }

    /// Makes the task's namespace balance `vips` and route mesh replies per `mesh`.
    pub(super) async fn sync(
        &mut self,
        ns: &Netns,
        vips: &[Vip],
        mesh: Option<MeshReturn>,
    ) -> Result<(), NetworkError> {
        let script = lb::task_script(vips, mesh.as_ref());
        if script != self.script {
            nft::apply(&script, Some(ns.path()))?;
            self.script = script;
        }
        if mesh != self.routes {
            let inside = Netlink::open(ns)?;
            let wanted: Vec<Ipv4Addr> = mesh
                .as_ref()
                .map(|m| m.balancers.clone())
                .unwrap_or_default();
            for rule in inside.fwmark_rules().await? {
                let gone = Ipv4Addr::from(rule.mark);
                if rule.priority == lb::MESH_RULE_PRIORITY && !wanted.contains(&gone) {
                    inside.delete_fwmark_rule(rule).await?;
                    inside
                        .delete_route(&Route::default_via(gone).in_table(rule.table))
                        .await?;
                }
            }
            if let Some(m) = &mesh {
                for b in &m.balancers {
                    let mark = lb::mesh_mark(*b);
                    let route = Route {
                        device: Some(m.ifname.clone()),
                        ..Route::default_via(*b)
                    };
                    inside.ensure_route(&route.in_table(mark)).await?;
                    inside
                        .ensure_fwmark_rule(FwmarkRule {
                            mark,
                            table: mark,
                            priority: lb::MESH_RULE_PRIORITY,
                        })
                        .await?;
                }
            }
            self.routes = mesh;
        }
        Ok(())
    }
}
