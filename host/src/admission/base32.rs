//! Crockford base32 (no padding, no check symbol): the join string's alphabet. Decoding is
//! case-insensitive and reads `O` as `0`, `I`/`L` as `1`, as Crockford's spec says, because the
//! string is copied by humans; `U` is not in the alphabet.

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Number of characters for `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    (n * 8).div_ceil(5)
}

pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(encoded_len(bytes.len()));
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Value of one symbol, or `None` for a character outside the alphabet.
pub fn symbol_value(c: char) -> Option<u8> {
    let c = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    ALPHABET.iter().position(|&a| a as char == c).map(|p| p as u8)
}

/// The symbol as `encode` writes it (`o` -> `0`, `l` -> `1`, ...).
pub fn canonical(c: char) -> Option<char> {
    symbol_value(c).map(|v| ALPHABET[v as usize] as char)
}

/// Why a base32 field did not decode; positions are 1-based characters.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    BadChar {
        position: usize,
    },
    WrongLength {
        expected: usize,
        got: usize,
    },
    /// The unused low bits of the last symbol are not zero: not something `encode` writes.
    TrailingBits,
}

/// Decodes exactly `N` bytes.
pub fn decode<const N: usize>(text: &str) -> Result<[u8; N], DecodeError> {
    let mut values = Vec::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        values.push(symbol_value(c).ok_or(DecodeError::BadChar { position: i + 1 })?);
    }
    if values.len() != encoded_len(N) {
        return Err(DecodeError::WrongLength { expected: encoded_len(N), got: values.len() });
    }
    let mut out = [0u8; N];
    let (mut acc, mut bits, mut at) = (0u32, 0u32, 0usize);
    for v in values {
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out[at] = (acc >> bits) as u8;
            at += 1;
        }
        acc &= (1 << bits) - 1;
    }
    if acc != 0 {
        return Err(DecodeError::TrailingBits);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length_used() {
        let five = [0xde, 0xad, 0xbe, 0xef, 0x01];
        assert_eq!(encode(&five).len(), 8);
        assert_eq!(decode::<5>(&encode(&five)).unwrap(), five);
        let twenty: [u8; 20] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(encode(&twenty).len(), 32);
        assert_eq!(decode::<20>(&encode(&twenty)).unwrap(), twenty);
        let sixteen = [0xffu8; 16];
        assert_eq!(encode(&sixteen).len(), 26);
        assert_eq!(decode::<16>(&encode(&sixteen)).unwrap(), sixteen);
    }

    #[test]
    fn known_vector_and_human_forgiveness() {
        // 0x00 0x44 0x32 0x14 0xC7 = 00000 00001 00010 00011 00100 00101 00110 00111
        assert_eq!(encode(&[0x00, 0x44, 0x32, 0x14, 0xc7]), "01234567");
        assert_eq!(decode::<5>("O1234567").unwrap(), decode::<5>("01234567").unwrap());
        assert_eq!(decode::<5>("0l234567").unwrap(), decode::<5>("0I234567").unwrap());
        assert_eq!(decode::<5>("abcdefgh").unwrap(), decode::<5>("ABCDEFGH").unwrap());
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode::<5>("0123456U"), Err(DecodeError::BadChar { position: 8 }));
        assert_eq!(decode::<5>("0123456"), Err(DecodeError::WrongLength { expected: 8, got: 7 }));
        assert_eq!(decode::<5>("é1234567"), Err(DecodeError::BadChar { position: 1 }));
        // 16 bytes = 26 symbols, the last carrying 3 bits and 2 zero bits.
        let mut s = encode(&[0u8; 16]);
        s.pop();
        s.push('1');
        assert_eq!(decode::<16>(&s), Err(DecodeError::TrailingBits));
    }
}
