//! The one error type of the crate: each message says what went wrong and what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("could not generate an ECDSA P-256 key pair: {0}")]
    GenerateKey(#[source] rcgen::Error),

    #[error("could not create the certificate signing request: {0}")]
    MakeCsr(#[source] rcgen::Error),

    #[error(
        "invalid certificate signing request: {0}; the joining node must send the PEM CSR made \
         by NodeKey::csr_pem"
    )]
    InvalidCsr(String),

    #[error("could not sign the certificate for node {node_id}: {source}")]
    Sign {
        node_id: String,
        #[source]
        source: rcgen::Error,
    },

    #[error("invalid node ID {0:?}: a node ID is 1 to 64 lower-case letters, digits, '-' or '_'")]
    InvalidNodeId(String),

    #[error("invalid cluster ID {0:?}: a cluster ID is 1 to 64 letters, digits, '-' or '_'")]
    InvalidClusterId(String),

    #[error("unknown role {0:?}: use `manager` or `worker`")]
    UnknownRole(String),

    #[error("invalid {what}: {reason}")]
    InvalidPem { what: &'static str, reason: String },

    #[error("invalid {what}: {reason}")]
    InvalidCert { what: &'static str, reason: String },

    #[error(
        "the node certificate was not signed by the cluster CA it came with: {0}; rejoin the \
         swarm to get a certificate from this cluster"
    )]
    NotSignedByCa(String),

    #[error(
        "the private key does not belong to the {what}: the files were mixed up or partly \
         replaced; restore them together, or rejoin the swarm"
    )]
    KeyMismatch { what: &'static str },

    #[error(
        "the CA certificate has digest {actual}, but the join token names {expected}: the token \
         belongs to another swarm, or someone is intercepting the connection; get a fresh token \
         with `shoal swarm join-token` on a manager"
    )]
    CaDigestMismatch {
        /// Both as `sha256:HEX`, as tokens and `swarm ca` print them.
        expected: String,
        actual: String,
    },

    #[error(
        "the new certificate is from another CA than the one the TLS configs trust: rebuild the \
         server and client configs for the new CA"
    )]
    CaChanged,

    #[error("could not build the TLS configuration: {0}")]
    Config(String),

    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid address {addr:?}: {reason}; give host:port, e.g. 192.0.2.10:4242")]
    InvalidAddr { addr: String, reason: String },

    /// `detail` is the whole chain of causes: tonic's own message is only "transport error",
    /// and the TLS reason (e.g. the pinned CA mismatch) sits several sources down.
    #[error("could not connect to {addr} over TLS: {detail}")]
    Connect { addr: String, detail: String },
}
