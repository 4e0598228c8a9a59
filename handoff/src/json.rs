//! Just enough JSON for one flat object of strings, numbers and booleans:
//! the hand-off message. Kept here so the guest program needs no crates.

use std::collections::BTreeMap;
use std::fmt::{self, Write};

/// A value of the flat object.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// Why a text is not one flat JSON object; byte offsets count from the
/// text's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A key given twice.
    DuplicateKey(String),
    /// Neither ',' nor '}' after a value.
    ExpectedCommaOrBrace(usize),
    /// Something other than white space after the closing '}'.
    TrailingText(usize),
    /// Another byte where this one was needed.
    Expected(char, usize),
    /// An object or array as a value.
    Nested(usize),
    /// No value where one was needed.
    ExpectedValue(usize),
    /// A number that does not parse or is not finite.
    NotANumber(String),
    /// A `\u` escape without four hex digits.
    BadUnicodeEscape(usize),
    /// A string without its closing quote.
    UnterminatedString,
    /// A `\u` escape of half a surrogate pair.
    LoneSurrogate,
    /// An unknown escape.
    BadEscape(usize),
    /// A raw control character in a string.
    ControlCharacter(usize),
    /// A string whose bytes are not UTF-8.
    NotUtf8,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::DuplicateKey(key) => write!(f, "key {key:?} appears twice"),
            ParseError::ExpectedCommaOrBrace(at) => write!(f, "expected ',' or '}}' at byte {at}"),
            ParseError::TrailingText(at) => {
                write!(f, "unexpected text after the object at byte {at}")
            }
            ParseError::Expected(c, at) => write!(f, "expected '{c}' at byte {at}"),
            ParseError::Nested(at) => {
                write!(f, "nested objects and arrays are not supported (byte {at})")
            }
            ParseError::ExpectedValue(at) => write!(f, "expected a value at byte {at}"),
            ParseError::NotANumber(text) => write!(f, "{text:?} is not a number"),
            ParseError::BadUnicodeEscape(at) => write!(f, "bad \\u escape at byte {at}"),
            ParseError::UnterminatedString => f.write_str("unterminated string"),
            ParseError::LoneSurrogate => f.write_str("lone surrogate in \\u escape"),
            ParseError::BadEscape(at) => write!(f, "bad escape at byte {at}"),
            ParseError::ControlCharacter(at) => {
                write!(f, "control character in a string at byte {at}")
            }
            ParseError::NotUtf8 => f.write_str("a string is not UTF-8"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses `text` as one JSON object whose values are all scalars.
pub fn parse_object(text: &str) -> Result<BTreeMap<String, Value>, ParseError> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    p.ws();
    p.expect(b'{')?;
    let mut out = BTreeMap::new();
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            let key = p.string()?;
            p.ws();
            p.expect(b':')?;
            p.ws();
            let value = p.value()?;
            if out.insert(key.clone(), value).is_some() {
                return Err(ParseError::DuplicateKey(key));
            }
            p.ws();
            match p.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(ParseError::ExpectedCommaOrBrace(p.i)),
            }
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(ParseError::TrailingText(p.i));
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.i += usize::from(c.is_some());
        c
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), ParseError> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(ParseError::Expected(c as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'{' | b'[') => Err(ParseError::Nested(self.i)),
            Some(b't') => self.word("true", Value::Bool(true)),
            Some(b'f') => self.word("false", Value::Bool(false)),
            Some(b'n') => self.word("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(ParseError::ExpectedValue(self.i)),
        }
    }

    fn word(&mut self, word: &str, value: Value) -> Result<Value, ParseError> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(value)
        } else {
            Err(ParseError::ExpectedValue(self.i))
        }
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.i;
        while matches!(
            self.peek(),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
        text.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(Value::Num)
            .ok_or_else(|| ParseError::NotANumber(text.to_string()))
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let digits = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or(ParseError::BadUnicodeEscape(self.i))?;
        self.i += 4;
        Ok(digits)
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = self.next().ok_or(ParseError::UnterminatedString)?;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = self.next().ok_or(ParseError::UnterminatedString)?;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&hi) {
                                if self.next() != Some(b'\\') || self.next() != Some(b'u') {
                                    return Err(ParseError::LoneSurrogate);
                                }
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return Err(ParseError::LoneSurrogate);
                                }
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                hi
                            };
                            char::from_u32(code).ok_or(ParseError::LoneSurrogate)?
                        }
                        _ => return Err(ParseError::BadEscape(self.i - 1)),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return Err(ParseError::ControlCharacter(self.i - 1)),
                c => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| ParseError::NotUtf8)
    }
}

/// Appends `s` to `out` as a JSON string.
pub fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn reads_strings_numbers_booleans_and_null() {
        let o = parse_object(
            r#" {"a":"x\"y\\n\u00e9\ud83d\ude00", "b": -1.5e2, "c":true, "d":false, "e":null} "#,
        )
        .unwrap();
        assert_eq!(o["a"], Value::Str("x\"y\\n\u{e9}\u{1f600}".into()));
        assert_eq!(o["b"], Value::Num(-150.0));
        assert_eq!(o["c"], Value::Bool(true));
        assert_eq!(o["d"], Value::Bool(false));
        assert_eq!(o["e"], Value::Null);
        assert!(parse_object("{}").unwrap().is_empty());
    }

    #[test]
    fn refuses_what_is_not_one_flat_object() {
        for bad in [
            "",
            "[]",
            r#"{"a":1"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":1} x"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\x"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":1e999}"#,
            r#"{"a":tru}"#,
            r#"{a:1}"#,
        ] {
            assert!(parse_object(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn errors_say_what_is_wrong_and_where() {
        let err = |text: &str| parse_object(text).unwrap_err().to_string();
        assert_eq!(err("[]"), "expected '{' at byte 1");
        assert_eq!(err(r#"{"a":1,"a":2}"#), r#"key "a" appears twice"#);
        assert_eq!(err(r#"{"a":1 x"#), "expected ',' or '}' at byte 8");
        assert_eq!(
            err(r#"{"a":1} x"#),
            "unexpected text after the object at byte 8"
        );
        assert_eq!(
            err(r#"{"a":[1]}"#),
            "nested objects and arrays are not supported (byte 5)"
        );
        assert_eq!(err(r#"{"a":tru}"#), "expected a value at byte 5");
        assert_eq!(err(r#"{"a":1e999}"#), r#""1e999" is not a number"#);
        assert_eq!(err(r#"{"a":"\u12"}"#), r"bad \u escape at byte 8");
        assert_eq!(err(r#"{"a":"\ud800"}"#), r"lone surrogate in \u escape");
        assert_eq!(err(r#"{"a":"\x"}"#), "bad escape at byte 7");
        assert_eq!(
            err("{\"a\":\"tab\there\"}"),
            "control character in a string at byte 9"
        );
        assert_eq!(err(r#"{"a":"x"#), "unterminated string");
    }

    #[test]
    fn strings_written_read_back_the_same() {
        let s = "q\"b\\n\nr\rt\t\u{1}\u{e9}\u{1f600}";
        let mut text = String::from("{\"s\":");
        push_string(&mut text, s);
        text.push('}');
        assert_eq!(parse_object(&text).unwrap()["s"], Value::Str(s.into()));
    }
}
