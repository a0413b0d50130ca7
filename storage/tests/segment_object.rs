//! The object layout of a segment, written by the object writer and read back by the reader,
//! on process memory, local files and the S3-compatible server `scripts/test` starts (MinIO or
//! moto: no case here races).

mod support;

use bytes::Bytes;
use storage::Error;
use storage::codec::{self, FORMAT_V5, FORMAT_V6, INDEX_RECORD_LEN};
use storage::object::{Created, ObjectStorage};
use storage::segment::object::{
    BatchEnd, DeleteScope, ObjectSegmentReader, ObjectSegmentWriter, SegmentObjects,
};

#[derive(Clone, Copy)]
enum Kind {
    Memory,
    Local,
    S3,
}

struct Env {
    storage: ObjectStorage,
    _dir: Option<tempfile::TempDir>,
}

async fn env(kind: Kind) -> Env {
    let root = support::fresh_root("segment");
    match kind {
        Kind::Memory => Env {
            storage: support::memory(&root),
            _dir: None,
        },
        Kind::Local => {
            let (storage, dir) = support::local(&root);
            Env {
                storage,
                _dir: Some(dir),
            }
        }
        Kind::S3 => Env {
            storage: support::s3(&root).await,
            _dir: None,
        },
    }
}

fn entries(range: std::ops::Range<i64>) -> Vec<Bytes> {
    range
        .map(|i| Bytes::from(format!("entry-{i:04}-{}", "x".repeat((i % 7) as usize))))
        .collect()
}

async fn read_all(reader: &mut ObjectSegmentReader, from: i64) -> (Vec<(i64, Bytes)>, BatchEnd) {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let batch = reader.read(next, 64).await.unwrap();
        if let Some((last, _)) = batch.entries.last() {
            next = last + 1;
        }
        out.extend(batch.entries);
        if batch.end != BatchEnd::Budget {
            return (out, batch.end);
        }
    }
}

fn expect_ids(got: &[(i64, Bytes)], range: std::ops::Range<i64>) {
    let want = entries(range.clone());
    let ids: Vec<i64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, range.collect::<Vec<_>>());
    for ((_, payload), expected) in got.iter().zip(want) {
        assert_eq!(payload, &expected);
    }
}

async fn write_read_finalize(kind: Kind) {
    let e = env(kind).await;
    let objects = SegmentObjects::new(e.storage.clone(), 7, 3);
    let mut w = ObjectSegmentWriter::new(objects.clone(), 0, FORMAT_V6).unwrap();
    let mut reader = ObjectSegmentReader::new(objects.clone());

    // Nothing yet: an open segment's tail.
    let empty = reader.read(0, 1024).await.unwrap();
    assert!(empty.entries.is_empty());
    assert_eq!(empty.end, BatchEnd::Tail);

    let all = entries(0..25);
    w.append_block(&all[0..10]).await.unwrap();
    w.append_block(&all[10..11]).await.unwrap();
    w.append_block(&all[11..20]).await.unwrap();
    assert_eq!(w.last_durable_entry_id(), 19);
    assert_eq!(w.next_entry_id(), 20);

    let (got, end) = read_all(&mut reader, 0).await;
    expect_ids(&got, 0..20);
    assert_eq!(end, BatchEnd::Tail);
    // From the middle of a block, and past the end.
    let (got, _) = read_all(&mut ObjectSegmentReader::new(objects.clone()), 13).await;
    expect_ids(&got, 13..20);
    let past = reader.read(20, 1024).await.unwrap();
    assert!(past.entries.is_empty() && past.end == BatchEnd::Tail);

    // A tail reader sees the next block.
    w.append_block(&all[20..25]).await.unwrap();
    let (got, end) = read_all(&mut reader, 20).await;
    expect_ids(&got, 20..25);
    assert_eq!(end, BatchEnd::Tail);

    // Block 0 starts with the segment header record; the others do not.
    let b0 = e.storage.get(&objects.block_key(0)).await.unwrap();
    let decoded = codec::decode_block(&b0).unwrap();
    assert_eq!(decoded.header.unwrap().first_entry_id, 0);
    assert_eq!(decoded.header.unwrap().version, FORMAT_V6);
    let b1 = e.storage.get(&objects.block_key(1)).await.unwrap();
    assert!(codec::decode_block(&b1).unwrap().header.is_none());

    // Finalize: footer.blk as Go Woodpecker writes it.
    let footer = w.finalize().await.unwrap();
    assert_eq!(footer.blocks.len(), 4);
    assert_eq!(footer.footer.total_blocks, 4);
    assert_eq!(footer.footer.total_records, 4, "blocks, not entries");
    assert_eq!(footer.footer.index_offset, 0);
    assert_eq!(footer.footer.index_length as usize, 4 * INDEX_RECORD_LEN);
    assert_eq!(footer.footer.lac, 24);
    assert_eq!(footer.footer.flags, 0);
    let mut total = 0;
    for (i, b) in footer.blocks.iter().enumerate() {
        assert_eq!(b.block_number, i as i32);
        assert_eq!(b.start_offset, i as i64, "start offset is the block number");
        let size = e
            .storage
            .stat(&objects.block_key(i as i32))
            .await
            .unwrap()
            .unwrap()
            .size;
        assert_eq!(
            u64::from(b.block_size),
            size,
            "block size is the object size"
        );
        total += size;
    }
    assert_eq!(footer.footer.total_size, total);
    let raw = e.storage.get(&objects.footer_key()).await.unwrap();
    assert_eq!(
        raw.len(),
        4 * INDEX_RECORD_LEN + codec::FOOTER_V6_RECORD_LEN
    );
    // Finalizing again is idempotent.
    assert_eq!(w.finalize().await.unwrap(), footer);

    // Readers now end at the footer.
    let (got, end) = read_all(&mut reader, 0).await;
    expect_ids(&got, 0..25);
    assert_eq!(end, BatchEnd::EndOfSegment);
    assert!(reader.footer().is_some());
    let (got, end) = read_all(&mut ObjectSegmentReader::new(objects.clone()), 24).await;
    expect_ids(&got, 24..25);
    assert_eq!(end, BatchEnd::EndOfSegment);
    let after = reader.read(25, 1024).await.unwrap();
    assert!(after.entries.is_empty() && after.end == BatchEnd::EndOfSegment);

    // Appending after the footer is refused.
    assert!(w.prepare_block(&all[0..1]).is_err());
}

async fn compaction(kind: Kind) {
    let e = env(kind).await;
    let objects = SegmentObjects::new(e.storage.clone(), 8, 0);
    let mut w = ObjectSegmentWriter::new(objects.clone(), 0, FORMAT_V6).unwrap();
    let all = entries(0..40);
    for chunk in all.chunks(4) {
        w.append_block(chunk).await.unwrap();
    }
    // Not finalized yet: refused.
    assert!(objects.compact(100).await.is_err());
    let original = w.finalize().await.unwrap();
    assert_eq!(original.blocks.len(), 10);

    // A reader that has the old footer in hand, mid-way.
    let mut early = ObjectSegmentReader::new(objects.clone());
    let first = early.read(0, 1).await.unwrap();
    assert_eq!(first.entries.len(), 4);

    let compacted = objects.compact(100).await.unwrap();
    assert!(compacted.is_compacted());
    assert!(compacted.blocks.len() < 10 && compacted.blocks.len() > 1);
    assert_eq!(
        compacted.footer.total_records, 10,
        "kept from the old footer"
    );
    assert_eq!(compacted.footer.lac, 39);
    assert_eq!(compacted.blocks.first().unwrap().first_entry_id, 0);
    assert_eq!(compacted.blocks.last().unwrap().last_entry_id, 39);

    // m_0.blk carries a compacted header; the originals are gone.
    let m0 = e.storage.get(&objects.merged_key(0)).await.unwrap();
    let header = codec::decode_block(&m0).unwrap().header.unwrap();
    assert!(header.is_compacted());
    for n in 0..10 {
        assert_eq!(e.storage.stat(&objects.block_key(n)).await.unwrap(), None);
    }

    let (got, end) = read_all(&mut ObjectSegmentReader::new(objects.clone()), 0).await;
    expect_ids(&got, 0..40);
    assert_eq!(end, BatchEnd::EndOfSegment);
    let (got, _) = read_all(&mut ObjectSegmentReader::new(objects.clone()), 17).await;
    expect_ids(&got, 17..40);
    // The early reader's footer is stale; it re-reads it and carries on.
    let (got, end) = read_all(&mut early, 4).await;
    expect_ids(&got, 4..40);
    assert_eq!(end, BatchEnd::EndOfSegment);

    // Compacting again changes nothing.
    assert_eq!(objects.compact(100).await.unwrap(), compacted);
}

async fn fence_without_footer(kind: Kind) {
    let e = env(kind).await;
    let objects = SegmentObjects::new(e.storage.clone(), 9, 1);
    let mut w = ObjectSegmentWriter::new(objects.clone(), 0, FORMAT_V5).unwrap();
    let all = entries(0..12);
    w.append_block(&all[0..5]).await.unwrap();
    w.append_block(&all[5..9]).await.unwrap();

    // A new writer takes over: the fence goes at block 2.
    let outcome = objects.fence().await.unwrap();
    assert_eq!(outcome.last_block, Some(1));
    assert_eq!(outcome.last_entry_id, 8);
    assert_eq!(outcome.fence_block, Some(2));
    assert!(
        e.storage
            .stat(&objects.block_key(2))
            .await
            .unwrap()
            .unwrap()
            .fenced
    );
    // Fencing again finds the same fence.
    assert_eq!(objects.fence().await.unwrap(), outcome);

    // The old writer's next block is fenced out.
    let late = w.prepare_block(&all[9..12]).unwrap();
    assert!(matches!(
        objects.put_block(&late).await,
        Err(Error::Fenced { .. })
    ));
    // A segment with no footer.blk and a trailing fence (the Milvus 2.6 takeover case) reads
    // to the fence and ends there.
    assert_eq!(objects.read_footer().await.unwrap(), None);
    let (got, end) = read_all(&mut ObjectSegmentReader::new(objects.clone()), 0).await;
    expect_ids(&got, 0..9);
    assert_eq!(end, BatchEnd::EndOfSegment);
    // A writer cannot resume a fenced segment.
    assert!(matches!(
        ObjectSegmentWriter::recover(objects.clone(), FORMAT_V5).await,
        Err(Error::Fenced { .. })
    ));

    // Fencing an empty segment puts the fence at block 0.
    let empty = SegmentObjects::new(e.storage.clone(), 9, 2);
    let o = empty.fence().await.unwrap();
    assert_eq!(
        (o.last_block, o.last_entry_id, o.fence_block),
        (None, -1, Some(0))
    );
    let batch = ObjectSegmentReader::new(empty).read(0, 10).await.unwrap();
    assert!(batch.entries.is_empty() && batch.end == BatchEnd::EndOfSegment);
}

async fn fence_after_footer_and_compaction_keeps_reading(kind: Kind) {
    // Current Go versions fence on every roll, then finalize: fence object + footer.
    let e = env(kind).await;
    let objects = SegmentObjects::new(e.storage.clone(), 10, 0);
    let mut w = ObjectSegmentWriter::new(objects.clone(), 0, FORMAT_V6).unwrap();
    let all = entries(0..6);
    w.append_block(&all[0..3]).await.unwrap();
    w.append_block(&all[3..6]).await.unwrap();
    let fenced = objects.fence().await.unwrap();
    assert_eq!(fenced.fence_block, Some(2));
    w.finalize().await.unwrap();
    let (got, end) = read_all(&mut ObjectSegmentReader::new(objects.clone()), 0).await;
    expect_ids(&got, 0..6);
    assert_eq!(end, BatchEnd::EndOfSegment);
    objects.compact(1 << 20).await.unwrap();
    let (got, end) = read_all(&mut ObjectSegmentReader::new(objects.clone()), 2).await;
    expect_ids(&got, 2..6);
    assert_eq!(end, BatchEnd::EndOfSegment);
    // After compaction only merged blocks, the footer and the fence object remain.
    let names: Vec<String> = e
        .storage
        .list(&objects.prefix())
        .await
        .unwrap()
        .iter()
        .map(|m| m.location.filename().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, ["2.blk", "footer.blk", "m_0.blk"]);
}

async fn format_v5_footer(kind: Kind) {
    let e = env(kind).await;
    let objects = SegmentObjects::new(e.storage.clone(), 11, 0);
    let mut w = ObjectSegmentWriter::new(objects.clone(), 0, FORMAT_V5).unwrap();
    let all = entries(0..3);
    w.append_block(&all).await.unwrap();
    let footer = w.finalize().await.unwrap();
    assert_eq!(footer.footer.version, FORMAT_V5);
    let raw = e.storage.get(&objects.footer_key()).await.unwrap();
    assert_eq!(
        raw.len(),
        INDEX_RECORD_LEN + codec::FOOTER_V5_RECORD_LEN,
        "36-byte payload"
    );
    let read_back = objects.read_footer().await.unwrap().unwrap();
    assert_eq!(read_back.footer.lac, -1, "v5 footers carry no LAC");
    let b0 = e.storage.get(&objects.block_key(0)).await.unwrap();
    assert_eq!(
        codec::decode_block(&b0).unwrap().header.unwrap().version,
        FORMAT_V5
    );
    let (got, _) = read_all(&mut ObjectSegmentReader::new(objects), 0).await;
    expect_ids(&got, 0..3);
}

async fn corrupt_block_is_reported(kind: Kind) {
    let e = env(kind).await;
    let objects = SegmentObjects::new(e.storage.clone(), 12, 4);
    let mut w = ObjectSegmentWriter::new(objects.clone(), 0, FORMAT_V6).unwrap();
    let all = entries(0..12);
    w.append_block(&all[0..4]).await.unwrap();
    w.append_block(&all[4..8]).await.unwrap();
    w.append_block(&all[8..12]).await.unwrap();
    let key = objects.block_key(1);
    let mut bytes = e.storage.get(&key).await.unwrap().to_vec();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x20;
    e.storage.put(&key, Bytes::from(bytes)).await.unwrap();

    let mut reader = ObjectSegmentReader::new(objects.clone());
    let err = read_all_result(&mut reader, 0).await.unwrap_err();
    match &err {
        Error::Corrupt { location, .. } => {
            assert!(
                location.contains("log 12")
                    && location.contains("segment 4")
                    && location.contains("1.blk"),
                "{location}"
            );
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // Entries before the damaged block are still readable on their own.
    let batch = ObjectSegmentReader::new(objects.clone())
        .read(0, 1)
        .await
        .unwrap();
    expect_ids(&batch.entries, 0..4);

    // Without a footer and with one: a read starting in the damaged block names what it
    // lost, and the blocks after it are read.
    for finalized in [false, true] {
        if finalized {
            w.finalize().await.unwrap();
        }
        let mut reader = ObjectSegmentReader::new(objects.clone());
        let err = reader.read(4, usize::MAX).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("entries 4..=7 (4) cannot be read; the segment goes on at entry 8"),
            "finalized {finalized}: {err}"
        );
        let (got, end) = read_all(&mut reader, 8).await;
        expect_ids(&got, 8..12);
        if finalized {
            assert!(matches!(end, BatchEnd::EndOfSegment));
        }
        let damaged = objects.damaged_blocks().await.unwrap();
        assert_eq!(damaged.len(), 1, "{damaged:?}");
        assert_eq!(damaged[0].block_number, 1);
        assert_eq!(
            (damaged[0].first_entry_id, damaged[0].last_entry_id),
            (4, 7)
        );
        assert!(
            damaged[0]
                .object
                .as_deref()
                .is_some_and(|k| k.ends_with("1.blk"))
        );
    }
}

async fn read_all_result(
    reader: &mut ObjectSegmentReader,
    from: i64,
) -> storage::Result<Vec<(i64, Bytes)>> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let batch = reader.read(next, 1 << 20).await?;
        if let Some((last, _)) = batch.entries.last() {
            next = last + 1;
        }
        out.extend(batch.entries);
        if batch.end != BatchEnd::Budget {
            return Ok(out);
        }
    }
}

async fn retries_recovery_lock_and_delete(kind: Kind) {
    let e = env(kind).await;
    let objects = SegmentObjects::new(e.storage.clone(), 13, 0);
    let mut w = ObjectSegmentWriter::new(objects.clone(), 0, FORMAT_V6).unwrap();
    let all = entries(0..10);
    let block = w.prepare_block(&all[0..4]).unwrap();
    assert_eq!(objects.put_block(&block).await.unwrap(), Created::New);
    // A retry of the same upload is our own block.
    assert_eq!(
        objects.put_block(&block).await.unwrap(),
        Created::AlreadyOurs
    );
    w.block_durable(&block).unwrap();
    w.append_block(&all[4..7]).await.unwrap();

    // A restarted writer continues after the last block.
    let mut resumed = ObjectSegmentWriter::recover(objects.clone(), FORMAT_V6)
        .await
        .unwrap();
    assert_eq!(resumed.next_entry_id(), 7);
    resumed.append_block(&all[7..10]).await.unwrap();
    let (got, _) = read_all(&mut ObjectSegmentReader::new(objects.clone()), 0).await;
    expect_ids(&got, 0..10);

    // write.lock: a second writer is refused while the first holds it.
    e.storage
        .put_if_absent(&objects.lock_key(), Bytes::from_static(b"pid=1\n"))
        .await
        .unwrap();
    assert!(matches!(
        objects.acquire_write_lock().await,
        Err(Error::AlreadyExists { .. })
    ));
    objects.release_write_lock().await.unwrap();
    objects.acquire_write_lock().await.unwrap();
    let lock = e.storage.get(&objects.lock_key()).await.unwrap();
    let text = String::from_utf8(lock.to_vec()).unwrap();
    assert!(text.starts_with("logId=13\nsegmentId=0\npid="), "{text}");

    // Deletion scopes.
    resumed.finalize().await.unwrap();
    objects.compact(1 << 20).await.unwrap();
    e.storage
        .put(&objects.block_key(0), Bytes::from_static(b"stray original"))
        .await
        .unwrap();
    assert_eq!(objects.delete(DeleteScope::Originals).await.unwrap(), 1);
    assert_eq!(objects.delete(DeleteScope::Merged).await.unwrap(), 1);
    assert_eq!(
        objects.delete(DeleteScope::All).await.unwrap(),
        2,
        "footer and lock"
    );
    assert!(e.storage.list(&objects.prefix()).await.unwrap().is_empty());
}

macro_rules! layout {
    ($backend:ident, $kind:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn write_read_finalize() {
                super::write_read_finalize($kind).await;
            }

            #[tokio::test]
            async fn compaction() {
                super::compaction($kind).await;
            }

            #[tokio::test]
            async fn fence_without_footer() {
                super::fence_without_footer($kind).await;
            }

            #[tokio::test]
            async fn fence_after_footer_and_compaction_keeps_reading() {
                super::fence_after_footer_and_compaction_keeps_reading($kind).await;
            }

            #[tokio::test]
            async fn format_v5_footer() {
                super::format_v5_footer($kind).await;
            }

            #[tokio::test]
            async fn corrupt_block_is_reported() {
                super::corrupt_block_is_reported($kind).await;
            }

            #[tokio::test]
            async fn retries_recovery_lock_and_delete() {
                super::retries_recovery_lock_and_delete($kind).await;
            }
        }
    };
}

layout!(memory, Kind::Memory);
layout!(local_files, Kind::Local);
layout!(s3, Kind::S3);
