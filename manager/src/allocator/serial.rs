//! A set of numbers from a fixed range, handed out in libnetwork's *serial* order: the next
//! number is the first free one after the last handed out, wrapping around at the end of the
//! range. Both task addresses and VNIs use it (swarmkit asks libnetwork's IPAM for serial
//! allocation, and the overlay driver allocates VNIs serially), so that a number just freed is
//! the last to be given again: a stale DNS answer, ARP or FDB entry for a removed task then
//! does not point at a new task straight away.
//!
//! Free numbers are found by walking the used ones in order (a `BTreeSet`), so the cost is the
//! length of the used run after the cursor, never the size of the range: a /8 costs no more
//! memory than the addresses actually in use.

use std::collections::BTreeSet;

/// Why a particular number could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TakeError {
    OutOfRange,
    InUse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SerialSet {
    first: u64,
    last: u64,
    used: BTreeSet<u64>,
    /// Where the next search starts: just after the number most recently handed out.
    cursor: u64,
}

impl SerialSet {
    /// An empty set over `first..=last` (which must not be empty).
    pub(crate) fn new(first: u64, last: u64) -> Self {
        debug_assert!(first <= last, "empty range {first}..={last}");
        SerialSet {
            first,
            last,
            used: BTreeSet::new(),
            cursor: first,
        }
    }

    /// The first free number at or after the cursor, else the first free one from the start
    /// of the range; `None` when every number is used.
    pub(crate) fn take_next(&mut self) -> Option<u64> {
        let found = self
            .first_free(self.cursor, self.last)
            .or_else(|| self.first_free(self.first, self.cursor.saturating_sub(1)))?;
        self.used.insert(found);
        self.resume_after(found);
        Some(found)
    }

    /// Takes one given number. Like libnetwork's `Set`, this does not move the cursor: asking
    /// for a particular number says nothing about where the sequence has got to.
    pub(crate) fn take(&mut self, n: u64) -> Result<(), TakeError> {
        if !self.in_range(n) {
            return Err(TakeError::OutOfRange);
        }
        if !self.used.insert(n) {
            return Err(TakeError::InUse);
        }
        Ok(())
    }

    /// Frees `n`; false when it was not taken.
    pub(crate) fn give_back(&mut self, n: u64) -> bool {
        self.used.remove(&n)
    }

    /// The next search starts after `n` (wrapping to the start past the end). A rebuilt set
    /// resumes after the highest number recorded, so what was freed just before the rebuild
    /// is not handed out first.
    pub(crate) fn resume_after(&mut self, n: u64) {
        self.cursor = if n >= self.last || n < self.first {
            self.first
        } else {
            n + 1
        };
    }

    pub(crate) fn contains(&self, n: u64) -> bool {
        self.used.contains(&n)
    }

    pub(crate) fn in_range(&self, n: u64) -> bool {
        (self.first..=self.last).contains(&n)
    }

    pub(crate) fn used(&self) -> impl DoubleEndedIterator<Item = u64> + '_ {
        self.used.iter().copied()
    }

    pub(crate) fn used_count(&self) -> u64 {
        self.used.len() as u64
    }

    pub(crate) fn free_count(&self) -> u64 {
        self.last - self.first + 1 - self.used_count()
    }

    /// The lowest free number in `from..=to`.
    fn first_free(&self, from: u64, to: u64) -> Option<u64> {
        if from > to {
            return None;
        }
        let mut candidate = from;
        for &n in self.used.range(from..=to) {
            if n != candidate {
                break;
            }
            candidate = n + 1;
        }
        (candidate <= to).then_some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_in_order_then_wraps_past_freed_numbers() {
        let mut set = SerialSet::new(10, 14);
        let taken: Vec<_> = (0..5).map(|_| set.take_next().unwrap()).collect();
        assert_eq!(taken, [10, 11, 12, 13, 14]);
        assert_eq!(set.take_next(), None);
        assert_eq!(set.free_count(), 0);

        assert!(set.give_back(11));
        assert!(set.give_back(13));
        // The cursor is past the end: the search wraps and finds the lowest freed number.
        assert_eq!(set.take_next(), Some(11));
        // The next search starts after 11, so 13 comes before anything lower.
        assert!(set.give_back(10));
        assert_eq!(set.take_next(), Some(13));
        assert_eq!(set.take_next(), Some(10));
        assert_eq!(set.take_next(), None);
    }

    #[test]
    fn a_freed_number_is_not_reused_while_others_are_free() {
        let mut set = SerialSet::new(1, 100);
        let a = set.take_next().unwrap();
        assert!(set.give_back(a));
        let next: Vec<_> = (0..99).map(|_| set.take_next().unwrap()).collect();
        assert!(
            !next.contains(&a),
            "{a} reused before the range was used up"
        );
        assert_eq!(set.take_next(), Some(a));
    }

    #[test]
    fn taking_a_given_number() {
        let mut set = SerialSet::new(1, 10);
        assert_eq!(set.take(5), Ok(()));
        assert_eq!(set.take(5), Err(TakeError::InUse));
        assert_eq!(set.take(0), Err(TakeError::OutOfRange));
        assert_eq!(set.take(11), Err(TakeError::OutOfRange));
        // A given number does not move the cursor, and is skipped.
        let taken: Vec<_> = (0..5).map(|_| set.take_next().unwrap()).collect();
        assert_eq!(taken, [1, 2, 3, 4, 6]);
        assert!(!set.give_back(10));
    }

    #[test]
    fn resume_after_wraps_at_the_end() {
        let mut set = SerialSet::new(1, 3);
        set.resume_after(3);
        assert_eq!(set.take_next(), Some(1));
        set.resume_after(1);
        assert_eq!(set.take_next(), Some(2));
        set.resume_after(99);
        assert_eq!(set.take_next(), Some(3));
    }
}
