//! The out-of-order window of one segment (Go `SequentialBuffer`), pure and synchronous.
//!
//! Ids fall in four ranges, from low to high:
//!
//! ```text
//!   ..=durable   | durable+1 .. first | first .. first+max_entries | first+max_entries..
//!   durable      | in flight          | the window (by slot)       | buffer full (2200)
//! ```
//!
//! * `expected_next` is the end of the contiguous prefix of the window; only that prefix is
//!   taken for a flush ([`SequentialBuffer::take_ready`]), which moves `first` up to it.
//! * An id already durable is answered at once; an id in flight or already in the window gets
//!   its waiter attached to that id (its data is ignored: the first copy wins), so every waiter
//!   of an id is woken when that id becomes durable. The Go original drops the notification of
//!   a re-append in the in-flight range; this buffer does not.
//! * The buffer never does IO and never wakes anyone itself: it hands waiters back to the
//!   caller ([`SequentialBuffer::mark_durable`], [`SequentialBuffer::fail_all`]).

use std::collections::VecDeque;

use bytes::Bytes;

use super::error::LogStoreError;

/// Where an accepted entry stands.
#[derive(Debug)]
pub enum Admit<W> {
    /// The id is already durable: answer its waiter now.
    Durable(W),
    /// The waiter is kept until the id is durable or fails.
    Waiting,
}

/// The contiguous prefix taken for a flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyBatch {
    /// Id of the first entry.
    pub first_id: i64,
    /// Payloads, ids `first_id..`.
    pub entries: Vec<Bytes>,
    /// Sum of payload lengths.
    pub bytes: usize,
}

impl ReadyBatch {
    /// Id of the last entry.
    pub fn last_id(&self) -> i64 {
        self.first_id + self.entries.len() as i64 - 1
    }
}

#[derive(Debug)]
struct Slot<W> {
    data: Bytes,
    waiters: Vec<W>,
}

#[derive(Debug)]
struct InFlight<W> {
    bytes: usize,
    waiters: Vec<W>,
}

/// The out-of-order window; `W` is whatever the caller wakes (a oneshot sender in the
/// processor, a plain value in tests).
#[derive(Debug)]
pub struct SequentialBuffer<W> {
    max_entries: usize,
    /// Every id ≤ `durable` is durable.
    durable: i64,
    /// The first id not taken for a flush; ids in `durable+1..first` are in flight.
    first: i64,
    /// `slots[i]` holds id `first + i`; never longer than `max_entries`.
    slots: VecDeque<Option<Slot<W>>>,
    /// `in_flight[i]` is id `durable + 1 + i`.
    in_flight: VecDeque<InFlight<W>>,
    /// Filled slots at the front of `slots`.
    ready: usize,
    ready_bytes: usize,
    buffered_bytes: usize,
    in_flight_bytes: usize,
}

impl<W> SequentialBuffer<W> {
    /// An empty buffer whose next id is `next_id` (0 for a new segment, last durable + 1 for a
    /// recovered one); ids below it count as durable.
    pub fn new(next_id: i64, max_entries: usize) -> Self {
        SequentialBuffer {
            max_entries: max_entries.max(1),
            durable: next_id - 1,
            first: next_id,
            slots: VecDeque::new(),
            in_flight: VecDeque::new(),
            ready: 0,
            ready_bytes: 0,
            buffered_bytes: 0,
            in_flight_bytes: 0,
        }
    }

    /// Takes entry `id`. On error the waiter is handed back with the reason.
    pub fn push(
        &mut self,
        id: i64,
        data: Bytes,
        waiter: W,
    ) -> Result<Admit<W>, (LogStoreError, W)> {
        if id < 0 {
            return Err((
                LogStoreError::InvalidEntryId {
                    entry_id: id,
                    reason: "entry ids are not negative".into(),
                },
                waiter,
            ));
        }
        if id <= self.durable {
            return Ok(Admit::Durable(waiter));
        }
        if id < self.first {
            let i = (id - self.durable - 1) as usize;
            self.in_flight[i].waiters.push(waiter);
            return Ok(Admit::Waiting);
        }
        let end = self.window_end();
        if id >= end {
            return Err((
                LogStoreError::BufferFull {
                    entry_id: id,
                    first: self.first,
                    end,
                },
                waiter,
            ));
        }
        let i = (id - self.first) as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        match &mut self.slots[i] {
            Some(slot) => slot.waiters.push(waiter),
            empty @ None => {
                self.buffered_bytes += data.len();
                *empty = Some(Slot {
                    data,
                    waiters: vec![waiter],
                });
                self.advance_ready();
            }
        }
        Ok(Admit::Waiting)
    }

    fn advance_ready(&mut self) {
        while let Some(Some(slot)) = self.slots.get(self.ready) {
            self.ready_bytes += slot.data.len();
            self.ready += 1;
        }
    }

    /// Takes the contiguous prefix for a flush (`None` when there is none); its ids are in
    /// flight until [`mark_durable`](Self::mark_durable) or [`fail_all`](Self::fail_all).
    pub(crate) fn take_ready(&mut self) -> Option<ReadyBatch> {
        if self.ready == 0 {
            return None;
        }
        let mut entries = Vec::with_capacity(self.ready);
        for slot in self.slots.drain(..self.ready).flatten() {
            let bytes = slot.data.len();
            entries.push(slot.data);
            self.in_flight.push_back(InFlight {
                bytes,
                waiters: slot.waiters,
            });
        }
        let batch = ReadyBatch {
            first_id: self.first,
            bytes: self.ready_bytes,
            entries,
        };
        self.first += self.ready as i64;
        self.buffered_bytes -= self.ready_bytes;
        self.in_flight_bytes += self.ready_bytes;
        self.ready = 0;
        self.ready_bytes = 0;
        self.advance_ready();
        Some(batch)
    }

    /// Records that every id ≤ `last_id` is durable and returns their waiters, in id order.
    /// Only ids in flight can become durable; a higher `last_id` is capped.
    pub(crate) fn mark_durable(&mut self, last_id: i64) -> Vec<(i64, W)> {
        let last_id = last_id.min(self.first - 1);
        let mut woken = Vec::new();
        while self.durable < last_id {
            self.durable += 1;
            if let Some(f) = self.in_flight.pop_front() {
                self.in_flight_bytes -= f.bytes;
                woken.extend(f.waiters.into_iter().map(|w| (self.durable, w)));
            }
        }
        woken
    }

    /// Drops everything not durable (in flight and buffered) and returns its waiters in id
    /// order: the writer failed, or stops taking the window's leftovers.
    pub(crate) fn fail_all(&mut self) -> Vec<(i64, W)> {
        let mut failed = Vec::new();
        for (i, f) in self.in_flight.drain(..).enumerate() {
            let id = self.durable + 1 + i as i64;
            failed.extend(f.waiters.into_iter().map(|w| (id, w)));
        }
        for (i, slot) in self.slots.drain(..).enumerate() {
            if let Some(slot) = slot {
                let id = self.first + i as i64;
                failed.extend(slot.waiters.into_iter().map(|w| (id, w)));
            }
        }
        self.first = self.durable + 1;
        self.ready = 0;
        self.ready_bytes = 0;
        self.buffered_bytes = 0;
        self.in_flight_bytes = 0;
        failed
    }

    /// Every id ≤ this is durable (`next_id - 1` at the start).
    pub(crate) fn durable_id(&self) -> i64 {
        self.durable
    }

    /// The first id not taken for a flush.
    pub(crate) fn first_unflushed(&self) -> i64 {
        self.first
    }

    /// The end of the contiguous prefix: the id the window waits for.
    pub fn expected_next(&self) -> i64 {
        self.first + self.ready as i64
    }

    /// One past the last id the window takes now.
    pub(crate) fn window_end(&self) -> i64 {
        self.first + self.max_entries as i64
    }

    /// Whether `id` is in flight or already in the window (a re-append costs no bytes).
    pub fn holds(&self, id: i64) -> bool {
        if id <= self.durable {
            return false;
        }
        if id < self.first {
            return true;
        }
        usize::try_from(id - self.first)
            .ok()
            .and_then(|i| self.slots.get(i))
            .is_some_and(Option::is_some)
    }

    /// Bytes of the contiguous prefix.
    pub(crate) fn ready_bytes(&self) -> usize {
        self.ready_bytes
    }

    /// Bytes in the window (contiguous or not), not yet taken for a flush.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Bytes taken for a flush and not yet durable.
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight_bytes
    }

    /// Whether nothing is buffered or in flight.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty() && self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn push(buf: &mut SequentialBuffer<i64>, id: i64) -> Result<Admit<i64>, (LogStoreError, i64)> {
        buf.push(id, Bytes::from(format!("e{id}")), id)
    }

    #[test]
    fn out_of_order_arrivals_flush_only_the_contiguous_prefix() {
        let mut buf = SequentialBuffer::new(0, 10);
        push(&mut buf, 2).unwrap();
        push(&mut buf, 1).unwrap();
        assert_eq!(buf.expected_next(), 0);
        assert!(buf.take_ready().is_none());
        push(&mut buf, 0).unwrap();
        push(&mut buf, 4).unwrap();
        assert_eq!(buf.expected_next(), 3);
        assert_eq!(buf.ready_bytes(), 6);
        assert_eq!(buf.buffered_bytes(), 8);
        let batch = buf.take_ready().unwrap();
        assert_eq!(batch.first_id, 0);
        assert_eq!(batch.last_id(), 2);
        assert_eq!(batch.entries, vec![b("e0"), b("e1"), b("e2")]);
        assert_eq!(buf.first_unflushed(), 3);
        assert_eq!(buf.in_flight_bytes(), 6);
        assert_eq!(buf.buffered_bytes(), 2);
        assert!(buf.take_ready().is_none(), "4 waits for 3");
        let woken = buf.mark_durable(2);
        assert_eq!(woken, vec![(0, 0), (1, 1), (2, 2)]);
        assert_eq!(buf.in_flight_bytes(), 0);
        push(&mut buf, 3).unwrap();
        assert_eq!(buf.take_ready().unwrap().entries, vec![b("e3"), b("e4")]);
    }

    #[test]
    fn the_window_is_max_entries_from_the_first_unflushed_id() {
        let mut buf = SequentialBuffer::new(0, 4);
        let (e, w) = push(&mut buf, 4).unwrap_err();
        assert_eq!(w, 4);
        assert_eq!(e.code(), 2200);
        assert!(e.is_retriable());
        push(&mut buf, 3).unwrap();
        push(&mut buf, 0).unwrap();
        buf.take_ready().unwrap();
        // The window moved to [1, 5).
        push(&mut buf, 4).unwrap();
        assert_eq!(push(&mut buf, 5).unwrap_err().0.code(), 2200);
        assert_eq!(push(&mut buf, -1).unwrap_err().0.code(), 2215);
    }

    #[test]
    fn every_waiter_of_an_id_is_woken_wherever_it_stands() {
        let mut buf = SequentialBuffer::new(0, 10);
        push(&mut buf, 0).unwrap();
        push(&mut buf, 1).unwrap();
        buf.take_ready().unwrap();
        // 0 and 1 are in flight: re-appends attach to them.
        assert!(matches!(
            buf.push(1, b("other"), 101).unwrap(),
            Admit::Waiting
        ));
        assert!(buf.holds(1));
        // 2 is buffered: the first copy wins, both waiters stay.
        push(&mut buf, 2).unwrap();
        buf.push(2, b("zz"), 102).unwrap();
        assert_eq!(buf.buffered_bytes(), 2);
        assert_eq!(buf.mark_durable(1), vec![(0, 0), (1, 1), (1, 101)]);
        // Durable ids are answered at once.
        assert!(matches!(
            buf.push(0, b("x"), 200).unwrap(),
            Admit::Durable(200)
        ));
        let batch = buf.take_ready().unwrap();
        assert_eq!(batch.entries, vec![b("e2")]);
        assert_eq!(buf.mark_durable(2), vec![(2, 2), (2, 102)]);
        assert!(buf.is_empty());
    }

    #[test]
    fn fail_all_returns_every_waiter_not_durable_and_empties_the_buffer() {
        let mut buf = SequentialBuffer::new(5, 10);
        assert_eq!(buf.durable_id(), 4);
        for id in [5, 6, 9] {
            push(&mut buf, id).unwrap();
        }
        buf.take_ready().unwrap();
        push(&mut buf, 8).unwrap();
        assert_eq!(buf.mark_durable(5), vec![(5, 5)]);
        assert_eq!(buf.fail_all(), vec![(6, 6), (8, 8), (9, 9)]);
        assert!(buf.is_empty());
        assert_eq!(
            (
                buf.buffered_bytes(),
                buf.in_flight_bytes(),
                buf.ready_bytes()
            ),
            (0, 0, 0)
        );
        assert_eq!(buf.first_unflushed(), 6);
    }

    #[test]
    fn mark_durable_is_capped_at_what_is_in_flight() {
        let mut buf = SequentialBuffer::new(0, 10);
        push(&mut buf, 0).unwrap();
        buf.take_ready().unwrap();
        push(&mut buf, 1).unwrap();
        assert_eq!(buf.mark_durable(7), vec![(0, 0)]);
        assert_eq!(buf.durable_id(), 0);
        assert_eq!(buf.buffered_bytes(), 2);
    }

    proptest! {
        /// Whatever the arrival order, re-appends and flush points, the flushed sequence is
        /// the dense prefix in order, and every accepted waiter is woken exactly once, with its
        /// own id.
        #[test]
        fn flushed_sequence_is_always_the_dense_prefix(
            n in 1usize..200,
            seed in any::<u64>(),
            window in 1usize..64,
        ) {
            use rand::seq::SliceRandom;
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut pending: Vec<i64> = (0..n as i64).collect();
            pending.shuffle(&mut rng);
            let mut buf: SequentialBuffer<(i64, u32)> = SequentialBuffer::new(0, window);
            let mut flushed: Vec<Bytes> = Vec::new();
            let mut woken: Vec<(i64, (i64, u32))> = Vec::new();
            let mut accepted = 0usize;
            let mut tag = 0u32;
            let mut steps = 0;
            while !pending.is_empty() || !buf.is_empty() {
                steps += 1;
                prop_assert!(steps < 1_000_000, "no progress");
                if !pending.is_empty() && rng.random_bool(0.7) {
                    let i = rng.random_range(0..pending.len());
                    let id = pending[i];
                    tag += 1;
                    match buf.push(id, Bytes::from(id.to_string()), (id, tag)) {
                        Ok(Admit::Durable(w)) => woken.push((id, w)),
                        Ok(Admit::Waiting) => {}
                        Err((e, _)) => {
                            prop_assert_eq!(e.code(), 2200);
                            prop_assert!(id >= buf.window_end());
                            continue;
                        }
                    }
                    accepted += 1;
                    // A client retry keeps the id pending now and then.
                    if rng.random_bool(0.8) {
                        pending.swap_remove(i);
                    }
                } else {
                    if let Some(batch) = buf.take_ready() {
                        prop_assert_eq!(batch.first_id, flushed.len() as i64);
                        prop_assert_eq!(batch.bytes, batch.entries.iter().map(Bytes::len).sum::<usize>());
                        flushed.extend(batch.entries);
                    }
                    if rng.random_bool(0.8) {
                        woken.extend(buf.mark_durable(buf.first_unflushed() - 1));
                    }
                }
                let in_window = buf.buffered_bytes();
                prop_assert!(buf.ready_bytes() <= in_window);
            }
            let expected: Vec<Bytes> = (0..n as i64).map(|id| Bytes::from(id.to_string())).collect();
            prop_assert_eq!(flushed, expected);
            prop_assert_eq!(woken.len(), accepted);
            for (id, (wanted, _)) in &woken {
                prop_assert_eq!(id, wanted);
            }
            let mut tags: Vec<u32> = woken.iter().map(|(_, (_, t))| *t).collect();
            tags.sort_unstable();
            tags.dedup();
            prop_assert_eq!(tags.len(), woken.len(), "a waiter woken twice");
        }
    }
}
