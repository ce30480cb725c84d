//! PEM decoding shared by the CA and node sides: exactly one certificate per PEM, one key.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// The single certificate in `pem`; more than one is refused so that a bundle is never taken
/// for a node certificate by accident.
pub(crate) fn one_cert(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, TlsError> {
    let mut certs = CertificateDer::pem_slice_iter(pem.as_bytes());
    let first = match certs.next() {
        Some(Ok(der)) => der,
        Some(Err(e)) => {
            return Err(TlsError::InvalidPem {
                what,
                reason: e.to_string(),
            })
        }
        None => {
            return Err(TlsError::InvalidPem {
                what,
                reason: "no CERTIFICATE block found".into(),
            })
        }
    };
    if certs.next().is_some() {
        return Err(TlsError::InvalidPem {
            what,
            reason: "more than one CERTIFICATE block; give exactly one".into(),
        });
    }
    Ok(first)
}

/// The private key in `pem` (PKCS#8, SEC1 or PKCS#1).
pub(crate) fn key(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::InvalidPem {
        what,
        reason: e.to_string(),
    })
}
