//! Distinct outer uids for jailed children ("slots", as `isolate` has them).

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// The first uid handed out to jailed children.
pub const UID_SLOT_BASE: u32 = 1_200_000;
/// How many slot uids there are.
pub const UID_SLOT_COUNT: u32 = 65_536;

fn in_use() -> &'static Mutex<(HashSet<u32>, u32)> {
    static SLOTS: OnceLock<Mutex<(HashSet<u32>, u32)>> = OnceLock::new();
    // Start where this host process's id points, so two hosts on one machine
    // rarely hand out the same uids (sharing one only merges their
    // `RLIMIT_NPROC` counts; each child still has namespaces of its own).
    SLOTS.get_or_init(|| {
        Mutex::new((
            HashSet::new(),
            std::process::id().wrapping_mul(97) % UID_SLOT_COUNT,
        ))
    })
}

/// A uid reserved for one jailed child (a sandbox's worker) while held.
///
/// `RLIMIT_NPROC` counts processes per uid, so each worker gets its own:
/// threads of one sandbox never eat into another's allowance.
#[derive(Debug)]
pub struct UidSlot {
    uid: u32,
}

impl UidSlot {
    /// Reserves a free slot; `None` when all are taken by this process.
    pub fn allocate() -> Option<Self> {
        let mut guard = in_use().lock().unwrap_or_else(|e| e.into_inner());
        let (used, next) = &mut *guard;
        for _ in 0..UID_SLOT_COUNT {
            let slot = *next;
            *next = (*next + 1) % UID_SLOT_COUNT;
            if used.insert(slot) {
                return Some(Self {
                    uid: UID_SLOT_BASE + slot,
                });
            }
        }
        None
    }

    /// The outer uid (and gid) of this slot.
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut guard = in_use().lock().unwrap_or_else(|e| e.into_inner());
        guard.0.remove(&(self.uid - UID_SLOT_BASE));
    }
}
