//! How full the spans are: what `mmheap map` shades a span by.
//!
//! A span is one 64 KiB block holding small blocks (slots) of one size; a walk of the heap sees
//! it as one used block. Its occupancy is the number of its slots whose reference word is not
//! zero, out of the slots it has room for: slots in use, and slots a process keeps in a thread
//! cache for its next allocations (its own to hand out; nobody else's).

use super::Snapshot;
use crate::engine::core::span::layout;
use crate::error::Error;
use crate::format::{HEADER_SIZE, SPAN_CLASS};

/// One span of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SpanInfo {
    /// Header offset of the span's block.
    pub offset: u64,
    /// Size of the span's block in bytes, header included.
    pub size: u64,
    /// Size of its slots in bytes (16, 32, 48 or 64).
    pub slot_size: u64,
    /// Slots the span has room for.
    pub slots: u64,
    /// Slots whose reference word is not zero: in use, or kept in a thread cache.
    pub used: u64,
}

impl Snapshot {
    /// Every span in address order with how many of its slots are in use, up to the first
    /// block that cannot be parsed (reported as the error beside the list, as
    /// [`Snapshot::blocks`] does).
    pub fn spans(&self) -> (Vec<SpanInfo>, Option<Error>) {
        let mut out = Vec::new();
        let core = self.heap.core();
        let mut ticker = crate::progress::Ticker::new("walking", core.capacity().unwrap_or(0));
        let walked = core.walk(|b| {
            ticker.tick(b.offset);
            if b.tag.is_free() || !b.tag.is_span() {
                return Ok(());
            }
            let payload = b.offset + HEADER_SIZE;
            // Checks the span's header (its slot size) before anything is counted.
            let handed_out = core.slots_handed_out(payload)?;
            let slot_size = self.load(payload + SPAN_CLASS);
            let used = handed_out.iter().filter(|s| self.load(s.rc_offset()) != 0).count() as u64;
            out.push(SpanInfo {
                offset: b.offset,
                size: b.tag.size(),
                slot_size,
                slots: layout(slot_size).0,
                used,
            });
            Ok(())
        });
        ticker.finish();
        (out, walked.err())
    }
}

#[cfg(test)]
mod tests {
    use crate::inspect::Snapshot;
    use crate::{MappedManager, MemoryManager, Options};

    #[test]
    fn counts_slots_in_use_per_span() -> crate::Result<()> {
        let store = MappedManager::temporary(&Options::new())?;
        let small: Vec<_> = (0..100).map(|_| store.allocate(40)).collect::<crate::Result<_>>()?;
        let _big = store.allocate(5000)?;
        // Freed slots may stay in this thread's cache: counted, as they are not free for others.
        let kept: Vec<_> = small.into_iter().step_by(4).collect();
        let snap = Snapshot::take(store.path())?;
        let (spans, err) = snap.spans();
        assert!(err.is_none());
        assert_eq!(spans.len(), 1, "{spans:?}");
        let s = spans[0];
        assert_eq!((s.slot_size, s.size), (48, 65536));
        assert!((kept.len() as u64..=100).contains(&s.used), "{s:?}");
        assert!(s.slots > 1000 && s.slots < 1500, "{s:?}");
        Ok(())
    }
}
