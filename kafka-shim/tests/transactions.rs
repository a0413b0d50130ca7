//! Transactions at the byte level: the coordinator's answers (epochs, fencing, states,
//! timeouts), the markers it has partitions write, the last stable offset and the aborted
//! transactions `read_committed` fetches see, transactional offset commits, and what
//! survives a restart of the front door. Real engine, real listener; requests encoded by
//! the `kafka-protocol` crate's client side.

mod support;

use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, ListTransactionsRequest,
    ListTransactionsResponse, OffsetFetchRequest, OffsetFetchResponse, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, add_partitions_to_txn_request,
    describe_producers_request, offset_fetch_request, txn_offset_commit_request,
};
use kafka_shim::txn::TxnSettings;
use support::*;

fn tid(s: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(s.to_string()))
}

/// A transactional batch of `values` from `pid`/`epoch` starting at sequence `seq`.
fn txn_batch(values: &[&str], pid: i64, epoch: i16, seq: i32) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(Bytes::from(v.to_string())),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode a batch");
    buf.freeze()
}

async fn init(c: &mut Conn, id: &str, timeout_ms: i32) -> Result<(i16, i64, i16)> {
    let r: InitProducerIdResponse = c
        .call(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(tid(id)))
                .with_transaction_timeout_ms(timeout_ms)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1),
            4,
        )
        .await?;
    Ok((r.error_code, r.producer_id.0, r.producer_epoch))
}

async fn add_partitions(
    c: &mut Conn,
    id: &str,
    pid: i64,
    epoch: i16,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<i16>> {
    let r: AddPartitionsToTxnResponse = c
        .call(
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(tid(id))
                .with_v3_and_below_producer_id(pid.into())
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(name(topic))
                        .with_partitions(partitions.to_vec()),
                ]),
            3,
        )
        .await?;
    Ok(r.results_by_topic_v3_and_below[0]
        .results_by_partition
        .iter()
        .map(|p| p.partition_error_code)
        .collect())
}

async fn end(c: &mut Conn, id: &str, pid: i64, epoch: i16, commit: bool) -> Result<i16> {
    let r: EndTxnResponse = c
        .call(
            &EndTxnRequest::default()
                .with_transactional_id(tid(id))
                .with_producer_id(pid.into())
                .with_producer_epoch(epoch)
                .with_committed(commit),
            3,
        )
        .await?;
    Ok(r.error_code)
}

async fn txn_produce(c: &mut Conn, id: &str, topic: &str, records: Bytes) -> Result<(i16, i64)> {
    let req = produce_req(topic, 0, records, -1).with_transactional_id(Some(tid(id)));
    let resp: ProduceResponse = c.call(&req, 9).await?;
    let p = &resp.responses[0].partition_responses[0];
    Ok((p.error_code, p.base_offset))
}

/// A fetch of partition 0: (error, high watermark, last stable offset, aborted transactions
/// as (producer, first offset), data records as (offset, value), control record offsets).
struct Fetched {
    error: i16,
    hwm: i64,
    lso: i64,
    aborted: Option<Vec<(i64, i64)>>,
    data: Vec<(i64, String)>,
    control: Vec<i64>,
}

async fn fetch_at(c: &mut Conn, topic: &str, offset: i64, isolation: i8) -> Result<Fetched> {
    let req = fetch_req(topic, offset, 0).with_isolation_level(isolation);
    let resp: FetchResponse = c.call(&req, 12).await?;
    let p = &resp.responses[0].partitions[0];
    let mut data = Vec::new();
    let mut control = Vec::new();
    if let Some(records) = &p.records {
        let mut buf = records.clone();
        for set in RecordBatchDecoder::decode_all(&mut buf)? {
            for r in set.records {
                if r.control {
                    control.push(r.offset);
                } else {
                    let v = r
                        .value
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                        .unwrap_or_default();
                    data.push((r.offset, v));
                }
            }
        }
    }
    Ok(Fetched {
        error: p.error_code,
        hwm: p.high_watermark,
        lso: p.last_stable_offset,
        aborted: p.aborted_transactions.as_ref().map(|a| {
            a.iter()
                .map(|t| (t.producer_id.0, t.first_offset))
                .collect()
        }),
        data,
        control,
    })
}

async fn latest(c: &mut Conn, topic: &str, isolation: i8) -> Result<i64> {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation)
        .with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]);
    let resp: ListOffsetsResponse = c.call(&req, 7).await?;
    Ok(resp.topics[0].partitions[0].offset)
}

async fn describe(c: &mut Conn, id: &str) -> Result<(i16, String, i64, i16, usize)> {
    let r: DescribeTransactionsResponse = c
        .call(
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![tid(id)]),
            0,
        )
        .await?;
    let s = &r.transaction_states[0];
    Ok((
        s.error_code,
        s.transaction_state.to_string(),
        s.producer_id.0,
        s.producer_epoch,
        s.topics.iter().map(|t| t.partitions.len()).sum(),
    ))
}

#[tokio::test]
async fn commit_and_abort_write_markers_and_move_the_last_stable_offset() -> Result<()> {
    let h = Harness::start().await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "t", 1, &[]).await?, 0);
    let coordinator: FindCoordinatorResponse = c
        .call(
            &FindCoordinatorRequest::default()
                .with_key_type(1)
                .with_key(StrBytes::from_static_str("tx")),
            3,
        )
        .await?;
    assert_eq!((coordinator.error_code, coordinator.node_id.0), (0, 0));

    let (err, pid, epoch) = init(&mut c, "tx", 60_000).await?;
    assert_eq!((err, epoch), (0, 0));
    // Data before the transaction, read by everyone.
    assert_eq!(produce(&mut c, "t", batch(&["plain"], None)).await?, (0, 0));

    assert_eq!(
        add_partitions(&mut c, "tx", pid, epoch, "t", &[0]).await?,
        [0]
    );
    assert_eq!(
        txn_produce(&mut c, "tx", "t", txn_batch(&["a", "b"], pid, epoch, 0)).await?,
        (0, 1)
    );
    // Open: read_uncommitted sees it, read_committed stops at its first offset.
    let open = fetch_at(&mut c, "t", 0, 1).await?;
    assert_eq!((open.error, open.hwm, open.lso), (0, 3, 1));
    assert_eq!(open.data, [(0, "plain".to_string())]);
    assert_eq!(open.aborted, Some(vec![]));
    let dirty = fetch_at(&mut c, "t", 0, 0).await?;
    assert_eq!(dirty.data.len(), 3);
    assert_eq!(dirty.aborted, None);
    assert_eq!(
        (latest(&mut c, "t", 0).await?, latest(&mut c, "t", 1).await?),
        (3, 1)
    );
    assert_eq!(
        describe(&mut c, "tx").await?,
        (0, "Ongoing".into(), pid, 0, 1)
    );

    assert_eq!(end(&mut c, "tx", pid, epoch, true).await?, 0);
    // Committed: the marker is offset 3, the LSO is the high watermark past it.
    let committed = fetch_at(&mut c, "t", 1, 1).await?;
    assert_eq!((committed.hwm, committed.lso), (4, 4));
    assert_eq!(committed.data, [(1, "a".to_string()), (2, "b".to_string())]);
    assert_eq!(committed.control, [3]);
    assert_eq!(committed.aborted, Some(vec![]));
    // A retried commit is answered as done; an abort of it is refused.
    assert_eq!(end(&mut c, "tx", pid, epoch, true).await?, 0);
    assert_eq!(end(&mut c, "tx", pid, epoch, false).await?, 48);

    // The next transaction aborts: its data stays in the log, listed as aborted.
    assert_eq!(
        add_partitions(&mut c, "tx", pid, epoch, "t", &[0]).await?,
        [0]
    );
    assert_eq!(
        txn_produce(
            &mut c,
            "tx",
            "t",
            txn_batch(&["x", "y", "z"], pid, epoch, 2)
        )
        .await?,
        (0, 4)
    );
    assert_eq!(end(&mut c, "tx", pid, epoch, false).await?, 0);
    let aborted = fetch_at(&mut c, "t", 4, 1).await?;
    assert_eq!((aborted.hwm, aborted.lso), (8, 8));
    assert_eq!(aborted.aborted, Some(vec![(pid, 4)]));
    assert_eq!(aborted.control, [7]);
    // A fetch past the aborted range does not list it.
    assert_eq!(fetch_at(&mut c, "t", 8, 1).await?.aborted, Some(vec![]));
    assert_eq!(
        describe(&mut c, "tx").await?,
        (0, "CompleteAbort".into(), pid, 0, 0)
    );

    // A transactional batch into a partition outside the transaction is refused.
    assert_eq!(
        txn_produce(&mut c, "tx", "t", txn_batch(&["no"], pid, epoch, 5))
            .await?
            .0,
        48
    );
    // DescribeProducers: the producer, its last sequence, no open transaction.
    let producers: DescribeProducersResponse = c
        .call(
            &DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(name("t"))
                    .with_partition_indexes(vec![0, 7]),
            ]),
            0,
        )
        .await?;
    let parts = &producers.topics[0].partitions;
    assert_eq!(parts[1].error_code, 3);
    let p = parts[0]
        .active_producers
        .iter()
        .find(|p| p.producer_id.0 == pid)
        .context("the transactional producer")?;
    assert_eq!(
        (
            p.producer_epoch,
            p.last_sequence,
            p.current_txn_start_offset,
            p.coordinator_epoch
        ),
        (0, 4, -1, 0)
    );
    h.stop().await
}

#[tokio::test]
async fn a_new_producer_fences_the_old_one_and_aborts_what_it_left_open() -> Result<()> {
    let h = Harness::start().await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "f", 1, &[]).await?, 0);
    // Refused before anything is stored.
    assert_eq!(init(&mut c, "z", 0).await?.0, 50);
    assert_eq!(init(&mut c, "z", 900_001).await?.0, 50);
    assert_eq!(init(&mut c, "", 1000).await?.0, 42);
    assert_eq!(describe(&mut c, "z").await?.0, 105);

    let (_, pid, e0) = init(&mut c, "z", 60_000).await?;
    assert_eq!(add_partitions(&mut c, "z", pid, e0, "f", &[0]).await?, [0]);
    assert_eq!(
        txn_produce(&mut c, "z", "f", txn_batch(&["zombie"], pid, e0, 0)).await?,
        (0, 0)
    );
    // A new instance: the open transaction is aborted with the epoch bumped, and the
    // caller told to retry; the retry gets a newer epoch still.
    assert_eq!(init(&mut c, "z", 60_000).await?.0, 51);
    let aborted = fetch_at(&mut c, "f", 0, 1).await?;
    assert_eq!((aborted.lso, aborted.hwm), (2, 2));
    assert_eq!(aborted.aborted, Some(vec![(pid, 0)]));
    let (err, pid2, e2) = init(&mut c, "z", 60_000).await?;
    assert_eq!((err, pid2, e2), (0, pid, e0 + 2));
    // The zombie: fenced at the coordinator and at the partition.
    assert_eq!(end(&mut c, "z", pid, e0, true).await?, 90);
    // Versions from before PRODUCER_FENCED (KIP-588) get INVALID_PRODUCER_EPOCH instead.
    let old_end: EndTxnResponse = c
        .call(
            &EndTxnRequest::default()
                .with_transactional_id(tid("z"))
                .with_producer_id(pid.into())
                .with_producer_epoch(e0)
                .with_committed(true),
            1,
        )
        .await?;
    assert_eq!(old_end.error_code, 47);
    let old_offsets: AddOffsetsToTxnResponse = c
        .call(
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(tid("z"))
                .with_producer_id(pid.into())
                .with_producer_epoch(e0)
                .with_group_id(GroupId(StrBytes::from_static_str("g"))),
            1,
        )
        .await?;
    assert_eq!(old_offsets.error_code, 47);
    assert_eq!(add_partitions(&mut c, "z", pid, e0, "f", &[0]).await?, [90]);
    assert_eq!(
        add_partitions(&mut c, "z", pid + 1, e2, "f", &[0]).await?,
        [49]
    );
    assert_eq!(
        txn_produce(&mut c, "z", "f", txn_batch(&["late"], pid, e0, 1))
            .await?
            .0,
        47
    );
    // Unknown partitions: those UNKNOWN_TOPIC_OR_PARTITION, the rest not attempted.
    assert_eq!(
        add_partitions(&mut c, "z", pid, e2, "f", &[0, 5]).await?,
        [55, 3]
    );
    // The new producer works; EndTxn on an empty transaction is refused.
    assert_eq!(end(&mut c, "z", pid, e2, true).await?, 48);
    assert_eq!(add_partitions(&mut c, "z", pid, e2, "f", &[0]).await?, [0]);
    assert_eq!(
        txn_produce(&mut c, "z", "f", txn_batch(&["ok"], pid, e2, 0)).await?,
        (0, 2)
    );
    assert_eq!(end(&mut c, "z", pid, e2, true).await?, 0);
    let all = fetch_at(&mut c, "f", 0, 1).await?;
    assert_eq!(all.data.len(), 2, "the aborted and the committed record");
    assert_eq!(all.aborted, Some(vec![(pid, 0)]));

    // The batched, broker-side form (v4+): verify-only changes nothing.
    let verify: AddPartitionsToTxnResponse = c
        .call(
            &AddPartitionsToTxnRequest::default().with_transactions(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(tid("z"))
                    .with_producer_id(pid.into())
                    .with_producer_epoch(e2)
                    .with_verify_only(true)
                    .with_topics(vec![
                        add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                            .with_name(name("f"))
                            .with_partitions(vec![0]),
                    ]),
            ]),
            5,
        )
        .await?;
    let result = &verify.results_by_transaction[0];
    assert_eq!(result.transactional_id.as_str(), "z");
    assert_eq!(
        result.topic_results[0].results_by_partition[0].partition_error_code,
        48
    );
    h.stop().await
}

async fn offset_fetch(c: &mut Conn, group: &str, topic: &str, stable: bool) -> Result<(i64, i16)> {
    let r: OffsetFetchResponse = c
        .call(
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(name(topic))
                        .with_partition_indexes(vec![0]),
                ]))
                .with_require_stable(stable),
            7,
        )
        .await?;
    let p = &r.topics[0].partitions[0];
    Ok((p.committed_offset, p.error_code))
}

#[tokio::test]
async fn transactional_offsets_become_visible_on_commit_only() -> Result<()> {
    let h = Harness::start().await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "o", 1, &[]).await?, 0);
    let (_, pid, epoch) = init(&mut c, "ox", 60_000).await?;
    let commit_offsets = |offset: i64| {
        TxnOffsetCommitRequest::default()
            .with_transactional_id(tid("ox"))
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_producer_id(pid.into())
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![
                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(name("o"))
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(offset),
                    ]),
            ])
    };
    // Before AddOffsetsToTxn the group is not in the transaction.
    let refused: TxnOffsetCommitResponse = c.call(&commit_offsets(5), 3).await?;
    assert_eq!(refused.topics[0].partitions[0].error_code, 48);
    for (offset, commit) in [(5, false), (7, true)] {
        let added: AddOffsetsToTxnResponse = c
            .call(
                &AddOffsetsToTxnRequest::default()
                    .with_transactional_id(tid("ox"))
                    .with_producer_id(pid.into())
                    .with_producer_epoch(epoch)
                    .with_group_id(GroupId(StrBytes::from_static_str("g"))),
                3,
            )
            .await?;
        assert_eq!(added.error_code, 0);
        let staged: TxnOffsetCommitResponse = c.call(&commit_offsets(offset), 3).await?;
        assert_eq!(staged.topics[0].partitions[0].error_code, 0);
        // Pending: not visible; a stable fetch is told so (KIP-447).
        assert_eq!(offset_fetch(&mut c, "g", "o", false).await?, (-1, 0));
        assert_eq!(offset_fetch(&mut c, "g", "o", true).await?, (-1, 88));
        assert_eq!(end(&mut c, "ox", pid, epoch, commit).await?, 0);
        let after = if commit { 7 } else { -1 };
        assert_eq!(offset_fetch(&mut c, "g", "o", true).await?, (after, 0));
    }
    // `__consumer_offsets` got the committed transaction's offset when it committed, as an
    // ordinary record; the aborted one never reached it.
    let p = kafka_shim::offsets_topic::partition_for("g", 50);
    let mut req = fetch_req(kafka_shim::offsets_topic::OFFSETS_TOPIC, 0, 0);
    req.topics[0].partitions[0].partition = p;
    let resp: FetchResponse = c.call(&req, 12).await?;
    let part = &resp.responses[0].partitions[0];
    assert_eq!((part.error_code, part.high_watermark), (0, 1));
    let mut buf = part.records.clone().context("records")?;
    let sets = RecordBatchDecoder::decode_all(&mut buf)?;
    let records: Vec<_> = sets.iter().flat_map(|s| s.records.iter()).collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].producer_id, -1);
    let value = records[0].value.clone().context("a value")?;
    // OffsetCommitValue v3: version 3, then the offset.
    assert_eq!(&value[..10], b"\x00\x03\x00\x00\x00\x00\x00\x00\x00\x07");
    h.stop().await
}

#[tokio::test]
async fn open_transactions_time_out_and_abort() -> Result<()> {
    let config = BrokerConfig {
        transactions: TxnSettings {
            max_timeout: Duration::from_secs(60),
            abort_check_interval: Duration::from_millis(50),
            ..TxnSettings::default()
        },
        ..BrokerConfig::default()
    };
    let h = Harness::start_with(config, ServerConfig::default()).await?;
    let timeouts = h.broker.spawn_transaction_timeouts();
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "to", 1, &[]).await?, 0);
    let (_, pid, epoch) = init(&mut c, "slow", 200).await?;
    assert_eq!(
        add_partitions(&mut c, "slow", pid, epoch, "to", &[0]).await?,
        [0]
    );
    assert_eq!(
        txn_produce(&mut c, "slow", "to", txn_batch(&["late"], pid, epoch, 0)).await?,
        (0, 0)
    );
    // Wait for the abort: the last stable offset passes the marker.
    let topic = h.broker.topics().get("to").context("topic")?;
    let partition = h
        .broker
        .partition(&topic, 0)
        .await
        .map_err(|c| anyhow::anyhow!("{c:?}"))?;
    let mut rx = partition.subscribe();
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|hwm| *hwm >= 2))
        .await
        .context("the timed-out transaction was not aborted")??;
    let state = describe(&mut c, "slow").await?;
    assert_eq!((state.1.as_str(), state.3), ("CompleteAbort", epoch + 1));
    assert_eq!(
        fetch_at(&mut c, "to", 0, 1).await?.aborted,
        Some(vec![(pid, 0)])
    );
    // The producer was fenced by the abort.
    assert_eq!(end(&mut c, "slow", pid, epoch, true).await?, 90);
    timeouts.abort();
    h.stop().await
}

#[tokio::test]
async fn transaction_state_survives_a_restart_and_prepared_ones_complete() -> Result<()> {
    let mut h = Harness::start().await?;
    let mut c = h.connect().await?;
    assert_eq!(create_topic(&mut c, "r", 1, &[]).await?, 0);
    let (_, pid, epoch) = init(&mut c, "keep", 60_000).await?;
    assert_eq!(
        add_partitions(&mut c, "keep", pid, epoch, "r", &[0]).await?,
        [0]
    );
    assert_eq!(
        txn_produce(&mut c, "keep", "r", txn_batch(&["1", "2"], pid, epoch, 0)).await?,
        (0, 0)
    );
    drop(c);
    h.restart_broker().await?;
    let mut c = h.connect().await?;
    // The open transaction and the partition's view of it are rebuilt.
    assert_eq!(
        describe(&mut c, "keep").await?,
        (0, "Ongoing".into(), pid, 0, 1)
    );
    let open = fetch_at(&mut c, "r", 0, 1).await?;
    assert_eq!((open.lso, open.hwm), (0, 2));
    assert_eq!(end(&mut c, "keep", pid, epoch, true).await?, 0);
    assert_eq!(fetch_at(&mut c, "r", 0, 1).await?.data.len(), 2);

    // A crash between the decision and the markers: the stored record says PrepareAbort
    // while the partition holds no marker. Opening the broker completes it.
    assert_eq!(
        add_partitions(&mut c, "keep", pid, epoch, "r", &[0]).await?,
        [0]
    );
    assert_eq!(
        txn_produce(&mut c, "keep", "r", txn_batch(&["3"], pid, epoch, 2)).await?,
        (0, 3)
    );
    drop(c);
    let kv = h.engine.meta.kv().clone();
    let (items, _) = kv
        .get_prefix(&format!(
            "{}/kafka/transactions/",
            h.engine.meta.keys().prefix()
        ))
        .await?;
    let item = items.first().context("the stored transaction")?;
    let mut record: serde_json::Value = serde_json::from_slice(&item.value)?;
    assert_eq!(record["state"], "Ongoing");
    record["state"] = "PrepareAbort".into();
    kv.put(&item.key, Bytes::from(serde_json::to_vec(&record)?), None)
        .await?;
    h.restart_broker().await?;
    let mut c = h.connect().await?;
    assert_eq!(
        describe(&mut c, "keep").await?,
        (0, "CompleteAbort".into(), pid, 0, 0)
    );
    let done = fetch_at(&mut c, "r", 3, 1).await?;
    assert_eq!((done.lso, done.hwm), (5, 5));
    assert_eq!(done.aborted, Some(vec![(pid, 3)]));
    // The aborted index is rebuilt from the log at open.
    h.restart_broker().await?;
    let mut c = h.connect().await?;
    assert_eq!(
        fetch_at(&mut c, "r", 0, 1).await?.aborted,
        Some(vec![(pid, 3)])
    );

    let listed: ListTransactionsResponse = c
        .call(
            &ListTransactionsRequest::default()
                .with_state_filters(vec![
                    StrBytes::from_static_str("CompleteAbort"),
                    StrBytes::from_static_str("Bogus"),
                ])
                .with_duration_filter(-1),
            1,
        )
        .await?;
    assert_eq!(listed.unknown_state_filters.len(), 1);
    assert_eq!(listed.transaction_states.len(), 1);
    assert_eq!(
        listed.transaction_states[0].transactional_id.as_str(),
        "keep"
    );
    h.stop().await
}
