//! rustls configurations for the three kinds of connection a node makes or takes:
//!
//! - a server (manager or worker API) that verifies client certificates against the cluster CA
//!   ([`server_config`]); [`ClientAuth::Optional`] lets certificate-less clients in for the one
//!   call that needs it, joining;
//! - a client with a node certificate that verifies the server against the cluster CA
//!   ([`client_config`]);
//! - a joining client without a certificate that trusts the CA whose digest the join token
//!   carries, and nothing else ([`bootstrap_client_config`]).
//!
//! Servers present `[node certificate, CA certificate]` so that a joining client sees the CA it
//! must pin. All connections are TLS 1.3 only: every peer is a Shoal node.
//!
//! The node certificate sits in a [`LiveCert`] that the configs read on every handshake, so a
//! renewed certificate is used by new connections without rebuilding servers or channels.
//!
//! Session resumption is off on both sides: a resumed session carries the identity of the
//! certificate it was made with, so a demoted manager could go on as a manager, and an expired
//! certificate would outlive its expiry. Full handshakes cost little on long-lived gRPC
//! connections.

use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::{pem, CaDigest, NodeCert, TlsError};

/// gRPC runs over HTTP/2; saying so in ALPN lets either side fail fast on anything else.
const ALPN_H2: &[u8] = b"h2";

/// The ring provider, always passed explicitly: the workspace also links aws-lc-rs through
/// other crates, and rustls refuses to guess a process default when both are present.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether a server demands a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Refuse the handshake without a valid cluster certificate.
    Required,
    /// Let clients without a certificate in (they are unauthenticated and may call only the
    /// join method); a client that presents a certificate must still present a valid one.
    Optional,
}

struct Current {
    node: NodeCert,
    key: Arc<CertifiedKey>,
}

/// The node certificate the TLS configs present, replaceable while servers and channels run.
pub struct LiveCert {
    current: RwLock<Arc<Current>>,
}

impl std::fmt::Debug for LiveCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCert")
            .field("node", &self.get().node)
            .finish()
    }
}

fn certified_key(cert: &NodeCert) -> Result<Arc<CertifiedKey>, TlsError> {
    let key = pem::key(cert.key_pem(), "node key")?;
    let chain = vec![cert.cert_der.clone(), cert.ca_der.clone()];
    CertifiedKey::from_der(chain, key, &provider())
        .map(Arc::new)
        .map_err(|e| TlsError::Config(format!("the node key cannot be used for TLS: {e}")))
}

impl LiveCert {
    pub fn new(cert: NodeCert) -> Result<Arc<Self>, TlsError> {
        let key = certified_key(&cert)?;
        Ok(Arc::new(LiveCert {
            current: RwLock::new(Arc::new(Current { node: cert, key })),
        }))
    }

    fn get(&self) -> Arc<Current> {
        // A poisoned lock still holds a complete value: it is only ever replaced whole.
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The certificate presented now.
    pub fn node_cert(&self) -> NodeCert {
        self.get().node.clone()
    }

    /// Presents `cert` from the next handshake on (renewal, or a role change). The CA must be
    /// the same: the configs' trust roots are fixed when they are built.
    pub fn replace(&self, cert: NodeCert) -> Result<(), TlsError> {
        if cert.ca_der != self.get().node.ca_der {
            return Err(TlsError::CaChanged);
        }
        let key = certified_key(&cert)?;
        tracing::info!(
            node_id = cert.node_id(),
            role = %cert.role(),
            "presenting a new node certificate"
        );
        let next = Arc::new(Current { node: cert, key });
        match self.current.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.get().node.ca_der.clone())
            .map_err(|e| TlsError::Config(format!("the CA certificate cannot be a root: {e}")))?;
        Ok(Arc::new(roots))
    }
}

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get().key.clone())
    }
}

impl ResolvesClientCert for LiveCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server config that presents `cert` and verifies client certificates against its CA.
pub fn server_config(cert: &NodeCert, auth: ClientAuth) -> Result<ServerConfig, TlsError> {
    server_config_live(LiveCert::new(cert.clone())?, auth)
}

/// [`server_config`] presenting whatever `cert` holds at each handshake.
pub fn server_config_live(cert: Arc<LiveCert>, auth: ClientAuth) -> Result<ServerConfig, TlsError> {
    let builder = WebPkiClientVerifier::builder_with_provider(cert.roots()?, provider());
    let builder = match auth {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    let verifier = builder
        .build()
        .map_err(|e| TlsError::Config(format!("client certificate verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// A client config that presents `cert` and accepts servers whose certificate the cluster CA
/// signed for the server name the connection asks for (see [`crate::connect`]).
pub fn client_config(cert: &NodeCert) -> Result<ClientConfig, TlsError> {
    client_config_live(LiveCert::new(cert.clone())?)
}

/// [`client_config`] presenting whatever `cert` holds at each handshake.
pub fn client_config_live(cert: Arc<LiveCert>) -> Result<ClientConfig, TlsError> {
    let roots = cert.roots()?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(cert);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The config a joining node uses before it has a certificate: it presents none, and accepts
/// the server only if the server's chain carries the CA certificate whose SHA-256 is
/// `ca_digest` (from the join token) and the server's certificate was signed by that CA for the
/// server name asked for (`swarm-manager`). Trust on first use, anchored in the token.
pub fn bootstrap_client_config(ca_digest: CaDigest) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCaVerifier {
        ca_digest,
        provider: provider.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Why a pinned-CA check failed, for the handshake error the joining node prints.
#[derive(Debug, thiserror::Error)]
#[error(
    "the manager did not present the CA named by the join token ({0}): the token belongs to \
     another swarm, or someone is intercepting the connection; check the address and get a \
     fresh token with `shoal swarm join-token` on a manager"
)]
struct PinnedCaMismatch(CaDigest);

/// The bootstrap verifier: finds the pinned CA among the certificates the server sent, then
/// verifies the server's certificate against it exactly as a normal client would.
#[derive(Debug)]
struct PinnedCaVerifier {
    ca_digest: CaDigest,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| CaDigest::of_der(c.as_ref()) == self.ca_digest)
            .ok_or_else(|| {
                tracing::warn!(pinned = %self.ca_digest, "server did not present the pinned CA");
                rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                    Arc::new(PinnedCaMismatch(self.ca_digest)),
                )))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("pinned CA verifier: {e}")))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
