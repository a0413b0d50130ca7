//! Table tests of the consumer-protocol machine: joins, epochs, reconciliation (revoke
//! before reassign), fencing, timeouts, static members, assignors and Kafka's errors.

use super::*;

const SESSION: Duration = Duration::from_secs(45);
const REBALANCE: Duration = Duration::from_secs(10);

fn settings() -> ConsumerSettings {
    ConsumerSettings {
        session_timeout: SESSION,
        heartbeat_interval: Duration::from_secs(5),
        max_size: 3,
    }
}

fn topic_id(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

/// Topic `t1` with `partitions` partitions (id 1), and `t2` with 2 (id 2).
fn topics(partitions: i32) -> TopicsView {
    [
        (
            topic_id(1),
            TopicMeta {
                name: "t1".into(),
                partitions,
            },
        ),
        (
            topic_id(2),
            TopicMeta {
                name: "t2".into(),
                partitions: 2,
            },
        ),
    ]
    .into_iter()
    .collect()
}

/// Partitions of `t1`.
fn parts(ps: &[i32]) -> Assignment {
    if ps.is_empty() {
        return Assignment::new();
    }
    [(topic_id(1), ps.iter().copied().collect())]
        .into_iter()
        .collect()
}

fn flat(a: &Assignment) -> Vec<i32> {
    a.get(&topic_id(1))
        .map(|ps| ps.iter().copied().collect())
        .unwrap_or_default()
}

fn join_req(id: &str) -> HeartbeatInput {
    HeartbeatInput {
        version: 1,
        member_id: id.into(),
        member_epoch: 0,
        rebalance_timeout_ms: REBALANCE.as_millis() as i32,
        subscribed_topic_names: Some(vec!["t1".into()]),
        owned: Some(Assignment::new()),
        ..HeartbeatInput::default()
    }
}

/// A partial heartbeat: nothing changed but, optionally, the owned partitions.
fn beat_req(id: &str, epoch: i32, owned: Option<&[i32]>) -> HeartbeatInput {
    HeartbeatInput {
        version: 1,
        member_id: id.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        owned: owned.map(parts),
        ..HeartbeatInput::default()
    }
}

struct Harness {
    group: ConsumerGroup,
    topics: TopicsView,
    now: Duration,
    /// What each member owns, as its client would track it.
    owned: BTreeMap<String, Vec<i32>>,
}

impl Harness {
    fn new(partitions: i32) -> Self {
        Harness {
            group: ConsumerGroup::new(Duration::ZERO),
            topics: topics(partitions),
            now: Duration::ZERO,
            owned: BTreeMap::new(),
        }
    }

    fn send(&mut self, req: HeartbeatInput) -> Result<HeartbeatOutput, Refusal> {
        validate(&req)?;
        let out = self
            .group
            .heartbeat(req, &self.topics, &settings(), self.now, || {
                "generated".into()
            });
        self.check_no_partition_twice();
        out
    }

    /// A member's client: joins, then heartbeats reporting what it owns, applying any
    /// assignment it gets (dropping what it lost, taking what it got).
    fn join(&mut self, id: &str) -> HeartbeatOutput {
        let out = self.send(join_req(id)).expect("join");
        self.apply(id, &out);
        out
    }

    fn beat(&mut self, id: &str) -> HeartbeatOutput {
        let epoch = self.group.members[id].epoch;
        let owned = self.owned.get(id).cloned().unwrap_or_default();
        let out = self.send(beat_req(id, epoch, Some(&owned))).expect("beat");
        self.apply(id, &out);
        out
    }

    fn apply(&mut self, id: &str, out: &HeartbeatOutput) {
        if let Some(a) = &out.assignment {
            self.owned.insert(id.into(), flat(a));
        }
    }

    /// Heartbeats every member in turn until nothing changes.
    fn settle(&mut self) {
        for _ in 0..10 {
            let ids: Vec<String> = self.group.members.keys().cloned().collect();
            for id in &ids {
                self.beat(id);
            }
            if self.group.state() == ConsumerGroupState::Stable {
                return;
            }
        }
        panic!("the group did not settle: {:?}", self.group);
    }

    /// The clients never own a partition twice.
    fn check_no_partition_twice(&self) {
        let mut seen = BTreeSet::new();
        for (id, m) in &self.group.members {
            for (t, ps) in m.assigned.iter().chain(m.revoking.iter()) {
                for p in ps {
                    assert!(
                        seen.insert((*t, *p)),
                        "{t}:{p} owned twice (by {id} among others)"
                    );
                }
            }
        }
    }

    fn assigned(&self, id: &str) -> Vec<i32> {
        flat(&self.group.members[id].assigned)
    }
}

#[test]
fn the_first_member_gets_everything_at_epoch_1() {
    let mut h = Harness::new(4);
    let out = h.join("a");
    assert_eq!(out.member_epoch, 1);
    assert_eq!(out.member_id, "a");
    assert_eq!(out.assignment.as_ref().map(flat), Some(vec![0, 1, 2, 3]));
    assert_eq!(h.group.group_epoch, 1);
    assert_eq!(h.group.assignment_epoch, 1);
    assert_eq!(h.group.state(), ConsumerGroupState::Stable);
    // Nothing changed: no assignment in the answer.
    assert_eq!(h.beat("a").assignment, None);
}

#[test]
fn a_partition_moves_only_after_its_owner_released_it() {
    let mut h = Harness::new(4);
    h.join("a");
    let b = h.join("b");
    // b is at the new epoch but gets nothing a still owns.
    assert_eq!(b.member_epoch, 2);
    assert_eq!(b.assignment.as_ref().map(flat), Some(vec![]));
    assert_eq!(
        h.group.members["b"].state,
        MemberState::UnreleasedPartitions
    );
    // a is asked to revoke two partitions; its epoch stays until it reports them gone.
    let a = h.send(beat_req("a", 1, None)).unwrap();
    assert_eq!(a.member_epoch, 1);
    let kept = flat(a.assignment.as_ref().unwrap());
    assert_eq!(kept.len(), 2);
    assert_eq!(h.group.members["a"].state, MemberState::UnrevokedPartitions);
    // b still waits: a has not said it let them go (it still reports owning all four).
    let b = h.send(beat_req("b", 2, Some(&[]))).expect("b heartbeat");
    assert_eq!(b.assignment, None);
    assert!(h.assigned("b").is_empty());
    let a = h.send(beat_req("a", 1, Some(&[0, 1, 2, 3]))).unwrap();
    assert_eq!(a.member_epoch, 1);
    // a reports it released them: it moves to epoch 2; then b gets them.
    let a = h.send(beat_req("a", 1, Some(&kept))).unwrap();
    assert_eq!(a.member_epoch, 2);
    let b = h.send(beat_req("b", 2, Some(&[]))).unwrap();
    let got = flat(b.assignment.as_ref().unwrap());
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|p| !kept.contains(p)));
    assert_eq!(h.group.state(), ConsumerGroupState::Stable);
}

#[test]
fn three_members_share_without_overlap_or_idle_members() {
    let mut h = Harness::new(6);
    for id in ["a", "b", "c"] {
        h.join(id);
        h.settle();
    }
    let mut all: Vec<i32> = ["a", "b", "c"].iter().flat_map(|m| h.assigned(m)).collect();
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 3, 4, 5]);
    for m in ["a", "b", "c"] {
        assert_eq!(h.assigned(m).len(), 2, "{m}");
    }
}

#[test]
fn a_leaving_member_s_partitions_move_to_the_others() {
    let mut h = Harness::new(4);
    h.join("a");
    h.join("b");
    h.settle();
    let before = h.assigned("a");
    let out = h
        .send(beat_req("b", h.group.members["b"].epoch, None).with_epoch(LEAVE_EPOCH))
        .unwrap();
    assert_eq!(out.member_epoch, LEAVE_EPOCH);
    assert!(!h.group.members.contains_key("b"));
    h.owned.remove("b");
    h.settle();
    assert_eq!(h.assigned("a"), vec![0, 1, 2, 3]);
    assert!(before.iter().all(|p| h.assigned("a").contains(p)), "sticky");
    // Leaving twice: unknown.
    let err = h.send(beat_req("b", LEAVE_EPOCH, None)).unwrap_err();
    assert_eq!(err.code, KafkaCode::UnknownMemberId);
}

#[test]
fn a_silent_member_is_fenced_after_the_session_timeout() {
    let mut h = Harness::new(4);
    h.join("a");
    h.join("b");
    h.settle();
    // a keeps heartbeating, b goes silent.
    h.now += SESSION - Duration::from_secs(1);
    h.beat("a");
    assert!(!h.group.tick(h.now), "nobody is due yet");
    assert_eq!(h.group.next_deadline(), Some(SESSION));
    h.now = SESSION;
    assert!(h.group.tick(h.now));
    assert!(!h.group.members.contains_key("b"));
    h.settle();
    assert_eq!(h.assigned("a"), vec![0, 1, 2, 3]);
    let err = h.send(beat_req("b", 2, Some(&[]))).unwrap_err();
    assert_eq!(err.code, KafkaCode::UnknownMemberId);
}

#[test]
fn a_member_that_does_not_revoke_in_time_is_fenced() {
    let mut h = Harness::new(4);
    h.join("a");
    h.join("b");
    // a is told to revoke but never reports the partitions released.
    h.send(beat_req("a", 1, None)).unwrap();
    assert_eq!(h.group.members["a"].state, MemberState::UnrevokedPartitions);
    h.now += REBALANCE;
    h.send(beat_req("b", 2, Some(&[]))).unwrap();
    assert!(h.group.tick(h.now));
    assert!(!h.group.members.contains_key("a"));
    let b = h.send(beat_req("b", 2, Some(&[]))).unwrap();
    assert_eq!(b.member_epoch, 3);
    assert_eq!(flat(b.assignment.as_ref().unwrap()), vec![0, 1, 2, 3]);
}

#[test]
fn epochs_other_than_the_member_s_are_fenced_except_a_lost_answer() {
    let mut h = Harness::new(4);
    for id in ["a", "b", "c"] {
        h.join(id);
        h.settle();
    }
    let epoch = h.group.members["a"].epoch;
    let previous = h.group.members["a"].previous_epoch;
    assert!(previous > 1, "an epoch older than the previous one exists");
    let owned = h.assigned("a");
    let cases: Vec<(i32, Option<Vec<i32>>, Option<KafkaCode>)> = vec![
        (
            epoch + 1,
            Some(owned.clone()),
            Some(KafkaCode::FencedMemberEpoch),
        ),
        (
            previous - 1,
            Some(owned.clone()),
            Some(KafkaCode::FencedMemberEpoch),
        ),
        // The previous epoch with no more than the member was given: its answer was lost.
        (previous, Some(owned.clone()), None),
        // The previous epoch without saying what it owns, or owning more: fenced.
        (previous, None, Some(KafkaCode::FencedMemberEpoch)),
        (
            previous,
            Some(vec![0, 1, 2, 3]),
            Some(KafkaCode::FencedMemberEpoch),
        ),
        (epoch, None, None),
    ];
    for (sent, owned, expected) in cases {
        let got = h.send(beat_req("a", sent, owned.as_deref()));
        assert_eq!(
            got.err().map(|r| r.code),
            expected,
            "epoch {sent}, owned {owned:?}"
        );
    }
}

#[test]
fn invalid_requests_get_kafka_s_messages() {
    let cases: Vec<(HeartbeatInput, KafkaCode, &str)> = vec![
        (
            HeartbeatInput {
                instance_id: Some(String::new()),
                ..join_req("a")
            },
            KafkaCode::InvalidRequest,
            "InstanceId can't be empty.",
        ),
        (
            HeartbeatInput {
                rack_id: Some(String::new()),
                ..join_req("a")
            },
            KafkaCode::InvalidRequest,
            "RackId can't be empty.",
        ),
        (
            join_req(""),
            KafkaCode::InvalidRequest,
            "MemberId can't be empty.",
        ),
        (
            HeartbeatInput {
                rebalance_timeout_ms: -1,
                ..join_req("a")
            },
            KafkaCode::InvalidRequest,
            "RebalanceTimeoutMs must be provided in first request.",
        ),
        (
            HeartbeatInput {
                owned: Some(parts(&[0])),
                ..join_req("a")
            },
            KafkaCode::InvalidRequest,
            "TopicPartitions must be empty when (re-)joining.",
        ),
        (
            HeartbeatInput {
                subscribed_topic_names: None,
                ..join_req("a")
            },
            KafkaCode::InvalidRequest,
            "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
        ),
        (
            beat_req("a", STATIC_LEAVE_EPOCH, None),
            KafkaCode::InvalidRequest,
            "InstanceId can't be null.",
        ),
        (
            beat_req("a", -3, None),
            KafkaCode::InvalidRequest,
            "MemberEpoch is invalid.",
        ),
        (
            HeartbeatInput {
                server_assignor: Some("sticky".into()),
                ..join_req("a")
            },
            KafkaCode::UnsupportedAssignor,
            "ServerAssignor sticky is not supported. Supported assignors: uniform, range.",
        ),
        (
            HeartbeatInput {
                subscribed_topic_regex: Some("t(".into()),
                ..join_req("a")
            },
            KafkaCode::InvalidRegularExpression,
            "SubscribedTopicRegex `t(` is not a valid regular expression",
        ),
    ];
    for (req, code, message) in cases {
        let err = validate(&req).expect_err(message);
        assert_eq!(err.code, code, "{message}");
        assert!(
            err.message.starts_with(message),
            "{} / {message}",
            err.message
        );
    }
    // v0: the coordinator makes up the member id.
    let mut h = Harness::new(2);
    let out = h
        .send(HeartbeatInput {
            version: 0,
            ..join_req("")
        })
        .unwrap();
    assert_eq!(out.member_id, "generated");
    // A v0 member that was fenced (or forgotten in a restart) rejoins with its old id.
    let out = h
        .send(HeartbeatInput {
            version: 0,
            ..join_req("given-before")
        })
        .unwrap();
    assert_eq!(out.member_id, "given-before");
}

#[test]
fn the_group_size_is_capped() {
    let mut h = Harness::new(4);
    for id in ["a", "b", "c"] {
        h.join(id);
    }
    let err = h.send(join_req("d")).unwrap_err();
    assert_eq!(err.code, KafkaCode::GroupMaxSizeReached);
    assert_eq!(
        err.message,
        "The consumer group has reached its maximum capacity of 3 members."
    );
    assert!(!h.group.members.contains_key("d"));
}

#[test]
fn a_static_member_comes_back_under_a_new_id_without_a_rebalance() {
    let mut h = Harness::new(4);
    h.send(HeartbeatInput {
        instance_id: Some("i1".into()),
        ..join_req("a")
    })
    .unwrap();
    h.owned.insert("a".into(), h.assigned("a"));
    h.join("b");
    h.settle();
    let epoch = h.group.group_epoch;
    let a_parts = h.assigned("a");
    // While a is live, nobody else may take its instance id.
    let err = h
        .send(HeartbeatInput {
            instance_id: Some("i1".into()),
            ..join_req("a2")
        })
        .unwrap_err();
    assert_eq!(err.code, KafkaCode::UnreleasedInstanceId);
    // a leaves for a while (-2), then comes back as a2.
    let out = h
        .send(HeartbeatInput {
            instance_id: Some("i1".into()),
            ..beat_req("a", STATIC_LEAVE_EPOCH, None)
        })
        .unwrap();
    assert_eq!(out.member_epoch, STATIC_LEAVE_EPOCH);
    let out = h
        .send(HeartbeatInput {
            instance_id: Some("i1".into()),
            ..join_req("a2")
        })
        .unwrap();
    assert_eq!(out.assignment.as_ref().map(flat), Some(a_parts));
    assert_eq!(h.group.group_epoch, epoch, "no rebalance");
    assert!(!h.group.members.contains_key("a"));
}

#[test]
fn new_partitions_of_a_subscribed_topic_bump_the_group_epoch() {
    let mut h = Harness::new(2);
    h.join("a");
    assert_eq!(h.group.group_epoch, 1);
    h.topics = topics(3);
    let out = h.beat("a");
    assert_eq!(h.group.group_epoch, 2);
    assert_eq!(out.member_epoch, 2);
    assert_eq!(out.assignment.as_ref().map(flat), Some(vec![0, 1, 2]));
    // A topic nobody subscribes to does not.
    h.topics.insert(
        topic_id(9),
        TopicMeta {
            name: "other".into(),
            partitions: 5,
        },
    );
    h.beat("a");
    assert_eq!(h.group.group_epoch, 2);
}

#[test]
fn a_regex_subscription_follows_the_topics_that_match() {
    let mut h = Harness::new(2);
    let out = h
        .send(HeartbeatInput {
            subscribed_topic_names: None,
            subscribed_topic_regex: Some("t.*".into()),
            ..join_req("a")
        })
        .unwrap();
    // t1 (2 partitions) and t2 (2 partitions).
    let got = out.assignment.unwrap();
    assert_eq!(got.values().map(BTreeSet::len).sum::<usize>(), 4);
    assert_eq!(
        h.group.subscribed_topic_names(),
        ["t1", "t2"].map(String::from).into()
    );
}

#[test]
fn assignors_range_and_uniform() {
    let view = topics(5);
    let subs: BTreeMap<String, BTreeSet<Uuid>> = [
        ("a".to_string(), [topic_id(1)].into()),
        ("b".to_string(), [topic_id(1), topic_id(2)].into()),
    ]
    .into();
    let range = assign_range(&subs, &view);
    assert_eq!(flat(&range["a"]), vec![0, 1, 2]);
    assert_eq!(flat(&range["b"]), vec![3, 4]);
    assert_eq!(range["b"][&topic_id(2)], [0, 1].into());
    let uniform = assign_uniform(&subs, &view, &BTreeMap::new());
    let load = |m: &str| uniform[m].values().map(BTreeSet::len).sum::<usize>();
    assert_eq!(load("a") + load("b"), 7);
    assert!(load("a").abs_diff(load("b")) <= 1);
    assert!(
        !uniform["a"].contains_key(&topic_id(2)),
        "a does not subscribe to t2"
    );
    // Sticky: with a third member, a and b keep what they keep.
    let mut subs3 = subs.clone();
    subs3.insert("c".into(), [topic_id(1)].into());
    let next = assign_uniform(&subs3, &view, &uniform);
    for m in ["a", "b"] {
        for (t, ps) in &next[m] {
            assert!(ps.is_subset(&uniform[m][t]), "{m} only loses partitions");
        }
    }
    // The members' choice picks the assignor.
    let mut h = Harness::new(4);
    h.send(HeartbeatInput {
        server_assignor: Some("range".into()),
        ..join_req("a")
    })
    .unwrap();
    assert_eq!(h.group.assignor, "range");
}

#[test]
fn offset_commits_and_fetches_check_member_epochs() {
    let mut h = Harness::new(2);
    // No members: a simple commit (epoch -1) is fine.
    assert_eq!(h.group.validate_commit("", -1, Some(9)), Ok(()));
    h.join("a");
    let epoch = h.group.members["a"].epoch;
    type Case<'a> = (&'a str, i32, Option<i16>, Result<(), KafkaCode>);
    let cases: Vec<Case<'_>> = vec![
        ("a", epoch, Some(9), Ok(())),
        ("a", epoch, None, Ok(())),
        ("a", epoch - 1, Some(9), Err(KafkaCode::StaleMemberEpoch)),
        ("a", epoch + 1, Some(9), Err(KafkaCode::StaleMemberEpoch)),
        ("a", epoch, Some(8), Err(KafkaCode::UnsupportedVersion)),
        ("x", epoch, Some(9), Err(KafkaCode::UnknownMemberId)),
        ("", -1, Some(9), Err(KafkaCode::UnknownMemberId)),
    ];
    for (member, e, version, expected) in cases {
        assert_eq!(
            h.group.validate_commit(member, e, version),
            expected,
            "{member} {e} {version:?}"
        );
    }
    assert_eq!(h.group.validate_fetch(None, -1), Ok(()));
    assert_eq!(h.group.validate_fetch(Some(""), -1), Ok(()));
    assert_eq!(h.group.validate_fetch(Some("a"), epoch), Ok(()));
    assert_eq!(
        h.group.validate_fetch(Some("a"), epoch - 1),
        Err(KafkaCode::StaleMemberEpoch)
    );
    assert_eq!(
        h.group.validate_fetch(Some("x"), 1),
        Err(KafkaCode::UnknownMemberId)
    );
}

trait WithEpoch {
    fn with_epoch(self, epoch: i32) -> Self;
}

impl WithEpoch for HeartbeatInput {
    fn with_epoch(mut self, epoch: i32) -> Self {
        self.member_epoch = epoch;
        self
    }
}
