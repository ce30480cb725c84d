//! What a node certificate names: the node's ID, its role and its cluster. The CA writes these
//! names, the node side reads its own, and the transport reads a peer's; all three go through
//! here so that they agree on the rules.

use crate::{x509, Role, TlsError};

/// A node as its verified certificate names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub node_id: String,
    pub role: Role,
    pub cluster_id: String,
}

/// Node IDs are lower-case letters, digits, `-` and `_`, at most 64 bytes: safe as a CN, a
/// file name and a SAN.
pub(crate) fn check_node_id(node_id: &str) -> Result<(), TlsError> {
    let ok = !node_id.is_empty()
        && node_id.len() <= 64
        && node_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(TlsError::InvalidNodeId(node_id.to_string()))
    }
}

/// Node ID, role and cluster ID as a CA-signed certificate states them. `what` names the
/// certificate in errors.
pub(crate) fn identity_of(
    info: &x509::CertInfo,
    what: &'static str,
) -> Result<(String, Role, String), TlsError> {
    let node_id = info.common_name.clone().ok_or(TlsError::InvalidCert {
        what,
        reason: "the certificate has no common name (node ID)".into(),
    })?;
    check_node_id(&node_id)?;
    let ou = info.org_unit.as_deref().unwrap_or("");
    let role = Role::from_ou(ou).ok_or_else(|| TlsError::InvalidCert {
        what,
        reason: format!(
            "the certificate's organizational unit {ou:?} is not swarm-manager or swarm-worker"
        ),
    })?;
    let cluster_id = info.org.clone().ok_or(TlsError::InvalidCert {
        what,
        reason: "the certificate names no cluster (O)".into(),
    })?;
    Ok((node_id, role, cluster_id))
}
