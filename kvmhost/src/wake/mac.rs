//! Ethernet MAC addresses as people write them.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{input}' is not a MAC address: write six hex octets separated by ':', '-' or '.' \
     (e.g. 52:54:00:12:34:56), or twelve hex digits"
)]
pub struct MacParseError {
    input: String,
}

impl Mac {
    /// The six octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// True for the all-zero address (loopback and some virtual interfaces
    /// report it; it never identifies a host).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl FromStr for Mac {
    type Err = MacParseError;

    /// Accepts `aabbccddeeff` and six groups of one or two hex digits
    /// separated by one of `:`, `-` or `.` (the forms `/etc/ethers`,
    /// `ip link` and the seed's powerwake accept).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError {
            input: s.to_string(),
        };
        let s = s.trim();
        let mut out = [0u8; 6];
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            for (i, o) in out.iter_mut().enumerate() {
                *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).map_err(|_| err())?;
            }
            return Ok(Mac(out));
        }
        let sep = s
            .chars()
            .find(|c| matches!(c, ':' | '-' | '.'))
            .ok_or_else(err)?;
        let groups: Vec<&str> = s.split(sep).collect();
        if groups.len() != 6 {
            return Err(err());
        }
        for (o, g) in out.iter_mut().zip(groups) {
            if g.is_empty() || g.len() > 2 || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *o = u8::from_str_radix(g, 16).map_err(|_| err())?;
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    /// Lower-case, colon separated: `52:54:00:12:34:56`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mac({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_written_form_parses_to_the_same_address() {
        let want = Mac([0x52, 0x54, 0x00, 0x0a, 0xbc, 0xde]);
        for s in [
            "52:54:00:0a:bc:de",
            "52:54:0:a:BC:de",
            "52-54-00-0A-BC-DE",
            "52.54.00.0a.bc.de",
            "5254000abcde",
            " 52:54:00:0a:bc:de\n",
        ] {
            assert_eq!(s.parse::<Mac>(), Ok(want), "{s:?}");
        }
        assert_eq!(want.to_string(), "52:54:00:0a:bc:de");
    }

    #[test]
    fn malformed_addresses_are_rejected_with_the_input_named() {
        for s in [
            "",
            "52:54:00:0a:bc",
            "52:54:00:0a:bc:de:01",
            "52:54:00:0a:bc:dg",
            "52:54-00:0a:bc:de",
            "525:4:00:0a:bc:de",
            "5254000abcd",
            "host.example.com",
        ] {
            let e = s.parse::<Mac>().unwrap_err();
            assert!(e.to_string().contains(&format!("'{s}'")), "{e}");
        }
    }
}
