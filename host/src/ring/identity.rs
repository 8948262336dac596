//! Member ids and the SWIM identity foca gossips about.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use super::proto;

/// A supervisor's permanent id: 128 random bits, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(pub [u8; 16]);

impl MemberId {
    /// The placeholder id used to announce to a peer known only by its address.
    pub const UNKNOWN: MemberId = MemberId([0; 16]);

    pub fn random() -> Self {
        MemberId(crate::crypto::sodium::random_array())
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 16]>::try_from(b).ok().map(MemberId)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &hex::encode(self.0)[..8])
    }
}

impl FromStr for MemberId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bytes = hex::decode(s.trim()).map_err(|_| format!("member id {s:?} is not hex"))?;
        MemberId::from_slice(&bytes).ok_or_else(|| format!("member id {s:?} is not 32 hex digits"))
    }
}

/// foca's identity: the member id, where it listens, and a generation that grows on every
/// restart or rejoin, so a restarted member replaces its previous self (same `addr()`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Ident {
    pub id: MemberId,
    pub addr: SocketAddr,
    pub generation: u32,
    /// A permanent peer: others keep probing it even after confirming it dead.
    pub persistent: bool,
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}#{}", self.id, self.addr, self.generation)
    }
}

impl Ident {
    /// A stand-in for a peer known only by address (used as the destination of an announce).
    pub fn placeholder(addr: SocketAddr) -> Self {
        Ident { id: MemberId::UNKNOWN, addr, generation: 0, persistent: false }
    }

    pub fn to_proto(&self) -> proto::Identity {
        let ip = match self.addr.ip() {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        proto::Identity {
            member_id: self.id.0.to_vec(),
            ip,
            port: u32::from(self.addr.port()),
            generation: self.generation,
            persistent: self.persistent,
        }
    }

    pub fn from_proto(p: &proto::Identity) -> Option<Self> {
        let id = MemberId::from_slice(&p.member_id)?;
        let ip: IpAddr = match p.ip.len() {
            4 => <[u8; 4]>::try_from(p.ip.as_slice()).ok()?.into(),
            16 => <[u8; 16]>::try_from(p.ip.as_slice()).ok()?.into(),
            _ => return None,
        };
        let port = u16::try_from(p.port).ok()?;
        Some(Ident {
            id,
            addr: SocketAddr::new(ip, port),
            generation: p.generation,
            persistent: p.persistent,
        })
    }
}

impl foca::Identity for Ident {
    // Conflicts are resolved per member id: a restarted member (same id, higher generation)
    // replaces its previous incarnation wherever it now listens.
    type Addr = MemberId;

    fn renew(&self) -> Option<Self> {
        // Rejoining is driven by the core (it persists the new generation first).
        None
    }

    fn addr(&self) -> MemberId {
        self.id
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_id_round_trips_through_hex() {
        let id = MemberId::random();
        let s = id.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s.parse::<MemberId>().unwrap(), id);
        assert!("xyz".parse::<MemberId>().is_err());
        assert!("abcd".parse::<MemberId>().is_err());
    }

    #[test]
    fn ident_round_trips_through_proto() {
        for addr in ["127.0.0.2:9638", "[::1]:1"] {
            let ident = Ident {
                id: MemberId::random(),
                addr: addr.parse().unwrap(),
                generation: 7,
                persistent: true,
            };
            assert_eq!(Ident::from_proto(&ident.to_proto()).unwrap(), ident);
        }
        let mut bad = Ident::placeholder("127.0.0.1:1".parse().unwrap()).to_proto();
        bad.ip = vec![1, 2, 3];
        assert!(Ident::from_proto(&bad).is_none());
        bad.ip = vec![1, 2, 3, 4];
        bad.port = 70000;
        assert!(Ident::from_proto(&bad).is_none());
    }
}
