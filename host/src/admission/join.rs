//! The join string `WJ1-<id>-<secret>-<pin>-<ck>`, in Crockford base32:
//! - `id`: 5 random bytes (8 chars), public: it names the token in logs, `list` and `revoke`;
//! - `secret`: 20 random bytes (32 chars, 160 bits), never stored by the keyserver;
//! - `pin`: the first 16 bytes of BLAKE2b-256 of the admission SIG public key (26 chars);
//! - `ck`: 2 chars, the first 10 bits of BLAKE2b-256 of everything before `-<ck>`, so a typo is
//!   caught offline before anything goes on the wire (as Homeworld's installer does).
//!
//! Errors name the part and position of a problem but never echo the secret.

use std::fmt;

use zeroize::Zeroizing;

use super::base32::{self, DecodeError};
use crate::crypto::sodium;

pub const PREFIX: &str = "WJ1";
pub const ID_LEN: usize = 5;
pub const SECRET_LEN: usize = 20;
pub const PIN_LEN: usize = 16;

/// A token id: public, 5 bytes, shown as 8 base32 characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenId(pub [u8; ID_LEN]);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32::encode(&self.0))
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

impl std::str::FromStr for TokenId {
    type Err = JoinError;
    fn from_str(s: &str) -> Result<Self, JoinError> {
        base32::decode::<ID_LEN>(s.trim()).map(TokenId).map_err(|e| JoinError::from_decode(Part::Id, e))
    }
}

/// The pin of a keyserver: a digest of its admission SIG public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pin(pub [u8; PIN_LEN]);

impl Pin {
    pub fn of(sig_public: &[u8; sodium::SIGN_PUBLIC_LEN]) -> Pin {
        let d = sodium::blake2b_256(sig_public);
        let mut out = [0u8; PIN_LEN];
        out.copy_from_slice(&d[..PIN_LEN]);
        Pin(out)
    }

    /// Whether `sig_public` is the pinned key (compared in constant time; the pin is public, but
    /// this costs nothing).
    pub fn matches(&self, sig_public: &[u8; sodium::SIGN_PUBLIC_LEN]) -> bool {
        sodium::ct_eq(&Pin::of(sig_public).0, &self.0)
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32::encode(&self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

/// A parsed join string. Its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinString {
    pub id: TokenId,
    pub secret: Zeroizing<[u8; SECRET_LEN]>,
    pub pin: Pin,
}

impl fmt::Debug for JoinString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinString").field("id", &self.id).field("pin", &self.pin).finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Id,
    Secret,
    Pin,
    Check,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Id => "token id (2nd part)",
            Part::Secret => "secret (3rd part)",
            Part::Pin => "keyserver pin (4th part)",
            Part::Check => "check (last part)",
        })
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("not a warren join string: it must start with \"WJ1-\"")]
    NotAJoinString,
    #[error("a join string has 5 parts separated by '-' (WJ1-ID-SECRET-PIN-CHECK), this one has {0}")]
    WrongPartCount(usize),
    #[error("the {part} has a character that is not Crockford base32 at position {position}")]
    BadChar { part: Part, position: usize },
    #[error("the {part} must be {expected} characters, it has {got}")]
    WrongLength { part: Part, expected: usize, got: usize },
    #[error("the {part} does not end as an encoder would write it (a typo in its last character?)")]
    TrailingBits { part: Part },
    #[error("the check does not match: the join string has a typo (compare it with the original)")]
    WrongCheck,
}

impl JoinError {
    fn from_decode(part: Part, e: DecodeError) -> JoinError {
        match e {
            DecodeError::BadChar { position } => JoinError::BadChar { part, position },
            DecodeError::WrongLength { expected, got } => JoinError::WrongLength { part, expected, got },
            DecodeError::TrailingBits => JoinError::TrailingBits { part },
        }
    }
}

const CHECK_LEN: usize = 2;

fn check_of(body: &str) -> String {
    let d = sodium::blake2b_256(body.as_bytes());
    base32::encode(&d[..2])[..CHECK_LEN].to_string()
}

impl JoinString {
    /// The printable form. Zeroized on drop: it holds the secret.
    pub fn encode(&self) -> Zeroizing<String> {
        let body =
            Zeroizing::new(format!("{PREFIX}-{}-{}-{}", self.id, base32::encode(&self.secret[..]), self.pin));
        let ck = check_of(&body);
        Zeroizing::new(format!("{}-{ck}", &*body))
    }

    pub fn parse(text: &str) -> Result<JoinString, JoinError> {
        let text = text.trim();
        let parts: Vec<&str> = text.split('-').collect();
        if !parts[0].eq_ignore_ascii_case(PREFIX) {
            return Err(JoinError::NotAJoinString);
        }
        if parts.len() != 5 {
            return Err(JoinError::WrongPartCount(parts.len()));
        }
        let id = base32::decode::<ID_LEN>(parts[1]).map_err(|e| JoinError::from_decode(Part::Id, e))?;
        let secret = Zeroizing::new(
            base32::decode::<SECRET_LEN>(parts[2]).map_err(|e| JoinError::from_decode(Part::Secret, e))?,
        );
        let pin = base32::decode::<PIN_LEN>(parts[3]).map_err(|e| JoinError::from_decode(Part::Pin, e))?;
        let ck = parts[4];
        if let Some(position) = ck.chars().position(|c| base32::symbol_value(c).is_none()) {
            return Err(JoinError::BadChar { part: Part::Check, position: position + 1 });
        }
        if ck.chars().count() != CHECK_LEN {
            return Err(JoinError::WrongLength {
                part: Part::Check,
                expected: CHECK_LEN,
                got: ck.chars().count(),
            });
        }
        let parsed = JoinString { id: TokenId(id), secret, pin: Pin(pin) };
        // The check is over the canonical form, so case and O/0, I/L/1 do not matter.
        let canonical = parsed.encode();
        let expected = &canonical[canonical.len() - CHECK_LEN..];
        let given: String = ck.chars().filter_map(base32::canonical).collect();
        if given != expected {
            return Err(JoinError::WrongCheck);
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JoinString {
        JoinString {
            id: TokenId([1, 2, 3, 4, 5]),
            secret: Zeroizing::new(std::array::from_fn(|i| (i as u8).wrapping_mul(71))),
            pin: Pin::of(&[9u8; 32]),
        }
    }

    #[test]
    fn round_trips_and_is_forgiving_about_case() {
        let j = sample();
        let s = j.encode();
        assert_eq!(s.len(), 3 + 1 + 8 + 1 + 32 + 1 + 26 + 1 + 2);
        assert_eq!(JoinString::parse(&s).unwrap(), j);
        assert_eq!(JoinString::parse(&s.to_lowercase()).unwrap(), j);
        assert_eq!(JoinString::parse(&format!("  {}\n", &*s)).unwrap(), j);
    }

    #[test]
    fn a_typo_is_caught_offline() {
        let s = sample().encode();
        // Change one character of the secret to another valid symbol.
        let mut typo: Vec<char> = s.chars().collect();
        let at = 4 + 8 + 1 + 5;
        typo[at] = if typo[at] == 'A' { 'B' } else { 'A' };
        let typo: String = typo.into_iter().collect();
        assert_eq!(JoinString::parse(&typo), Err(JoinError::WrongCheck));
        // A wrong check itself.
        let mut wrong = s.to_string();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'Z' { 'Y' } else { 'Z' });
        assert_eq!(JoinString::parse(&wrong), Err(JoinError::WrongCheck));
    }

    #[test]
    fn wrong_lengths_and_characters_say_where() {
        let s = sample().encode();
        let parts: Vec<&str> = s.split('-').collect();
        let short = format!("{}-{}-{}-{}-{}", parts[0], parts[1], &parts[2][1..], parts[3], parts[4]);
        assert_eq!(
            JoinString::parse(&short),
            Err(JoinError::WrongLength { part: Part::Secret, expected: 32, got: 31 })
        );
        let bad = format!("{}-{}U-{}-{}-{}", parts[0], &parts[1][..7], parts[2], parts[3], parts[4]);
        assert_eq!(JoinString::parse(&bad), Err(JoinError::BadChar { part: Part::Id, position: 8 }));
        let bad_ck = format!("{}-{}-{}-{}-{}", parts[0], parts[1], parts[2], parts[3], "ABC");
        assert_eq!(
            JoinString::parse(&bad_ck),
            Err(JoinError::WrongLength { part: Part::Check, expected: 2, got: 3 })
        );
        assert_eq!(JoinString::parse("hello"), Err(JoinError::NotAJoinString));
        assert_eq!(JoinString::parse(""), Err(JoinError::NotAJoinString));
        assert_eq!(JoinString::parse("WJ1-AAAA"), Err(JoinError::WrongPartCount(2)));
    }

    #[test]
    fn errors_and_debug_never_show_the_secret() {
        let j = sample();
        let s = j.encode();
        let secret_text = s.split('-').nth(2).unwrap().to_string();
        assert!(!format!("{j:?}").contains(&secret_text));
        let mut typo = s.to_string();
        typo.replace_range(14..15, "U");
        let err = JoinString::parse(&typo).unwrap_err().to_string();
        assert!(!err.contains(&secret_text[3..]), "{err}");
        assert!(err.contains("secret"), "{err}");
    }

    #[test]
    fn pin_matches_only_its_key() {
        let p = Pin::of(&[7u8; 32]);
        assert!(p.matches(&[7u8; 32]));
        assert!(!p.matches(&[8u8; 32]));
    }
}

#[cfg(test)]
mod mutation_tests {
    use super::*;

    /// Random edits of a valid join string: never a panic, and anything that still parses is
    /// either the original or was caught by nothing but luck of the 10-bit check (rare).
    #[test]
    fn mutated_join_strings_never_panic_and_rarely_pass() {
        let j =
            JoinString { id: TokenId([3; 5]), secret: Zeroizing::new([0x5a; 20]), pin: Pin::of(&[1; 32]) };
        let text = j.encode().to_string();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet: Vec<char> = "0123456789ABCDEFGHJKMNPQRSTVWXYZ-U!é ".chars().collect();
        let mut passed_changed = 0;
        for _ in 0..5000 {
            let mut chars: Vec<char> = text.chars().collect();
            for _ in 0..=(next() % 3) {
                let at = (next() as usize) % chars.len();
                match next() % 3 {
                    0 => chars[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => {
                        chars.remove(at);
                    }
                    _ => chars.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                }
            }
            let s: String = chars.into_iter().collect();
            if let Ok(p) = JoinString::parse(&s)
                && p != j
            {
                passed_changed += 1;
            }
        }
        // A 10-bit check lets about 1 in 1024 random changes through.
        assert!(passed_changed < 30, "{passed_changed} changed strings passed the check");
    }
}
