//! NTLMv2 authentication, after Microsoft's public MS-NLMP: the
//! NEGOTIATE_MESSAGE a client opens with, the server's
//! CHALLENGE_MESSAGE, and the AUTHENTICATE_MESSAGE with the NTLMv2
//! response (MS-NLMP 3.3.2). No signing or sealing is negotiated: the
//! messages that follow are plain, as with Packer's `winrm_use_ntlm`.

use hmac::{Hmac, Mac};
use md4::{Digest, Md4};

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
const NEGOTIATE_UNICODE: u32 = 0x0000_0001;
const REQUEST_TARGET: u32 = 0x0000_0004;
const NEGOTIATE_NTLM: u32 = 0x0000_0200;
const ALWAYS_SIGN: u32 = 0x0000_8000;
const EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
const NEGOTIATE_TARGET_INFO: u32 = 0x0080_0000;
const NEGOTIATE_128: u32 = 0x2000_0000;
const NEGOTIATE_56: u32 = 0x8000_0000;
/// What this client asks for, and keeps of what the server answers.
const FLAGS: u32 = NEGOTIATE_UNICODE
    | REQUEST_TARGET
    | NEGOTIATE_NTLM
    | ALWAYS_SIGN
    | EXTENDED_SESSIONSECURITY
    | NEGOTIATE_TARGET_INFO
    | NEGOTIATE_128
    | NEGOTIATE_56;
/// The AV pair id of the server's timestamp (MS-NLMP 2.2.2.1).
const AV_TIMESTAMP: u16 = 7;
/// The fixed part of an AUTHENTICATE_MESSAGE without Version and MIC.
const AUTHENTICATE_HEADER: usize = 64;

/// The account an NTLM handshake proves.
#[derive(Clone)]
pub struct Credentials {
    /// The user name, without its domain.
    pub user: String,
    /// The domain, empty for a local account.
    pub domain: String,
    /// The password.
    pub password: String,
}

impl Credentials {
    /// `DOMAIN\user` or a bare local `user`, with its password.
    pub fn new(username: &str, password: &str) -> Credentials {
        let (domain, user) = username.split_once('\\').unwrap_or(("", username));
        Credentials {
            user: user.to_string(),
            domain: domain.to_string(),
            password: password.to_string(),
        }
    }
}

/// A CHALLENGE_MESSAGE's parts the response is computed over.
#[derive(Debug)]
pub struct Challenge {
    flags: u32,
    server_challenge: [u8; 8],
    target_info: Vec<u8>,
}

/// Why a CHALLENGE_MESSAGE cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// Not an NTLMSSP CHALLENGE_MESSAGE at all.
    #[error("the server's NTLM challenge is malformed")]
    Malformed,
    /// No target info, so no NTLMv2 response can be made.
    #[error("the server's NTLM challenge carries no target info: it does not speak NTLMv2")]
    NotV2,
}

/// The NEGOTIATE_MESSAGE (MS-NLMP 2.2.1.1): no domain or workstation.
pub fn negotiate() -> Vec<u8> {
    let mut m = Vec::with_capacity(32);
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&FLAGS.to_le_bytes());
    for _ in 0..2 {
        push_field(&mut m, 0, 32);
    }
    m
}

impl Challenge {
    /// Reads a CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2).
    pub fn parse(m: &[u8]) -> Result<Challenge, ChallengeError> {
        if m.len() < 48 || &m[..8] != SIGNATURE || u32_at(m, 8) != Some(2) {
            return Err(ChallengeError::Malformed);
        }
        let flags = u32_at(m, 20).ok_or(ChallengeError::Malformed)?;
        let server_challenge = m[24..32]
            .try_into()
            .map_err(|_| ChallengeError::Malformed)?;
        let target_info = field(m, 40).ok_or(ChallengeError::Malformed)?.to_vec();
        if target_info.is_empty() {
            return Err(ChallengeError::NotV2);
        }
        Ok(Challenge {
            flags,
            server_challenge,
            target_info,
        })
    }

    /// The server's timestamp among the AV pairs, if it sent one.
    fn timestamp(&self) -> Option<u64> {
        let mut rest = self.target_info.as_slice();
        while rest.len() >= 4 {
            let id = u16::from_le_bytes([rest[0], rest[1]]);
            let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
            let value = rest.get(4..4 + len)?;
            match id {
                0 => return None,
                AV_TIMESTAMP => return Some(u64::from_le_bytes(value.try_into().ok()?)),
                _ => rest = &rest[4 + len..],
            }
        }
        None
    }
}

/// The AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3) answering `challenge`,
/// with `client_challenge` as the client's nonce. The server's timestamp
/// is used when it sent one (then the LM response is zeros, as MS-NLMP
/// 3.1.5.1.2 has it), `now` (a FILETIME) otherwise.
pub fn authenticate(
    creds: &Credentials,
    challenge: &Challenge,
    client_challenge: [u8; 8],
    now: u64,
) -> Vec<u8> {
    let key = ntowf_v2(&creds.password, &creds.user, &creds.domain);
    let server_time = challenge.timestamp();
    let blob = client_blob(
        server_time.unwrap_or(now),
        client_challenge,
        &challenge.target_info,
    );
    let mut nt = nt_proof(&key, &challenge.server_challenge, &blob).to_vec();
    nt.extend_from_slice(&blob);
    let lm = match server_time {
        Some(_) => vec![0; 24],
        None => lm_v2_response(&key, &challenge.server_challenge, client_challenge).to_vec(),
    };
    let flags = challenge.flags & FLAGS;
    let (domain, user) = (utf16le(&creds.domain), utf16le(&creds.user));
    let payloads: [&[u8]; 6] = [&lm, &nt, &domain, &user, &[], &[]];
    let mut m =
        Vec::with_capacity(AUTHENTICATE_HEADER + payloads.iter().map(|p| p.len()).sum::<usize>());
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&3u32.to_le_bytes());
    let mut offset = AUTHENTICATE_HEADER;
    for p in payloads {
        push_field(&mut m, p.len(), offset);
        offset += p.len();
    }
    m.extend_from_slice(&flags.to_le_bytes());
    for p in payloads {
        m.extend_from_slice(p);
    }
    m
}

/// NTOWFv2 (MS-NLMP 3.3.2): HMAC-MD5 keyed with the NT hash (MD4 of the
/// UTF-16LE password) over the upper-cased user and the domain.
pub fn ntowf_v2(password: &str, user: &str, domain: &str) -> [u8; 16] {
    let nt_hash = Md4::digest(utf16le(password));
    hmac_md5(
        &nt_hash,
        &[&utf16le(&format!("{}{domain}", user.to_uppercase()))],
    )
}

/// The client's blob, `temp` in MS-NLMP 3.3.2 (NTLMv2_CLIENT_CHALLENGE).
fn client_blob(time: u64, client_challenge: [u8; 8], target_info: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(32 + target_info.len());
    b.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&time.to_le_bytes());
    b.extend_from_slice(&client_challenge);
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(target_info);
    b.extend_from_slice(&[0; 4]);
    b
}

/// NTProofStr: HMAC-MD5 over the server's challenge and the blob.
fn nt_proof(key: &[u8; 16], server_challenge: &[u8; 8], blob: &[u8]) -> [u8; 16] {
    hmac_md5(key, &[server_challenge, blob])
}

/// The LMv2 response: HMAC-MD5 over both challenges, then the client's.
fn lm_v2_response(key: &[u8; 16], server_challenge: &[u8; 8], client: [u8; 8]) -> [u8; 24] {
    let mut r = [0; 24];
    r[..16].copy_from_slice(&hmac_md5(key, &[server_challenge, &client]));
    r[16..].copy_from_slice(&client);
    r
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <Hmac<md5::Md5> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn push_field(m: &mut Vec<u8>, len: usize, offset: usize) {
    let len = len as u16;
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&(offset as u32).to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The payload a field header (length, max length, offset) at `at` points to.
fn field(b: &[u8], at: usize) -> Option<&[u8]> {
    let len = usize::from(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?));
    let offset = usize::try_from(u32_at(b, at + 4)?).ok()?;
    b.get(offset..offset.checked_add(len)?)
}

/// Now as a FILETIME: 100 ns steps since 1601.
pub fn filetime_now() -> u64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (unix.as_secs() + 11_644_473_600) * 10_000_000 + u64::from(unix.subsec_nanos() / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    // MS-NLMP 4.2.1: the common values of the examples.
    const USER: &str = "User";
    const DOMAIN: &str = "Domain";
    const PASSWORD: &str = "Password";
    const SERVER_CHALLENGE: [u8; 8] = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
    const CLIENT_CHALLENGE: [u8; 8] = [0xaa; 8];

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// MS-NLMP 4.2.4.1.3: the AV pairs of the NTLMv2 example's challenge.
    fn target_info() -> Vec<u8> {
        let mut t = vec![0x02, 0x00, 0x0c, 0x00];
        t.extend(utf16le("Domain"));
        t.extend([0x01, 0x00, 0x0c, 0x00]);
        t.extend(utf16le("Server"));
        t.extend([0, 0, 0, 0]);
        t
    }

    #[test]
    fn ntowf_v2_matches_ms_nlmp_4_2_4_1_1() {
        assert_eq!(
            ntowf_v2(PASSWORD, USER, DOMAIN).to_vec(),
            hex("0c 86 8a 40 3b fd 7a 93 a3 00 1e f2 2e f0 2e 3f")
        );
    }

    #[test]
    fn lm_v2_response_matches_ms_nlmp_4_2_4_2_1() {
        let key = ntowf_v2(PASSWORD, USER, DOMAIN);
        assert_eq!(
            lm_v2_response(&key, &SERVER_CHALLENGE, CLIENT_CHALLENGE).to_vec(),
            hex("86 c3 50 97 ac 9c ec 10 25 54 76 4a 57 cc cc 19 aa aa aa aa aa aa aa aa")
        );
    }

    #[test]
    fn nt_proof_and_session_base_key_match_ms_nlmp_4_2_4() {
        let key = ntowf_v2(PASSWORD, USER, DOMAIN);
        let blob = client_blob(0, CLIENT_CHALLENGE, &target_info());
        let proof = nt_proof(&key, &SERVER_CHALLENGE, &blob);
        assert_eq!(
            proof.to_vec(),
            hex("68 cd 0a b8 51 e5 1c 96 aa bc 92 7b eb ef 6a 1c")
        );
        // 4.2.4.1.2: SessionBaseKey = HMAC_MD5(ResponseKeyNT, NTProofStr).
        assert_eq!(
            hmac_md5(&key, &[&proof]).to_vec(),
            hex("8d e4 0c ca db c1 4a 82 f1 5c b0 ad 0d e9 5c a3")
        );
    }

    /// A CHALLENGE_MESSAGE as a server sends it, without Version.
    fn challenge_message(target_info: &[u8]) -> Vec<u8> {
        let mut m = SIGNATURE.to_vec();
        m.extend(2u32.to_le_bytes());
        push_field(&mut m, 0, 48);
        m.extend((FLAGS | 0x0002_0000).to_le_bytes());
        m.extend(SERVER_CHALLENGE);
        m.extend([0; 8]);
        push_field(&mut m, target_info.len(), 48);
        m.extend(target_info);
        m
    }

    #[test]
    fn the_authenticate_message_carries_the_ms_nlmp_example_response() {
        let challenge = Challenge::parse(&challenge_message(&target_info())).unwrap();
        let creds = Credentials::new(r"Domain\User", PASSWORD);
        let m = authenticate(&creds, &challenge, CLIENT_CHALLENGE, 0);
        assert_eq!(&m[..12], b"NTLMSSP\0\x03\0\0\0");
        let nt = field(&m, 20).unwrap();
        assert_eq!(
            nt[..16].to_vec(),
            hex("68 cd 0a b8 51 e5 1c 96 aa bc 92 7b eb ef 6a 1c")
        );
        assert_eq!(&nt[16..], client_blob(0, CLIENT_CHALLENGE, &target_info()));
        assert_eq!(field(&m, 12).unwrap().len(), 24);
        assert_eq!(field(&m, 28).unwrap(), utf16le("Domain"));
        assert_eq!(field(&m, 36).unwrap(), utf16le("User"));
        assert_eq!(u32_at(&m, 60), Some(FLAGS));
    }

    #[test]
    fn a_server_timestamp_is_used_and_the_lm_response_is_zeros() {
        let mut info = vec![0x07, 0x00, 0x08, 0x00];
        info.extend(0x01d9_0000_1234_5678u64.to_le_bytes());
        info.extend([0, 0, 0, 0]);
        let challenge = Challenge::parse(&challenge_message(&info)).unwrap();
        let m = authenticate(
            &Credentials::new("u", "p"),
            &challenge,
            CLIENT_CHALLENGE,
            99,
        );
        assert_eq!(field(&m, 12).unwrap(), [0; 24]);
        let nt = field(&m, 20).unwrap();
        assert_eq!(nt[24..32], 0x01d9_0000_1234_5678u64.to_le_bytes());
        assert_eq!(field(&m, 28).unwrap(), b"");
    }

    #[test]
    fn challenges_without_target_info_or_signature_are_refused() {
        assert!(matches!(
            Challenge::parse(&challenge_message(&[])),
            Err(ChallengeError::NotV2)
        ));
        assert!(matches!(
            Challenge::parse(b"not a challenge at all, not one bit of it....."),
            Err(ChallengeError::Malformed)
        ));
        assert!(matches!(
            Challenge::parse(&negotiate()),
            Err(ChallengeError::Malformed)
        ));
    }
}
