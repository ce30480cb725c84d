//! `Debug` for the messages that carry secrets (join tokens, the CA key, the unlock key): the
//! secret fields print as `[REDACTED]` (or `""` when empty), the rest as prost would, so that a
//! `{:?}` in a log line never leaks one. `build.rs` skips prost's derive for exactly these.

use std::fmt;

use crate::{
    Cluster, IssueCertificateRequest, JoinTokenResponse, SwarmInitResponse, SwarmJoinRequest,
    SwarmUnlockRequest, UnlockKeyResponse,
};

/// A secret string field: whether it is set, never what it is.
struct Redacted<'a>(&'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("[REDACTED]")
        }
    }
}

macro_rules! redacted_debug {
    ($ty:ident { $($plain:ident),* } secret { $($secret:ident),* }) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($plain), &self.$plain))*
                    $(.field(stringify!($secret), &Redacted(&self.$secret)))*
                    .finish()
            }
        }
    };
}

redacted_debug!(Cluster {
    id, meta, task_history_limit, root_ca_cert_pem, node_cert_expiry_ms, prometheus_url,
    default_addr_pool, default_addr_pool_mask_len, removed_nodes, autolock,
    dispatcher_heartbeat_ms
} secret { worker_join_token, manager_join_token, root_ca_key_pem, unlock_key });
redacted_debug!(JoinTokenResponse {} secret { token, join_command });
redacted_debug!(IssueCertificateRequest { csr_pem, addr, description } secret { token });
redacted_debug!(SwarmJoinRequest {
    remote_addr, advertise_addr, listen_addr
} secret { token });
redacted_debug!(SwarmInitResponse { node_id } secret { worker_join_command, unlock_key });
redacted_debug!(SwarmUnlockRequest {} secret { unlock_key });
redacted_debug!(UnlockKeyResponse {} secret { unlock_key });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let cluster = Cluster {
            id: "c1".into(),
            worker_join_token: "SHOAL-1-aaa-wsecret".into(),
            manager_join_token: "SHOAL-1-aaa-msecret".into(),
            root_ca_key_pem: "-----BEGIN PRIVATE KEY-----".into(),
            unlock_key: "SWMKEY-1-secret".into(),
            autolock: true,
            ..Default::default()
        };
        let action = crate::StoreAction {
            action: Some(crate::store_action::Action::PutCluster(cluster)),
        };
        let printed = format!("{action:?} {action:#?}");
        for secret in ["wsecret", "msecret", "PRIVATE KEY", "SWMKEY"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(
            printed.contains("c1") && printed.contains("[REDACTED]"),
            "{printed}"
        );
        let join = SwarmJoinRequest {
            token: "SHOAL-1-aaa-wsecret".into(),
            remote_addr: "198.18.0.10:2377".into(),
            ..Default::default()
        };
        let printed = format!("{join:?}");
        assert!(!printed.contains("wsecret"), "{printed}");
        assert!(printed.contains("198.18.0.10:2377"), "{printed}");
        assert!(format!("{:?}", UnlockKeyResponse::default()).contains("\"\""));
    }
}
