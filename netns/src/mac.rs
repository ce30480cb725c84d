//! MAC addresses as a small value type: the peer tables that managers send carry them as text,
//! and FDB and neighbour entries need them as six bytes.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// The address from its six octets.
    pub const fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The address from a netlink attribute, if it has MAC length.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(Self)
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        Self(octets)
    }
}

impl FromStr for MacAddr {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidMac(text.to_string());
        let mut octets = [0u8; 6];
        let mut parts = text.split(':');
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let mac: MacAddr = "02:42:C6:12:00:0a".parse().expect("valid MAC");
        assert_eq!(mac.octets(), [0x02, 0x42, 0xc6, 0x12, 0x00, 0x0a]);
        assert_eq!(mac.to_string(), "02:42:c6:12:00:0a");
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "02:42:c6:12:00",
            "02:42:c6:12:00:0a:01",
            "2:42:c6:12:00:0a",
            "02:42:c6:12:00:zz",
            "02-42-c6-12-00-0a",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} accepted");
        }
    }
}
