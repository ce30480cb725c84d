//! Join tokens, Docker Swarm's shape: `SHOAL-1-<CA digest>-<secret>`.
//!
//! - The CA digest is the SHA-256 of the cluster's root CA certificate in base 36, zero-padded
//!   to 50 characters. A joining node pins that CA when it first connects
//!   (`shoal_tls::bootstrap_client_config`), so a token is also the way to trust the manager.
//! - The secret is 16 random bytes in base 36, zero-padded to 25 characters. It is what the
//!   manager checks before signing a node's certificate, and what `join-token --rotate`
//!   replaces; the worker and manager tokens have different secrets, and which one a node
//!   presents decides its role.
//!
//! Tokens are compared in constant time so that timing does not reveal how much of a guessed
//! token is right.

use rand::RngCore;
use shoal_tls::{CaDigest, Role};
use subtle::ConstantTimeEq;

const PREFIX: &str = "SHOAL";
const VERSION: &str = "1";
const DIGEST_LEN: usize = 50;
const SECRET_LEN: usize = 25;
const SECRET_BYTES: usize = 16;
const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error(
        "invalid join token: {0}; a join token looks like SHOAL-1-<50 characters>-<25 \
         characters>: copy it whole from `shoal swarm join-token worker` (or `manager`) on a \
         manager"
    )]
    Malformed(String),

    #[error(
        "invalid join token: it was made for another swarm (its CA digest is {presented}, this \
         swarm's is {expected}): get a token from a manager of this swarm with `shoal swarm \
         join-token worker`"
    )]
    OtherCluster {
        presented: CaDigest,
        expected: CaDigest,
    },

    #[error(
        "invalid join token: it is not this swarm's current worker or manager token (it may \
         have been rotated): get the current one with `shoal swarm join-token worker` (or \
         `manager`) on a manager"
    )]
    NotCurrent,
}

/// The parts of a join token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedToken {
    /// The cluster's root CA, which the joining node pins.
    pub ca_digest: CaDigest,
    /// The 25 base-36 characters that authorise the join.
    pub secret: String,
}

/// `bytes` (big-endian) in base 36, zero-padded to `width` digits.
fn to_base36(bytes: &[u8], width: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    while number.iter().any(|&b| b != 0) {
        // Long division of the whole number by 36; the remainder is the next digit.
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let acc = (remainder << 8) | u32::from(*byte);
            *byte = (acc / 36) as u8;
            remainder = acc % 36;
        }
        digits.push(ALPHABET[remainder as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}

/// The `N`-byte big-endian number written in base 36 by `text`, or `None` if `text` has a
/// character outside `[0-9a-z]` or the number does not fit in `N` bytes.
fn from_base36<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut number = [0u8; N];
    for c in text.bytes() {
        let digit = ALPHABET.iter().position(|&a| a == c)? as u32;
        let mut carry = digit;
        for byte in number.iter_mut().rev() {
            let acc = u32::from(*byte) * 36 + carry;
            *byte = (acc & 0xff) as u8;
            carry = acc >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(number)
}

fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    // The OS generator: a join secret is a credential.
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    to_base36(&bytes, SECRET_LEN)
}

/// A new join token for the cluster whose root CA has `ca_digest` (`RootCa::digest`), with a
/// fresh secret. Make one for workers and one for managers.
pub fn new_join_token(ca_digest: &CaDigest) -> String {
    format!(
        "{PREFIX}-{VERSION}-{}-{}",
        to_base36(ca_digest.as_bytes(), DIGEST_LEN),
        new_secret()
    )
}

/// `join-token --rotate`: the same cluster part with a new secret, so that the old token stops
/// working while the new one still pins the same CA.
/// The command a node joins with, as `swarm init` and `swarm join-token` print it.
pub fn join_command(token: &str, manager_addr: &str) -> String {
    format!("shoal swarm join --token {token} {manager_addr}")
}

pub fn rotate(current: &str) -> Result<String, TokenError> {
    let parsed = parse(current)?;
    Ok(new_join_token(&parsed.ca_digest))
}

/// Splits a token into its CA digest and secret, saying what is wrong with a malformed one.
pub fn parse(token: &str) -> Result<ParsedToken, TokenError> {
    let malformed = |why: &str| TokenError::Malformed(why.to_string());
    let token = token.trim();
    if token.is_empty() {
        return Err(malformed("the token is empty"));
    }
    let parts: Vec<&str> = token.split('-').collect();
    if parts.len() != 4 {
        return Err(malformed(&format!(
            "it has {} dash-separated parts, not 4",
            parts.len()
        )));
    }
    if parts[0] != PREFIX {
        return Err(malformed(&format!(
            "it starts with {:?}, not {PREFIX:?}",
            parts[0]
        )));
    }
    if parts[1] != VERSION {
        return Err(malformed(&format!(
            "token format version {:?} is not supported (this version of shoal reads version \
             {VERSION})",
            parts[1]
        )));
    }
    let (digest, secret) = (parts[2], parts[3]);
    if digest.len() != DIGEST_LEN {
        return Err(malformed(&format!(
            "the CA digest part has {} characters, not {DIGEST_LEN}",
            digest.len()
        )));
    }
    let ca_digest = from_base36::<32>(digest).ok_or_else(|| {
        malformed("the CA digest part is not a base-36 SHA-256 digest (only 0-9 and a-z)")
    })?;
    if secret.len() != SECRET_LEN {
        return Err(malformed(&format!(
            "the secret part has {} characters, not {SECRET_LEN}",
            secret.len()
        )));
    }
    if from_base36::<SECRET_BYTES>(secret).is_none() {
        return Err(malformed(
            "the secret part is not base 36 (only 0-9 and a-z)",
        ));
    }
    Ok(ParsedToken {
        ca_digest: CaDigest::from_bytes(ca_digest),
        secret: secret.to_string(),
    })
}

/// Constant-time equality of two tokens (or secrets). The length is not secret: every valid
/// token has the same one.
pub fn tokens_equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// What the manager does with the token a joining node presents: the role it joins as, or why
/// not. Both tokens are always compared, so timing does not tell which one came close.
pub fn role_for_token(
    presented: &str,
    worker_token: &str,
    manager_token: &str,
) -> Result<Role, TokenError> {
    let presented = parse(presented)?;
    // The cluster's own tokens come from the store and are well-formed; if one is not, no
    // presented token can match it.
    let cluster = parse(worker_token)
        .or_else(|_| parse(manager_token))
        .map_err(|_| TokenError::NotCurrent)?;
    if presented.ca_digest != cluster.ca_digest {
        return Err(TokenError::OtherCluster {
            presented: presented.ca_digest,
            expected: cluster.ca_digest,
        });
    }
    let secret_of = |token: &str| parse(token).map(|p| p.secret).unwrap_or_default();
    let is_worker = tokens_equal(&presented.secret, &secret_of(worker_token));
    let is_manager = tokens_equal(&presented.secret, &secret_of(manager_token));
    match (is_worker, is_manager) {
        (_, true) => Ok(Role::Manager),
        (true, false) => Ok(Role::Worker),
        (false, false) => Err(TokenError::NotCurrent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(fill: u8) -> CaDigest {
        CaDigest::from_bytes([fill; 32])
    }

    #[test]
    fn token_round_trips() {
        for fill in [0u8, 1, 0x7f, 0xff] {
            let token = new_join_token(&digest(fill));
            assert!(token.starts_with("SHOAL-1-"), "{token}");
            assert_eq!(token.len(), "SHOAL-1-".len() + DIGEST_LEN + 1 + SECRET_LEN);
            let parsed = parse(&token).unwrap();
            assert_eq!(parsed.ca_digest, digest(fill));
            assert_eq!(parsed.secret.len(), SECRET_LEN);
        }
        // Secrets differ from token to token.
        assert_ne!(
            parse(&new_join_token(&digest(1))).unwrap().secret,
            parse(&new_join_token(&digest(1))).unwrap().secret
        );
    }

    #[test]
    fn base36_matches_known_values() {
        assert_eq!(to_base36(&[0, 0], 4), "0000");
        assert_eq!(to_base36(&[0, 35], 2), "0z");
        assert_eq!(to_base36(&[0, 36], 2), "10");
        assert_eq!(to_base36(&[0xff, 0xff], 4), "1ekf"); // 65535
        assert_eq!(from_base36::<2>("1ekf"), Some([0xff, 0xff]));
        assert_eq!(
            from_base36::<2>("1ekg"),
            None,
            "65536 does not fit in two bytes"
        );
        assert_eq!(
            from_base36::<2>("1EKF"),
            None,
            "upper case is not base 36 here"
        );
        let max = to_base36(&[0xff; 32], DIGEST_LEN);
        assert_eq!(max.len(), DIGEST_LEN);
        assert_eq!(from_base36::<32>(&max), Some([0xff; 32]));
        assert_eq!(from_base36::<32>(&"z".repeat(DIGEST_LEN)), None);
    }

    #[test]
    fn parse_says_what_is_wrong() {
        let good = new_join_token(&digest(7));
        let parts: Vec<&str> = good.split('-').collect();
        let cases = [
            ("".to_string(), "empty"),
            ("SHOAL-1-abc".to_string(), "3 dash-separated parts"),
            (
                good.replacen("SHOAL", "SWMTKN", 1),
                "starts with \"SWMTKN\"",
            ),
            (good.replacen("-1-", "-2-", 1), "version \"2\""),
            (
                format!("SHOAL-1-{}-{}", &parts[2][1..], parts[3]),
                "CA digest part has 49 characters",
            ),
            (
                format!("SHOAL-1-{}-{}", "z".repeat(DIGEST_LEN), parts[3]),
                "not a base-36 SHA-256 digest",
            ),
            (
                format!("SHOAL-1-{}-{}", parts[2], &parts[3][2..]),
                "secret part has 23 characters",
            ),
            (
                format!("SHOAL-1-{}-{}!", parts[2], &parts[3][1..]),
                "secret part is not base 36",
            ),
        ];
        for (token, needle) in cases {
            let err = parse(&token).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("invalid join token: "), "{msg}");
            assert!(msg.contains(needle), "{token:?}: {msg}");
        }
        // Surrounding whitespace from a copy and paste is fine.
        assert!(parse(&format!("  {good}\n")).is_ok());
    }

    #[test]
    fn rotation_keeps_the_ca_and_changes_the_secret() {
        let old = new_join_token(&digest(3));
        let new = rotate(&old).unwrap();
        assert_ne!(old, new);
        assert_eq!(parse(&new).unwrap().ca_digest, digest(3));
        assert!(rotate("SHOAL-1-x").is_err());
    }

    #[test]
    fn presented_token_decides_the_role() {
        let worker = new_join_token(&digest(9));
        let manager = new_join_token(&digest(9));
        assert_eq!(role_for_token(&worker, &worker, &manager), Ok(Role::Worker));
        assert_eq!(
            role_for_token(&manager, &worker, &manager),
            Ok(Role::Manager)
        );

        // A rotated-away token.
        let old_worker = worker.clone();
        let worker = rotate(&worker).unwrap();
        assert_eq!(
            role_for_token(&old_worker, &worker, &manager),
            Err(TokenError::NotCurrent)
        );

        // Another cluster's token.
        let foreign = new_join_token(&digest(1));
        let err = role_for_token(&foreign, &worker, &manager).unwrap_err();
        assert!(matches!(err, TokenError::OtherCluster { .. }), "{err}");
        assert!(err.to_string().contains("another swarm"));

        assert!(matches!(
            role_for_token("garbage", &worker, &manager),
            Err(TokenError::Malformed(_))
        ));
        assert!(tokens_equal("abc", "abc"));
        assert!(!tokens_equal("abc", "abd"));
        assert!(!tokens_equal("abc", "abcd"));
    }
}
