//! The workload the power-loss images are cut from: allocations of 16 B .. 64 KiB with known
//! bytes, resizes, named roots set, replaced and removed, blocks held and dropped, a container
//! of linked values, and flushes every few steps, with a model of the roots it made.

use super::*;

pub(super) struct Workload {
    pub(super) rng: SmallRng,
    pub(super) store: MappedManager,
    /// Current roots.
    pub(super) model: Model,
    pub(super) next_id: u64,
    pub(super) held: Vec<MemoryBlock>,
    pub(super) names: Vec<String>,
    /// The last step flushed the container alone (`SharedBytesMap::flush`).
    pub(super) map_flushed: bool,
}

impl Workload {
    pub(super) fn size(&mut self) -> usize {
        // Log-uniform over 16 B .. 64 KiB.
        let lg = self.rng.gen_range(4.0..=16.0f64);
        (2f64.powf(lg) as usize).clamp(16, 65536)
    }

    pub(super) fn make_value(&mut self) -> (MemoryBlock, Value) {
        let id = self.next_id;
        self.next_id += 1;
        let len0 = self.size();
        if let Some((child, child_len)) = child_of(id) {
            // A linked value (never resized): its child written, then linked.
            let mut b = self.store.allocate_linked(1, len0).expect("allocate linked");
            b.as_mut_slice().expect("writable").copy_from_slice(&content(id, len0));
            let mut c = self.store.allocate(child_len).expect("allocate child");
            c.as_mut_slice().expect("writable").copy_from_slice(&content(child, child_len));
            b.set_link(0, Some(&c)).expect("set_link");
            return (b, (id, len0));
        }
        let mut b = self.store.allocate(len0).expect("allocate");
        b.as_mut_slice().expect("writable").copy_from_slice(&content(id, len0));
        let mut len = len0;
        if self.rng.gen_ratio(1, 6) {
            let len1 = self.size();
            self.store.resize(&mut b, len1).expect("resize");
            let keep = len0.min(len1);
            assert_eq!(&b.as_slice()[..keep], &content(id, len0)[..keep], "resize kept the bytes");
            len = len1;
        }
        b.as_mut_slice().expect("writable").copy_from_slice(&content(id, len));
        (b, (id, len))
    }

    /// A few changes to the container (made first if there is none); returns its root's name.
    pub(super) fn change_map(&mut self) -> Option<String> {
        let top = match self.store.root(MAP_ROOT).expect("root") {
            Some(top) => top,
            None => {
                let map = SharedBytesMap::new_in(&self.store).expect("new map");
                self.store.set_root(MAP_ROOT, map.block()).expect("set_root");
                map.block().clone()
            }
        };
        let map = SharedBytesMap::open(top).expect("open map");
        for _ in 0..self.rng.gen_range(1..8) {
            let key = format!("key-{}", self.rng.gen_range(0..400)).into_bytes();
            if self.rng.gen_ratio(1, 4) {
                map.remove(&key).expect("remove");
            } else {
                let len = if self.rng.gen_ratio(1, 20) { 5000 } else { self.rng.gen_range(0..200) };
                let id = self.next_id;
                self.next_id += 1;
                map.insert(&key, &content(id, len)).expect("insert");
            }
        }
        let mut states = MAP_STATES.lock().unwrap_or_else(|p| p.into_inner());
        states.push(map_bytes(map.entries().expect("entries")));
        self.model.insert(MAP_ROOT.to_owned(), (MAP_MARK | (states.len() - 1) as u64, 0));
        // Now and then the container alone is made durable (its own flush).
        self.map_flushed = self.rng.gen_ratio(1, 3);
        if self.map_flushed {
            map.flush().expect("flush the map");
            if std::env::var("MMHEAP_PL_DEBUG").is_ok() {
                let top = map.block();
                let lock = top.link(0).unwrap().unwrap();
                let state = top.link(1).unwrap().unwrap();
                let parts: Vec<String> = (0..state.link_count())
                    .filter_map(|i| state.link(i).unwrap())
                    .map(|b| format!("{:#x}+{}", b.offset().get(), b.len()))
                    .collect();
                eprintln!(
                    "DEBUG map flush: top {:#x} lock {:#x} state {:#x}+{} parts {:?}",
                    top.offset().get(),
                    lock.offset().get(),
                    state.offset().get(),
                    state.len(),
                    parts
                );
            }
        }
        Some(MAP_ROOT.to_owned())
    }

    /// One operation; returns the root name it touched, if any.
    pub(super) fn step(&mut self) -> Option<String> {
        let r = self.rng.gen_range(0..100);
        let touched = if r < 8 {
            self.change_map()
        } else if r < 45 || self.model.len() < 4 {
            // Set a root (new or replacing).
            let name = self.names[self.rng.gen_range(0..self.names.len())].clone();
            let (b, v) = self.make_value();
            self.store.set_root(&name, &b).expect("set_root");
            self.model.insert(name.clone(), v);
            if self.rng.gen_ratio(1, 4) {
                self.held.push(b);
            }
            Some(name)
        } else if r < 60 {
            let name = self.model.keys().nth(self.rng.gen_range(0..self.model.len())).unwrap().clone();
            if name == MAP_ROOT {
                return None; // the container stays
            }
            assert!(self.store.remove_root(&name).expect("remove_root"));
            self.model.remove(&name);
            Some(name)
        } else if r < 75 {
            // Churn: blocks allocated, written, some kept a while, some dropped at once.
            for _ in 0..self.rng.gen_range(1..6) {
                let (b, _) = self.make_value();
                if self.rng.gen_ratio(1, 3) {
                    self.held.push(b);
                }
            }
            None
        } else if r < 85 {
            // Read a root (a hold in this process's hold table), keep it a while sometimes.
            let name = self.model.keys().nth(self.rng.gen_range(0..self.model.len())).unwrap().clone();
            let (id, len) = self.model[&name];
            assert_eq!(read_root(&self.store, &name).expect("root").expect("present"), expected(id, len));
            let b = self.store.root(&name).expect("root").expect("present");
            if self.rng.gen_ratio(1, 2) {
                self.held.push(b);
            }
            None
        } else {
            // Drop some held blocks.
            for _ in 0..self.rng.gen_range(1..4) {
                if !self.held.is_empty() {
                    let i = self.rng.gen_range(0..self.held.len());
                    self.held.swap_remove(i);
                }
            }
            None
        };
        while self.held.len() > 40 {
            let i = self.rng.gen_range(0..self.held.len());
            self.held.swap_remove(i);
        }
        touched
    }
}
