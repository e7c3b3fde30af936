//! A write of group or plugin state that the disk refuses poisons the store
//! as a failed publish does: later writes answer `Poisoned`, reads go on.
//! The disk is a small tmpfs filled to the last page, which needs root to
//! mount; without root each test prints why it skips and returns.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;

use switchyard_model::{Cursor, TopicSet};
use switchyard_store::{Append, GroupWrite, ReadQuery, Store, StoreConfig, StoreError};
use switchyard_testkit::disk::{Tmpfs, root_or_skip};

/// Opens a store on a fresh 16 MiB tmpfs holding one message and one
/// group, then fills the disk.
async fn full_store(dir: &Path) -> (Tmpfs, Store) {
    let fs = Tmpfs::mount(&dir.join("mnt"), 16);
    let store = Store::open(StoreConfig::new(fs.dir().join("store"))).unwrap();
    store
        .append(vec![Append::new(
            "faults.t".parse().unwrap(),
            "kept".into(),
        )])
        .await
        .unwrap();
    store
        .create_group("g", b"settings", &Cursor::earliest())
        .unwrap();
    fs.fill(u64::MAX);
    (fs, store)
}

/// 256 KiB that do not compress (the journal compresses large values),
/// more than the journal's last page can take, so the write needs new ones.
fn big_value() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What every test checks once a state write failed: writes are refused
/// with `Poisoned`, reads still answer.
async fn assert_poisoned_and_readable(store: &Store) {
    assert!(!store.is_writable(), "the failed write poisoned the store");
    let append = store
        .append(vec![Append::new("faults.t".parse().unwrap(), "x".into())])
        .await;
    assert!(matches!(append, Err(StoreError::Poisoned)), "{append:?}");
    let w = GroupWrite {
        counters: Some(vec![1]),
        ..GroupWrite::default()
    };
    let group_write = store.write_group("g", &w);
    assert!(
        matches!(group_write, Err(StoreError::Poisoned)),
        "{group_write:?}"
    );
    let kv = store.kv_set("p", "k", b"v");
    assert!(matches!(kv, Err(StoreError::Poisoned)), "{kv:?}");
    let query = ReadQuery::new(TopicSet::new(vec!["faults.>".parse().unwrap()]));
    let batch = store.read(&query, &Cursor::earliest()).unwrap();
    assert_eq!(batch.messages.len(), 1);
    assert_eq!(&batch.messages[0].payload[..], b"kept");
    let group = store.group("g").unwrap().expect("the group reads");
    assert_eq!(group.settings, b"settings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_group_state_write_poisons_the_store() {
    if !root_or_skip("a_failed_group_state_write_poisons_the_store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_fs, store) = full_store(dir.path()).await;
    let w = GroupWrite {
        counters: Some(big_value()),
        ..GroupWrite::default()
    };
    let failed = store.write_group("g", &w);
    assert!(matches!(failed, Err(StoreError::Storage(_))), "{failed:?}");
    assert_poisoned_and_readable(&store).await;
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_group_creation_poisons_the_store() {
    if !root_or_skip("a_failed_group_creation_poisons_the_store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_fs, store) = full_store(dir.path()).await;
    let failed = store.create_group("h", &big_value(), &Cursor::earliest());
    assert!(matches!(failed, Err(StoreError::Storage(_))), "{failed:?}");
    assert_poisoned_and_readable(&store).await;
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_plugin_write_poisons_the_store() {
    if !root_or_skip("a_failed_plugin_write_poisons_the_store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_fs, store) = full_store(dir.path()).await;
    let failed = store.put_plugin("p", b"record", "00ff", &big_value());
    assert!(matches!(failed, Err(StoreError::Storage(_))), "{failed:?}");
    assert_poisoned_and_readable(&store).await;
    assert!(
        store.plugins().unwrap().is_empty(),
        "nothing of it is stored"
    );
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_plugin_key_value_write_poisons_the_store() {
    if !root_or_skip("a_failed_plugin_key_value_write_poisons_the_store") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_fs, store) = full_store(dir.path()).await;
    let failed = store.kv_set("p", "big", &big_value());
    assert!(matches!(failed, Err(StoreError::Storage(_))), "{failed:?}");
    assert_poisoned_and_readable(&store).await;
    assert_eq!(store.kv_get("p", "big").unwrap(), None);
    store.close();
}
