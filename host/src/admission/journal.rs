//! The framing of the keyserver's journal (`journal.bin`): one record per commit, each
//! `length (u32, big-endian) | BLAKE2b-256 of length and payload | payload`. Pure: the store
//! does the I/O.
//!
//! A kill -9 or power cut in the middle of an append leaves a torn last record: cut short, or
//! with a checksum that fails, possibly followed by zeros. That tail was never acknowledged
//! (the reply waits for the fsync), so [`scan`] drops it. A bad record followed by anything
//! but zeros is damage, not a torn append: [`scan`] refuses it rather than drop what follows.

use crate::crypto::sodium;

const LEN_BYTES: usize = 4;
const SUM_BYTES: usize = 32;
pub const HEADER_LEN: usize = LEN_BYTES + SUM_BYTES;
/// No commit is this large; a length beyond it is damage (or a torn length field).
pub const MAX_RECORD: usize = 16 * 1024 * 1024;

/// The bytes to append for one record.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= MAX_RECORD, "a journal record of {} bytes", payload.len());
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(&len, payload));
    out.extend_from_slice(payload);
    out
}

fn checksum(len: &[u8; LEN_BYTES], payload: &[u8]) -> [u8; SUM_BYTES] {
    let mut h = sodium::Blake2b256::new();
    h.update(b"warren-keyserver-journal-v1\0");
    h.update(len);
    h.update(payload);
    h.finalize()
}

/// What [`scan`] found: the whole records, and where the valid part ends (the rest is a torn
/// tail to cut off before appending again).
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned<'a> {
    pub records: Vec<&'a [u8]>,
    pub valid_len: usize,
}

impl Scanned<'_> {
    pub fn torn_bytes(&self, total: usize) -> usize {
        total - self.valid_len
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("a damaged record at byte {offset} is followed by more data")]
pub struct Damaged {
    pub offset: usize,
}

pub fn scan(bytes: &[u8]) -> Result<Scanned<'_>, Damaged> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match record_at(bytes, at) {
            Some(payload) => {
                records.push(payload);
                at += HEADER_LEN + payload.len();
            }
            None if bytes[at..].iter().all(|b| *b == 0) || reaches_end(bytes, at) => break,
            None => return Err(Damaged { offset: at }),
        }
    }
    Ok(Scanned { records, valid_len: at })
}

/// The payload of the record at `at`, if it is whole and its checksum holds.
fn record_at(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let header = bytes.get(at..at + HEADER_LEN)?;
    let len: [u8; LEN_BYTES] = header[..LEN_BYTES].try_into().expect("4 bytes");
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(at + HEADER_LEN..at + HEADER_LEN + n)?;
    sodium::ct_eq(&checksum(&len, payload), &header[LEN_BYTES..]).then_some(payload)
}

/// Whether the (bad) record at `at` is the last thing in the file: cut short, or ending
/// exactly at the end. A length no record has is damage wherever it is.
fn reaches_end(bytes: &[u8], at: usize) -> bool {
    let Some(len) = bytes.get(at..at + LEN_BYTES) else { return true };
    let n = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    n <= MAX_RECORD && at + HEADER_LEN + n >= bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(payloads: &[&[u8]]) -> Vec<u8> {
        payloads.iter().flat_map(|p| encode(p)).collect()
    }

    #[test]
    fn whole_records_come_back_in_order() {
        let j = journal(&[b"one", b"", b"three"]);
        let s = scan(&j).unwrap();
        assert_eq!(s.records, vec![&b"one"[..], b"", b"three"]);
        assert_eq!(s.valid_len, j.len());
        assert_eq!(scan(&[]).unwrap().records.len(), 0);
    }

    #[test]
    fn a_torn_tail_is_dropped_at_every_cut() {
        let whole = journal(&[b"first record", b"second record"]);
        let first = encode(b"first record").len();
        for cut in first..whole.len() {
            let s = scan(&whole[..cut]).unwrap();
            assert_eq!(s.records, vec![&b"first record"[..]], "cut at {cut}");
            assert_eq!(s.valid_len, first);
            assert_eq!(s.torn_bytes(cut), cut - first);
        }
        // A whole-length last record whose payload did not all reach the disk.
        let mut garbled = whole.clone();
        let last = garbled.len() - 1;
        garbled[last] ^= 1;
        assert_eq!(scan(&garbled).unwrap().records.len(), 1);
        // Zeros after the last good record (a file extended before its data arrived).
        let mut zeros = journal(&[b"first record"]);
        zeros.extend_from_slice(&[0; 100]);
        assert_eq!(scan(&zeros).unwrap(), Scanned { records: vec![b"first record"], valid_len: first });
    }

    #[test]
    fn damage_in_the_middle_is_refused() {
        let mut j = journal(&[b"first record", b"second record", b"third record"]);
        let first = encode(b"first record").len();
        j[first + HEADER_LEN + 2] ^= 0x40;
        assert_eq!(scan(&j), Err(Damaged { offset: first }));
        // A length field gone wild in the middle is damage too.
        let mut j = journal(&[b"first record", b"second record", b"third record"]);
        j[first] = 0xff;
        assert_eq!(scan(&j), Err(Damaged { offset: first }));
    }
}
