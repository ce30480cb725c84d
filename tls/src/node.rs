//! The node side: a key pair and CSR to send when joining or renewing, and the certificate the
//! CA sent back together with the key and the CA certificate ([`NodeCert`]).

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PublicKeyData};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::digest::CaDigest;
use crate::files::CA_CERT_FILE;
use crate::identity::identity_of;
use crate::{files, pem, x509, Role, TlsError};

const NODE_CERT_FILE: &str = "node.crt";
const NODE_KEY_FILE: &str = "node.key";

/// A node's fresh private key (ECDSA P-256); a new one is made for every certificate, renewals
/// included, so a leaked old key dies with its certificate.
pub struct NodeKey {
    key: KeyPair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey { .. }")
    }
}

impl NodeKey {
    pub fn generate() -> Result<Self, TlsError> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(TlsError::GenerateKey)?;
        Ok(NodeKey { key })
    }

    pub fn from_pem(key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| TlsError::InvalidPem {
            what: "node key",
            reason: e.to_string(),
        })?;
        Ok(NodeKey { key })
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A CSR for this key. It names nothing: the CA decides the node's ID and role.
    pub fn csr_pem(&self) -> Result<String, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .serialize_request(&self.key)
            .and_then(|csr| csr.pem())
            .map_err(TlsError::MakeCsr)
    }

    /// Puts this key together with the certificate the CA signed for it.
    pub fn into_node_cert(self, cert_pem: String, ca_pem: String) -> Result<NodeCert, TlsError> {
        NodeCert::new(cert_pem, self.key_pem(), ca_pem)
    }
}

/// A node's credentials: its certificate, its key and the cluster CA certificate, checked to
/// belong together.
#[derive(Clone)]
pub struct NodeCert {
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
    pub(crate) cert_der: CertificateDer<'static>,
    pub(crate) ca_der: CertificateDer<'static>,
    node_id: String,
    role: Role,
    cluster_id: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl std::fmt::Debug for NodeCert {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert")
            .field("node_id", &self.node_id)
            .field("role", &self.role)
            .field("cluster_id", &self.cluster_id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl NodeCert {
    /// Checks that the certificate was signed by the CA, names a node, a role and the CA's
    /// cluster, and that the key is the certificate's key. An expired certificate is accepted
    /// here (so that the node can say it expired); TLS refuses it.
    pub fn new(cert_pem: String, key_pem: String, ca_pem: String) -> Result<Self, TlsError> {
        let what = "node certificate";
        let cert_der = pem::one_cert(&cert_pem, what)?;
        let ca_der = pem::one_cert(&ca_pem, "CA certificate")?;
        let info = x509::inspect(&cert_der, what)?;
        let ca_info = x509::inspect(&ca_der, "CA certificate")?;
        if !ca_info.is_ca {
            return Err(TlsError::InvalidCert {
                what: "CA certificate",
                reason: "the certificate is not a CA certificate".into(),
            });
        }
        x509::verify_issued_by(&cert_der, &ca_der)?;
        let (node_id, role, cluster_id) = identity_of(&info, what)?;
        if ca_info.org.as_deref() != Some(cluster_id.as_str()) {
            return Err(TlsError::NotSignedByCa(format!(
                "the certificate is for cluster {cluster_id:?}, the CA for {:?}",
                ca_info.org.unwrap_or_default()
            )));
        }
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::InvalidPem {
            what: "node key",
            reason: e.to_string(),
        })?;
        if key.subject_public_key_info() != info.spki {
            return Err(TlsError::KeyMismatch { what });
        }
        Ok(NodeCert {
            cert_pem,
            key_pem,
            ca_pem,
            cert_der,
            ca_der,
            node_id,
            role,
            cluster_id,
            not_before: info.not_before,
            not_after: info.not_after,
        })
    }

    /// Loads `node.crt`, `node.key` and `root-ca.crt` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        Self::new(
            files::read(&dir.join(NODE_CERT_FILE))?,
            files::read(&dir.join(NODE_KEY_FILE))?,
            files::read(&dir.join(CA_CERT_FILE))?,
        )
    }

    /// Writes `node.crt`, `node.key` (mode 0600) and `root-ca.crt` into `dir`, creating it.
    /// The key goes first and the certificate last, so a crash in between leaves a key that
    /// does not match the old certificate rather than a certificate without its key; either
    /// way [`NodeCert::load`] says so and the node rejoins.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        files::write_atomic(&dir.join(CA_CERT_FILE), &self.ca_pem, files::PUBLIC)?;
        files::write_atomic(&dir.join(NODE_KEY_FILE), &self.key_pem, files::SECRET)?;
        files::write_atomic(&dir.join(NODE_CERT_FILE), &self.cert_pem, files::PUBLIC)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Digest of the CA this certificate chains to.
    pub fn ca_digest(&self) -> CaDigest {
        CaDigest::of_der(&self.ca_der)
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// When to ask for a new certificate: at a point between 50% and 80% of the lifetime, as
    /// swarmkit does, so that the nodes of a cluster made at once do not all renew at once. The
    /// point comes from the certificate's own hash rather than a random draw, so it is the same
    /// after a restart and needs no state.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        let hash = Sha256::digest(self.cert_der.as_ref());
        let spread = u16::from_be_bytes([hash[0], hash[1]]) as f64 / u16::MAX as f64;
        let fraction = 0.5 + 0.3 * spread;
        self.not_before + lifetime.mul_f64(fraction)
    }

    /// True once [`NodeCert::renew_at`] has passed (and so also once the certificate expired).
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        now >= self.renew_at()
    }
}
