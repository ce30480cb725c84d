//! VXLAN network identifiers for overlay networks, one per network.
//!
//! The range is libnetwork's overlay driver's (`ovmanager`): from 4096, above the 802.1Q VLAN
//! IDs 0–4095 (Windows hosts cannot use VNIs that overlap them, and keeping them apart avoids
//! confusion with VLANs on the underlay), up to 2^24 − 1, the largest VNI RFC 7348 allows. Like
//! the driver, VNIs are handed out serially, so a VNI freed by a removed network is not given
//! to the next network at once while a node may still hold devices or FDB entries for it.

use super::serial::{SerialSet, TakeError};

/// The first VNI handed out.
pub const VNI_FIRST: u32 = 4096;
/// The largest VNI (24 bits).
pub const VNI_LAST: u32 = (1 << 24) - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VniError {
    #[error(
        "no VXLAN ID left: all {count} VNIs from {VNI_FIRST} to {VNI_LAST} are in use; remove \
         unused overlay networks",
        count = VNI_LAST - VNI_FIRST + 1
    )]
    Exhausted,
    #[error("VXLAN ID {0} is outside Shoal's range {VNI_FIRST}..={VNI_LAST}")]
    OutOfRange(u32),
    #[error("VXLAN ID {0} is already in use by another network")]
    InUse(u32),
    #[error("VXLAN ID {0} is not in use, so it cannot be released")]
    NotInUse(u32),
}

/// The VNIs in use across the cluster's overlay networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VniAllocator {
    set: SerialSet,
}

impl Default for VniAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl VniAllocator {
    pub fn new() -> Self {
        Self::over(VNI_FIRST, VNI_LAST)
    }

    /// Over a part of the range only, so that tests can use it all up.
    fn over(first: u32, last: u32) -> Self {
        VniAllocator {
            set: SerialSet::new(first.into(), last.into()),
        }
    }

    /// The allocator a new leader rebuilds from the VNIs its store records. A VNI recorded
    /// twice or outside the range is an inconsistent store, reported rather than papered
    /// over. Allocation resumes after the highest recorded VNI.
    pub fn from_allocated(vnis: impl IntoIterator<Item = u32>) -> Result<Self, VniError> {
        let mut allocator = Self::new();
        for vni in vnis {
            allocator.reserve(vni)?;
        }
        let highest = allocator.in_use().last();
        if let Some(highest) = highest {
            allocator.resume_after(highest);
        }
        Ok(allocator)
    }

    /// Continue the sequence after `vni`, for a caller that records the last VNI handed out.
    pub fn resume_after(&mut self, vni: u32) {
        self.set.resume_after(vni.into());
    }

    /// The next free VNI after the last one handed out (wrapping around).
    pub fn allocate(&mut self) -> Result<u32, VniError> {
        let vni = self.set.take_next().ok_or(VniError::Exhausted)?;
        Ok(to_vni(vni))
    }

    /// Marks one VNI as used.
    pub fn reserve(&mut self, vni: u32) -> Result<(), VniError> {
        self.set.take(vni.into()).map_err(|e| match e {
            TakeError::OutOfRange => VniError::OutOfRange(vni),
            TakeError::InUse => VniError::InUse(vni),
        })
    }

    pub fn release(&mut self, vni: u32) -> Result<(), VniError> {
        if self.set.give_back(vni.into()) {
            Ok(())
        } else {
            Err(VniError::NotInUse(vni))
        }
    }

    pub fn is_in_use(&self, vni: u32) -> bool {
        self.set.contains(vni.into())
    }

    /// The VNIs in use, lowest first.
    pub fn in_use(&self) -> impl Iterator<Item = u32> + '_ {
        self.set.used().map(to_vni)
    }
}

/// Every number in the set came from the u32 range `VNI_FIRST..=VNI_LAST`.
fn to_vni(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(VNI_LAST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_4096_and_counts_up() {
        let mut vnis = VniAllocator::new();
        assert_eq!(vnis.allocate(), Ok(4096));
        assert_eq!(vnis.allocate(), Ok(4097));
        assert!(vnis.is_in_use(4096));
        assert!(!vnis.is_in_use(4098));
        assert_eq!(vnis.in_use().collect::<Vec<_>>(), [4096, 4097]);
    }

    #[test]
    fn a_released_vni_is_not_handed_out_next() {
        let mut vnis = VniAllocator::new();
        let first = vnis.allocate().unwrap();
        vnis.release(first).unwrap();
        assert!(!vnis.is_in_use(first));
        assert_eq!(vnis.allocate(), Ok(first + 1));
        assert_eq!(vnis.release(first), Err(VniError::NotInUse(first)));
    }

    #[test]
    fn reserve_refuses_out_of_range_and_taken_vnis() {
        let mut vnis = VniAllocator::new();
        assert_eq!(vnis.reserve(4095), Err(VniError::OutOfRange(4095)));
        assert_eq!(vnis.reserve(0), Err(VniError::OutOfRange(0)));
        assert_eq!(vnis.reserve(1 << 24), Err(VniError::OutOfRange(1 << 24)));
        assert_eq!(vnis.reserve(VNI_LAST), Ok(()));
        assert_eq!(vnis.reserve(5000), Ok(()));
        assert_eq!(vnis.reserve(5000), Err(VniError::InUse(5000)));
    }

    #[test]
    fn wraps_around_after_the_last_vni() {
        let mut vnis = VniAllocator::from_allocated([VNI_LAST - 1]).unwrap();
        assert_eq!(vnis.allocate(), Ok(VNI_LAST));
        assert_eq!(vnis.allocate(), Ok(VNI_FIRST));
    }

    #[test]
    fn exhaustion_is_reported() {
        // Filling all 16.7 million VNIs would be slow in a unit test: the same code over the
        // last 100 of them.
        let mut vnis = VniAllocator::over(VNI_LAST - 99, VNI_LAST);
        let all: Vec<u32> = std::iter::from_fn(|| vnis.allocate().ok()).collect();
        assert_eq!(all, (VNI_LAST - 99..=VNI_LAST).collect::<Vec<_>>());
        let err = vnis.allocate().unwrap_err();
        assert_eq!(err, VniError::Exhausted);
        assert!(
            err.to_string()
                .contains("16773120 VNIs from 4096 to 16777215"),
            "{err}"
        );
        vnis.release(VNI_LAST - 50).unwrap();
        assert_eq!(vnis.allocate(), Ok(VNI_LAST - 50));
    }

    #[test]
    fn a_rebuilt_allocator_never_returns_a_recorded_vni() {
        let mut before = VniAllocator::new();
        let mut given: Vec<u32> = (0..50).map(|_| before.allocate().unwrap()).collect();
        for vni in given.iter().step_by(3) {
            before.release(*vni).unwrap();
        }
        let recorded: Vec<u32> = before.in_use().collect();
        let mut after = VniAllocator::from_allocated(recorded.clone()).unwrap();
        assert_eq!(after.in_use().collect::<Vec<_>>(), recorded);
        for _ in 0..100 {
            let vni = after.allocate().unwrap();
            assert!(!recorded.contains(&vni), "{vni} handed out twice");
            given.push(vni);
        }
        // Resumes after the highest recorded VNI rather than refilling freed low ones.
        let mut again = VniAllocator::from_allocated(recorded.clone()).unwrap();
        assert_eq!(again.allocate(), Ok(recorded.last().unwrap() + 1));
        // Or exactly where the old one stopped, when the caller recorded that.
        let mut exact = VniAllocator::from_allocated(recorded.clone()).unwrap();
        exact.resume_after(4100);
        assert_eq!(exact.allocate(), Ok(4102));
    }

    #[test]
    fn rebuilding_refuses_an_inconsistent_record() {
        assert_eq!(
            VniAllocator::from_allocated([4096, 4096]),
            Err(VniError::InUse(4096))
        );
        assert_eq!(
            VniAllocator::from_allocated([42]),
            Err(VniError::OutOfRange(42))
        );
    }
}
