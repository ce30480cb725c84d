//! The cluster root CA: made once by `swarm init`, kept by the managers, and the only thing
//! that can make a node part of the cluster (by signing its CSR).
//!
//! The signed certificate's names come from the CA, never from the CSR: a joining node only
//! proves it holds the key, and the manager decides its ID and role.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, ServerName};
use time::OffsetDateTime;

use crate::digest::CaDigest;
use crate::files::CA_CERT_FILE;
use crate::identity::check_node_id;
use crate::node::{NodeCert, NodeKey};
use crate::{files, pem, x509, Role, TlsError, ROOT_CA_EXPIRY};

/// The CA key's file name in a CA directory, next to [`CA_CERT_FILE`].
const CA_KEY_FILE: &str = "root-ca.key";

/// Common name of every Shoal root CA; the cluster is told apart by the O (cluster ID).
const CA_COMMON_NAME: &str = "shoal-root-ca";

/// Certificates start this long before they are issued, so that a node whose clock is a little
/// behind the manager's does not find its fresh certificate "not yet valid" (swarmkit does the
/// same).
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The cluster's root certificate authority.
pub struct RootCa {
    cluster_id: String,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for RootCa {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCa")
            .field("cluster_id", &self.cluster_id)
            .field("digest", &self.digest())
            .finish_non_exhaustive()
    }
}

fn check_cluster_id(cluster_id: &str) -> Result<(), TlsError> {
    // 64 is X.520's upper bound for an organization name.
    let ok = !cluster_id.is_empty()
        && cluster_id.len() <= 64
        && cluster_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(TlsError::InvalidClusterId(cluster_id.to_string()))
    }
}

/// A random positive 128-bit serial: two certificates for the same node (renewals) must never
/// share one.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

impl RootCa {
    /// Makes a new root CA for the cluster `cluster_id` (its certificate's O).
    pub fn generate(cluster_id: &str) -> Result<Self, TlsError> {
        check_cluster_id(cluster_id)?;
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(TlsError::GenerateKey)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        // Path length 0: the CA signs node certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = OffsetDateTime::from(now - BACKDATE);
        params.not_after = OffsetDateTime::from(now + ROOT_CA_EXPIRY);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(|source| TlsError::Sign {
            node_id: CA_COMMON_NAME.into(),
            source,
        })?;
        let key_pem = key.serialize_pem();
        tracing::info!(cluster_id, "generated the cluster root CA");
        Ok(RootCa {
            cluster_id: cluster_id.to_string(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA from its certificate and key PEM (as [`RootCa::cert_pem`] / [`RootCa::key_pem`]
    /// gave them). Checks that the certificate is a CA with a cluster ID and that the key is
    /// its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let what = "root CA certificate";
        let cert_der = pem::one_cert(cert_pem, what)?;
        let info = x509::inspect(&cert_der, what)?;
        if !info.is_ca {
            return Err(TlsError::InvalidCert {
                what,
                reason: "the certificate is not a CA certificate".into(),
            });
        }
        let cluster_id = info.org.clone().ok_or(TlsError::InvalidCert {
            what,
            reason: "the certificate names no cluster (O)".into(),
        })?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| TlsError::InvalidPem {
            what: "root CA key",
            reason: e.to_string(),
        })?;
        if key.subject_public_key_info() != info.spki {
            return Err(TlsError::KeyMismatch { what });
        }
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| TlsError::InvalidCert {
                what,
                reason: e.to_string(),
            })?;
        Ok(RootCa {
            cluster_id,
            cert_pem: cert_pem.to_string(),
            cert_der,
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    /// Loads `root-ca.crt` and `root-ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let cert = files::read(&dir.join(CA_CERT_FILE))?;
        let key = files::read(&dir.join(CA_KEY_FILE))?;
        Self::from_pem(&cert, &key)
    }

    /// Writes `root-ca.crt` and `root-ca.key` (mode 0600) into `dir`, creating it.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        files::write_atomic(&dir.join(CA_KEY_FILE), &self.key_pem, files::SECRET)?;
        files::write_atomic(&dir.join(CA_CERT_FILE), &self.cert_pem, files::PUBLIC)
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PKCS#8 PEM): whoever has it can make nodes. Store it only where
    /// managers keep secrets.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// What join tokens carry.
    pub fn digest(&self) -> CaDigest {
        CaDigest::of_der(&self.cert_der)
    }

    /// Signs a node's CSR: the certificate says `node_id` (CN), `role` (OU) and this cluster
    /// (O), is valid from now (less a little for clock skew) for `expiry`, and may be used as
    /// both TLS server and client. Only the CSR's public key is used; its signature must verify
    /// and its key must be ECDSA P-256.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        expiry: Duration,
    ) -> Result<String, TlsError> {
        let now = SystemTime::now();
        self.sign_csr_between(csr_pem, node_id, role, now - BACKDATE, now + expiry)
    }

    /// [`RootCa::sign_csr`] with an explicit validity period; tests use it for certificates
    /// that are already expired.
    pub(crate) fn sign_csr_between(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<String, TlsError> {
        check_node_id(node_id)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| TlsError::InvalidCsr(e.to_string()))?;
        if csr.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(TlsError::InvalidCsr(
                "only ECDSA P-256 keys are accepted".into(),
            ));
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        dn.push(DnType::OrganizationalUnitName, role.ou());
        dn.push(DnType::OrganizationName, self.cluster_id.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = node_sans(node_id, role);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = OffsetDateTime::from(not_before);
        params.not_after = OffsetDateTime::from(not_after);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let request = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let cert = request
            .signed_by(&self.issuer)
            .map_err(|source| TlsError::Sign {
                node_id: node_id.to_string(),
                source,
            })?;
        tracing::info!(node_id, %role, "signed a node certificate");
        Ok(cert.pem())
    }

    /// A fresh key and certificate for a node of this CA's own host (the first manager, or a
    /// manager renewing its certificate locally).
    pub fn issue(&self, node_id: &str, role: Role, expiry: Duration) -> Result<NodeCert, TlsError> {
        let key = NodeKey::generate()?;
        let cert = self.sign_csr(&key.csr_pem()?, node_id, role, expiry)?;
        key.into_node_cert(cert, self.cert_pem.clone())
    }

    #[cfg(test)]
    pub(crate) fn issue_between(
        &self,
        node_id: &str,
        role: Role,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<NodeCert, TlsError> {
        let key = NodeKey::generate()?;
        let cert = self.sign_csr_between(&key.csr_pem()?, node_id, role, not_before, not_after)?;
        key.into_node_cert(cert, self.cert_pem.clone())
    }
}

/// The names a client may verify: the role's fixed name (`swarm-manager`: "any manager") and
/// the node ID ("this node"). A node ID that is not a valid DNS name (e.g. all digits) gets only
/// the role name rather than a certificate that TLS libraries would refuse.
fn node_sans(node_id: &str, role: Role) -> Vec<SanType> {
    let mut names = vec![role.server_name().to_string()];
    if matches!(ServerName::try_from(node_id), Ok(ServerName::DnsName(_))) {
        names.push(node_id.to_string());
    }
    names
        .into_iter()
        .filter_map(|n| n.try_into().ok().map(SanType::DnsName))
        .collect()
}
