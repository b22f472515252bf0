//! Frames: what one message is on a pipe.
//!
//! A 32-byte header, little-endian, then the payload:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic, `FRAME_MAGIC` |
//! | 4..6 | kind: data; a subscriber's welcome (its first sequence number); the publisher's goodbye (its next) |
//! | 6..8 | zero |
//! | 8..12 | payload length |
//! | 12..16 | check: a hash of the other header fields |
//! | 16..24 | sequence number |
//! | 24..32 | timestamp (ns), or `NO_TIME` |
//!
//! A reader that finds a bad magic or check reports the frame corrupt and
//! looks for the next good header. The payload carries no checksum: a pipe
//! does not change bytes, it can only be written out of step, which the
//! header catches.

/// The header's size.
pub(crate) const HEADER: usize = 32;
/// Magic of every frame ("SBFr").
pub(crate) const FRAME_MAGIC: u32 = 0x7246_4253;
/// A message.
pub(crate) const KIND_DATA: u16 = 1;
/// A publisher's first frame to a subscriber: the sequence number of the
/// next message it will get.
pub(crate) const KIND_WELCOME: u16 = 2;
/// A publisher's last frame to a subscriber as it leaves: the sequence
/// number of the message it would have sent next (so that messages the
/// subscriber missed at the end are counted too).
pub(crate) const KIND_GONE: u16 = 3;
/// The longest payload whose frame a single pipe write carries whole
/// (`PIPE_BUF`, 4096 bytes, less the header). A longer data frame may be
/// written in parts, and then cut short by a writer that dies or gives up;
/// it ends with an 8-byte trailer (its sequence number xored with
/// `TRAILER_MAGIC`), so that a reader that took the next writer's bytes for
/// the rest of it finds out.
pub(crate) const WHOLE_UP_TO: usize = 4096 - HEADER;
const TRAILER_MAGIC: u64 = 0x5342_4672_5472_6c72;

/// The bytes of a data frame with a payload of `len` bytes, trailer and
/// all.
pub(crate) fn data_frame_len(len: usize) -> usize {
    HEADER + len + if len > WHOLE_UP_TO { 8 } else { 0 }
}

/// The payload bytes of a data frame of `frame_len` bytes in all (the
/// inverse of [`data_frame_len`]: only a frame whose payload is longer
/// than [`WHOLE_UP_TO`] has a trailer, and so more than that many bytes
/// after its header).
pub(crate) fn data_payload_len(frame_len: usize) -> usize {
    let rest = frame_len.saturating_sub(HEADER);
    if rest > WHOLE_UP_TO {
        rest - 8
    } else {
        rest
    }
}

/// The length of the whole frame at the front of `bytes` (one we wrote),
/// if its header is good and it is all there.
pub(crate) fn frame_len(bytes: &[u8]) -> Option<usize> {
    let header = Header::decode(bytes)?;
    let len = match header.kind {
        KIND_DATA => data_frame_len(header.len as usize),
        _ => HEADER,
    };
    (len <= bytes.len()).then_some(len)
}

/// Whether the data frame of `header` in `frame` (all of it, see
/// [`data_frame_len`]) ends with its trailer, if it has one.
pub(crate) fn trailer_ok(header: &Header, frame: &[u8]) -> bool {
    let len = header.len as usize;
    if len <= WHOLE_UP_TO {
        return true;
    }
    let end = HEADER + len;
    frame.get(end..end + 8).is_some_and(|t| {
        u64::from_le_bytes(t.try_into().expect("8 bytes")) == header.seq ^ TRAILER_MAGIC
    })
}

/// No timestamp.
pub(crate) const NO_TIME: u64 = u64::MAX;

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: u16,
    pub len: u32,
    pub seq: u64,
    pub time: u64,
}

fn check(kind: u16, len: u32, seq: u64, time: u64) -> u32 {
    // splitmix64 of the fields: one bad bit anywhere changes it.
    let mut x =
        (u64::from(kind) << 32 | u64::from(len)) ^ seq.rotate_left(17) ^ time.rotate_left(41);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) as u32
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER] {
        let mut out = [0u8; HEADER];
        out[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
        out[4..6].copy_from_slice(&self.kind.to_le_bytes());
        out[8..12].copy_from_slice(&self.len.to_le_bytes());
        out[12..16].copy_from_slice(&check(self.kind, self.len, self.seq, self.time).to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.time.to_le_bytes());
        out
    }

    /// Decodes `bytes` (at least [`HEADER`] long): `None` if it is not a
    /// good header.
    pub fn decode(bytes: &[u8]) -> Option<Header> {
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let long = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        if bytes.len() < HEADER || word(0) != FRAME_MAGIC || bytes[6..8] != [0, 0] {
            return None;
        }
        let header = Header {
            kind: u16::from_le_bytes([bytes[4], bytes[5]]),
            len: word(8),
            seq: long(16),
            time: long(24),
        };
        let known = matches!(header.kind, KIND_DATA | KIND_WELCOME | KIND_GONE);
        (known && word(12) == check(header.kind, header.len, header.seq, header.time))
            .then_some(header)
    }

    /// The timestamp, if the frame has one.
    pub fn timestamp(&self) -> Option<u64> {
        (self.time != NO_TIME).then_some(self.time)
    }
}

/// Writes a frame of `kind` for `payload` into `out` (replacing whatever
/// it held), padded with zeros to `pad_to` bytes in all if that is longer.
pub(crate) fn encode_into(
    out: &mut Vec<u8>,
    kind: u16,
    seq: u64,
    time: Option<u64>,
    payload: &[u8],
    pad_to: usize,
) {
    let header = Header {
        kind,
        len: payload.len() as u32,
        seq,
        time: time.unwrap_or(NO_TIME),
    };
    out.clear();
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    if kind == KIND_DATA && payload.len() > WHOLE_UP_TO {
        out.extend_from_slice(&(seq ^ TRAILER_MAGIC).to_le_bytes());
    }
    if out.len() < pad_to {
        out.resize(pad_to, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer reused for frames of other lengths, kinds and padding holds
    /// exactly what a fresh one would: nothing of the frame before.
    #[test]
    fn a_reused_buffer_holds_only_the_new_frame() {
        let fresh = |kind, seq, payload: &[u8], pad| {
            let mut out = Vec::new();
            encode_into(&mut out, kind, seq, Some(9), payload, pad);
            out
        };
        let mut reused = vec![0xee; 4096];
        let cases: [(u16, u64, Vec<u8>, usize); 6] = [
            (KIND_DATA, 1, vec![1; 200], 0),
            (KIND_DATA, 2, vec![2; 10], 512),
            (KIND_GONE, 3, Vec::new(), 0),
            (KIND_DATA, 4, vec![4; WHOLE_UP_TO + 1], 0),
            (KIND_DATA, 5, vec![5; 64], 64 + HEADER),
            (KIND_DATA, 6, vec![6; 3], 4096),
        ];
        for (kind, seq, payload, pad) in cases {
            encode_into(&mut reused, kind, seq, Some(9), &payload, pad);
            assert_eq!(reused, fresh(kind, seq, &payload, pad), "frame {seq}");
            let header = Header::decode(&reused).expect("a good header");
            assert_eq!(
                (header.kind, header.seq, header.len as usize),
                (kind, seq, payload.len())
            );
            if kind == KIND_DATA {
                assert!(trailer_ok(&header, &reused), "frame {seq}");
            }
        }
    }

    #[test]
    fn a_header_round_trips_and_any_flipped_bit_is_refused() {
        let header = Header {
            kind: KIND_DATA,
            len: 77,
            seq: 1 << 40 | 5,
            time: 123_456_789,
        };
        let bytes = header.encode();
        assert_eq!(Header::decode(&bytes), Some(header));
        for bit in 0..HEADER * 8 {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Header::decode(&bad), None, "bit {bit} flipped went unseen");
        }
        assert_eq!(Header::decode(&bytes[..HEADER - 1]), None);
    }

    #[test]
    fn a_data_frames_payload_length_is_found_from_its_length() {
        for len in [
            0,
            1,
            64,
            WHOLE_UP_TO - 1,
            WHOLE_UP_TO,
            WHOLE_UP_TO + 1,
            5000,
            1 << 20,
        ] {
            assert_eq!(data_payload_len(data_frame_len(len)), len, "{len}");
        }
    }

    #[test]
    fn long_data_frames_end_with_a_trailer_that_a_cut_frame_lacks() {
        let mut out = Vec::new();
        let payload = vec![9u8; WHOLE_UP_TO + 1];
        encode_into(&mut out, KIND_DATA, 42, None, &payload, 0);
        assert_eq!(out.len(), data_frame_len(payload.len()));
        let header = Header::decode(&out).unwrap();
        assert!(trailer_ok(&header, &out));
        // Cut short, the rest taken from another frame: refused.
        let mut cut = out[..out.len() - 100].to_vec();
        cut.extend_from_slice(&[0; 100]);
        assert!(!trailer_ok(&header, &cut));
        // Short frames have none, and need none.
        encode_into(&mut out, KIND_DATA, 42, None, &payload[..WHOLE_UP_TO], 0);
        assert_eq!(out.len(), HEADER + WHOLE_UP_TO);
    }

    #[test]
    fn frames_are_padded_to_a_fixed_size_when_asked() {
        let mut out = Vec::new();
        encode_into(&mut out, KIND_DATA, 3, None, b"abc", 64);
        assert_eq!(out.len(), 64);
        let header = Header::decode(&out).unwrap();
        assert_eq!((header.len, header.seq, header.timestamp()), (3, 3, None));
        assert_eq!(&out[HEADER..HEADER + 3], b"abc");
    }
}
