//! A metadata change whose answer was lost (etcd applied it, the client saw a timeout or a
//! dropped connection) is not another writer's: a writer that meets one at an exact call
//! keeps its log. Deterministic: the fault is placed on one call of a healthy cluster
//! ([`Plan::healthy`]: three nodes, three replicas).

use sim::Plan;
use sim::run::{World, simulate, world};
use wal::client::{LogHandle, LogWriter};
use wal::clock::blocking::Inline;
use wal::message::WriteMessage;

/// Runs `test` on a healthy cluster of `seed` with log `lost` created and a writer open.
fn with_writer<F>(seed: u64, test: impl FnOnce(World, LogHandle, LogWriter) -> F)
where
    F: std::future::Future<Output = ()>,
{
    simulate(Inline::immediate(), async move {
        let w = world(&Plan::healthy(seed)).await.unwrap();
        w.client.create_log("lost").await.unwrap();
        let log = w.client.open_log("lost").await.unwrap();
        let writer = log.open_writer().await.unwrap();
        test(w, log, writer).await;
    })
    .unwrap();
}

/// The creation of segment 0 is applied and its answer lost: that write fails (retriable),
/// the next one finds the segment as the writer created it and writes into it.
#[test]
fn a_segment_creation_whose_answer_was_lost_is_the_writers_own() {
    with_writer(1, |w, log, writer| async move {
        w.meta.fail_next_change_to("/segments/0");
        let first = writer.write(WriteMessage::new(b"first".to_vec())).await;
        let e = first.expect_err("the creation's answer was lost");
        assert!(e.is_retriable(), "{e}");
        assert!(writer.is_valid(), "the writer keeps its log");
        let id = writer
            .write(WriteMessage::new(b"second".to_vec()))
            .await
            .unwrap();
        assert_eq!((id.segment_id, id.entry_id), (0, 0));
        writer.close().await.unwrap();
        let segments = log.segments().await.unwrap();
        assert_eq!(segments.keys().copied().collect::<Vec<_>>(), [0]);
        assert_eq!(segments[&0].last_entry_id, 0);
    });
}

/// The update completing segment 0 on a close is applied and its answer lost: the close
/// finds the segment completed as it asked and succeeds.
#[test]
fn a_completion_whose_answer_was_lost_is_the_writers_own() {
    with_writer(2, |w, log, writer| async move {
        for i in 0..5 {
            writer
                .write(WriteMessage::new(format!("e{i}").into_bytes()))
                .await
                .unwrap();
        }
        w.meta.fail_next_change_to("/segments/0");
        writer.close().await.unwrap();
        // The repeated update counts as a completion retry. The counters are the process's,
        // shared by this file's tests (each world's log has id 1): none of the others
        // completes a segment through a failure or loses a writer.
        let metrics = telemetry::catalog::ClientLogMetrics::for_log(log.log_id());
        assert!(metrics.completion_retries.get() >= 1);
        assert_eq!(metrics.writers_lost.get(), 0);
        let segments = log.segments().await.unwrap();
        assert_eq!(segments[&0].last_entry_id, 4);
        assert_eq!(
            segments[&0].state,
            proto::meta::SegmentState::Completed as i32
        );
    });
}

/// A writer closed right after a creation whose answer was lost closes that segment as any
/// other: with three replicas it is completed empty (a quorum of one would give it up), so
/// no Active segment is left for the next writer to fence.
#[test]
fn a_close_completes_a_segment_created_in_doubt() {
    with_writer(3, |w, log, writer| async move {
        w.meta.fail_next_change_to("/segments/0");
        writer
            .write(WriteMessage::new(b"first".to_vec()))
            .await
            .expect_err("the creation's answer was lost");
        writer.close().await.unwrap();
        let segments = log.segments().await.unwrap();
        assert_eq!(segments.keys().copied().collect::<Vec<_>>(), [0]);
        assert_eq!(
            segments[&0].state,
            proto::meta::SegmentState::Completed as i32
        );
        assert_eq!(segments[&0].last_entry_id, -1);
    });
}
