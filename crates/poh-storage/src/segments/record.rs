//! The record format of a segment: each record describes itself and is checksummed, so a
//! segment can be read (and an index rebuilt) from its bytes alone.
//!
//! ```text
//! offset size  field (little endian)
//!  0     4     magic "PoHr"
//!  4     1     version (1)
//!  5     1     flags (0)
//!  6     2     id_len       (1..=128)
//!  8     4     holder_len
//! 12     8     payload_len
//! 20     8     timestamp    (f64 bits, UNIX seconds)
//! 28     8     seq          (store-wide write sequence: a later record of an id wins)
//! 36     4     req_count    (records in the save request this record belongs to)
//! 40     4     req_pos      (this record's place in it, 0-based)
//! 44    32     payload SHA-256
//! 76     id_len      tx_id (UTF-8)
//!  …     holder_len  holder_id (UTF-8)
//!  …     8     header check: the first 8 bytes of SHA-256 over every header byte above
//!  …     payload_len payload
//! ```
//! The header check catches a torn or altered header (so lengths are never trusted
//! unchecked); the payload's own SHA-256 catches an altered payload.

use poh_types::Tx;
use sha2::Digest as _;

/// First bytes of every record.
pub(crate) const MAGIC: [u8; 4] = *b"PoHr";
/// Record format version.
pub(crate) const VERSION: u8 = 1;
/// Bytes before the id.
pub(crate) const FIXED: usize = 76;
/// Bytes of the header check.
pub(crate) const CHECK: usize = 8;
/// Longest holder a record may carry (a sanity bound for reading garbage; saves of longer
/// holders are refused).
pub(crate) const MAX_HOLDER: usize = 1 << 20;

/// A record's header, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Header {
    pub(crate) tx_id: String,
    pub(crate) holder_id: String,
    pub(crate) timestamp: f64,
    pub(crate) size: u64,
    pub(crate) seq: u64,
    pub(crate) req_count: u32,
    pub(crate) req_pos: u32,
    pub(crate) sha: [u8; 32],
}

impl Header {
    /// Bytes of the header (everything before the payload).
    pub(crate) fn header_len(&self) -> usize {
        header_len(self.tx_id.len(), self.holder_id.len())
    }

    /// Bytes of the whole record.
    pub(crate) fn record_len(&self) -> u64 {
        record_len(self.tx_id.len(), self.holder_id.len(), self.size)
    }
}

/// Why bytes are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bad {
    /// Fewer bytes than the header (or the record) needs: a torn tail.
    Short,
    /// The magic, version or a length is wrong.
    Malformed,
    /// The header check does not match.
    Checksum,
    /// The payload does not match the SHA-256 in the header.
    Payload,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bad::Short => "the record is cut short",
            Bad::Malformed => "the record header is malformed",
            Bad::Checksum => "the record header fails its checksum",
            Bad::Payload => "the payload fails the SHA-256 in its record header",
        })
    }
}

/// Bytes of a header with these lengths.
pub(crate) fn header_len(id_len: usize, holder_len: usize) -> usize {
    FIXED + id_len + holder_len + CHECK
}

/// Bytes of a record with these lengths.
pub(crate) fn record_len(id_len: usize, holder_len: usize, size: u64) -> u64 {
    header_len(id_len, holder_len) as u64 + size
}

/// The SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(data).into()
}

/// Appends the record of `tx` (whose payload hash is `sha`) to `out` (the writer encodes
/// unsealed records and seals them on its I/O thread).
#[cfg(test)]
pub(crate) fn encode(
    out: &mut Vec<u8>,
    tx: &Tx,
    sha: &[u8; 32],
    seq: u64,
    req_count: u32,
    req_pos: u32,
) {
    let start = out.len();
    encode_fields(out, tx, sha, seq, req_count, req_pos);
    let check = sha256(&out[start..]);
    out.extend_from_slice(&check[..CHECK]);
    out.extend_from_slice(&tx.payload);
}

/// Appends `tx`'s whole record to `out` with its two hashes left as zeros (the payload's
/// SHA-256 and the header check), for [`seal`] to fill in, on another thread if need be;
/// returns the header's length.
pub(crate) fn encode_unsealed(
    out: &mut Vec<u8>,
    tx: &Tx,
    seq: u64,
    req_count: u32,
    req_pos: u32,
) -> usize {
    let start = out.len();
    encode_fields(out, tx, &[0; 32], seq, req_count, req_pos);
    out.extend_from_slice(&[0; CHECK]);
    let hlen = out.len() - start;
    out.extend_from_slice(&tx.payload);
    hlen
}

/// Fills in the two hashes of a record from [`encode_unsealed`] (`rec` is exactly the
/// record, `hlen` its header's length), which makes it the record [`encode`] writes.
pub(crate) fn seal(rec: &mut [u8], hlen: usize) {
    let sha = sha256(&rec[hlen..]);
    seal_with(rec, hlen, &sha);
}

/// [`seal`] with the payload's SHA-256 computed already.
pub(crate) fn seal_with(rec: &mut [u8], hlen: usize, sha: &[u8; 32]) {
    rec[44..76].copy_from_slice(sha);
    let body = hlen - CHECK;
    let check = sha256(&rec[..body]);
    rec[body..hlen].copy_from_slice(&check[..CHECK]);
}

/// The header's fields before its check.
fn encode_fields(
    out: &mut Vec<u8>,
    tx: &Tx,
    sha: &[u8; 32],
    seq: u64,
    req_count: u32,
    req_pos: u32,
) {
    let id = tx.tx_id.as_str().as_bytes();
    let holder = tx.holder_id.as_bytes();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(0);
    // Ids are at most 128 bytes and holders are bounded by MAX_HOLDER before encoding.
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(&(holder.len() as u32).to_le_bytes());
    out.extend_from_slice(&(tx.payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&tx.timestamp.to_bits().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&req_count.to_le_bytes());
    out.extend_from_slice(&req_pos.to_le_bytes());
    out.extend_from_slice(sha);
    out.extend_from_slice(id);
    out.extend_from_slice(holder);
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The lengths a header claims (`id_len`, `holder_len`), from its first [`FIXED`] bytes,
/// before they are checked: how many bytes the whole header needs.
pub(crate) fn claimed_header_len(b: &[u8]) -> Result<usize, Bad> {
    if b.len() < FIXED {
        return Err(Bad::Short);
    }
    if b[0..4] != MAGIC || b[4] != VERSION || b[5] != 0 {
        return Err(Bad::Malformed);
    }
    let id_len = usize::from(u16_at(b, 6));
    let holder_len = u32_at(b, 8) as usize;
    if id_len == 0 || id_len > poh_types::MAX_TX_ID_LEN || holder_len > MAX_HOLDER {
        return Err(Bad::Malformed);
    }
    Ok(header_len(id_len, holder_len))
}

/// Parses and checks the header at the start of `b`.
pub(crate) fn parse_header(b: &[u8]) -> Result<Header, Bad> {
    let len = claimed_header_len(b)?;
    if b.len() < len {
        return Err(Bad::Short);
    }
    let body = len - CHECK;
    if sha256(&b[..body])[..CHECK] != b[body..len] {
        return Err(Bad::Checksum);
    }
    let id_len = usize::from(u16_at(b, 6));
    let holder_len = u32_at(b, 8) as usize;
    let tx_id = std::str::from_utf8(&b[FIXED..FIXED + id_len]).map_err(|_| Bad::Malformed)?;
    let holder_id = std::str::from_utf8(&b[FIXED + id_len..FIXED + id_len + holder_len])
        .map_err(|_| Bad::Malformed)?;
    let mut sha = [0u8; 32];
    sha.copy_from_slice(&b[44..76]);
    Ok(Header {
        tx_id: tx_id.to_owned(),
        holder_id: holder_id.to_owned(),
        timestamp: f64::from_bits(u64_at(b, 20)),
        size: u64_at(b, 12),
        seq: u64_at(b, 28),
        req_count: u32_at(b, 36),
        req_pos: u32_at(b, 40),
        sha,
    })
}

/// True when `b` is exactly the record of these fields: every header byte, the header
/// check and the payload's SHA-256 agree (with `sha` when the index holds one; with the
/// header's own otherwise). No allocation: the load path's check (a `false` is explained
/// by [`parse`]).
pub(crate) fn is_exactly(
    b: &[u8],
    tx_id: &str,
    holder_id: &str,
    timestamp: f64,
    size: u64,
    sha: Option<&[u8; 32]>,
) -> bool {
    let Ok(size_usize) = usize::try_from(size) else {
        return false;
    };
    let hlen = header_len(tx_id.len(), holder_id.len());
    b.len() == hlen + size_usize
        && header_is(&b[..hlen], tx_id, holder_id, timestamp, size, sha).is_some()
        && sha256(&b[hlen..]) == b[44..76]
}

/// The payload SHA-256 of the header `b` (exactly the header's bytes) when it is the
/// header of a record of these fields, `sha` included when given: checked like
/// [`is_exactly`], without the payload. No allocation.
pub(crate) fn header_is(
    b: &[u8],
    tx_id: &str,
    holder_id: &str,
    timestamp: f64,
    size: u64,
    sha: Option<&[u8; 32]>,
) -> Option<[u8; 32]> {
    let (id, holder) = (tx_id.as_bytes(), holder_id.as_bytes());
    let hlen = header_len(id.len(), holder.len());
    if b.len() != hlen || id.len() > usize::from(u16::MAX) {
        return None;
    }
    let body = hlen - CHECK;
    let ok = b[0..4] == MAGIC
        && b[4] == VERSION
        && b[5] == 0
        && u16_at(b, 6) as usize == id.len()
        && u32_at(b, 8) as usize == holder.len()
        && u64_at(b, 12) == size
        && u64_at(b, 20) == timestamp.to_bits()
        && sha.is_none_or(|h| b[44..76] == h[..])
        && &b[FIXED..FIXED + id.len()] == id
        && &b[FIXED + id.len()..body] == holder
        && sha256(&b[..body])[..CHECK] == b[body..hlen];
    ok.then(|| {
        let mut h = [0u8; 32];
        h.copy_from_slice(&b[44..76]);
        h
    })
}

pub(crate) fn parse(b: &[u8]) -> Result<(Header, &[u8]), Bad> {
    let h = parse_header(b)?;
    let start = h.header_len();
    let end = usize::try_from(h.record_len()).map_err(|_| Bad::Malformed)?;
    if b.len() < end {
        return Err(Bad::Short);
    }
    let payload = &b[start..end];
    if sha256(payload) != h.sha {
        return Err(Bad::Payload);
    }
    Ok((h, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx() -> Tx {
        Tx::new(
            "id-1",
            "holder",
            1_700_000_000.25,
            b"payload bytes".to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn records_round_trip_and_every_flipped_byte_is_caught() {
        let t = tx();
        let mut buf = Vec::new();
        encode(&mut buf, &t, &sha256(&t.payload), 7, 2, 1);
        let (h, payload) = parse(&buf).unwrap();
        let sha = sha256(&t.payload);
        assert!(is_exactly(
            &buf,
            "id-1",
            "holder",
            t.timestamp,
            13,
            Some(&sha)
        ));
        assert!(!is_exactly(
            &buf,
            "id-2",
            "holder",
            t.timestamp,
            13,
            Some(&sha)
        ));
        assert_eq!(h.tx_id, "id-1");
        assert_eq!(h.holder_id, "holder");
        assert_eq!(h.timestamp, t.timestamp);
        assert_eq!((h.seq, h.req_count, h.req_pos), (7, 2, 1));
        assert_eq!(payload, t.payload.as_slice());
        assert_eq!(h.record_len(), buf.len() as u64);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x01;
            assert!(parse(&bad).is_err(), "flip at byte {i} went unnoticed");
            assert!(
                !is_exactly(&bad, "id-1", "holder", t.timestamp, 13, Some(&sha)),
                "flip at byte {i} passed the fast check"
            );
            assert!(
                !is_exactly(&bad, "id-1", "holder", t.timestamp, 13, None),
                "flip at byte {i} passed the fast check without the index's hash"
            );
        }
        // The header alone: its hash when every field and its check agree, nothing else.
        let hlen = header_len(4, 6);
        let head = &buf[..hlen];
        let at = |h: &[u8], id, holder, ts, size, sha| header_is(h, id, holder, ts, size, sha);
        assert_eq!(at(head, "id-1", "holder", t.timestamp, 13, None), Some(sha));
        assert_eq!(
            at(head, "id-1", "holder", t.timestamp, 13, Some(&sha)),
            Some(sha)
        );
        assert_eq!(
            at(head, "id-1", "holder", t.timestamp, 13, Some(&[0; 32])),
            None
        );
        assert_eq!(at(head, "id-2", "holder", t.timestamp, 13, None), None);
        assert_eq!(at(head, "id-1", "holdex", t.timestamp, 13, None), None);
        assert_eq!(
            at(head, "id-1", "holder", t.timestamp + 1.0, 13, None),
            None
        );
        assert_eq!(at(head, "id-1", "holder", t.timestamp, 12, None), None);
        assert_eq!(
            at(&head[..hlen - 1], "id-1", "holder", t.timestamp, 13, None),
            None
        );
        for i in 0..hlen {
            let mut bad = head.to_vec();
            bad[i] ^= 0x01;
            assert_eq!(
                at(&bad, "id-1", "holder", t.timestamp, 13, None),
                None,
                "flip at {i}"
            );
        }
        for cut in 0..buf.len() {
            assert!(parse(&buf[..cut]).is_err(), "cut at {cut}");
        }
        // Encoded unsealed, then sealed: the same bytes, byte for byte.
        let mut unsealed = b"before".to_vec();
        let hlen = encode_unsealed(&mut unsealed, &t, 7, 2, 1);
        assert_eq!(hlen, header_len(4, 6));
        assert!(
            parse(&unsealed[6..]).is_err(),
            "an unsealed record is not a record"
        );
        seal(&mut unsealed[6..], hlen);
        assert_eq!(&unsealed[..6], b"before");
        assert_eq!(&unsealed[6..], &buf[..]);
    }
}
