//! The boot id (ARCHITECTURE.md, "Durability and power loss"): what decides whether damage found
//! at open is a process crash's (refused) or a power loss's (salvaged, once).

use super::*;

/// The boot id decides: damage found in the boot that used the store last is refused (a
/// process crash cannot tear a page), the same bytes after a reboot are salvaged, once; a
/// store that records no boot (made before the field) opens as before and is given one.
#[test]
fn the_boot_id_tells_a_power_loss_from_a_process_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.mmheap");
    let first_header = in_boot(None, || {
        let m = MappedManager::create(&path, &Options::new()).expect("create");
        let (mut a, mut b) = (m.allocate(5000).expect("allocate"), m.allocate(8000).expect("allocate"));
        a.as_mut_slice().expect("writable").fill(1);
        b.as_mut_slice().expect("writable").fill(2);
        m.set_root("first", &a).expect("set_root");
        m.set_root("second", &b).expect("set_root");
        a.offset().get() as usize - 32
    });
    let booted = recorded_boot(&path);
    assert_ne!(booted, 0, "create records the boot");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[first_header + 1] ^= 0x80; // as if a sector of the header had not persisted
    std::fs::write(&path, &bytes).expect("write");
    // The same boot: the strict recovery, which refuses.
    let same_boot = in_boot(None, || MappedManager::recover_file(&path));
    assert!(matches!(same_boot, Err(Error::Corrupt { .. })), "same boot: refused");
    assert_eq!(std::fs::read(&path).expect("read"), bytes, "refused untouched");

    let m = in_boot(Some("another-boot"), || MappedManager::open(&path)).expect("opens after a reboot");
    let salvage = m.opening_salvage().expect("salvaged at open");
    assert_eq!(salvage.dropped[0].name, "first");
    assert!(m.opening_recovery().is_some());
    assert!(m.check().expect("check").is_sound());
    assert_eq!(m.root("second").expect("root").expect("kept").as_slice(), &[2u8; 8000][..]);
    drop(m);
    assert_ne!(recorded_boot(&path), booted, "the new boot is recorded");
    let again = in_boot(Some("another-boot"), || MappedManager::open(&path)).expect("opens");
    assert!(again.opening_salvage().is_none(), "salvaged once a boot");
    drop(again);

    let old = dir.path().join("old.mmheap");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/golden-v2.mmheap"), &old).expect("copy");
    // fs::copy keeps the fixture's mode; a group-writable checkout's would be refused.
    std::fs::set_permissions(
        &old,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .expect("chmod");
    assert_eq!(recorded_boot(&old), 0);
    let m = in_boot(Some("yet-another-boot"), || MappedManager::open(&old))
        .expect("a store without a boot id opens");
    assert!(m.opening_salvage().is_none(), "no boot recorded: no salvage");
    assert!(m.check().expect("check").is_sound());
    drop(m);
    assert_ne!(recorded_boot(&old), 0, "and is given one");
}

/// A store that nothing damaged meets the strict recovery in a new boot, not salvage (nothing
/// is dropped or quarantined); and a store whose last growth's length did not persist (the
/// capacity did) is extended by the repairs a user runs, as `open` extends it.
#[test]
fn a_sound_store_in_a_new_boot_is_recovered_and_a_short_one_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.mmheap");
    let grown = in_boot(Some("boot-1"), || -> mmheap::Result<u64> {
        let m = MappedManager::create(&path, &Options::new().initial_size(1 << 20).max_size(64 << 20))?;
        let mut small = m.allocate(100)?;
        small.as_mut_slice()?.fill(3);
        m.set_root("small", &small)?;
        m.flush()?;
        // After the last flush: a growth, whose length a power loss may not keep.
        let big = m.allocate(4 << 20)?;
        m.set_root("big", &big)?;
        Ok(m.stats()?.capacity)
    })
    .expect("made");
    let m = in_boot(Some("boot-2"), || MappedManager::open(&path)).expect("opens");
    assert!(m.opening_salvage().is_none(), "a sound store is not salvaged");
    assert!(m.opening_recovery().is_some(), "the strict recovery ran");
    drop(m);
    // The capacity persisted, the file's new length did not (the superblock says the store grew).
    let file = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(1 << 20).expect("cut");
    drop(file);
    assert!(grown > 1 << 20);
    let same_boot = in_boot(Some("boot-2"), || MappedManager::salvage(&path));
    assert!(matches!(same_boot, Err(Error::Truncated { .. })), "the same boot: truncated, refused");
    in_boot(Some("boot-3"), || MappedManager::salvage(&path)).expect("salvage extends the file");
    let m = in_boot(Some("boot-3"), || MappedManager::open(&path)).expect("opens");
    assert!(m.check().expect("check").is_sound());
    assert_eq!(m.root("small").expect("root").expect("kept").as_slice(), &[3u8; 100][..]);
}
