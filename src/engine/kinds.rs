//! Every kind of reference the store holds, in one list (`holders.rs`), and the recovery and
//! salvage that read them: the one place a new kind of reference is added.

use crate::engine::channel::Channels;
use crate::engine::heap::{or_give_back, Guard, Heap};
use crate::engine::holders::{HoldTables, Kind};
use crate::engine::links::Links;
use crate::engine::reports::{RecoveryReport, SalvageReport};
use crate::engine::roots::Roots;
use crate::engine::shared::SharedAreas;
use crate::error::{Error, Result};
use crate::CheckReport;

/// The kinds of reference, in the order recovery reads them: named roots, channels (their
/// entries and queued messages), the hold tables of the living, links; and the shared areas,
/// which hold no reference but whose locks the dead may hold.
pub(crate) static KINDS: [&dyn Kind; 5] = [&Roots, &Channels, &HoldTables, &Links, &SharedAreas];

/// Recovery over every kind of reference, under the lock `g`: the function every heap is made
/// with (`heap::Recovery`). `reclaim_own`: this process's slot counts as a dead process's.
pub(crate) fn recover_locked(heap: &Heap, g: &Guard<'_>, reclaim_own: bool) -> Result<RecoveryReport> {
    crate::engine::recovery::recover_locked(heap, g, reclaim_own, &KINDS)
}

/// The heap, its free structures and every kind of reference (roots, channels, hold tables,
/// links), checked; with the blocks only cycles of links keep.
pub(crate) fn full_check(heap: &Heap) -> Result<CheckReport> {
    let mut report = heap.check()?;
    let _g = heap.lock()?;
    let mut named: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for kind in KINDS {
        report.problems.extend(kind.check(heap)?);
        report.cycle_blocks.extend(kind.leaks(heap)?);
        for target in kind.named(heap)? {
            *named.entry(target).or_default() += 1;
        }
    }
    // What roots, tables, hold tables and links name is published before it is named
    // (recovery refuses an unpublished one as damage), each reported once.
    let mut unpublished: Vec<u64> = named
        .keys()
        .copied()
        .filter(|&t| heap.names_live(t) && !crate::engine::core::header::rc::published(heap.rc(t)))
        .filter(|&t| !report.problems.iter().any(|p| p.offset == t))
        .collect();
    unpublished.sort_unstable();
    for offset in unpublished {
        let what = "a root, channel or hold names an unpublished block";
        report.problems.push(crate::Problem { what, offset });
    }
    // Fewer holds than references: the block would be freed while something names it.
    let mut short: Vec<u64> = named
        .into_iter()
        .filter(|&(target, n)| {
            heap.names_live(target) && crate::engine::core::header::rc::other(heap.rc(target)) < n
        })
        .map(|(target, _)| target)
        .collect();
    short.sort_unstable();
    for offset in short {
        report
            .problems
            .push(crate::Problem { what: "block has fewer holds than references naming it", offset });
    }
    report.problems.extend(crate::engine::heap::cache::exchange::check(heap));
    report.dead_processes = heap.dead_slots(false)?.len() as u64;
    Ok(report)
}

impl Heap {
    /// Runs recovery now, freeing also what only cycles of links keep (`MappedManager::
    /// collect_cycles`).
    pub(crate) fn collect_cycles(&self) -> Result<RecoveryReport> {
        let g = self.lock()?;
        crate::engine::recovery::collect_cycles_locked(self, &g, &KINDS)
    }

    /// Runs salvage under the lock taken as it is found: see `MappedManager::salvage`.
    pub(crate) fn salvage(&self) -> Result<SalvageReport> {
        let (guard, was, _) = self.lock_as_found()?;
        or_give_back(&guard, was, crate::engine::recovery::salvage_locked(self, &guard, &KINDS, true))
    }

    /// The recovery of the first open in a boot other than the one the store records: unless the store records `boot` by the time this process holds
    /// the lock (another process of this boot did this first: `None`), the strict recovery
    /// runs, and if it refuses the store as damaged, which is what the unflushed pages a power
    /// loss tore look like, salvage runs instead, without requiring the store to itself; then
    /// `boot` is recorded, under the lock. `reclaimed`: this process's slot was a dead one's.
    /// On an error the store is as it was.
    pub(crate) fn open_in_new_boot(&self, boot: u64, reclaimed: bool) -> Result<Option<NewBoot>> {
        let (guard, was, own) = self.lock_as_found()?;
        if self.region.load(crate::format::SB_BOOT_ID)? == boot {
            return Ok(None);
        }
        let done = match self.run_recovery(&guard, reclaimed || own) {
            Ok(report) => Ok((report, None)),
            Err(Error::Corrupt { .. }) => {
                crate::engine::recovery::salvage_locked(self, &guard, &KINDS, false)
                    .map(|salvage| (salvage.recovery, Some(salvage)))
            }
            Err(e) => Err(e),
        };
        let done = done.and_then(|opened| {
            self.region.store(crate::format::SB_BOOT_ID, boot)?;
            Ok(Some(opened))
        });
        or_give_back(&guard, was, done)
    }
}

/// What the first open in a new boot ran: the recovery's report, and salvage's if the strict
/// recovery refused the store.
pub(crate) type NewBoot = (RecoveryReport, Option<SalvageReport>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::holders::{Holder, Reading, Reference, Session};
    use crate::engine::tables::ROOT_NAMES;
    use crate::{MappedManager, MemoryManager, Options};

    /// A kind of reference only this test knows: one reference, to `target`.
    struct Stray {
        target: u64,
    }

    impl Kind for Stray {
        fn open(&self, _heap: &Heap, _dead: &[u64], kind: usize) -> Result<Box<dyn Session>> {
            Ok(Box::new(StraySession { kind, target: self.target }))
        }

        fn check(&self, _heap: &Heap) -> Result<Vec<crate::Problem>> {
            Ok(Vec::new())
        }

        fn bookkeeping(&self, _heap: &Heap, _out: &mut Vec<u64>) -> Result<()> {
            Ok(())
        }
    }

    struct StraySession {
        kind: usize,
        target: u64,
    }

    impl Session for StraySession {
        fn read(&mut self, _heap: &Heap, _plan: &mut dyn Reading, out: &mut Vec<Reference>) -> Result<()> {
            out.push(Reference {
                holder: Holder { kind: self.kind, entry: 0, message: None },
                target: self.target,
            });
            Ok(())
        }

        fn what(&self, _holder: &Holder) -> &'static str {
            "stray"
        }

        fn names_nothing(&self, _holder: &Holder) -> &'static str {
            "stray names no live block"
        }

        fn name(&self, _heap: &Heap, _holder: &Holder) -> Result<String> {
            Ok(String::new())
        }

        fn repair(&self, _heap: &Heap, _dropped: &[Reference], _renamed: &[(Holder, String)]) -> Result<()> {
            Ok(())
        }
    }

    /// A block held by a kind of reference that recovery is given keeps its hold through a
    /// recovery; the same recovery without that kind frees it. What a new kind of reference
    /// needs is its `Kind`, in the list: recovery names none of them.
    #[test]
    fn recovery_counts_the_references_of_every_kind_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let m = MappedManager::create(dir.path().join("s.mmheap"), &Options::default()).unwrap();
        let block = m.allocate(1000).unwrap();
        m.set_root("r", &block).unwrap();
        let handle = block.handle();
        drop(block);
        let heap: &Heap = m.heap();
        let g = heap.lock().unwrap();
        // The root's hold stays, its entry goes: only the stray kind knows of the reference now.
        let roots = ROOT_NAMES.directory(heap).unwrap();
        let entry = roots.entries(heap).unwrap().remove(0);
        let target = entry.target;
        roots.set_target(heap, entry.index, 0).unwrap();
        let stray = Stray { target };
        let with: [&dyn Kind; 6] = [&Roots, &Channels, &HoldTables, &Links, &SharedAreas, &stray];
        let report = crate::engine::recovery::recover_locked(heap, &g, false, &with).unwrap();
        assert_eq!(report.blocks_freed, 0, "a block the stray kind holds stays");
        assert_eq!(crate::engine::core::header::rc::other(heap.rc(target)), 1, "its one hold, counted again");
        let report = crate::engine::recovery::recover_locked(heap, &g, false, &KINDS).unwrap();
        assert_eq!(report.blocks_freed, 1, "without the kind, nothing holds it");
        drop(g);
        assert!(m.block_from_handle(handle).is_err(), "freed");
        assert!(m.check().unwrap().is_sound());
    }
}
