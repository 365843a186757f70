//! Gossip messages a little too large for one QUIC datagram, cut into a few datagrams and
//! put back together on arrival.
//!
//! At a hundred sites chitchat's Syn and SynAck (1.4–4 KB, mostly the digest) exceed one
//! datagram. On a stream each costs a stream opened, flow-control updates and a receiving
//! task; as a few datagrams it costs nothing but the datagrams. A part is
//!
//! ```text
//! kind (GOSSIP_PART) | message id (u32, LE) | index (u8) | count (u8) | bytes
//! ```
//!
//! The sender numbers its messages; the receiver keeps, per connection, at most
//! [`MAX_PARTIAL`] messages it has some parts of (a newer one pushes out the oldest: its
//! lost part will not come, as datagrams are not retransmitted; gossip makes up for a lost
//! message). A message needs at most [`MAX_PARTS`] parts; a larger one goes on a stream.
//! Only connections that negotiated ALPN `cairn/2` or later carry parts, so a site of an
//! earlier version (`cairn/1`) keeps getting every message it can read.
//!
//! Pure logic: no I/O, no clock.

/// The kind byte of a datagram that carries one part of a gossip message.
pub(crate) const KIND_PART: u8 = 2;
/// Bytes before a part's payload: kind, message id, index, count.
pub(crate) const HEADER: usize = 7;
/// The most parts one message may be cut into.
pub(crate) const MAX_PARTS: usize = 4;
/// The most messages a connection's reassembly holds parts of at once.
pub(crate) const MAX_PARTIAL: usize = 2;

/// Why a part was not taken (the sender is broken or hostile; the part is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PartError {
    /// Shorter than the header, or not a part at all.
    #[error("not a gossip part: {len} bytes, kind {kind:?}")]
    Header { len: usize, kind: Option<u8> },
    /// A count of 0, 1 or more than [`MAX_PARTS`], or an index not below the count.
    #[error("part {index} of {count}: count must be 2..={MAX_PARTS} and index below it")]
    Numbering { index: u8, count: u8 },
    /// Another part of the same message gave another count.
    #[error("message {id}: part says {count} parts, an earlier one said {earlier}")]
    CountChanged { id: u32, count: u8, earlier: usize },
    /// An empty part, or the parts add up to more than a gossip message may be.
    #[error(
        "message {id}: parts of {bytes} bytes, more than the {max} a gossip message may be, or an empty part"
    )]
    Size { id: u32, bytes: usize, max: usize },
}

/// Cuts `message` into datagrams of at most `max_datagram` bytes, header included, or
/// `None` if it would take more than [`MAX_PARTS`] (or fits in one: then it needs no
/// parts).
pub(crate) fn split(id: u32, message: &[u8], max_datagram: usize) -> Option<Vec<Vec<u8>>> {
    let room = max_datagram.checked_sub(HEADER).filter(|&room| room > 0)?;
    let count = message.len().div_ceil(room);
    if !(2..=MAX_PARTS).contains(&count) {
        return None;
    }
    // Parts of equal size (the last one a little shorter), not full parts and a stub.
    let size = message.len().div_ceil(count);
    let parts = message
        .chunks(size)
        .enumerate()
        .map(|(index, bytes)| {
            let mut part = Vec::with_capacity(HEADER + bytes.len());
            part.push(KIND_PART);
            part.extend_from_slice(&id.to_le_bytes());
            part.push(index as u8);
            part.push(count as u8);
            part.extend_from_slice(bytes);
            part
        })
        .collect();
    Some(parts)
}

/// What one part brought.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Taken {
    /// The whole message, when this was its last missing part.
    pub message: Option<Vec<u8>>,
    /// A message with parts still missing was given up to make room.
    pub gave_up: bool,
}

/// One connection's messages with parts still missing, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    partial: Vec<Partial>,
}

#[derive(Debug)]
struct Partial {
    id: u32,
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
}

impl Reassembly {
    /// Takes one datagram that should be a part (kind byte included); a message whose
    /// parts add up to more than `max_message` bytes is refused.
    pub(crate) fn take(&mut self, datagram: &[u8], max_message: usize) -> Result<Taken, PartError> {
        let header = datagram.get(..HEADER).filter(|h| h[0] == KIND_PART);
        let Some(header) = header else {
            return Err(PartError::Header { len: datagram.len(), kind: datagram.first().copied() });
        };
        let id = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
        let (index, count) = (header[5], header[6]);
        if !(2..=MAX_PARTS).contains(&usize::from(count)) || index >= count {
            return Err(PartError::Numbering { index, count });
        }
        let bytes = &datagram[HEADER..];
        let mut taken = Taken::default();
        let at = match self.partial.iter().position(|p| p.id == id) {
            Some(at) => at,
            None => {
                if self.partial.len() >= MAX_PARTIAL {
                    self.partial.remove(0);
                    taken.gave_up = true;
                }
                self.partial.push(Partial { id, parts: vec![None; usize::from(count)], bytes: 0 });
                self.partial.len() - 1
            }
        };
        let partial = &mut self.partial[at];
        if partial.parts.len() != usize::from(count) {
            return Err(PartError::CountChanged { id, count, earlier: partial.parts.len() });
        }
        let total = partial.bytes + bytes.len();
        if bytes.is_empty() || total > max_message {
            self.partial.remove(at);
            return Err(PartError::Size { id, bytes: total, max: max_message });
        }
        let slot = &mut partial.parts[usize::from(index)];
        if slot.is_some() {
            // QUIC does not repeat datagrams: a repeat is the sender's doing. The first
            // copy stands.
            return Ok(taken);
        }
        *slot = Some(bytes.to_vec());
        partial.bytes = total;
        if partial.parts.iter().all(Option::is_some) {
            let done = self.partial.remove(at);
            let mut message = Vec::with_capacity(done.bytes);
            for part in done.parts.into_iter().flatten() {
                message.extend_from_slice(&part);
            }
            taken.message = Some(message);
        }
        Ok(taken)
    }

    /// Messages held with parts missing (at most [`MAX_PARTIAL`]).
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 256 << 10;

    #[test]
    fn a_message_that_fits_one_datagram_or_needs_too_many_is_not_split() {
        assert_eq!(split(1, &[7; 100], 1200), None);
        assert_eq!(split(1, &[7; 1193], 1200), None, "1193 + header fits one datagram");
        assert_eq!(split(1, &[7; 1194], 1200).map(|p| p.len()), Some(2));
        assert_eq!(split(1, &[7; 4 * 1193], 1200).map(|p| p.len()), Some(4));
        assert_eq!(split(1, &[7; 4 * 1193 + 1], 1200), None);
        assert_eq!(split(1, &[7; 3000], HEADER), None, "no room for bytes");
    }

    #[test]
    fn parts_are_even_and_within_the_datagram() {
        let parts = split(9, &[1; 2500], 1400).unwrap();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() <= 1400));
        assert_eq!(parts[0].len() - HEADER, 1250);
    }

    #[test]
    fn bad_parts_are_refused_with_what_was_wrong() {
        let mut r = Reassembly::default();
        assert_eq!(
            r.take(&[KIND_PART, 1, 0, 0], MAX),
            Err(PartError::Header { len: 4, kind: Some(KIND_PART) })
        );
        assert_eq!(r.take(&[], MAX), Err(PartError::Header { len: 0, kind: None }));
        assert_eq!(
            r.take(&[1, 0, 0, 0, 0, 0, 2, 9], MAX).unwrap_err(),
            PartError::Header { len: 8, kind: Some(1) }
        );
        assert_eq!(
            r.take(&[KIND_PART, 0, 0, 0, 0, 0, 1, 9], MAX),
            Err(PartError::Numbering { index: 0, count: 1 })
        );
        assert_eq!(
            r.take(&[KIND_PART, 0, 0, 0, 0, 2, 2, 9], MAX),
            Err(PartError::Numbering { index: 2, count: 2 })
        );
        assert_eq!(
            r.take(&[KIND_PART, 0, 0, 0, 0, 0, 5, 9], MAX),
            Err(PartError::Numbering { index: 0, count: 5 })
        );
        r.take(&[KIND_PART, 3, 0, 0, 0, 0, 2, 9], MAX).unwrap();
        assert_eq!(
            r.take(&[KIND_PART, 3, 0, 0, 0, 1, 3, 9], MAX),
            Err(PartError::CountChanged { id: 3, count: 3, earlier: 2 })
        );
        assert_eq!(
            r.take(&[KIND_PART, 4, 0, 0, 0, 1, 2], MAX),
            Err(PartError::Size { id: 4, bytes: 0, max: MAX })
        );
        assert_eq!(
            r.take(&[KIND_PART, 5, 0, 0, 0, 1, 2, 1, 2, 3], 2),
            Err(PartError::Size { id: 5, bytes: 3, max: 2 })
        );
        assert!(r.pending() <= MAX_PARTIAL);
    }

    #[test]
    fn a_third_message_gives_up_the_oldest() {
        let mut r = Reassembly::default();
        let (a, b, c) = (
            split(1, &[1; 3000], 1200).unwrap(),
            split(2, &[2; 3000], 1200).unwrap(),
            split(3, &[3; 3000], 1200).unwrap(),
        );
        assert!(!r.take(&a[0], MAX).unwrap().gave_up);
        assert!(!r.take(&b[0], MAX).unwrap().gave_up);
        assert!(r.take(&c[0], MAX).unwrap().gave_up);
        // Message 1's later parts start it afresh (and give up message 2); it cannot
        // complete, as its first part is gone.
        assert_eq!(r.take(&a[1], MAX).unwrap().message, None);
        assert_eq!(r.take(&c[1], MAX).unwrap().message, None);
        assert_eq!(r.take(&c[2], MAX).unwrap().message, Some(vec![3; 3000]));
        assert_eq!(r.pending(), 1);
    }

    proptest! {
        /// Two messages split and delivered in any interleaving, with repeats, come back
        /// whole, each once.
        #[test]
        fn parts_in_any_order_make_the_messages_again(
            a in proptest::collection::vec(any::<u8>(), 1200..4000),
            b in proptest::collection::vec(any::<u8>(), 1200..4000),
            order in proptest::collection::vec(any::<u16>(), 16),
            repeat in any::<bool>(),
        ) {
            let mut parts: Vec<(usize, Vec<u8>)> = [(0, &a), (1, &b)]
                .iter()
                .flat_map(|(which, m)| split(*which as u32 + 10, m, 1200).unwrap().into_iter().map(move |p| (*which, p)))
                .collect();
            if repeat {
                let first = parts[0].clone();
                parts.push(first);
            }
            // A generated shuffle: sort by a random key per part.
            let mut keyed: Vec<_> = parts.into_iter().enumerate().map(|(i, p)| (order[i % order.len()], i, p)).collect();
            keyed.sort();
            let mut r = Reassembly::default();
            let mut got = vec![Vec::new(); 2];
            for (_, _, (which, part)) in keyed {
                let taken = r.take(&part, MAX).unwrap();
                prop_assert!(!taken.gave_up);
                if let Some(m) = taken.message {
                    got[which].push(m);
                }
            }
            prop_assert_eq!(&got[0], &vec![a]);
            prop_assert_eq!(&got[1], &vec![b]);
        }

        /// Any bytes at all: no panic, never more than MAX_PARTIAL messages held, and
        /// nothing longer than the limit handed on.
        #[test]
        fn garbage_is_bounded(datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..64)) {
            let mut r = Reassembly::default();
            for mut d in datagrams {
                // Mostly well-formed headers, a few ids, so parts meet and clash.
                if let Some(first) = d.first_mut() { *first = KIND_PART; }
                if d.len() >= HEADER {
                    d[1] %= 3;
                    d[2..5].fill(0);
                    d[5] %= 5;
                    d[6] %= 6;
                }
                if let Ok(Taken { message: Some(m), .. }) = r.take(&d, 64) {
                    prop_assert!(m.len() <= 64);
                }
                prop_assert!(r.pending() <= MAX_PARTIAL);
            }
        }
    }
}
