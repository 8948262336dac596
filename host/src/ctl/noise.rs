//! warren's own handshake: Noise_NNpsk0_25519_ChaChaPoly_BLAKE2b keyed by BLAKE2b-256 of the
//! ctl secret. The secret never crosses the wire, each session has fresh ephemeral keys, and a
//! wrong secret fails the responder's first read (psk0 keys the first message).
//!
//! After the two handshake frames, the connection is a stream of records, each a u16 length
//! (big-endian) and one Noise transport message (at most 65,535 bytes, tag included). The
//! records carry the ordinary ctl frames as a byte stream. Noise's implicit nonces make a
//! replayed, reordered or altered record fail to decrypt, which ends the connection.

use zeroize::Zeroizing;

use super::secret::CtlSecret;

pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2b";
/// Bound into the handshake hash: a session of another protocol or version cannot be replayed.
const PROLOGUE: &[u8] = b"warren ctl noise v1";
/// The largest Noise message (record body).
pub const MAX_RECORD: usize = 65_535;
const TAG_LEN: usize = 16;
/// Plaintext per record.
pub const MAX_RECORD_PLAIN: usize = MAX_RECORD - TAG_LEN;
/// A handshake message is an ephemeral key and an empty payload's tag: 48 bytes.
pub const HANDSHAKE_MSG_LEN: usize = 32 + TAG_LEN;

#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    /// The peer's message did not decrypt: a wrong secret, or tampering.
    #[error("the Noise handshake failed (wrong secret?)")]
    Handshake,
    #[error("a record did not decrypt (altered, replayed or out of order)")]
    Record,
    #[error("noise: {0}")]
    Internal(String),
}

fn builder(psk: &[u8; 32]) -> Result<snow::Builder<'_>, NoiseError> {
    let params = NOISE_PARAMS.parse().map_err(|e| NoiseError::Internal(format!("{e:?}")))?;
    snow::Builder::new(params)
        .prologue(PROLOGUE)
        .and_then(|b| b.psk(0, psk))
        .map_err(|e| NoiseError::Internal(format!("{e:?}")))
}

/// The client's half of a handshake in progress.
pub struct Initiator {
    state: snow::HandshakeState,
}

impl Initiator {
    /// Starts a handshake; returns the first message (`psk, e`).
    pub fn start(secret: &CtlSecret) -> Result<(Initiator, Vec<u8>), NoiseError> {
        let psk: Zeroizing<[u8; 32]> = secret.psk();
        let mut state =
            builder(&psk)?.build_initiator().map_err(|e| NoiseError::Internal(format!("{e:?}")))?;
        let mut msg = vec![0u8; 256];
        let n = state.write_message(&[], &mut msg).map_err(|e| NoiseError::Internal(format!("{e:?}")))?;
        msg.truncate(n);
        Ok((Initiator { state }, msg))
    }

    /// Reads the responder's message (`e, ee`) and opens the channel.
    pub fn finish(mut self, reply: &[u8]) -> Result<Channel, NoiseError> {
        let mut buf = [0u8; 256];
        self.state.read_message(reply, &mut buf).map_err(|_| NoiseError::Handshake)?;
        let t = self.state.into_transport_mode().map_err(|e| NoiseError::Internal(format!("{e:?}")))?;
        Ok(Channel { t })
    }
}

/// The server's half: reads the first message and answers it. A wrong secret fails here.
pub fn respond(secret: &CtlSecret, first: &[u8]) -> Result<(Channel, Vec<u8>), NoiseError> {
    let psk = secret.psk();
    let mut state = builder(&psk)?.build_responder().map_err(|e| NoiseError::Internal(format!("{e:?}")))?;
    let mut buf = [0u8; 256];
    if first.len() > buf.len() {
        return Err(NoiseError::Handshake);
    }
    state.read_message(first, &mut buf).map_err(|_| NoiseError::Handshake)?;
    let mut msg = vec![0u8; 256];
    let n = state.write_message(&[], &mut msg).map_err(|e| NoiseError::Internal(format!("{e:?}")))?;
    msg.truncate(n);
    let t = state.into_transport_mode().map_err(|e| NoiseError::Internal(format!("{e:?}")))?;
    Ok((Channel { t }, msg))
}

/// An open session: seals outgoing bytes into records and opens incoming records.
pub struct Channel {
    t: snow::TransportState,
}

impl Channel {
    /// `plain` as one or more records, each with its u16 length prefix.
    pub fn seal(&mut self, plain: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let mut out = Vec::with_capacity(plain.len() + (plain.len() / MAX_RECORD_PLAIN + 1) * (TAG_LEN + 2));
        let mut buf = vec![0u8; MAX_RECORD];
        for chunk in plain.chunks(MAX_RECORD_PLAIN) {
            let n =
                self.t.write_message(chunk, &mut buf).map_err(|e| NoiseError::Internal(format!("{e:?}")))?;
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(&buf[..n]);
        }
        Ok(out)
    }

    /// One record's body (without its length prefix).
    pub fn open(&mut self, record: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if record.len() < TAG_LEN {
            return Err(NoiseError::Record);
        }
        let mut out = vec![0u8; record.len()];
        let n = self.t.read_message(record, &mut out).map_err(|_| NoiseError::Record)?;
        out.truncate(n);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(client: &str, server: &str) -> Result<(Channel, Channel), NoiseError> {
        let (init, m1) = Initiator::start(&CtlSecret::new(client).unwrap())?;
        assert_eq!(m1.len(), HANDSHAKE_MSG_LEN);
        let (srv, m2) = respond(&CtlSecret::new(server).unwrap(), &m1)?;
        Ok((init.finish(&m2)?, srv))
    }

    fn records(sealed: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = sealed;
        while !rest.is_empty() {
            let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            out.push(&rest[2..2 + n]);
            rest = &rest[2 + n..];
        }
        out
    }

    #[test]
    fn a_session_carries_large_messages_both_ways() {
        let (mut c, mut s) = pair("k", "k").unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let sealed = c.seal(&big).unwrap();
        let got: Vec<u8> = records(&sealed).into_iter().flat_map(|r| s.open(r).unwrap()).collect();
        assert_eq!(got, big);
        let back = s.seal(b"pong").unwrap();
        assert_eq!(c.open(records(&back)[0]).unwrap(), b"pong");
    }

    #[test]
    fn a_wrong_secret_fails_the_first_message() {
        assert!(matches!(pair("right", "wrong"), Err(NoiseError::Handshake)));
    }

    #[test]
    fn replayed_and_altered_records_are_refused() {
        let (mut c, mut s) = pair("k", "k").unwrap();
        let one = c.seal(b"one").unwrap();
        let r1 = records(&one)[0].to_vec();
        assert_eq!(s.open(&r1).unwrap(), b"one");
        assert!(matches!(s.open(&r1), Err(NoiseError::Record)), "replay");
        let (mut c, mut s) = pair("k", "k").unwrap();
        let mut two = records(&c.seal(b"two").unwrap())[0].to_vec();
        two[3] ^= 1;
        assert!(matches!(s.open(&two), Err(NoiseError::Record)), "bit flip");
        assert!(matches!(s.open(&[0u8; 3]), Err(NoiseError::Record)));
    }
}
