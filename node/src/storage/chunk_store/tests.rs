use super::*;

fn chunk(seed: u64, len: usize) -> (ChunkId, Vec<u8>) {
    let mut data = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut data);
    (ChunkId::of(&data), data)
}

#[test]
fn unindexed_bytes_are_settled_only_when_nothing_is_using_or_writing_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::new(crate::db::open_db(dir.path()).expect("open")).expect("store");
    let bytes_only = |seed| {
        let (id, data) = chunk(seed, 4 << 10);
        let cf = store.cf(CF_CHUNKS).expect("cf");
        store.db.put_cf(cf, id.as_bytes(), &data).expect("put");
        id
    };
    let (orphan, pinned, referenced, rewritten) =
        (bytes_only(1), bytes_only(2), bytes_only(3), bytes_only(4));
    let (indexed, indexed_bytes) = chunk(5, 4 << 10);
    store.put(&indexed, &indexed_bytes).expect("put");
    let page = store.unindexed_page(None, 100).expect("page");
    assert_eq!(page.last, None);
    let mut found: Vec<ChunkId> = page.unindexed.iter().map(|(id, _)| *id).collect();
    found.sort();
    let mut expected = vec![orphan, pinned, referenced, rewritten];
    expected.sort();
    assert_eq!(found, expected, "only the bytes without an index entry");

    let mut pins = Arc::clone(&store).pin_guard();
    pins.pin(pinned);
    let (_, data) = chunk(4, 4 << 10);
    store
        .put(&rewritten, &data)
        .expect("written again since the page was read");
    let len = 4 << 10;
    let never = |_: &ChunkId| Ok(false);
    assert_eq!(
        store.settle_unindexed(&orphan, len, never).expect("settle"),
        Unindexed::Deleted
    );
    assert_eq!(
        store.settle_unindexed(&pinned, len, never).expect("settle"),
        Unindexed::Kept
    );
    assert_eq!(
        store
            .settle_unindexed(&rewritten, len, never)
            .expect("settle"),
        Unindexed::Kept
    );
    assert_eq!(
        store
            .settle_unindexed(&referenced, len, |_| Ok(true))
            .expect("settle"),
        Unindexed::Reindexed
    );
    assert!(store.read(&orphan).is_err());
    assert_eq!(
        store.entry(&referenced).expect("entry").map(|e| e.len),
        Some(len)
    );
    assert!(store.read(&referenced).is_ok() && store.read(&rewritten).is_ok());
    assert!(store.read(&pinned).is_ok());
    // Paging resumes after the last chunk visited.
    let first = store.unindexed_page(None, 1).expect("page");
    let rest = store
        .unindexed_page(first.last.as_ref(), 100)
        .expect("page");
    assert_eq!(rest.last, None);
    assert_eq!(
        first.unindexed.len() + rest.unindexed.len(),
        1,
        "only the pinned one is left"
    );
}

#[test]
fn uploads_make_exactly_what_they_rely_on_durable() {
    let dir = tempfile::tempdir().expect("chunk store operation");
    let store = ChunkStore::new(crate::db::open_db(dir.path()).expect("chunk store operation"))
        .expect("chunk store operation");
    let (a, a_bytes) = chunk(1, 64 << 10);
    let (b, b_bytes) = chunk(2, 64 << 10);
    let (c, c_bytes) = chunk(3, 64 << 10);

    // A logged write is made durable by a WAL sync: the memtable keeps it.
    store
        .write(&a, &a_bytes, Durability::Logged)
        .expect("chunk store operation");
    assert!(!store.is_durable(&a));
    store.make_durable(&[a]).expect("chunk store operation");
    assert!(store.is_durable(&a));
    assert_eq!(
        store
            .memtable_entries_for_test()
            .expect("chunk store operation"),
        1
    );

    // Upload 1 wrote `b` unlogged; upload 2 found it and relies on it before upload 1 is
    // done: upload 2's make_durable must flush it.
    store
        .write(&b, &b_bytes, Durability::Unlogged)
        .expect("chunk store operation");
    assert!(store.contains(&b).expect("chunk store operation"));
    assert!(!store.is_durable(&b));
    store.make_durable(&[b]).expect("chunk store operation");
    assert_eq!(
        store
            .memtable_entries_for_test()
            .expect("chunk store operation"),
        0,
        "flushed"
    );
    assert!(store.is_durable(&b));

    // Once durable, a chunk costs nothing to rely on again.
    store
        .write(&c, &c_bytes, Durability::Unlogged)
        .expect("chunk store operation");
    store.make_durable(&[c]).expect("chunk store operation");
    store
        .write(&a, &a_bytes, Durability::Logged)
        .expect("chunk store operation");
    store.sync().expect("chunk store operation");
    let flushes = store
        .memtable_entries_for_test()
        .expect("chunk store operation");
    store
        .make_durable(&[a, b, c])
        .expect("chunk store operation");
    assert_eq!(
        store
            .memtable_entries_for_test()
            .expect("chunk store operation"),
        flushes,
        "not flushed again"
    );
    for (id, data) in [(a, a_bytes), (b, b_bytes), (c, c_bytes)] {
        assert_eq!(
            store.read(&id).expect("chunk store operation"),
            data.as_slice()
        );
    }
}

#[test]
fn a_chunk_reused_from_an_abandoned_upload_is_still_made_durable() {
    // Audit D1, scenario A: upload 1 writes a chunk unlogged, upload 2 finds it and
    // reuses it, upload 1 gives up. Upload 2 relies on the chunk, so its make_durable must
    // still flush it: abandoning an upload must not drop the flush obligation.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::new(crate::db::open_db(dir.path()).expect("open")).expect("store");
    let (b, b_bytes) = chunk(2, 64 << 10);
    store
        .write(&b, &b_bytes, Durability::Unlogged)
        .expect("upload 1 writes");
    assert!(store.contains(&b).expect("contains"), "upload 2 finds it");
    // Upload 1 abandons: there is nothing to undo; the write stays pending until a flush.
    store
        .make_durable(&[b])
        .expect("upload 2 makes its chunks durable");
    assert_eq!(
        store.memtable_entries_for_test().expect("memtable"),
        0,
        "the reused chunk sits unflushed in the memtable, a kill -9 away from loss"
    );
}

/// A child process of the test binary: writes chunks without the WAL until RocksDB flushes
/// the index column family on its own, then dies without closing the database (the same
/// as `kill -9`: RocksDB gets no chance to flush what is left in its memtables).
#[test]
fn crash_child_writes_unlogged_chunks_until_rocksdb_flushes_on_its_own() {
    let Ok(path) = std::env::var("ARCA_TEST_CRASH_DB") else {
        return; // only runs as the child of the test below
    };
    let store = ChunkStore::new(crate::db::open_db(std::path::Path::new(&path)).expect("open"))
        .expect("store");
    // Which column family's own flush to wait for: the index (audit D2) or the bytes (L3).
    let watched = match std::env::var("ARCA_TEST_CRASH_WATCH").as_deref() {
        Ok(CF_CHUNKS) => CF_CHUNKS,
        _ => CF_CHUNK_INDEX,
    };
    let index = store.cf(watched).expect("cf");
    let active = |store: &ChunkStore| {
        store
            .db
            .property_int_value_cf(index, "rocksdb.num-entries-active-mem-table")
            .expect("property")
            .unwrap_or(0)
    };
    // Bounded: the index memtable (64 MiB) holds about 1M entries; 3M writes of 100 bytes
    // (300 MB) cover it twice over.
    for seed in 0..3_000_000u64 {
        let (id, data) = chunk(seed, 100);
        let before = active(&store);
        store
            .write(&id, &data, Durability::Unlogged)
            .expect("write");
        if active(&store) >= before {
            continue;
        }
        // RocksDB switched the index memtable and flushes it: stop writing (so the chunks
        // written since the chunk bytes' last flush stay in their memtable), let that one
        // flush finish, then die.
        for _ in 0..3000 {
            let pending = store
                .db
                .property_int_value_cf(index, "rocksdb.mem-table-flush-pending")
                .expect("property")
                .unwrap_or(1);
            let running = store
                .db
                .property_int_value("rocksdb.num-running-flushes")
                .expect("property")
                .unwrap_or(1);
            if pending == 0 && running == 0 {
                std::process::abort();
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the index flush did not finish");
    }
    panic!("rocksdb never flushed the chunk index on its own");
}

#[test]
fn a_crash_after_rocksdb_flushed_one_column_family_leaves_no_ghost_chunk() {
    // Audit D2: chunk bytes and their index entry are written in one WAL-less batch but
    // flushed as two column families. If RocksDB flushes the index on its own and the node
    // dies before the bytes are flushed, the index says "present" for a chunk that is gone:
    // uploads reuse it, peers count it, resync never fetches it.
    if std::env::var("ARCA_TEST_CRASH_DB").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crash_after_own_flush_of(CF_CHUNK_INDEX, &dir.path().join("db"));
    let mut ghosts = 0;
    let entries = store.entries().expect("entries");
    assert!(!entries.is_empty(), "some chunks survived the crash");
    for (id, _) in &entries {
        if matches!(store.read(id), Err(Error::MissingChunk { .. })) {
            ghosts += 1;
        }
    }
    assert_eq!(
        ghosts,
        0,
        "{ghosts} of {} index entries name chunks whose bytes are gone",
        entries.len()
    );
}

/// Runs the crashing child above until RocksDB flushed `watched` on its own, then reopens
/// what it left.
fn crash_after_own_flush_of(watched: &str, db_path: &std::path::Path) -> Arc<ChunkStore> {
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "storage::chunk_store::tests::crash_child_writes_unlogged_chunks_until_rocksdb_flushes_on_its_own",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ARCA_TEST_CRASH_DB", db_path)
        .env("ARCA_TEST_CRASH_WATCH", watched)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run the crashing child");
    assert!(!status.success(), "the child crashed as planned");
    ChunkStore::new(crate::db::open_db(db_path).expect("reopen")).expect("store")
}

#[test]
fn a_crash_after_rocksdb_flushed_the_chunk_bytes_leaves_no_bytes_without_an_index_entry() {
    // Audit L3, the other half of D2: when the bytes' column family is flushed on its own
    // and the node dies before the index is, the bytes are on disk with no index entry.
    // The sweep walks the index, so nothing would ever delete them.
    if std::env::var("ARCA_TEST_CRASH_DB").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crash_after_own_flush_of(CF_CHUNKS, &dir.path().join("db"));
    let indexed: std::collections::HashSet<ChunkId> = store
        .entries()
        .expect("entries")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let chunks = store.cf(CF_CHUNKS).expect("cf");
    let mut stored = 0usize;
    let mut unindexed = 0usize;
    for item in store.db.iterator_cf(chunks, rocksdb::IteratorMode::Start) {
        let (key, _) = item.expect("iterate chunks");
        stored += 1;
        let id = ChunkId::from_slice(&key).expect("32-byte chunk name");
        if !indexed.contains(&id) {
            unindexed += 1;
        }
    }
    assert!(stored > 0, "some chunk bytes survived the crash");
    assert_eq!(
        unindexed, 0,
        "{unindexed} of {stored} stored chunks have no index entry (never swept)"
    );
}

#[test]
fn leases_are_bounded_and_expire_without_scanning_every_lease() {
    // Audit L1: every HasChunks ran `retain` over all leases under the global pin lock, and
    // the map had no bound (an unauthenticated caller could add a million at a time).
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::new(crate::db::open_db(dir.path()).expect("open")).expect("store");
    let ids: Vec<ChunkId> = (0..1_200_000u64)
        .map(|i| ChunkId::of(&i.to_le_bytes()))
        .collect();
    let mut refused = 0;
    for batch in ids.chunks(100_000) {
        if store
            .lease(batch, std::time::Duration::from_secs(600))
            .is_err()
        {
            refused += 1;
        }
    }
    let held = store.lease_count();
    assert!(held <= MAX_LEASES, "{held} leases held");
    assert!(refused > 0, "leasing past the bound is refused");
    // Expired leases go without a scan of the live ones.
    let short: Vec<ChunkId> = (0..10u64).map(|i| ChunkId::of(&[i as u8, 0xee])).collect();
    let mut leases = Leases::default();
    leases
        .grant(&short, std::time::Duration::ZERO)
        .expect("grant");
    leases.grant(&[], std::time::Duration::ZERO).expect("grant");
    assert_eq!(leases.len(), 0, "expired leases were dropped");
}

#[test]
fn blob_garbage_collection_waits_for_garbage_in_proportion_to_the_store() {
    // Audit P5: after 256 MiB of deletions a full-range compaction relocated every live
    // blob in the oldest half of all blob files, however large the store.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ChunkStore::new(crate::db::open_db(dir.path()).expect("open")).expect("store");
    let all: Vec<_> = (0..60).map(|i| chunk(1000 + i, 1 << 20)).collect();
    for (id, data) in &all {
        store.put(id, data).expect("put");
    }
    store.flush_for_test().expect("flush");
    for (id, _) in all.iter().take(3) {
        assert!(store.delete_unless(id, |_| Ok(false)).expect("delete"));
    }
    // 3 MiB of garbage in a 60 MiB store: not worth relocating 30 MiB.
    assert!(!store.collect_blob_garbage(1 << 20).expect("collect"));
    for (id, _) in all.iter().skip(3).take(5) {
        assert!(store.delete_unless(id, |_| Ok(false)).expect("delete"));
    }
    assert!(store.collect_blob_garbage(1 << 20).expect("collect"));
}

#[test]
fn deleted_chunks_give_their_disk_space_back() {
    let dir = tempfile::tempdir().expect("chunk store operation");
    let store = ChunkStore::new(crate::db::open_db(dir.path()).expect("chunk store operation"))
        .expect("chunk store operation");
    let kept: Vec<_> = (0..4).map(|i| chunk(i, 1 << 20)).collect();
    let dropped: Vec<_> = (100..124).map(|i| chunk(i, 1 << 20)).collect();
    for (id, data) in kept.iter().chain(&dropped) {
        store.put(id, data).expect("chunk store operation");
    }
    store.flush_for_test().expect("chunk store operation");
    let before = store.blob_file_bytes().expect("chunk store operation");
    assert!(before >= 28 << 20, "{before}");
    // Nothing deleted yet: no compaction is worth it.
    assert!(!store
        .collect_blob_garbage(1 << 20)
        .expect("chunk store operation"));

    for (id, _) in &dropped {
        assert!(store
            .delete_unless(id, |_| Ok(false))
            .expect("chunk store operation"));
    }
    assert!(store.blob_garbage_bytes().expect("chunk store operation") >= 24 << 20);
    assert!(store
        .collect_blob_garbage(1 << 20)
        .expect("chunk store operation"));
    let after = store.blob_file_bytes().expect("chunk store operation");
    assert!(
        after < 8 << 20,
        "blob files still hold {after} bytes (from {before})"
    );
    // The live chunks survived the relocation, byte for byte.
    for (id, data) in &kept {
        assert_eq!(
            store.read(id).expect("chunk store operation"),
            data.as_slice()
        );
    }
    for (id, _) in &dropped {
        assert!(store.read(id).is_err());
    }
}
