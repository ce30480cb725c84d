//! Reading back what the CA put into certificates: names, validity, CA flag, public key, and
//! whether a certificate was signed by a given CA.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::TlsError;

/// The parts of a certificate Shoal cares about.
#[derive(Clone, Debug)]
pub(crate) struct CertInfo {
    pub common_name: Option<String>,
    pub org_unit: Option<String>,
    pub org: Option<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub is_ca: bool,
    /// SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
}

fn parse<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>, TlsError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| TlsError::InvalidCert {
        what,
        reason: format!("not a valid X.509 certificate: {e}"),
    })?;
    if !rest.is_empty() {
        return Err(TlsError::InvalidCert {
            what,
            reason: "trailing bytes after the certificate".into(),
        });
    }
    Ok(cert)
}

fn timestamp(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

pub(crate) fn inspect(der: &[u8], what: &'static str) -> Result<CertInfo, TlsError> {
    let cert = parse(der, what)?;
    let subject = cert.subject();
    // A name that is present but not a string is as good as absent: the CA never writes one.
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    let org_unit = subject
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    let org = subject
        .iter_organization()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    let validity = cert.validity();
    Ok(CertInfo {
        common_name,
        org_unit,
        org,
        not_before: timestamp(validity.not_before.timestamp()),
        not_after: timestamp(validity.not_after.timestamp()),
        is_ca: cert.is_ca(),
        spki: cert.public_key().raw.to_vec(),
    })
}

/// Checks the signature of `cert_der` with the public key of `ca_der`. Validity periods are
/// not looked at: a node must be able to load an expired certificate to say that it expired.
pub(crate) fn verify_issued_by(cert_der: &[u8], ca_der: &[u8]) -> Result<(), TlsError> {
    let cert = parse(cert_der, "node certificate")?;
    let ca = parse(ca_der, "CA certificate")?;
    if cert.issuer() != ca.subject() {
        return Err(TlsError::NotSignedByCa(format!(
            "its issuer is {:?}, the CA is {:?}",
            cert.issuer().to_string(),
            ca.subject().to_string()
        )));
    }
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|e| TlsError::NotSignedByCa(format!("the signature does not verify ({e})")))
}
