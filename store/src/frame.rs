//! The frame format of the embedded engines' log files (the redb engine's write-ahead log,
//! the log engine's segments and snapshots).
//!
//! Frame: `u32` payload length, `u64` tag, 16 bytes of blake3 over the length, tag and
//! payload, then the payload: entries of `u8` kind ([`ENTRY_DOC`] or [`ENTRY_META`]), `u32`
//! key length, key, `u32` value length, value (a document's value is its stored encoding,
//! [`encode`]). All integers little-endian. The tag is the redb engine's log generation or
//! the log engine's file number: a frame found in a file it was not written for is not
//! applied. A frame cut by a kill in the middle of its write fails its length or checksum,
//! and ends the reading of its file.

use super::{Record, StoreError, StoreResult};
use model::digest::Hash;
use model::version::Version;

/// Entry kind: a document.
pub const ENTRY_DOC: u8 = 1;
/// Entry kind: a meta value.
pub const ENTRY_META: u8 = 2;
/// Frame header: payload length (4), tag (8), checksum (16).
pub const FRAME_HEAD: usize = 28;

/// A record's stored encoding: version (epoch, seq), hash, then the body.
pub fn encode(r: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + r.body.len());
    out.extend_from_slice(&r.version.epoch.to_le_bytes());
    out.extend_from_slice(&r.version.seq.to_le_bytes());
    out.extend_from_slice(&r.hash.0);
    out.extend_from_slice(r.body.as_bytes());
    out
}

/// The version and hash of a stored encoding.
pub fn decode_head(v: &[u8]) -> StoreResult<(Version, Hash)> {
    if v.len() < 48 {
        return Err(StoreError("short record".into()));
    }
    let epoch = u64::from_le_bytes(v[0..8].try_into().unwrap());
    let seq = u64::from_le_bytes(v[8..16].try_into().unwrap());
    let mut h = [0u8; 32];
    h.copy_from_slice(&v[16..48]);
    Ok((Version { epoch, seq }, Hash(h)))
}

/// The record `key` holds in a stored encoding.
pub fn decode(key: &str, v: &[u8]) -> StoreResult<Record> {
    let (version, hash) = decode_head(v)?;
    let body = String::from_utf8(v[48..].to_vec()).map_err(StoreError::of)?;
    Ok(Record { key: key.to_string(), version, hash, body })
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// A frame being built: header space first, entries appended, header filled by [`seal`].
pub fn new_frame() -> Vec<u8> {
    vec![0u8; FRAME_HEAD]
}

pub fn push_entry(frame: &mut Vec<u8>, kind: u8, key: &str, value: &[u8]) {
    frame.push(kind);
    frame.extend_from_slice(&(key.len() as u32).to_le_bytes());
    frame.extend_from_slice(key.as_bytes());
    frame.extend_from_slice(&(value.len() as u32).to_le_bytes());
    frame.extend_from_slice(value);
}

fn checksum(head: &[u8], payload: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(head);
    h.update(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// Fills in the header of a frame built with [`new_frame`] and [`push_entry`].
pub fn seal(frame: &mut [u8], tag: u64) {
    let len = (frame.len() - FRAME_HEAD) as u32;
    frame[0..4].copy_from_slice(&len.to_le_bytes());
    frame[4..12].copy_from_slice(&tag.to_le_bytes());
    let sum = checksum(&frame[0..12], &frame[FRAME_HEAD..]);
    frame[12..FRAME_HEAD].copy_from_slice(&sum);
}

/// What [`read_log`] found.
pub struct LogContents<'a> {
    /// Payloads of the complete frames of the wanted tag, in log order.
    pub frames: Vec<&'a [u8]>,
    /// Complete frames with another tag (for the redb engine: already in redb).
    pub stale: usize,
    /// Bytes after the last complete frame (a frame cut by a kill, or garbage).
    pub torn: usize,
}

/// Splits a log into frames; the first incomplete or corrupt frame ends it.
pub fn read_log(bytes: &[u8], tag: u64) -> LogContents<'_> {
    let mut out = LogContents { frames: Vec::new(), stale: 0, torn: 0 };
    let mut rest = bytes;
    while let Some((found, payload, after)) = read_frame(rest) {
        if found == tag {
            out.frames.push(payload);
        } else {
            out.stale += 1;
        }
        rest = after;
    }
    out.torn = rest.len();
    out
}

/// The first frame of `bytes`, if it is intact: its tag, its payload and the bytes after it.
pub fn read_frame(bytes: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    if bytes.len() < FRAME_HEAD {
        return None;
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
    if bytes.len() - FRAME_HEAD < len {
        return None;
    }
    let payload = &bytes[FRAME_HEAD..FRAME_HEAD + len];
    if checksum(&bytes[0..12], payload) != bytes[12..FRAME_HEAD] {
        return None;
    }
    let tag = u64::from_le_bytes(bytes[4..12].try_into().unwrap());
    Some((tag, payload, &bytes[FRAME_HEAD + len..]))
}

/// The entries of a frame's payload: (kind, key, value).
pub fn entries(mut p: &[u8]) -> StoreResult<Vec<(u8, &str, &[u8])>> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> StoreResult<&'a [u8]> {
        if p.len() < n {
            return Err(StoreError("log: a checksummed frame is malformed".into()));
        }
        let (head, rest) = p.split_at(n);
        *p = rest;
        Ok(head)
    }
    let mut out = Vec::new();
    while !p.is_empty() {
        let kind = take(&mut p, 1)?[0];
        let klen = u32::from_le_bytes(take(&mut p, 4)?.try_into().unwrap()) as usize;
        let key = std::str::from_utf8(take(&mut p, klen)?).map_err(StoreError::of)?;
        let vlen = u32::from_le_bytes(take(&mut p, 4)?.try_into().unwrap()) as usize;
        let value = take(&mut p, vlen)?;
        if kind != ENTRY_DOC && kind != ENTRY_META {
            return Err(StoreError(format!("log: unknown entry kind {kind}")));
        }
        out.push((kind, key, value));
    }
    Ok(out)
}

/// Appends a document entry for `r` (its key and stored encoding) without building the
/// encoding apart first.
pub fn push_doc(frame: &mut Vec<u8>, r: &Record) {
    frame.push(ENTRY_DOC);
    frame.extend_from_slice(&(r.key.len() as u32).to_le_bytes());
    frame.extend_from_slice(r.key.as_bytes());
    frame.extend_from_slice(&((48 + r.body.len()) as u32).to_le_bytes());
    frame.extend_from_slice(&r.version.epoch.to_le_bytes());
    frame.extend_from_slice(&r.version.seq.to_le_bytes());
    frame.extend_from_slice(&r.hash.0);
    frame.extend_from_slice(r.body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_doc_entry_reads_back_as_the_record() {
        let r = Record::new("k".into(), Version { epoch: 2, seq: 5 }, r#"{"a":1}"#.into());
        let mut frame = new_frame();
        push_doc(&mut frame, &r);
        push_entry(&mut frame, ENTRY_DOC, &r.key, &encode(&r));
        push_entry(&mut frame, ENTRY_META, "m", b"v");
        seal(&mut frame, 9);
        let log = read_log(&frame, 9);
        assert_eq!((log.frames.len(), log.stale, log.torn), (1, 0, 0));
        let e = entries(log.frames[0]).unwrap();
        assert_eq!(e.len(), 3);
        for (kind, key, value) in &e[..2] {
            assert_eq!((*kind, *key), (ENTRY_DOC, "k"));
            assert_eq!(decode(key, value).unwrap(), r);
        }
        assert_eq!((e[2].0, e[2].1, e[2].2), (ENTRY_META, "m", &b"v"[..]));
        // Another tag, and a cut frame.
        assert_eq!(read_log(&frame, 8).stale, 1);
        let cut = read_log(&frame[..frame.len() - 1], 9);
        assert_eq!((cut.frames.len(), cut.torn), (0, frame.len() - 1));
    }
}
