//! The bytes on the wire: the Wake-on-LAN magic packet, the powerwake
//! request that wraps it, and powernapd's reply.

use super::Mac;

/// Length of a plain Wake-on-LAN magic packet: `FF x6` + MAC x16.
pub const MAGIC_LEN: usize = 6 + 16 * 6;

/// Length of a powerwake request: `"PWERWAKE"` + nonce + magic packet.
pub const REQUEST_LEN: usize = 8 + 4 + MAGIC_LEN;

/// Length of powernapd's reply: `"PWERWAKF"` + nonce.
pub const REPLY_LEN: usize = 8 + 4;

const REQUEST_TAG: &[u8; 8] = b"PWERWAKE";
const REPLY_TAG: &[u8; 8] = b"PWERWAKF";

/// The 24 bytes the seed's powerwake repeats four times in place of the MACs
/// when it only wants powernapd to answer (after waking a host by other
/// means, e.g. IPMI); powernapd answers it whatever its MACs are.
const NOT_WOL: &[u8; 24] = b"Not really a WoL packet.";

/// The Wake-on-LAN magic packet for `mac`.
pub fn magic_packet(mac: Mac) -> [u8; MAGIC_LEN] {
    let mut p = [0xffu8; MAGIC_LEN];
    for chunk in p[6..].chunks_exact_mut(6) {
        chunk.copy_from_slice(&mac.0);
    }
    p
}

/// True when `payload` contains the magic packet for `mac` anywhere (as
/// NICs and the seed's `wol` monitor look for it).
pub fn contains_magic_packet(payload: &[u8], mac: Mac) -> bool {
    let magic = magic_packet(mac);
    payload.windows(MAGIC_LEN).any(|w| w == magic)
}

/// Who a powerwake request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestTarget {
    /// The host owning this MAC (the packet wakes its NIC too).
    Mac(Mac),
    /// Any powernapd that hears it (the seed's "not really a WoL packet").
    Anyone,
}

/// A powerwake request: a magic packet with a header that asks powernapd on
/// the woken host to answer with the same nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerwakeRequest {
    /// Tells this request's reply from others'.
    pub nonce: u32,
    /// Who should answer.
    pub target: RequestTarget,
}

/// Why a datagram is not a powerwake request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than the 114 bytes of a request.
    #[error("packet is {0} bytes, a powerwake request has {REQUEST_LEN}")]
    TooShort(usize),
    /// The first 8 bytes are not `PWERWAKE`.
    #[error("packet does not start with PWERWAKE")]
    NotPowerwake,
    /// Bytes 12..18 are not `FF x6`.
    #[error("packet has no magic-packet sync bytes (FF x6) after the nonce")]
    NoSync,
    /// The 16 MAC copies differ.
    #[error("the 16 MAC copies in the packet differ")]
    MacsDiffer,
}

impl PowerwakeRequest {
    /// A request for `mac` with a fresh random nonce.
    pub fn new(mac: Mac) -> Self {
        Self {
            nonce: random_nonce(),
            target: RequestTarget::Mac(mac),
        }
    }

    /// The 114 bytes to send.
    pub fn to_bytes(&self) -> [u8; REQUEST_LEN] {
        let mut p = [0u8; REQUEST_LEN];
        p[..8].copy_from_slice(REQUEST_TAG);
        p[8..12].copy_from_slice(&self.nonce.to_le_bytes());
        match self.target {
            RequestTarget::Mac(mac) => p[12..].copy_from_slice(&magic_packet(mac)),
            RequestTarget::Anyone => {
                p[12..18].fill(0xff);
                for chunk in p[18..].chunks_exact_mut(NOT_WOL.len()) {
                    chunk.copy_from_slice(NOT_WOL);
                }
            }
        }
        p
    }

    /// Reads a request the way the seed's powernapd does: extra bytes after
    /// the 114 are ignored.
    pub fn parse(p: &[u8]) -> Result<Self, PacketError> {
        if p.len() < REQUEST_LEN {
            return Err(PacketError::TooShort(p.len()));
        }
        if &p[..8] != REQUEST_TAG {
            return Err(PacketError::NotPowerwake);
        }
        if p[12..18] != [0xff; 6] {
            return Err(PacketError::NoSync);
        }
        let nonce = u32::from_le_bytes([p[8], p[9], p[10], p[11]]);
        let body = &p[18..REQUEST_LEN];
        if body.chunks_exact(NOT_WOL.len()).all(|c| c == NOT_WOL) {
            return Ok(Self {
                nonce,
                target: RequestTarget::Anyone,
            });
        }
        let first = &body[..6];
        if !body.chunks_exact(6).all(|c| c == first) {
            return Err(PacketError::MacsDiffer);
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(first);
        Ok(Self {
            nonce,
            target: RequestTarget::Mac(Mac(mac)),
        })
    }

    /// The reply powernapd sends back for this request.
    pub fn reply(&self) -> [u8; REPLY_LEN] {
        reply_packet(self.nonce)
    }

    /// True when `reply` is powernapd's answer to this request.
    pub fn is_reply(&self, reply: &[u8]) -> bool {
        parse_reply(reply) == Some(self.nonce)
    }
}

/// `"PWERWAKF"` + `nonce` (little endian).
pub fn reply_packet(nonce: u32) -> [u8; REPLY_LEN] {
    let mut p = [0u8; REPLY_LEN];
    p[..8].copy_from_slice(REPLY_TAG);
    p[8..].copy_from_slice(&nonce.to_le_bytes());
    p
}

/// The nonce of a well-formed reply (exactly 12 bytes, as the seed checks).
pub fn parse_reply(p: &[u8]) -> Option<u32> {
    if p.len() != REPLY_LEN || &p[..8] != REPLY_TAG {
        return None;
    }
    Some(u32::from_le_bytes([p[8], p[9], p[10], p[11]]))
}

/// A nonce from the kernel's random source, so concurrent clients (and
/// retries of one) never take each other's replies.
fn random_nonce() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == b.len() as isize {
        return u32::from_le_bytes(b);
    }
    // getrandom only fails on pre-3.17 kernels; time and pid still keep
    // clients apart there.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x52, 0x54, 0x00, 0x77, 0x00, 0x01]);

    #[test]
    fn request_is_114_bytes_laid_out_as_the_seed_sends_it() {
        let r = PowerwakeRequest {
            nonce: 0x0403_0201,
            target: RequestTarget::Mac(MAC),
        };
        let p = r.to_bytes();
        assert_eq!(p.len(), 114);
        assert_eq!(&p[..8], b"PWERWAKE");
        assert_eq!(&p[8..12], &[1, 2, 3, 4]);
        assert_eq!(&p[12..18], &[0xff; 6]);
        for i in 0..16 {
            assert_eq!(&p[18 + i * 6..24 + i * 6], &MAC.0);
        }
        assert_eq!(&p[12..], &magic_packet(MAC)[..]);
        assert_eq!(PowerwakeRequest::parse(&p), Ok(r));
    }

    #[test]
    fn reply_is_tag_and_little_endian_nonce() {
        let r = PowerwakeRequest {
            nonce: 0xdead_beef,
            target: RequestTarget::Mac(MAC),
        };
        let reply = r.reply();
        assert_eq!(&reply, b"PWERWAKF\xef\xbe\xad\xde");
        assert!(r.is_reply(&reply));
        assert!(!r.is_reply(&reply_packet(0xdead_beee)));
        let mut long = reply.to_vec();
        long.push(0);
        assert!(!r.is_reply(&long));
        assert_eq!(parse_reply(b"PWERWAKE\xef\xbe\xad\xde"), None);
    }

    #[test]
    fn seed_not_wol_request_round_trips_as_anyone() {
        let r = PowerwakeRequest {
            nonce: 7,
            target: RequestTarget::Anyone,
        };
        let p = r.to_bytes();
        assert_eq!(&p[18..42], b"Not really a WoL packet.");
        assert_eq!(PowerwakeRequest::parse(&p), Ok(r));
    }

    #[test]
    fn malformed_requests_are_told_apart() {
        let good = PowerwakeRequest::new(MAC).to_bytes();
        assert_eq!(
            PowerwakeRequest::parse(&good[..113]),
            Err(PacketError::TooShort(113))
        );
        let mut p = good;
        p[0] = b'X';
        assert_eq!(PowerwakeRequest::parse(&p), Err(PacketError::NotPowerwake));
        let mut p = good;
        p[13] = 0;
        assert_eq!(PowerwakeRequest::parse(&p), Err(PacketError::NoSync));
        let mut p = good;
        p[113] ^= 1;
        assert_eq!(PowerwakeRequest::parse(&p), Err(PacketError::MacsDiffer));
        let mut long = good.to_vec();
        long.extend_from_slice(b"trailer");
        assert!(PowerwakeRequest::parse(&long).is_ok());
    }

    #[test]
    fn magic_packet_is_found_inside_any_payload() {
        let mut payload = b"PWERWAKE\0\0\0\0".to_vec();
        payload.extend_from_slice(&magic_packet(MAC));
        assert!(contains_magic_packet(&payload, MAC));
        assert!(!contains_magic_packet(
            &payload,
            Mac([0x52, 0x54, 0, 0x77, 0, 2])
        ));
        assert!(!contains_magic_packet(b"short", MAC));
    }

    #[test]
    fn nonces_differ_between_requests() {
        let a = PowerwakeRequest::new(MAC).nonce;
        let b = PowerwakeRequest::new(MAC).nonce;
        let c = PowerwakeRequest::new(MAC).nonce;
        assert!(a != b || b != c);
    }
}
