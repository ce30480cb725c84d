//! Policy routing rules by firewall mark (`ip rule add fwmark M lookup T`): how a namespace
//! sends packets of marked connections through a routing table of their own. The worker
//! reconciles them: list, add what is missing, delete what is no longer wanted.

use futures::TryStreamExt;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::IpVersion;

use crate::error::{errno, Result};
use crate::netlink::Netlink;

/// `fwmark mark lookup table`, at `priority` (lower is looked at first; the main table's rule
/// is at 32766).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FwmarkRule {
    pub mark: u32,
    pub table: u32,
    pub priority: u32,
}

impl Netlink {
    /// Every IPv4 rule that matches a firewall mark and looks up a table.
    pub async fn fwmark_rules(&self) -> Result<Vec<FwmarkRule>> {
        let messages: Vec<RuleMessage> = self
            .handle
            .rule()
            .get(IpVersion::V4)
            .execute()
            .try_collect()
            .await
            .map_err(|err| self.err("listing rules", err))?;
        Ok(messages.iter().filter_map(fwmark_rule).collect())
    }

    /// Adds `rule` unless it is there already.
    pub async fn ensure_fwmark_rule(&self, rule: FwmarkRule) -> Result<()> {
        if self.fwmark_rules().await?.contains(&rule) {
            return Ok(());
        }
        self.handle
            .rule()
            .add()
            .v4()
            .fw_mark(rule.mark)
            .table_id(rule.table)
            .priority(rule.priority)
            .action(RuleAction::ToTable)
            .execute()
            .await
            .map_err(|err| self.err(format!("adding rule {rule:?}"), err))?;
        tracing::info!(netns = %self.netns, mark = rule.mark, table = rule.table, "added fwmark rule");
        Ok(())
    }

    /// Deletes `rule`; returns whether it was there.
    pub async fn delete_fwmark_rule(&self, rule: FwmarkRule) -> Result<bool> {
        let mut msg = RuleMessage::default();
        msg.header.family = rtnetlink::packet_route::AddressFamily::Inet;
        msg.header.action = RuleAction::ToTable;
        msg.attributes = vec![
            RuleAttribute::FwMark(rule.mark),
            RuleAttribute::Table(rule.table),
            RuleAttribute::Priority(rule.priority),
        ];
        match self.handle.rule().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(err) if errno(&err) == Some(libc::ENOENT) => Ok(false),
            Err(err) => Err(self.err(format!("deleting rule {rule:?}"), err)),
        }
    }
}

/// The rule as a [`FwmarkRule`] when it is one (a mark, a table to look up).
fn fwmark_rule(msg: &RuleMessage) -> Option<FwmarkRule> {
    if msg.header.action != RuleAction::ToTable {
        return None;
    }
    let mut mark = None;
    let mut table = u32::from(msg.header.table);
    let mut priority = 0;
    for attr in &msg.attributes {
        match attr {
            RuleAttribute::FwMark(m) => mark = Some(*m),
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Priority(p) => priority = *p,
            _ => {}
        }
    }
    Some(FwmarkRule {
        mark: mark?,
        table,
        priority,
    })
}
