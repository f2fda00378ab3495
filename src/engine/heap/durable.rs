//! Durability: the heap's bytes made durable in its store file (nothing for process memory).
//! `flush` writes everything; `flush_block` one block with what it lives by; `persist` a range,
//! the barrier between two steps whose order must survive a power loss (ARCHITECTURE.md,
//! "Durability and power loss").

use crate::engine::core::span::is_slot;
use crate::error::Result;
use crate::format::{payload_of, HEADER_SIZE};

use super::Heap;

impl Heap {
    /// Makes everything written so far durable.
    pub(crate) fn flush(&self) -> Result<()> {
        self.backing.flush()
    }

    /// Writes the block (or slot) `off` of `len` bytes to the file: its header, its bytes and
    /// what follows them (a link table, a shared area).
    pub(crate) fn flush_block(&self, off: u64, len: u64) -> Result<()> {
        if !is_slot(off) {
            return self.backing.persist(off, self.core().block_at(off)?.size());
        }
        // A slot lives by its span's records as much as by its bytes: its reference word (in
        // the span's header) and its page record (its generation and publication): the span
        // block and its page block, whole.
        let core = self.core();
        let slot = core.slot_at(self.key(), off)?;
        let span = slot.span - HEADER_SIZE;
        self.backing.persist(span, core.block_at(span)?.size())?;
        if let Some(page) = core.page_of(slot.span)? {
            let header = page - HEADER_SIZE; // `page_of` gives the page's payload
            self.backing.persist(header, core.block_at(header)?.size())?;
        }
        let payload = payload_of(off);
        self.backing.persist(payload, len)
    }

    /// Makes bytes `offset..offset + len` durable now (a file-backed heap; nothing otherwise).
    pub(crate) fn persist(&self, offset: u64, len: u64) -> Result<()> {
        self.backing.persist(offset, len)
    }
}
