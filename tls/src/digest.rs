//! The CA digest a join token carries: SHA-256 of the root CA certificate's DER encoding.
//!
//! DER rather than PEM (Docker hashes its PEM bundle) so that re-encoding the PEM, e.g. with
//! other line endings, cannot change a cluster's digest.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::{pem, TlsError};

/// SHA-256 of the cluster's root CA certificate (DER).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaDigest([u8; 32]);

impl CaDigest {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        CaDigest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Digest of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        CaDigest(Sha256::digest(der).into())
    }

    /// Digest of the one certificate in a PEM document.
    pub fn of_pem(ca_pem: &str) -> Result<Self, TlsError> {
        let der = pem::one_cert(ca_pem, "CA certificate PEM")?;
        Ok(Self::of_der(&der))
    }

    /// Checks that `ca_pem` is the CA this digest names: what a joining node does with the CA
    /// certificate the manager sends, before trusting it.
    pub fn check_pem(&self, ca_pem: &str) -> Result<(), TlsError> {
        let actual = Self::of_pem(ca_pem)?;
        if actual != *self {
            return Err(TlsError::CaDigestMismatch {
                expected: self.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
