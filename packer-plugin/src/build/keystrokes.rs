//! `boot_command` as Packer writes it (`text<enter><wait5>...`) turned into
//! Linux key codes for libvirt's send-key.

use std::time::Duration;

use crate::config::parse_duration;

/// One thing to do while typing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Press these keys together, then release them.
    Keys(Vec<u32>),
    /// Pause.
    Wait(Duration),
}

const SHIFT: u32 = 42;

fn special(name: &str) -> Option<u32> {
    Some(match name.to_ascii_lowercase().as_str() {
        "bs" => 14,
        "del" => 111,
        "enter" | "return" => 28,
        "esc" => 1,
        "tab" => 15,
        "spacebar" => 57,
        "insert" => 110,
        "home" => 102,
        "end" => 107,
        "pageup" => 104,
        "pagedown" => 109,
        "up" => 103,
        "down" => 108,
        "left" => 105,
        "right" => 106,
        "leftalt" => 56,
        "leftctrl" => 29,
        "leftshift" => 42,
        "rightalt" => 100,
        "rightctrl" => 97,
        "rightshift" => 54,
        "f11" => 87,
        "f12" => 88,
        f if f.len() >= 2 && f.starts_with('f') => {
            let n: u32 = f[1..].parse().ok()?;
            if (1..=10).contains(&n) {
                58 + n
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

/// Key code and whether shift is needed, for a printable ASCII character.
fn char_key(c: char) -> Option<(u32, bool)> {
    const ROW1: &str = "1234567890-=";
    const ROW1S: &str = "!@#$%^&*()_+";
    let letters: [(char, u32); 26] = [
        ('q', 16),
        ('w', 17),
        ('e', 18),
        ('r', 19),
        ('t', 20),
        ('y', 21),
        ('u', 22),
        ('i', 23),
        ('o', 24),
        ('p', 25),
        ('a', 30),
        ('s', 31),
        ('d', 32),
        ('f', 33),
        ('g', 34),
        ('h', 35),
        ('j', 36),
        ('k', 37),
        ('l', 38),
        ('z', 44),
        ('x', 45),
        ('c', 46),
        ('v', 47),
        ('b', 48),
        ('n', 49),
        ('m', 50),
    ];
    if let Some(i) = ROW1.find(c) {
        return Some((2 + i as u32, false));
    }
    if let Some(i) = ROW1S.find(c) {
        return Some((2 + i as u32, true));
    }
    if c.is_ascii_alphabetic() {
        let lc = c.to_ascii_lowercase();
        let code = letters.iter().find(|(l, _)| *l == lc)?.1;
        return Some((code, c.is_ascii_uppercase()));
    }
    let plain = [
        ('[', 26),
        (']', 27),
        (';', 39),
        ('\'', 40),
        ('`', 41),
        ('\\', 43),
        (',', 51),
        ('.', 52),
        ('/', 53),
        (' ', 57),
        ('\n', 28),
        ('\t', 15),
    ];
    let shifted = [
        ('{', 26),
        ('}', 27),
        (':', 39),
        ('"', 40),
        ('~', 41),
        ('|', 43),
        ('<', 51),
        ('>', 52),
        ('?', 53),
    ];
    if let Some((_, k)) = plain.iter().find(|(p, _)| *p == c) {
        return Some((*k, false));
    }
    shifted
        .iter()
        .find(|(p, _)| *p == c)
        .map(|(_, k)| (*k, true))
}

/// Why a boot command cannot be typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeystrokeError {
    /// A character with no key on a US keyboard.
    #[error("the character {0:?} cannot be typed")]
    Untypable(char),
    /// A `<wait...>` tag whose duration does not parse, by the tag's name.
    #[error("<{0}>: not a wait like <wait>, <wait5> or <wait1m30s>")]
    BadWait(String),
    /// A `<...On>`/`<...Off>` tag, by name.
    #[error("<{0}>: holding keys is not supported; send combinations as separate keys")]
    Hold(String),
}

/// Parses a boot command into actions.
pub fn parse(cmd: &str) -> Result<Vec<Action>, KeystrokeError> {
    let mut out = Vec::new();
    let mut rest = cmd;
    while let Some(c) = rest.chars().next() {
        if c == '<' {
            if let Some(end) = rest.find('>') {
                let name = &rest[1..end];
                if let Some(a) = tag(name)? {
                    out.push(a);
                    rest = &rest[end + 1..];
                    continue;
                }
            }
        }
        let (code, shift) = char_key(c).ok_or(KeystrokeError::Untypable(c))?;
        out.push(Action::Keys(if shift {
            vec![SHIFT, code]
        } else {
            vec![code]
        }));
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

fn tag(name: &str) -> Result<Option<Action>, KeystrokeError> {
    if let Some(w) = name.strip_prefix("wait") {
        if w.is_empty() {
            return Ok(Some(Action::Wait(Duration::from_secs(1))));
        }
        if let Ok(n) = w.parse::<u64>() {
            return Ok(Some(Action::Wait(Duration::from_secs(n))));
        }
        return parse_duration(w)
            .map(|d| Some(Action::Wait(d)))
            .ok_or_else(|| KeystrokeError::BadWait(name.to_string()));
    }
    if name.ends_with("On") || name.ends_with("Off") {
        return Err(KeystrokeError::Hold(name.to_string()));
    }
    Ok(special(name).map(|k| Action::Keys(vec![k])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_special_keys_and_waits_become_key_presses_and_pauses() {
        let a = parse("aB<enter><wait2>:<wait1m>").unwrap();
        assert_eq!(
            a,
            vec![
                Action::Keys(vec![30]),
                Action::Keys(vec![SHIFT, 48]),
                Action::Keys(vec![28]),
                Action::Wait(Duration::from_secs(2)),
                Action::Keys(vec![SHIFT, 39]),
                Action::Wait(Duration::from_secs(60)),
            ]
        );
        assert_eq!(
            parse("<f1><esc>").unwrap(),
            vec![Action::Keys(vec![59]), Action::Keys(vec![1])]
        );
        // An unknown tag is typed literally, as Packer does.
        assert_eq!(parse("<x>").unwrap().len(), 3);
        assert_eq!(
            parse("<leftAltOn>").unwrap_err().to_string(),
            "<leftAltOn>: holding keys is not supported; send combinations as separate keys"
        );
        assert_eq!(
            parse("<waitlong>").unwrap_err().to_string(),
            "<waitlong>: not a wait like <wait>, <wait5> or <wait1m30s>"
        );
        assert_eq!(
            parse("é").unwrap_err().to_string(),
            "the character 'é' cannot be typed"
        );
    }
}
