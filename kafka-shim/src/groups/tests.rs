//! The coordinator through its public API, on a real embedded key-value store.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::protocol::Encodable;
use wal::clock::SystemClock;
use wal::meta::embedded::EmbeddedKv;
use wal::meta::kv::Kv;

use super::*;

const SESSION_MS: i32 = 10_000;

#[derive(Debug)]
struct Catalog(HashMap<String, i32>);

impl TopicCatalog for Catalog {
    fn partition_count(&self, topic: &str) -> Option<i32> {
        self.0.get(topic).copied()
    }
}

fn catalog() -> Catalog {
    Catalog(HashMap::from([
        ("orders".to_owned(), 3),
        ("events.v1-x_y".to_owned(), 2),
    ]))
}

async fn kv(dir: &std::path::Path) -> Arc<dyn Kv> {
    Arc::new(
        EmbeddedKv::open(dir, SystemClock::shared())
            .await
            .expect("open kv"),
    )
}

async fn coordinator(kv: &Arc<dyn Kv>) -> Arc<GroupCoordinator> {
    GroupCoordinator::open(
        ShimStore::new(kv.clone(), "kafka"),
        GroupSettings::default(),
    )
    .await
    .expect("open coordinator")
}

fn gid(s: &str) -> GroupId {
    GroupId(sb(s))
}

fn join_req(group: &str, member: &str, protocols: &[&str]) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(SESSION_MS)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(sb(member))
        .with_protocol_type(sb("consumer"))
        .with_protocols(
            protocols
                .iter()
                .map(|p| {
                    JoinGroupRequestProtocol::default()
                        .with_name(sb(p))
                        .with_metadata(Bytes::from(format!("meta-{p}")))
                })
                .collect(),
        )
}

fn sync_req(
    group: &str,
    member: &str,
    generation: i32,
    assignments: &[(&str, &str)],
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_member_id(sb(member))
        .with_generation_id(generation)
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(sb(m))
                        .with_assignment(Bytes::from(a.to_string()))
                })
                .collect(),
        )
}

fn heartbeat_req(group: &str, member: &str, generation: i32) -> HeartbeatRequest {
    HeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_member_id(sb(member))
        .with_generation_id(generation)
}

fn commit_req(
    group: &str,
    member: &str,
    generation: i32,
    parts: &[(&str, i32, i64)],
) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (topic, partition, offset) in parts {
        let p = OffsetCommitRequestPartition::default()
            .with_partition_index(*partition)
            .with_committed_offset(*offset)
            .with_committed_leader_epoch(7)
            .with_committed_metadata(Some(sb("meta")));
        match topics.iter_mut().find(|t| t.name.as_str() == *topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(sb(topic)))
                    .with_partitions(vec![p]),
            ),
        }
    }
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_member_id(sb(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(topics)
}

fn codes(response: &OffsetCommitResponse) -> Vec<(String, i32, i16)> {
    response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index, p.error_code))
        })
        .collect()
}

fn encodes<T: Encodable + fmt::Debug>(message: &T, version: i16) {
    let mut buf = BytesMut::new();
    if let Err(e) = message.encode(&mut buf, version) {
        panic!("{message:?} does not encode at v{version}: {e}");
    }
}

/// Joins a new member with the v4+ two-step flow; returns the id handed out.
async fn member_id(c: &GroupCoordinator, group: &str, version: i16) -> String {
    let r = c.join_group(join_req(group, "", &["range"]), version).await;
    assert_eq!(r.error_code, KafkaCode::MemberIdRequired.code());
    encodes(&r, version);
    assert!(!r.member_id.is_empty());
    r.member_id.to_string()
}

/// A one-member Stable group; returns (member id, generation).
async fn stable_single(c: &Arc<GroupCoordinator>, group: &str) -> (String, i32) {
    let id = member_id(c, group, 5).await;
    let r = c.join_group(join_req(group, &id, &["range"]), 5).await;
    assert_eq!(r.error_code, 0);
    let s = c
        .sync_group(sync_req(group, &id, r.generation_id, &[(&id, "a")]), 3)
        .await;
    assert_eq!(s.error_code, 0);
    (id, r.generation_id)
}

#[tokio::test(start_paused = true)]
async fn two_members_join_sync_and_rebalance_on_leave() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = kv(dir.path()).await;
    let c = coordinator(&kv).await;
    let a = member_id(&c, "g", 6).await;
    let b = member_id(&c, "g", 6).await;
    assert_ne!(a, b);
    assert_eq!(c.group_state("g"), GroupState::Empty);

    let ja = tokio::spawn({
        let c = c.clone();
        let req = join_req("g", &a, &["roundrobin", "range"]);
        async move { c.join_group(req, 6).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(c.group_state("g"), GroupState::PreparingRebalance);
    let rb = c
        .join_group(join_req("g", &b, &["range", "roundrobin"]), 7)
        .await;
    let ra = ja.await.expect("join a");
    assert_eq!((ra.error_code, rb.error_code), (0, 0));
    assert_eq!(ra.generation_id, 1);
    assert_eq!(rb.generation_id, 1);
    assert_eq!(ra.leader.as_str(), a);
    assert_eq!(rb.leader.as_str(), a);
    assert_eq!(ra.members.len(), 2);
    assert!(rb.members.is_empty());
    // One vote each; the leader's preference breaks the tie.
    assert_eq!(ra.protocol_name.as_deref(), Some("roundrobin"));
    assert_eq!(rb.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(ra.members[1].metadata, Bytes::from("meta-roundrobin"));
    encodes(&ra, 6);
    encodes(&rb, 7);
    assert_eq!(c.group_state("g"), GroupState::CompletingRebalance);

    // The follower waits for the leader's assignment.
    let sb_task = tokio::spawn({
        let c = c.clone();
        let req = sync_req("g", &b, 1, &[]);
        async move { c.sync_group(req, 5).await }
    });
    tokio::task::yield_now().await;
    let hb = c.heartbeat(heartbeat_req("g", &a, 1), 4).await;
    assert_eq!(hb.error_code, 0);
    let sa = c
        .sync_group(sync_req("g", &a, 1, &[(&a, "for-a"), (&b, "for-b")]), 5)
        .await;
    let sbr = sb_task.await.expect("sync b");
    assert_eq!(sa.assignment, Bytes::from("for-a"));
    assert_eq!(sbr.assignment, Bytes::from("for-b"));
    assert_eq!(sbr.protocol_name.as_deref(), Some("roundrobin"));
    assert_eq!(c.group_state("g"), GroupState::Stable);

    let d = c
        .describe_groups(
            DescribeGroupsRequest::default().with_groups(vec![gid("g")]),
            5,
        )
        .await;
    let g = &d.groups[0];
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.protocol_data.as_str(), "roundrobin");
    assert_eq!(g.members.len(), 2);
    assert_eq!(g.members[1].member_assignment, Bytes::from("for-b"));
    assert_eq!(g.authorized_operations, i32::MIN);

    // A member commit with the right generation is fine.
    let cat = catalog();
    let r = c
        .offset_commit(commit_req("g", &b, 1, &[("orders", 0, 10)]), 8, &cat)
        .await;
    assert_eq!(codes(&r), vec![("orders".to_owned(), 0, 0)]);

    // B leaves: A learns about the rebalance and rejoins alone.
    let l = c
        .leave_group(
            LeaveGroupRequest::default()
                .with_group_id(gid("g"))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(sb(&b)),
                    MemberIdentity::default().with_member_id(sb("nobody")),
                ]),
            4,
        )
        .await;
    assert_eq!(l.error_code, 0);
    assert_eq!(l.members[0].error_code, 0);
    assert_eq!(l.members[1].error_code, KafkaCode::UnknownMemberId.code());
    let hb = c.heartbeat(heartbeat_req("g", &a, 1), 4).await;
    assert_eq!(hb.error_code, KafkaCode::RebalanceInProgress.code());
    // Commits of the current generation are still accepted while rebalancing.
    let r = c
        .offset_commit(commit_req("g", &a, 1, &[("orders", 1, 5)]), 8, &cat)
        .await;
    assert_eq!(codes(&r)[0].2, 0);
    let ra = c
        .join_group(join_req("g", &a, &["roundrobin", "range"]), 6)
        .await;
    assert_eq!(ra.error_code, 0);
    assert_eq!(ra.generation_id, 2);
    assert_eq!(ra.members.len(), 1);
    let hb = c.heartbeat(heartbeat_req("g", &b, 2), 4).await;
    assert_eq!(hb.error_code, KafkaCode::UnknownMemberId.code());

    // The last member leaving (v0 form) empties the group.
    let l = c
        .leave_group(
            LeaveGroupRequest::default()
                .with_group_id(gid("g"))
                .with_member_id(sb(&a)),
            0,
        )
        .await;
    assert_eq!(l.error_code, 0);
    assert_eq!(c.group_state("g"), GroupState::Empty);
    c.shutdown();
}

#[tokio::test(start_paused = true)]
async fn session_expiry_rebalances_then_empties_the_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = kv(dir.path()).await;
    let c = coordinator(&kv).await;
    // v3: the member id is assigned directly.
    let ra = c.join_group(join_req("g", "", &["range"]), 3).await;
    assert_eq!(ra.error_code, 0);
    let a = ra.member_id.to_string();
    // B arrives after A's join completed: A must rejoin for the second generation.
    let jb = tokio::spawn({
        let c = c.clone();
        let req = join_req("g", "", &["range"]);
        async move { c.join_group(req, 3).await }
    });
    tokio::task::yield_now().await;
    let ra = c.join_group(join_req("g", &a, &["range"]), 3).await;
    let rb = jb.await.expect("join b");
    let b = rb.member_id.to_string();
    assert_eq!(ra.generation_id, 2);
    assert_eq!(rb.generation_id, 2);
    let gen_b = rb.generation_id;
    let generation = gen_b;
    let s = c
        .sync_group(sync_req("g", &a, generation, &[(&a, "x"), (&b, "y")]), 2)
        .await;
    assert_eq!(s.error_code, 0);
    let s = c.sync_group(sync_req("g", &b, generation, &[]), 2).await;
    assert_eq!(s.assignment, Bytes::from("y"));

    // A keeps heartbeating, B goes silent.
    let mut rebalancing = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let hb = c.heartbeat(heartbeat_req("g", &a, generation), 2).await;
        if hb.error_code == KafkaCode::RebalanceInProgress.code() {
            rebalancing = true;
            break;
        }
        assert_eq!(hb.error_code, 0);
    }
    assert!(rebalancing, "B's expiry must start a rebalance");
    let ra = c.join_group(join_req("g", &a, &["range"]), 3).await;
    assert_eq!(ra.generation_id, generation + 1);
    assert_eq!(ra.members.len(), 1);
    let hb = c.heartbeat(heartbeat_req("g", &b, generation), 2).await;
    assert_eq!(hb.error_code, KafkaCode::UnknownMemberId.code());

    // A goes silent too: the group ends up Empty.
    tokio::time::sleep(Duration::from_millis(
        u64::try_from(SESSION_MS).unwrap_or(0) * 2,
    ))
    .await;
    assert_eq!(c.group_state("g"), GroupState::Empty);
    c.shutdown();
}

#[tokio::test(start_paused = true)]
async fn pending_member_ids_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = kv(dir.path()).await;
    let c = coordinator(&kv).await;
    let id = member_id(&c, "g", 9).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let r = c.join_group(join_req("g", &id, &["range"]), 9).await;
    assert_eq!(r.error_code, KafkaCode::UnknownMemberId.code());
    encodes(&r, 9);

    // A member id handed out to a Stable group and never used disturbs nobody.
    let (a, generation) = stable_single(&c, "s").await;
    let _unused = member_id(&c, "s", 9).await;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let hb = c.heartbeat(heartbeat_req("s", &a, generation), 4).await;
        assert_eq!(hb.error_code, 0);
    }
    assert_eq!(c.group_state("s"), GroupState::Stable);
    c.shutdown();
}

#[tokio::test(start_paused = true)]
async fn errors_of_join_sync_heartbeat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = kv(dir.path()).await;
    let c = coordinator(&kv).await;
    let r = c.join_group(join_req("", "", &["range"]), 5).await;
    assert_eq!(r.error_code, KafkaCode::InvalidGroupId.code());
    let r = c
        .join_group(join_req("g", "", &["range"]).with_session_timeout_ms(10), 5)
        .await;
    assert_eq!(r.error_code, KafkaCode::InvalidSessionTimeout.code());
    let r = c.join_group(join_req("g", "", &[]), 5).await;
    assert_eq!(r.error_code, KafkaCode::InconsistentGroupProtocol.code());
    let r = c.join_group(join_req("g", "ghost", &["range"]), 5).await;
    assert_eq!(r.error_code, KafkaCode::UnknownMemberId.code());
    assert_eq!(
        c.group_state("g"),
        GroupState::Dead,
        "failed joins leave no group"
    );

    let (a, generation) = stable_single(&c, "g").await;
    // Another protocol type, or no common protocol.
    let r = c
        .join_group(
            join_req("g", "", &["range"]).with_protocol_type(sb("connect")),
            5,
        )
        .await;
    assert_eq!(r.error_code, KafkaCode::InconsistentGroupProtocol.code());
    let r = c.join_group(join_req("g", "", &["sticky"]), 5).await;
    assert_eq!(r.error_code, KafkaCode::InconsistentGroupProtocol.code());

    let hb = c.heartbeat(heartbeat_req("g", &a, generation + 1), 4).await;
    assert_eq!(hb.error_code, KafkaCode::IllegalGeneration.code());
    let hb = c
        .heartbeat(heartbeat_req("g", "ghost", generation), 4)
        .await;
    assert_eq!(hb.error_code, KafkaCode::UnknownMemberId.code());
    let hb = c.heartbeat(heartbeat_req("nope", &a, generation), 4).await;
    assert_eq!(hb.error_code, KafkaCode::UnknownMemberId.code());
    let hb = c.heartbeat(heartbeat_req("", &a, generation), 0).await;
    assert_eq!(hb.error_code, KafkaCode::InvalidGroupId.code());
    let s = c
        .sync_group(sync_req("g", &a, generation - 1, &[]), 1)
        .await;
    assert_eq!(s.error_code, KafkaCode::IllegalGeneration.code());
    let s = c
        .sync_group(sync_req("g", "ghost", generation, &[]), 1)
        .await;
    assert_eq!(s.error_code, KafkaCode::UnknownMemberId.code());
    let s = c
        .sync_group(
            sync_req("g", &a, generation, &[]).with_protocol_name(Some(sb("sticky"))),
            5,
        )
        .await;
    assert_eq!(s.error_code, KafkaCode::InconsistentGroupProtocol.code());
    // A Stable member re-syncing gets its assignment again.
    let s = c
        .sync_group(
            sync_req("g", &a, generation, &[])
                .with_protocol_type(Some(sb("consumer")))
                .with_protocol_name(Some(sb("range"))),
            5,
        )
        .await;
    assert_eq!((s.error_code, s.assignment.clone()), (0, Bytes::from("a")));

    let cat = catalog();
    let r = c
        .offset_commit(
            commit_req("g", &a, generation + 3, &[("orders", 0, 1)]),
            8,
            &cat,
        )
        .await;
    assert_eq!(codes(&r)[0].2, KafkaCode::IllegalGeneration.code());
    let r = c
        .offset_commit(
            commit_req("g", "ghost", generation, &[("orders", 0, 1)]),
            8,
            &cat,
        )
        .await;
    assert_eq!(codes(&r)[0].2, KafkaCode::UnknownMemberId.code());
    // Standalone commits are refused while the group has members.
    let r = c
        .offset_commit(commit_req("g", "", -1, &[("orders", 0, 1)]), 8, &cat)
        .await;
    assert_eq!(codes(&r)[0].2, KafkaCode::UnknownMemberId.code());
    // A member commit to an unknown group: an old generation.
    let r = c
        .offset_commit(commit_req("other", &a, 4, &[("orders", 0, 1)]), 8, &cat)
        .await;
    assert_eq!(codes(&r)[0].2, KafkaCode::IllegalGeneration.code());

    // Rejoin of the leader forces a rebalance; sync during it is refused.
    let join = tokio::spawn({
        let c = c.clone();
        let req = join_req("g", "", &["range"]);
        async move { c.join_group(req, 3).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(c.group_state("g"), GroupState::PreparingRebalance);
    let s = c.sync_group(sync_req("g", &a, generation, &[]), 1).await;
    assert_eq!(s.error_code, KafkaCode::RebalanceInProgress.code());
    let ra = c.join_group(join_req("g", &a, &["range"]), 5).await;
    let rb = join.await.expect("join");
    assert_eq!(ra.generation_id, generation + 1);
    assert_eq!(rb.generation_id, generation + 1);
    // A commit between join and sync is told to wait.
    let r = c
        .offset_commit(
            commit_req("g", &a, generation + 1, &[("orders", 0, 1)]),
            8,
            &cat,
        )
        .await;
    assert_eq!(codes(&r)[0].2, KafkaCode::RebalanceInProgress.code());
    c.shutdown();
}

#[tokio::test(start_paused = true)]
async fn static_member_rejoin_fences_the_old_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = kv(dir.path()).await;
    let c = coordinator(&kv).await;
    let static_join = |member: &str| {
        join_req("g", member, &["range"]).with_group_instance_id(Some(sb("instance-1")))
    };
    // Static members get their id at once, even at v4+.
    let r1 = c.join_group(static_join(""), 5).await;
    assert_eq!(r1.error_code, 0);
    let old = r1.member_id.to_string();
    let s = c
        .sync_group(
            sync_req("g", &old, r1.generation_id, &[(&old, "p0")])
                .with_group_instance_id(Some(sb("instance-1"))),
            3,
        )
        .await;
    assert_eq!(s.error_code, 0);

    // The same instance restarts without its member id: it takes over its membership
    // in the same generation, without a rebalance. Before v9 the returning leader is
    // given the old leader id, so that it does not assign (Kafka's behaviour).
    let r2 = c.join_group(static_join(""), 5).await;
    assert_eq!(r2.error_code, 0);
    let new = r2.member_id.to_string();
    assert_ne!(old, new);
    assert_eq!(r2.generation_id, r1.generation_id);
    assert_eq!(r2.leader.as_str(), old);
    assert!(r2.members.is_empty());
    assert_eq!(c.group_state("g"), GroupState::Stable);
    encodes(&r2, 5);
    let s = c
        .sync_group(
            sync_req("g", &new, r2.generation_id, &[])
                .with_group_instance_id(Some(sb("instance-1"))),
            3,
        )
        .await;
    assert_eq!((s.error_code, s.assignment.clone()), (0, Bytes::from("p0")));
    let s = c
        .sync_group(
            sync_req("g", &old, r1.generation_id, &[])
                .with_group_instance_id(Some(sb("instance-1"))),
            3,
        )
        .await;
    assert_eq!(s.error_code, KafkaCode::FencedInstanceId.code());

    // From v9 the returning leader is told it leads and must skip the assignment.
    let r3 = c.join_group(static_join(""), 9).await;
    assert_eq!(r3.error_code, 0);
    let newest = r3.member_id.to_string();
    assert_eq!(r3.generation_id, r1.generation_id);
    assert_eq!(r3.leader.as_str(), newest);
    assert!(r3.skip_assignment);
    assert_eq!(r3.members.len(), 1);
    assert_eq!(
        r3.members[0].group_instance_id.as_deref(),
        Some("instance-1")
    );
    encodes(&r3, 9);
    let hb = c
        .heartbeat(
            heartbeat_req("g", &new, r1.generation_id)
                .with_group_instance_id(Some(sb("instance-1"))),
            3,
        )
        .await;
    assert_eq!(hb.error_code, KafkaCode::FencedInstanceId.code());
    let hb = c
        .heartbeat(
            heartbeat_req("g", &newest, r1.generation_id)
                .with_group_instance_id(Some(sb("instance-1"))),
            3,
        )
        .await;
    assert_eq!(hb.error_code, 0);

    let hb = c
        .heartbeat(
            heartbeat_req("g", &old, r1.generation_id)
                .with_group_instance_id(Some(sb("instance-1"))),
            3,
        )
        .await;
    assert_eq!(hb.error_code, KafkaCode::FencedInstanceId.code());
    let r = c.join_group(static_join(&old), 5).await;
    assert_eq!(r.error_code, KafkaCode::FencedInstanceId.code());
    let l = c
        .leave_group(
            LeaveGroupRequest::default()
                .with_group_id(gid("g"))
                .with_members(vec![
                    MemberIdentity::default()
                        .with_member_id(sb(&old))
                        .with_group_instance_id(Some(sb("instance-1"))),
                ]),
            3,
        )
        .await;
    assert_eq!(l.members[0].error_code, KafkaCode::FencedInstanceId.code());

    let d = c
        .describe_groups(
            DescribeGroupsRequest::default().with_groups(vec![gid("g")]),
            4,
        )
        .await;
    assert_eq!(
        d.groups[0].members[0].group_instance_id.as_deref(),
        Some("instance-1")
    );

    // Leaving by instance id alone (member id unknown to the client) removes it.
    let l = c
        .leave_group(
            LeaveGroupRequest::default()
                .with_group_id(gid("g"))
                .with_members(vec![
                    MemberIdentity::default()
                        .with_member_id(sb(""))
                        .with_group_instance_id(Some(sb("instance-1"))),
                ]),
            5,
        )
        .await;
    assert_eq!(l.members[0].error_code, 0);
    assert_eq!(c.group_state("g"), GroupState::Empty);
    c.shutdown();
}

fn delete_req(group: &str, parts: &[(&str, &[i32])]) -> OffsetDeleteRequest {
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    OffsetDeleteRequest::default()
        .with_group_id(gid(group))
        .with_topics(
            parts
                .iter()
                .map(|(t, ps)| {
                    OffsetDeleteRequestTopic::default()
                        .with_name(TopicName(sb(t)))
                        .with_partitions(
                            ps.iter()
                                .map(|p| {
                                    OffsetDeleteRequestPartition::default().with_partition_index(*p)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}

fn delete_codes(r: &OffsetDeleteResponse) -> Vec<(String, i32, i16)> {
    r.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index, p.error_code))
        })
        .collect()
}

async fn committed(c: &GroupCoordinator, group: &str, topic: &str, parts: &[i32]) -> Vec<i64> {
    let r = c
        .offset_fetch(
            OffsetFetchRequest::default()
                .with_group_id(gid(group))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(sb(topic)))
                        .with_partition_indexes(parts.to_vec()),
                ])),
            5,
            &catalog(),
        )
        .await;
    r.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect()
}

/// A consumer's subscription metadata (ConsumerProtocolSubscription v1).
fn subscription(topics: &[&str]) -> Bytes {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1i16.to_be_bytes());
    ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| sb(t)).collect())
        .encode(&mut buf, 1)
        .expect("encode subscription");
    buf.freeze()
}

#[tokio::test(start_paused = true)]
async fn offset_delete_follows_kafka() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = kv(dir.path()).await;
    let cat = catalog();
    {
        let c = coordinator(&kv).await;
        // An Empty group: offsets go, unknown topics and partitions are named.
        let r = c
            .offset_commit(
                commit_req("od", "", -1, &[("orders", 0, 5), ("orders", 1, 6)]),
                8,
                &cat,
            )
            .await;
        assert!(codes(&r).iter().all(|(_, _, code)| *code == 0));
        let r = c
            .offset_delete(
                delete_req("od", &[("orders", &[0, 2, 7]), ("nope", &[0])]),
                0,
                &cat,
            )
            .await;
        assert_eq!(r.error_code, 0);
        encodes(&r, 0);
        let unknown = KafkaCode::UnknownTopicOrPartition.code();
        assert_eq!(
            delete_codes(&r),
            vec![
                ("orders".to_owned(), 0, 0),
                ("orders".to_owned(), 2, 0),
                ("orders".to_owned(), 7, unknown),
                ("nope".to_owned(), 0, unknown),
            ]
        );
        assert_eq!(committed(&c, "od", "orders", &[0, 1]).await, vec![-1, 6]);

        let top = |r: OffsetDeleteResponse| (r.error_code, r.topics.len());
        let r = c
            .offset_delete(delete_req("ghost", &[("orders", &[0])]), 0, &cat)
            .await;
        assert_eq!(top(r), (KafkaCode::GroupIdNotFound.code(), 0));
        let r = c
            .offset_delete(delete_req("", &[("orders", &[0])]), 0, &cat)
            .await;
        assert_eq!(top(r), (KafkaCode::InvalidGroupId.code(), 0));
        c.shutdown();
    }
    // Durable: a new coordinator does not see the deleted offset.
    let c = coordinator(&kv).await;
    assert_eq!(committed(&c, "od", "orders", &[0, 1]).await, vec![-1, 6]);

    // A Stable consumer group subscribed to "orders": its offsets stay, others go.
    let id = member_id(&c, "sub", 5).await;
    let mut join = join_req("sub", &id, &["range"]);
    join.protocols[0].metadata = subscription(&["orders"]);
    let r = c.join_group(join, 5).await;
    assert_eq!(r.error_code, 0);
    let s = c
        .sync_group(sync_req("sub", &id, r.generation_id, &[(&id, "a")]), 3)
        .await;
    assert_eq!(s.error_code, 0);
    let r = c
        .offset_commit(
            commit_req(
                "sub",
                &id,
                r.generation_id,
                &[("orders", 0, 1), ("events.v1-x_y", 1, 2)],
            ),
            8,
            &cat,
        )
        .await;
    assert!(codes(&r).iter().all(|(_, _, code)| *code == 0));
    let r = c
        .offset_delete(
            delete_req("sub", &[("orders", &[0]), ("events.v1-x_y", &[1])]),
            0,
            &cat,
        )
        .await;
    assert_eq!(
        delete_codes(&r),
        vec![
            (
                "orders".to_owned(),
                0,
                KafkaCode::GroupSubscribedToTopic.code()
            ),
            ("events.v1-x_y".to_owned(), 1, 0),
        ]
    );
    assert_eq!(committed(&c, "sub", "orders", &[0]).await, vec![1]);
    assert_eq!(committed(&c, "sub", "events.v1-x_y", &[1]).await, vec![-1]);

    // Subscriptions that cannot be read: every topic counts as subscribed.
    let (_, _) = stable_single(&c, "opaque").await;
    let r = c
        .offset_delete(delete_req("opaque", &[("orders", &[0])]), 0, &cat)
        .await;
    assert_eq!(
        delete_codes(&r),
        vec![(
            "orders".to_owned(),
            0,
            KafkaCode::GroupSubscribedToTopic.code()
        )]
    );

    // A group of another protocol type with members: NON_EMPTY_GROUP.
    let r = c
        .join_group(
            join_req("conn", "", &["range"]).with_protocol_type(sb("connect")),
            3,
        )
        .await;
    assert_eq!(r.error_code, 0);
    let r = c
        .offset_delete(delete_req("conn", &[("orders", &[0])]), 0, &cat)
        .await;
    assert_eq!(
        (r.error_code, r.topics.len()),
        (KafkaCode::NonEmptyGroup.code(), 0)
    );
    c.shutdown();
}

#[tokio::test(start_paused = true)]
async fn standalone_commits_are_durable_and_fetchable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = kv(dir.path()).await;
    let cat = catalog();
    let group = "app.one/with%odd_chars";
    {
        let c = coordinator(&kv).await;
        let mut req = commit_req(
            group,
            "",
            -1,
            &[
                ("orders", 0, 42),
                ("orders", 2, 7),
                ("orders", 3, 1),
                ("missing", 0, 1),
                ("events.v1-x_y", 1, 99),
            ],
        );
        req.topics[0].partitions[1].committed_metadata =
            Some(sb(&"m".repeat(MAX_OFFSET_METADATA_BYTES + 1)));
        req.topics[0].partitions[0].committed_metadata = None;
        let r = c.offset_commit(req, 6, &cat).await;
        assert_eq!(
            codes(&r),
            vec![
                ("orders".to_owned(), 0, 0),
                (
                    "orders".to_owned(),
                    2,
                    KafkaCode::OffsetMetadataTooLarge.code()
                ),
                (
                    "orders".to_owned(),
                    3,
                    KafkaCode::UnknownTopicOrPartition.code()
                ),
                (
                    "missing".to_owned(),
                    0,
                    KafkaCode::UnknownTopicOrPartition.code()
                ),
                ("events.v1-x_y".to_owned(), 1, 0),
            ]
        );
        let r = c
            .offset_commit(commit_req("", "", -1, &[("orders", 0, 1)]), 2, &cat)
            .await;
        assert_eq!(codes(&r)[0].2, KafkaCode::InvalidGroupId.code());
        let l = c.list_groups(ListGroupsRequest::default(), 4).await;
        assert_eq!(l.groups.len(), 1);
        assert_eq!(l.groups[0].group_state.as_str(), "Empty");
        assert_eq!(l.groups[0].protocol_type.as_str(), "");
        c.shutdown();
    }
    // A new coordinator on the same store sees the commits.
    let c = coordinator(&kv).await;
    let r = c
        .offset_fetch(
            OffsetFetchRequest::default()
                .with_group_id(gid(group))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(sb("orders")))
                        .with_partition_indexes(vec![0, 1, 2]),
                ])),
            5,
            &cat,
        )
        .await;
    assert_eq!(r.error_code, 0);
    let parts = &r.topics[0].partitions;
    assert_eq!(parts[0].committed_offset, 42);
    assert_eq!(parts[0].committed_leader_epoch, 7);
    assert_eq!(parts[0].metadata.as_deref(), Some(""));
    assert_eq!(parts[1].committed_offset, -1);
    assert_eq!(parts[2].committed_offset, -1);
    // Null topics: everything committed.
    let r = c
        .offset_fetch(
            OffsetFetchRequest::default()
                .with_group_id(gid(group))
                .with_topics(None),
            7,
            &cat,
        )
        .await;
    let mut all: Vec<(String, i32, i64, String)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.metadata.as_deref().unwrap_or("?").to_owned(),
                )
            })
        })
        .collect();
    all.sort();
    assert_eq!(
        all,
        vec![
            ("events.v1-x_y".to_owned(), 1, 99, "meta".to_owned()),
            ("orders".to_owned(), 0, 42, String::new()),
        ]
    );

    // v8: several groups at once, one unknown, one invalid.
    let r = c
        .offset_fetch(
            OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(gid(group))
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopics::default()
                            .with_name(TopicName(sb("events.v1-x_y")))
                            .with_partition_indexes(vec![1]),
                    ])),
                OffsetFetchRequestGroup::default()
                    .with_group_id(gid("unknown"))
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopics::default()
                            .with_name(TopicName(sb("orders")))
                            .with_partition_indexes(vec![0]),
                    ])),
                OffsetFetchRequestGroup::default()
                    .with_group_id(gid(group))
                    .with_topics(None),
                OffsetFetchRequestGroup::default().with_group_id(gid("")),
            ]),
            8,
            &cat,
        )
        .await;
    encodes(&r, 8);
    assert_eq!(r.groups.len(), 4);
    assert_eq!(r.groups[0].error_code, 0);
    assert_eq!(r.groups[0].topics[0].partitions[0].committed_offset, 99);
    assert_eq!(
        r.groups[0].topics[0].partitions[0].committed_leader_epoch,
        7
    );
    assert_eq!(r.groups[1].error_code, 0);
    assert_eq!(r.groups[1].topics[0].partitions[0].committed_offset, -1);
    assert_eq!(r.groups[2].topics.len(), 2);
    assert_eq!(r.groups[3].error_code, KafkaCode::InvalidGroupId.code());

    // Deleting a topic drops its offsets, durably.
    c.delete_topic_offsets("orders")
        .await
        .expect("delete topic");
    drop(c);
    let c = coordinator(&kv).await;
    let r = c
        .offset_fetch(
            OffsetFetchRequest::default()
                .with_group_id(gid(group))
                .with_topics(None),
            3,
            &cat,
        )
        .await;
    assert_eq!(r.topics.len(), 1);
    assert_eq!(r.topics[0].name.as_str(), "events.v1-x_y");

    // Deleting the group removes the rest.
    let d = c
        .delete_groups(
            DeleteGroupsRequest::default().with_groups_names(vec![gid(group), gid("nope")]),
            2,
        )
        .await;
    assert_eq!(d.results[0].error_code, 0);
    assert_eq!(d.results[1].error_code, KafkaCode::GroupIdNotFound.code());
    let (left, _) = kv.get_prefix("kafka/groups/").await.expect("scan");
    assert!(left.is_empty(), "{left:?}");
    c.shutdown();
}

#[tokio::test(start_paused = true)]
async fn list_describe_delete_follow_group_states() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = kv(dir.path()).await;
    let c = coordinator(&kv).await;
    let cat = catalog();
    let (a, generation) = stable_single(&c, "busy").await;
    let r = c
        .offset_commit(commit_req("idle", "", -1, &[("orders", 0, 3)]), 2, &cat)
        .await;
    assert_eq!(codes(&r)[0].2, 0);

    let l = c.list_groups(ListGroupsRequest::default(), 0).await;
    let listed: Vec<(String, String)> = l
        .groups
        .iter()
        .map(|g| (g.group_id.to_string(), g.protocol_type.to_string()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("busy".to_owned(), "consumer".to_owned()),
            ("idle".to_owned(), String::new())
        ]
    );
    let l = c
        .list_groups(
            ListGroupsRequest::default().with_states_filter(vec![sb("stable")]),
            4,
        )
        .await;
    assert_eq!(l.groups.len(), 1);
    assert_eq!(l.groups[0].group_state.as_str(), "Stable");

    let d = c
        .describe_groups(
            DescribeGroupsRequest::default().with_groups(vec![
                gid("busy"),
                gid("idle"),
                gid("unknown"),
            ]),
            0,
        )
        .await;
    let states: Vec<&str> = d.groups.iter().map(|g| g.group_state.as_str()).collect();
    assert_eq!(states, vec!["Stable", "Empty", "Dead"]);
    assert!(d.groups.iter().all(|g| g.error_code == 0));
    assert_eq!(d.groups[0].members[0].member_id.as_str(), a);
    assert_eq!(
        d.groups[0].members[0].member_metadata,
        Bytes::from("meta-range")
    );

    let del = c
        .delete_groups(
            DeleteGroupsRequest::default().with_groups_names(vec![
                gid("busy"),
                gid("idle"),
                gid(""),
            ]),
            1,
        )
        .await;
    let del: Vec<i16> = del.results.iter().map(|r| r.error_code).collect();
    assert_eq!(
        del,
        vec![
            KafkaCode::NonEmptyGroup.code(),
            0,
            KafkaCode::InvalidGroupId.code()
        ]
    );
    assert_eq!(c.group_state("idle"), GroupState::Dead);
    let hb = c.heartbeat(heartbeat_req("busy", &a, generation), 1).await;
    assert_eq!(hb.error_code, 0);
    c.shutdown();
}

#[tokio::test(start_paused = true)]
async fn offsets_of_empty_groups_expire_after_the_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = kv(dir.path()).await;
    let settings = GroupSettings {
        offsets_retention: Some(Duration::ZERO),
        ..GroupSettings::default()
    };
    let c = GroupCoordinator::open(ShimStore::new(kv.clone(), "kafka"), settings)
        .await
        .expect("open");
    let cat = catalog();
    let (a, generation) = stable_single(&c, "busy").await;
    let r = c
        .offset_commit(
            commit_req("busy", &a, generation, &[("orders", 0, 3)]),
            8,
            &cat,
        )
        .await;
    assert_eq!(codes(&r)[0].2, 0);
    let r = c
        .offset_commit(commit_req("idle", "", -1, &[("orders", 0, 3)]), 8, &cat)
        .await;
    assert_eq!(codes(&r)[0].2, 0);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let hb = c.heartbeat(heartbeat_req("busy", &a, generation), 4).await;
        assert_eq!(hb.error_code, 0);
    }
    let (left, _) = kv.get_prefix("kafka/groups/").await.expect("scan");
    let keys: Vec<&str> = left.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, vec!["kafka/groups/busy/offsets/orders/0"]);
    let r = c
        .offset_fetch(
            OffsetFetchRequest::default()
                .with_group_id(gid("idle"))
                .with_topics(None),
            6,
            &cat,
        )
        .await;
    assert!(r.topics.is_empty());
    c.shutdown();
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_parked_joins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = kv(dir.path()).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let c = coordinator(&kv).await;
    assert_eq!(
        metrics.num_alive_tasks(),
        tasks_before + 1,
        "the timer task"
    );
    let id = member_id(&c, "g", 4).await;
    let join = tokio::spawn({
        let c = c.clone();
        let req = join_req("g", &id, &["range"]);
        async move { c.join_group(req, 4).await }
    });
    tokio::task::yield_now().await;
    c.shutdown();
    let r = join.await.expect("join");
    assert_eq!(r.error_code, KafkaCode::CoordinatorNotAvailable.code());
    let r = c.join_group(join_req("g", &id, &["range"]), 4).await;
    assert_eq!(r.error_code, KafkaCode::CoordinatorNotAvailable.code());
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        metrics.num_alive_tasks(),
        tasks_before,
        "no timer left behind"
    );
}

/// Every handler's answer encodes at every version the server advertises.
#[tokio::test(start_paused = true)]
async fn responses_encode_at_every_advertised_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = kv(dir.path()).await;
    let c = coordinator(&kv).await;
    let cat = catalog();

    for version in 0..=9i16 {
        let group = format!("join-v{version}");
        let id = if version >= 4 {
            member_id(&c, &group, version).await
        } else {
            String::new()
        };
        let mut req = join_req(&group, &id, &["range"]);
        if version >= 5 {
            req = req.with_group_instance_id(None);
        }
        let r = c.join_group(req, version).await;
        assert_eq!(r.error_code, 0, "v{version}");
        encodes(&r, version);
        let member = r.member_id.to_string();
        // An error answer too.
        let e = c
            .join_group(join_req(&group, "ghost", &["range"]), version)
            .await;
        assert_eq!(e.error_code, KafkaCode::UnknownMemberId.code());
        encodes(&e, version);
        let sync_version = version.min(5);
        let s = c
            .sync_group(
                sync_req(&group, &member, r.generation_id, &[(&member, "x")]),
                sync_version,
            )
            .await;
        assert_eq!(s.error_code, 0);
        encodes(&s, sync_version);
        let hb_version = version.min(4);
        let hb = c
            .heartbeat(heartbeat_req(&group, &member, r.generation_id), hb_version)
            .await;
        assert_eq!(hb.error_code, 0);
        encodes(&hb, hb_version);
    }

    let (a, generation) = stable_single(&c, "g").await;
    for version in 2..=9i16 {
        let r = c
            .offset_commit(
                commit_req("g", &a, generation, &[("orders", 0, 5), ("nope", 0, 1)]),
                version,
                &cat,
            )
            .await;
        encodes(&r, version);
        let r = c
            .offset_commit(
                commit_req("solo", "", -1, &[("orders", 1, 5)]),
                version,
                &cat,
            )
            .await;
        assert_eq!(codes(&r)[0].2, 0);
        encodes(&r, version);
    }
    for version in 1..=9i16 {
        let topics = vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(sb("orders")))
                .with_partition_indexes(vec![0, 1]),
        ];
        let req = if version >= 8 {
            OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(gid("g"))
                    .with_topics(None),
                OffsetFetchRequestGroup::default().with_group_id(gid("")),
            ])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(gid("g"))
                .with_topics(Some(topics.clone()))
        };
        let r = c.offset_fetch(req, version, &cat).await;
        encodes(&r, version);
        let r = c
            .offset_fetch(
                OffsetFetchRequest::default()
                    .with_group_id(gid(""))
                    .with_topics(Some(topics)),
                version.min(7),
                &cat,
            )
            .await;
        encodes(&r, version.min(7));
    }
    for version in 0..=4i16 {
        let r = c.list_groups(ListGroupsRequest::default(), version).await;
        assert!(!r.groups.is_empty());
        encodes(&r, version);
    }
    for version in 0..=5i16 {
        let r = c
            .describe_groups(
                DescribeGroupsRequest::default().with_groups(vec![
                    gid("g"),
                    gid("solo"),
                    gid("unknown"),
                    gid(""),
                ]),
                version,
            )
            .await;
        encodes(&r, version);
    }
    for version in 0..=2i16 {
        let r = c
            .delete_groups(
                DeleteGroupsRequest::default().with_groups_names(vec![gid("g"), gid("x")]),
                version,
            )
            .await;
        encodes(&r, version);
    }
    for version in 0..=5i16 {
        let req = LeaveGroupRequest::default()
            .with_group_id(gid("g"))
            .with_member_id(if version < 3 { sb("ghost") } else { sb("") })
            .with_members(if version >= 3 {
                vec![MemberIdentity::default().with_member_id(sb("ghost"))]
            } else {
                Vec::new()
            });
        let r = c.leave_group(req, version).await;
        assert_eq!(
            if version >= 3 {
                r.members[0].error_code
            } else {
                r.error_code
            },
            KafkaCode::UnknownMemberId.code()
        );
        encodes(&r, version);
    }
    c.shutdown();
}

/// An offsets log in memory (the broker's is `__consumer_offsets`): what was appended, per
/// group, and a switch that makes appends fail.
#[derive(Default)]
struct MemoryLog {
    created: AtomicBool,
    failing: AtomicBool,
    appended: Mutex<Vec<(String, LogRecord)>>,
}

impl OffsetLog for MemoryLog {
    fn ensure(&self) -> futures::future::BoxFuture<'_, Result<bool, String>> {
        Box::pin(async move { Ok(!self.created.swap(true, Ordering::SeqCst)) })
    }

    fn append<'a>(
        &'a self,
        group: &'a str,
        records: Vec<LogRecord>,
        _timestamp_ms: i64,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if self.failing.load(Ordering::SeqCst) {
                return Err("the log is down".into());
            }
            let mut appended = self.appended.lock().unwrap();
            for record in records {
                appended.push((group.to_owned(), record));
            }
            Ok(())
        })
    }

    // Compaction is judged against the real topic (kafka-shim/tests/offsets_topic.rs): this
    // log reports itself empty, so the coordinator never compacts it.
    fn span(&self, _partition: i32) -> futures::future::BoxFuture<'_, Result<(i64, i64), String>> {
        Box::pin(async { Ok((0, 0)) })
    }

    fn compact(
        &self,
        _partition: i32,
        _snapshot: Vec<(String, Vec<LogRecord>)>,
        _timestamp_ms: i64,
    ) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Err("the in-memory log is never compacted".into()) })
    }
}

impl MemoryLog {
    /// (group, partition, committed offset or `None` for a tombstone) of each record.
    fn records(&self) -> Vec<(String, i32, Option<i64>)> {
        self.appended
            .lock()
            .unwrap()
            .iter()
            .map(|(g, (k, v))| {
                let partition = i32::from_be_bytes(k[k.len() - 4..].try_into().unwrap());
                let offset = v
                    .as_ref()
                    .map(|v| i64::from_be_bytes(v[2..10].try_into().unwrap()));
                (g.clone(), partition, offset)
            })
            .collect()
    }
}

#[tokio::test]
async fn the_offsets_log_gets_every_change_before_the_store_and_what_was_stored_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let kv = kv(dir.path()).await;
    let cat = catalog();
    let c = coordinator(&kv).await;
    // Stored before any log was attached (an older version of the broker).
    let r = c
        .offset_commit(commit_req("early", "", -1, &[("orders", 0, 3)]), 8, &cat)
        .await;
    assert_eq!(codes(&r), [("orders".into(), 0, 0)]);

    let log = Arc::new(MemoryLog::default());
    let weak: Weak<MemoryLog> = Arc::downgrade(&log);
    c.attach_log(weak);
    let r = c
        .offset_commit(commit_req("g", "", -1, &[("orders", 1, 10)]), 8, &cat)
        .await;
    assert_eq!(codes(&r), [("orders".into(), 1, 0)]);
    // The log was created by this write: the earlier offset came first.
    assert_eq!(
        log.records(),
        [("early".into(), 0, Some(3)), ("g".into(), 1, Some(10))]
    );

    // A log that cannot be written: the commit is refused and nothing is stored.
    log.failing.store(true, Ordering::SeqCst);
    let r = c
        .offset_commit(commit_req("g", "", -1, &[("orders", 1, 11)]), 8, &cat)
        .await;
    assert_eq!(
        codes(&r),
        [(
            "orders".into(),
            1,
            KafkaCode::CoordinatorNotAvailable.code()
        )]
    );
    assert_eq!(committed(&c, "g", "orders", &[1]).await, [10]);
    let reopened = coordinator(&kv).await;
    assert_eq!(committed(&reopened, "g", "orders", &[1]).await, [10]);
    drop(reopened);
    log.failing.store(false, Ordering::SeqCst);

    // Deletions are tombstones: DeleteGroups of an Empty group.
    let deleted = c
        .delete_groups(
            DeleteGroupsRequest::default().with_groups_names(vec![gid("early")]),
            2,
        )
        .await;
    assert_eq!(deleted.results[0].error_code, 0);
    assert_eq!(log.records().last(), Some(&("early".into(), 0, None)));
    assert_eq!(log.records().len(), 3);
}

#[tokio::test]
async fn a_failed_write_of_the_earlier_offsets_is_retried_by_the_next_change() {
    let dir = tempfile::tempdir().unwrap();
    let kv = kv(dir.path()).await;
    let cat = catalog();
    let c = coordinator(&kv).await;
    let r = c
        .offset_commit(commit_req("early", "", -1, &[("orders", 0, 3)]), 8, &cat)
        .await;
    assert_eq!(codes(&r), [("orders".into(), 0, 0)]);
    let log = Arc::new(MemoryLog::default());
    let weak: Weak<MemoryLog> = Arc::downgrade(&log);
    c.attach_log(weak);
    // Created, but nothing can be written: the commit is refused.
    log.failing.store(true, Ordering::SeqCst);
    let r = c
        .offset_commit(commit_req("g", "", -1, &[("orders", 1, 10)]), 8, &cat)
        .await;
    assert_eq!(
        codes(&r),
        [(
            "orders".into(),
            1,
            KafkaCode::CoordinatorNotAvailable.code()
        )]
    );
    assert!(log.created.load(Ordering::SeqCst));
    log.failing.store(false, Ordering::SeqCst);
    let r = c
        .offset_commit(commit_req("g", "", -1, &[("orders", 1, 11)]), 8, &cat)
        .await;
    assert_eq!(codes(&r), [("orders".into(), 1, 0)]);
    assert_eq!(
        log.records(),
        [("early".into(), 0, Some(3)), ("g".into(), 1, Some(11))]
    );
}

mod consumer_protocol {
    //! KIP-848 groups through the coordinator: cross-type errors, epochs in offset commits
    //! and fetches, the admin APIs, and the session timer run by the reaper.

    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    use kafka_protocol::messages::offset_delete_request;
    use kafka_protocol::messages::{
        ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
    };

    use super::*;

    const TOPIC_ID: uuid::Uuid = uuid::Uuid::from_bytes([7; 16]);

    fn topics() -> Vec<TopicInfo> {
        vec![TopicInfo {
            id: TOPIC_ID,
            name: "orders".into(),
            partitions: 3,
        }]
    }

    async fn heartbeat(
        c: &GroupCoordinator,
        group: &str,
        member: &str,
        epoch: i32,
        owned: Option<&[i32]>,
    ) -> ConsumerGroupHeartbeatResponse {
        let mut req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(gid(group))
            .with_member_id(sb(member))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(if epoch == 0 { 30_000 } else { -1 })
            .with_topic_partitions(owned.map(|ps| {
                vec![
                    TopicPartitions::default()
                        .with_topic_id(TOPIC_ID)
                        .with_partitions(ps.to_vec()),
                ]
            }));
        if epoch == 0 {
            req = req.with_subscribed_topic_names(Some(vec![TopicName(sb("orders"))]));
        }
        let r = c
            .consumer_group_heartbeat(req, 1, &MemberOrigin::default(), &topics())
            .await;
        encodes(&r, 1);
        r
    }

    fn owned(r: &ConsumerGroupHeartbeatResponse) -> Option<Vec<i32>> {
        r.assignment.as_ref().map(|a| {
            a.topic_partitions
                .iter()
                .flat_map(|t| t.partitions.iter().copied())
                .collect()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn classic_and_consumer_groups_exclude_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = kv(dir.path()).await;
        let c = coordinator(&kv).await;
        // A classic group with a member: a heartbeat is GROUP_ID_NOT_FOUND.
        stable_single(&c, "classic").await;
        let r = heartbeat(&c, "classic", "m", 0, Some(&[])).await;
        assert_eq!(r.error_code, KafkaCode::GroupIdNotFound.code());
        assert_eq!(
            r.error_message.as_deref(),
            Some("Group classic is not a consumer group.")
        );
        // A consumer group with a member: a JoinGroup is INCONSISTENT_GROUP_PROTOCOL.
        let r = heartbeat(&c, "modern", "m", 0, Some(&[])).await;
        assert_eq!((r.error_code, r.member_epoch), (0, 1));
        assert_eq!(owned(&r), Some(vec![0, 1, 2]));
        let j = c.join_group(join_req("modern", "", &["range"]), 9).await;
        assert_eq!(j.error_code, KafkaCode::InconsistentGroupProtocol.code());
        // The describe APIs: the consumer group for ConsumerGroupDescribe, Dead for the
        // classic one, and the other way round.
        let d = c
            .consumer_group_describe(
                ConsumerGroupDescribeRequest::default().with_group_ids(vec![
                    gid("modern"),
                    gid("classic"),
                    gid("nothing"),
                ]),
                0,
                &topics(),
            )
            .await;
        encodes(&d, 0);
        let g = &d.groups[0];
        assert_eq!(
            (
                g.error_code,
                g.group_state.as_str(),
                g.group_epoch,
                g.assignment_epoch
            ),
            (0, "Stable", 1, 1)
        );
        assert_eq!(g.assignor_name.as_str(), "uniform");
        assert_eq!(g.members[0].member_epoch, 1);
        assert_eq!(
            g.members[0].assignment.topic_partitions[0]
                .topic_name
                .as_str(),
            "orders"
        );
        assert_eq!(
            g.members[0].target_assignment.topic_partitions[0].partitions,
            vec![0, 1, 2]
        );
        assert_eq!(d.groups[1].error_code, KafkaCode::GroupIdNotFound.code());
        assert_eq!(d.groups[2].error_code, KafkaCode::GroupIdNotFound.code());
        let d = c
            .describe_groups(
                DescribeGroupsRequest::default().with_groups(vec![gid("modern")]),
                5,
            )
            .await;
        assert_eq!(d.groups[0].group_state.as_str(), "Dead");
        // ListGroups v5: types and states.
        let l = c
            .list_groups(
                ListGroupsRequest::default().with_types_filter(vec![sb("consumer")]),
                5,
            )
            .await;
        let listed: Vec<(&str, &str, &str)> = l
            .groups
            .iter()
            .map(|g| {
                (
                    g.group_id.as_str(),
                    g.group_type.as_str(),
                    g.group_state.as_str(),
                )
            })
            .collect();
        assert_eq!(listed, vec![("modern", "consumer", "Stable")]);
        // OffsetDelete: not for a topic a member subscribes to.
        let r = c
            .offset_delete(
                OffsetDeleteRequest::default()
                    .with_group_id(gid("modern"))
                    .with_topics(vec![
                        offset_delete_request::OffsetDeleteRequestTopic::default()
                            .with_name(TopicName(sb("orders")))
                            .with_partitions(vec![
                                offset_delete_request::OffsetDeleteRequestPartition::default()
                                    .with_partition_index(0),
                            ]),
                        offset_delete_request::OffsetDeleteRequestTopic::default()
                            .with_name(TopicName(sb("events.v1-x_y")))
                            .with_partitions(vec![
                                offset_delete_request::OffsetDeleteRequestPartition::default()
                                    .with_partition_index(0),
                            ]),
                    ]),
                0,
                &catalog(),
            )
            .await;
        assert_eq!(r.error_code, 0);
        assert_eq!(
            r.topics
                .iter()
                .map(|t| t.partitions[0].error_code)
                .collect::<Vec<_>>(),
            vec![KafkaCode::GroupSubscribedToTopic.code(), 0]
        );
        // DeleteGroups: not while it has members.
        let r = c
            .delete_groups(
                DeleteGroupsRequest::default().with_groups_names(vec![gid("modern")]),
                2,
            )
            .await;
        assert_eq!(r.results[0].error_code, KafkaCode::NonEmptyGroup.code());
        // Once the member left, the empty group is deleted, and a classic member may take
        // the id.
        let r = heartbeat(&c, "modern", "m", -1, None).await;
        assert_eq!((r.error_code, r.member_epoch), (0, -1));
        let r = c
            .delete_groups(
                DeleteGroupsRequest::default().with_groups_names(vec![gid("modern")]),
                2,
            )
            .await;
        assert_eq!(r.results[0].error_code, 0);
        let j = c.join_group(join_req("modern", "", &["range"]), 9).await;
        assert_eq!(j.error_code, KafkaCode::MemberIdRequired.code());
        c.shutdown();
    }

    #[tokio::test(start_paused = true)]
    async fn offset_commits_and_fetches_check_the_member_epoch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = kv(dir.path()).await;
        let c = coordinator(&kv).await;
        let cat = catalog();
        let r = heartbeat(&c, "g", "m", 0, Some(&[])).await;
        let epoch = r.member_epoch;
        let cases: Vec<(&str, i32, i16, KafkaCode)> = vec![
            ("m", epoch, 9, KafkaCode::None),
            ("m", epoch + 1, 9, KafkaCode::StaleMemberEpoch),
            ("other", epoch, 9, KafkaCode::UnknownMemberId),
            ("", -1, 9, KafkaCode::UnknownMemberId),
            ("m", epoch, 8, KafkaCode::UnsupportedVersion),
        ];
        for (member, e, version, code) in cases {
            let r = c
                .offset_commit(
                    commit_req("g", member, e, &[("orders", 0, 5)]),
                    version,
                    &cat,
                )
                .await;
            assert_eq!(
                codes(&r),
                vec![("orders".to_owned(), 0, code.code())],
                "{member} {e} v{version}"
            );
        }
        let fetch = |member: Option<&str>, e: i32| {
            OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(gid("g"))
                    .with_member_id(member.map(sb))
                    .with_member_epoch(e)
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopics::default()
                            .with_name(TopicName(sb("orders")))
                            .with_partition_indexes(vec![0]),
                    ])),
            ])
        };
        let r = c.offset_fetch(fetch(Some("m"), epoch), 9, &cat).await;
        assert_eq!(r.groups[0].error_code, 0);
        assert_eq!(r.groups[0].topics[0].partitions[0].committed_offset, 5);
        let r = c.offset_fetch(fetch(None, -1), 9, &cat).await;
        assert_eq!(r.groups[0].topics[0].partitions[0].committed_offset, 5);
        let r = c.offset_fetch(fetch(Some("m"), epoch - 1), 9, &cat).await;
        assert_eq!(r.groups[0].error_code, KafkaCode::StaleMemberEpoch.code());
        let r = c.offset_fetch(fetch(Some("x"), epoch), 9, &cat).await;
        assert_eq!(r.groups[0].error_code, KafkaCode::UnknownMemberId.code());
        encodes(&r, 9);
        c.shutdown();
    }

    /// The reaper fences a silent member once its session runs out; the other member gets
    /// its partitions; the silent one's next heartbeat is UNKNOWN_MEMBER_ID.
    #[tokio::test(start_paused = true)]
    async fn a_silent_member_is_fenced_by_the_timer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = kv(dir.path()).await;
        let settings = GroupSettings {
            consumer_session_timeout: Duration::from_secs(10),
            ..GroupSettings::default()
        };
        let c = GroupCoordinator::open(ShimStore::new(kv.clone(), "kafka"), settings)
            .await
            .expect("open");
        let a = heartbeat(&c, "g", "a", 0, Some(&[])).await;
        assert_eq!(owned(&a), Some(vec![0, 1, 2]));
        let b = heartbeat(&c, "g", "b", 0, Some(&[])).await;
        assert_eq!(b.member_epoch, 2);
        // a revokes what b gets.
        let a = heartbeat(&c, "g", "a", 1, Some(&[0, 1, 2])).await;
        let kept = owned(&a).expect("a's new assignment");
        let a = heartbeat(&c, "g", "a", 1, Some(&kept)).await;
        assert_eq!(a.member_epoch, 2);
        let b = heartbeat(&c, "g", "b", 2, Some(&[])).await;
        let taken = owned(&b).expect("b's assignment");
        assert_eq!(kept.len() + taken.len(), 3);
        // b goes silent; a keeps heartbeating past b's session.
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            heartbeat(&c, "g", "a", 2, Some(&kept)).await;
        }
        let a = heartbeat(&c, "g", "a", 2, Some(&kept)).await;
        assert_eq!(a.member_epoch, 3);
        assert_eq!(owned(&a), Some(vec![0, 1, 2]));
        let b = heartbeat(&c, "g", "b", 2, Some(&taken)).await;
        assert_eq!(b.error_code, KafkaCode::UnknownMemberId.code());
        c.shutdown();
    }
}
