//! Links: counted references kept in a block's own bytes (ARCHITECTURE.md, "Links").
//!
//! A *linked* block (tag bit `LINKED`, set once when the block is made) ends its length with a
//! link table, after the bytes its users see (`docs/format.md`, "Link tables"):
//!
//! ```text
//! | user bytes | pad 0..8 | cell 0 | ... | cell n-1 | chain | footer |
//! ```
//!
//! Every non-zero cell names a block (header offset or slot id) and is one of that block's
//! other holds, as a root's entry is. Cells change only under the store lock: a new cell's
//! hold is counted before the cell names it, and an old cell's is released after the cell
//! stopped naming it, so a crash leaves a count one too high at worst, which recovery's recount
//! (from every kind of reference, links among them: `engine/links.rs`) sets right.
//!
//! Freeing a linked block releases what its cells name, and a block that this leaves with
//! nobody holding it is freed in turn: iteratively, the linked blocks whose links wait to be
//! released being chained through their chain words (nobody else holds them any more), so that
//! a list of any length is freed without recursion and without allocating (the heap may be the
//! process's allocator). All of it in one hold of the store lock.

use super::*;

/// Where a linked block's table is, checked against the block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkTable {
    /// Offset of cell 0.
    pub(crate) cells: u64,
    /// Number of cells.
    pub(crate) count: u64,
    /// Offset of the chain word.
    chain: u64,
    /// The length the block's users see.
    pub(crate) user_len: u64,
}

impl LinkTable {
    /// The offset of cell `i` (`i < count`).
    pub(crate) fn cell(&self, i: u64) -> u64 {
        self.cells + i * LINK_CELL
    }
}

/// The length (as the tag records it) of a linked block with `links` cells after `user_len`
/// bytes, and the padding between them: the cells are 8-byte aligned.
fn linked_len(links: u64, user_len: u64) -> Option<(u64, u64)> {
    let pad = (LINK_CELL - user_len % LINK_CELL) % LINK_CELL;
    let len =
        user_len.checked_add(pad)?.checked_add(links.checked_mul(LINK_CELL)?)?.checked_add(LINK_CHAIN)?;
    Some((len, pad))
}

impl Heap {
    /// The link table of the used block at `off` whose tag is `t`, checked against the block:
    /// a footer that does not fit it is damage.
    pub(crate) fn link_table(&self, off: u64, t: Tag) -> Result<LinkTable> {
        let bad = Error::corrupt("link table does not fit its block", off);
        let len = t.len();
        if !t.is_linked() || len < LINK_CHAIN {
            return Err(bad);
        }
        let end = payload_of(off) + len;
        let footer = self.region.load(end - LINK_FOOTER)?;
        let (count, pad) = (footer & 0xffff_ffff, footer >> 32);
        let Some((table_len, want_pad)) = linked_len(count, 0) else { return Err(bad) };
        if count == 0 || count > LINK_MAX || pad >= LINK_CELL || table_len + pad > len {
            return Err(bad);
        }
        let user_len = len - table_len - pad;
        if (user_len + pad) % LINK_CELL != 0 || want_pad != 0 {
            return Err(bad);
        }
        Ok(LinkTable {
            cells: end - LINK_CHAIN - count * LINK_CELL,
            count,
            chain: end - LINK_CHAIN,
            user_len,
        })
    }

    /// The link table of a block a caller holds, or `None` if it has none (a slot, or a block
    /// made without links).
    pub(crate) fn links_of(&self, off: u64) -> Result<Option<LinkTable>> {
        if is_slot(off) {
            return Ok(None);
        }
        let t = self.core().block_at(off)?;
        match t.is_linked() {
            true => self.link_table(off, t).map(Some),
            false => Ok(None),
        }
    }

    /// The offset of cell `index` of the block at `off`: [`Error::NoSuchLink`] if it has none.
    pub(crate) fn link_cell(&self, off: u64, index: u64) -> Result<u64> {
        let table = self.links_of(off)?;
        let count = table.map_or(0, |t| t.count);
        match table.filter(|_| index < count) {
            Some(t) => Ok(t.cell(index)),
            None => Err(Error::NoSuchLink { index, links: count }),
        }
    }

    /// Makes a linked block: `links` cells, all empty, after `user_len` bytes for its users;
    /// owned by this process, one owner reference, never lent (its release must see the table).
    pub(crate) fn allocate_linked(&self, links: u64, user_len: u64) -> Result<Obtained> {
        if links == 0 || links > LINK_MAX {
            return Err(Error::LinkLayout("a linked block has 1 to 2^24 links"));
        }
        let max = self.max_size()?;
        let (len, pad) = linked_len(links, user_len).ok_or_else(|| Error::out_of_space(user_len, max))?;
        let g = self.lock()?;
        let off = self.allocate_locked(&g, len, 4)?;
        let made = self.make_linked(&g, off, len, links, pad);
        if let Err(e) = made {
            let _ = self.free_owned_locked(&g, off);
            return Err(e);
        }
        pause("linked-made");
        Ok(Obtained { offset: off, len: user_len, kind: RefKind::Owner, hold_index: None, new_family: true })
    }

    /// Writes the empty table of a block just carved (`len` long as the tag will say, `links`
    /// cells after `pad` bytes of padding) and then sets its `LINKED` bit: a tag with the bit
    /// always has its table.
    fn make_linked(&self, g: &Guard<'_>, off: u64, len: u64, links: u64, pad: u64) -> Result<()> {
        self.payload(off, len)?;
        // The exact length into the tag (its slack), a generation: the length users see is
        // not the block's, so a later settling leaves the slack alone (`settle_locked`).
        self.settle_locked(g, off, len)?;
        let end = payload_of(off) + len;
        for cell in (end - LINK_CHAIN - links * LINK_CELL..end - LINK_CHAIN).step_by(LINK_CELL as usize) {
            self.region.store(cell, 0)?;
        }
        self.region.store(end - LINK_CHAIN, 0)?;
        self.region.store(end - LINK_FOOTER, links | pad << 32)?;
        // An atomic read-modify-write, as every change to a used block's tag is.
        self.region
            .u64_at(off + HDR_TAG)?
            .fetch_or(crate::engine::core::header::FLAG_LINKED, Ordering::Release);
        Ok(())
    }

    /// Whether `target` (read from a cell) names a block or slot that a link may count: in
    /// use, published, with an other hold, and (a block) with the check word of its
    /// generation, so that a damaged cell never releases a hold on bytes that are no block.
    fn link_target_ok(&self, target: u64) -> bool {
        if !self.names_live(target) {
            return false;
        }
        let w = self.rc(target);
        if !rc::published(w) || rc::other(w) == 0 {
            return false;
        }
        is_slot(target) || {
            let gen = self.region.load(target + HDR_GEN).unwrap_or(0);
            self.region.load(target + HDR_CHECK).is_ok_and(|c| c == check_word(self.key(), target, gen))
        }
    }

    /// Sets cell `index` of the linked block `off` to `child` (a block the caller holds and has
    /// settled, or `None` to clear it), releasing what the cell named before. Under the lock.
    pub(crate) fn set_link_locked(
        &self,
        g: &Guard<'_>,
        off: u64,
        index: u64,
        child: Option<u64>,
    ) -> Result<()> {
        let cell = self.link_cell(off, index)?;
        let old = self.cell_target(cell)?.unwrap_or(0);
        if let Some(child) = child {
            self.add_hold_locked(child)?;
            pause("link-counted");
        }
        self.region.store(cell, child.unwrap_or(0))?;
        pause("link-written");
        if old != 0 {
            self.release_hold_locked(g, old)?;
        }
        Ok(())
    }

    /// What the cell at `cell` names, checked ([`Heap::link_target_ok`]); `None` if it is empty.
    fn cell_target(&self, cell: u64) -> Result<Option<u64>> {
        match self.region.load(cell)? {
            0 => Ok(None),
            target if self.link_target_ok(target) => Ok(Some(target)),
            _ => Err(Error::corrupt("link names no held block", cell)),
        }
    }

    /// A new reference to what cell `index` of `off` names, if anything. Under the lock.
    pub(crate) fn link_locked(&self, g: &Guard<'_>, off: u64, index: u64) -> Result<Option<Obtained>> {
        let cell = self.link_cell(off, index)?;
        let Some(target) = self.cell_target(cell)? else { return Ok(None) };
        let got = self.acquire_locked(g, target, None);
        got.unwrap_or(Err(Error::corrupt("link names no held block", cell))).map(Some)
    }

    /// Clears cell `index` of `off` and turns its hold into the caller's reference. Under the
    /// lock.
    pub(crate) fn take_link_locked(&self, g: &Guard<'_>, off: u64, index: u64) -> Result<Option<Obtained>> {
        let cell = self.link_cell(off, index)?;
        let Some(target) = self.cell_target(cell)? else { return Ok(None) };
        self.region.store(cell, 0)?;
        pause("link-taken");
        self.take_hold_locked(g, target).map(Some)
    }

    /// Frees the linked block `off`, which nobody holds any more, and releases what it links,
    /// freeing in turn what that leaves unheld (see the module). Under the lock. A cell or a
    /// table that damage changed is left as it is (what it names keeps a hold: leaked, never
    /// freed while held); the first such error is returned once everything else is done.
    pub(crate) fn free_linked_locked(&self, g: &Guard<'_>, off: u64) -> Result<()> {
        let mut damage = Ok(());
        let table = self.links_of(off)?.ok_or(Error::corrupt("link table does not fit its block", off))?;
        self.region.store(table.chain, 0)?;
        let mut next = Some((off, table));
        while let Some((block, table)) = next.take() {
            let after = self.region.load(table.chain)?;
            self.region.store(table.chain, 0)?;
            let mut top = after;
            for i in 0..table.count {
                match self.release_cell(g, table.cell(i), top) {
                    Ok(Some(pushed)) => top = pushed,
                    Ok(None) => {}
                    Err(e) => damage = damage.and(Err(e)),
                }
            }
            self.free_unlinked_locked(g, block)?;
            if top != 0 {
                let t = self.core().block_at(top)?;
                next = Some((top, self.link_table(top, t)?));
            }
        }
        damage
    }

    /// Clears one cell of a block being freed and releases its hold: returns the target if it
    /// is a linked block left unheld, chained in front of `top` (its links wait their turn); an
    /// unheld block without links is freed at once.
    fn release_cell(&self, g: &Guard<'_>, cell: u64, top: u64) -> Result<Option<u64>> {
        let Some(target) = self.cell_target(cell)? else { return Ok(None) };
        self.region.store(cell, 0)?;
        pause("link-releasing");
        let unheld = self.drop_hold_locked(target)?;
        pause("link-released");
        if !unheld {
            return Ok(None);
        }
        match self.links_of(target)? {
            Some(t) => {
                self.region.store(t.chain, top)?;
                Ok(Some(target))
            }
            None => self.free_unlinked_locked(g, target).map(|()| None),
        }
    }
}
