//! `Debug` for the messages that carry secrets (join tokens, the CA key, the unlock key, registry
//! passwords, a swarm secret's data): the secret fields print as `[REDACTED]` (or `""` when
//! empty), the rest as prost would, so that a `{:?}` in a log line never leaks one. `build.rs`
//! skips prost's derive for exactly these. Everything that carries a `SecretSpec` (a `Secret`, a
//! store entry or snapshot, a session message) prints it through this.

use std::fmt;

use crate::{
    Cluster, IssueCertificateRequest, JoinTokenResponse, RegistryAuth, SecretSpec,
    SwarmInitResponse, SwarmJoinRequest, SwarmUnlockRequest, UnlockKeyResponse,
};

/// A secret field (text or bytes): whether it is set, never what it is.
struct Redacted {
    empty: bool,
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.empty {
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
                    $(.field(stringify!($secret), &Redacted { empty: self.$secret.is_empty() }))*
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
redacted_debug!(SecretSpec { name, labels } secret { data });
redacted_debug!(RegistryAuth { server, username } secret { password });

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
            action: Some(crate::store_action::Action::PutCluster(cluster.into())),
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

    #[test]
    fn secret_data_never_prints() {
        let secret = crate::Secret {
            id: "s1".into(),
            spec: Some(SecretSpec {
                name: "db_pass".into(),
                data: b"hunter2-plaintext".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let message = crate::SessionMessage {
            secrets: vec![secret.clone()],
            ..Default::default()
        };
        let action = crate::StoreAction {
            action: Some(crate::store_action::Action::CreateSecret(secret.into())),
        };
        let printed = format!("{message:?} {action:#?}");
        // Neither as text nor as prost's byte list.
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("104, 117"), "{printed}");
        assert!(
            printed.contains("db_pass") && printed.contains("[REDACTED]"),
            "{printed}"
        );
    }
}
