//! The stand-in's NTLM acceptor, after Microsoft's public MS-NLMP: the
//! three legs on one connection (NEGOTIATE, answered 401 with a
//! CHALLENGE; AUTHENTICATE, whose NTLMv2 response is checked against the
//! configured account), carried in `Authorization: Negotiate <base64>` or
//! `NTLM <base64>` as WinRM does. No signing or sealing: the messages
//! that follow are plain SOAP, as a guest with `AllowUnencrypted` takes
//! them. An authenticated connection stays authenticated.

use base64::Engine;
use hmac::{Hmac, Mac};
use md4::Digest;

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
const REQUEST_TARGET: u32 = 0x0000_0004;
const NEGOTIATE_NTLM: u32 = 0x0000_0200;
const ALWAYS_SIGN: u32 = 0x0000_8000;
const TARGET_TYPE_SERVER: u32 = 0x0002_0000;
const EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
const NEGOTIATE_TARGET_INFO: u32 = 0x0080_0000;
/// Flags the acceptor echoes when the client asks for them: signing,
/// sealing, key exchange and key strengths are agreed to (a real server
/// does) though nothing that follows is signed or sealed.
const ECHOED: u32 = 0x0000_0010 | 0x0000_0020 | 0x2000_0000 | 0x4000_0000 | 0x8000_0000;

/// The HTTP scheme a token came in, answered in kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    Negotiate,
    Ntlm,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Negotiate => "Negotiate",
            Scheme::Ntlm => "NTLM",
        }
    }
}

/// Where one connection is in the handshake.
#[derive(Default)]
pub(super) struct Connection {
    /// The challenge sent, with the target info it carried.
    challenge: Option<[u8; 8]>,
    /// Whether an AUTHENTICATE has been accepted on this connection.
    pub authenticated: bool,
}

/// What to do with a request's `Authorization` header.
pub(super) enum Step {
    /// Answer 401 with this `WWW-Authenticate` value (a CHALLENGE).
    Challenge(String),
    /// The request is authenticated: serve it.
    Accepted,
    /// Answer 401 and forget the handshake.
    Refused,
}

/// The token of an `Authorization: Negotiate|NTLM <base64>` header.
pub(super) fn token(header: &str) -> Option<(Scheme, Vec<u8>)> {
    let (scheme, b64) = header.trim().split_once(' ')?;
    let scheme = if scheme.eq_ignore_ascii_case("negotiate") {
        Scheme::Negotiate
    } else if scheme.eq_ignore_ascii_case("ntlm") {
        Scheme::Ntlm
    } else {
        return None;
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    Some((scheme, bytes))
}

impl Connection {
    /// Takes one leg of the handshake.
    pub fn step(
        &mut self,
        scheme: Scheme,
        message: &[u8],
        user: &str,
        password: &str,
        hostname: &str,
    ) -> Step {
        if message.len() < 12 || &message[..8] != SIGNATURE {
            self.challenge = None;
            return Step::Refused;
        }
        match u32_at(message, 8) {
            Some(1) => {
                let asked = u32_at(message, 12).unwrap_or(0);
                let server_challenge: [u8; 8] = uuid::Uuid::new_v4().as_bytes()[..8]
                    .try_into()
                    .expect("8 bytes");
                self.challenge = Some(server_challenge);
                let msg = challenge(asked, server_challenge, hostname);
                Step::Challenge(format!(
                    "{} {}",
                    scheme.name(),
                    base64::engine::general_purpose::STANDARD.encode(msg)
                ))
            }
            Some(3) => match self.challenge.take() {
                Some(c) if verify(message, &c, user, password) => {
                    self.authenticated = true;
                    Step::Accepted
                }
                _ => Step::Refused,
            },
            _ => {
                self.challenge = None;
                Step::Refused
            }
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The payload a field header (length, max length, offset) at `at` points to.
fn field(b: &[u8], at: usize) -> Option<&[u8]> {
    let len = usize::from(u16_at(b, at)?);
    let offset = usize::try_from(u32_at(b, at + 4)?).ok()?;
    b.get(offset..offset.checked_add(len)?)
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// A CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2) for a stand-alone server named
/// `hostname`, with the AV pairs Windows sends, a timestamp among them.
fn challenge(asked: u32, server_challenge: [u8; 8], hostname: &str) -> Vec<u8> {
    let name = utf16le(&hostname.to_uppercase());
    let mut info = Vec::new();
    let mut pair = |id: u16, value: &[u8]| {
        info.extend_from_slice(&id.to_le_bytes());
        info.extend_from_slice(&(value.len() as u16).to_le_bytes());
        info.extend_from_slice(value);
    };
    for id in [2, 1, 4, 3] {
        pair(id, &name);
    }
    pair(7, &filetime_now().to_le_bytes());
    pair(0, &[]);
    let flags = NEGOTIATE_UNICODE
        | REQUEST_TARGET
        | NEGOTIATE_NTLM
        | ALWAYS_SIGN
        | TARGET_TYPE_SERVER
        | EXTENDED_SESSIONSECURITY
        | NEGOTIATE_TARGET_INFO
        | (asked & ECHOED);
    const HEADER: usize = 48;
    let mut m = Vec::with_capacity(HEADER + name.len() + info.len());
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&2u32.to_le_bytes());
    let fields = |m: &mut Vec<u8>, len: usize, offset: usize| {
        m.extend_from_slice(&(len as u16).to_le_bytes());
        m.extend_from_slice(&(len as u16).to_le_bytes());
        m.extend_from_slice(&(offset as u32).to_le_bytes());
    };
    fields(&mut m, name.len(), HEADER);
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&server_challenge);
    m.extend_from_slice(&[0; 8]);
    fields(&mut m, info.len(), HEADER + name.len());
    m.extend_from_slice(&name);
    m.extend_from_slice(&info);
    m
}

/// Now in 100 ns steps since 1601 (a FILETIME).
fn filetime_now() -> u64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (unix.as_secs() + 11_644_473_600) * 10_000_000 + u64::from(unix.subsec_nanos() / 100)
}

/// Whether an AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3) carries an NTLMv2
/// response to `server_challenge` from `user` with `password`
/// (MS-NLMP 3.3.2: NTOWFv2, then NTProofStr over the client's blob).
fn verify(m: &[u8], server_challenge: &[u8; 8], user: &str, password: &str) -> bool {
    let (Some(nt), Some(domain), Some(name), Some(flags)) =
        (field(m, 20), field(m, 28), field(m, 36), u32_at(m, 60))
    else {
        return false;
    };
    let text = |b: &[u8]| -> Option<String> {
        if flags & NEGOTIATE_UNICODE != 0 {
            let units: Vec<u16> = b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        } else {
            String::from_utf8(b.to_vec()).ok()
        }
    };
    let (Some(domain), Some(name)) = (text(domain), text(name)) else {
        return false;
    };
    // Below 24 bytes it is an NTLMv1 response, which is not accepted.
    if !name.eq_ignore_ascii_case(user) || nt.len() <= 24 || nt[16..18] != [1, 1] {
        return false;
    }
    let (proof, blob) = nt.split_at(16);
    let nt_hash = md4::Md4::digest(utf16le(password));
    let key = hmac_md5(
        &nt_hash,
        &[&utf16le(&format!("{}{domain}", name.to_uppercase()))],
    );
    hmac_md5(&key, &[server_challenge, blob]) == proof
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <Hmac<md5::Md5> as Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}
