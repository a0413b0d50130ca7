//! The offset APIs of the coordinator: OffsetCommit, OffsetFetch, OffsetDelete and the
//! transactional offsets (TxnOffsetCommit's staging, EndTxn's outcome), over the cache in the
//! groups and the durable [`OffsetStore`].

use super::*;

impl GroupCoordinator {
    /// OffsetCommit (v2-9). Durable before it answers.
    pub async fn offset_commit(
        &self,
        req: OffsetCommitRequest,
        version: i16,
        topics: &dyn TopicCatalog,
    ) -> OffsetCommitResponse {
        let group_id = req.group_id.to_string();
        // One code per requested partition, in request order.
        let mut codes: Vec<Vec<i16>> = req
            .topics
            .iter()
            .map(|t| vec![0; t.partitions.len()])
            .collect();
        let _persist = self.shared.persist.lock().await;
        let verdict = if group_id.is_empty() {
            Err(KafkaCode::InvalidGroupId)
        } else {
            self.validate_commit(&req, version)
        };
        match verdict {
            Err(e) => {
                for code in codes.iter_mut().flatten() {
                    *code = e.code();
                }
            }
            Ok(()) => {
                self.write_offsets(&group_id, &req, version, topics, &mut codes)
                    .await;
            }
        }
        drop(_persist);
        self.shared.wake.notify_one();
        OffsetCommitResponse::default().with_topics(
            req.topics
                .iter()
                .zip(codes)
                .map(|(t, codes)| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .zip(codes)
                                .map(|(p, code)| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }

    fn validate_commit(&self, req: &OffsetCommitRequest, version: i16) -> Result<(), KafkaCode> {
        let instance_id = if version >= 7 {
            req.group_instance_id.as_deref()
        } else {
            None
        };
        self.check_commit(
            req.group_id.as_str(),
            req.generation_id_or_member_epoch,
            req.member_id.as_str(),
            instance_id,
            Some(version),
        )
    }

    /// Checks the member fields of a commit (OffsetCommit, or TxnOffsetCommit v3+): a
    /// negative generation commits for a group without members; otherwise the member must
    /// be in the group at that generation (classic) or member epoch (consumer protocol:
    /// UNKNOWN_MEMBER_ID, STALE_MEMBER_EPOCH).
    pub fn validate_member_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), KafkaCode> {
        self.check_commit(group_id, generation, member_id, instance_id, None)
    }

    /// `version`: the OffsetCommit version, `None` for a transactional commit.
    fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        version: Option<i16>,
    ) -> Result<(), KafkaCode> {
        let now = self.shared.now();
        let mut state = self.shared.lock();
        if let Some(consumer) = state.consumers.get(group_id) {
            return consumer.validate_commit(member_id, generation, version);
        }
        let Some(group) = state.groups.get_mut(group_id) else {
            if generation < 0 {
                // A group that does not use the coordinator for membership.
                state.groups.insert(group_id.to_string(), Group::new(now));
                return Ok(());
            }
            return Err(KafkaCode::IllegalGeneration);
        };
        group.validate_commit(member_id, instance_id, generation, now)
    }

    async fn write_offsets(
        &self,
        group_id: &str,
        req: &OffsetCommitRequest,
        version: i16,
        catalog: &dyn TopicCatalog,
        codes: &mut [Vec<i16>],
    ) {
        let now_ms = wall_ms(self.shared.settings.clock.as_ref());
        // The last write of each partition wins; the store refuses one key twice in a txn.
        let mut writes: BTreeMap<(String, i32), StoredOffset> = BTreeMap::new();
        let mut origin: Vec<((String, i32), usize, usize)> = Vec::new();
        for (ti, topic) in req.topics.iter().enumerate() {
            let count = catalog.partition_count(&topic.name);
            for (pi, p) in topic.partitions.iter().enumerate() {
                let known = count.is_some_and(|c| p.partition_index >= 0 && p.partition_index < c);
                if !known {
                    codes[ti][pi] = KafkaCode::UnknownTopicOrPartition.code();
                    continue;
                }
                let metadata = p.committed_metadata.as_deref();
                if metadata.is_some_and(|m| m.len() > MAX_OFFSET_METADATA_BYTES) {
                    codes[ti][pi] = KafkaCode::OffsetMetadataTooLarge.code();
                    continue;
                }
                let key = (topic.name.to_string(), p.partition_index);
                writes.insert(
                    key.clone(),
                    StoredOffset {
                        offset: p.committed_offset,
                        leader_epoch: if version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata: metadata.map(str::to_owned),
                        commit_timestamp_ms: now_ms,
                    },
                );
                origin.push((key, ti, pi));
            }
        }
        let writes: Vec<((String, i32), StoredOffset)> = writes.into_iter().collect();
        for chunk in OffsetStore::chunks(&writes) {
            let changes: Vec<OffsetChange> = chunk
                .iter()
                .map(|(k, o)| (k.clone(), Some(o.clone())))
                .collect();
            let written = match self.shared.log(group_id, &changes).await {
                Ok(()) => self.shared.store.put(group_id, chunk).await,
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => {
                    let now = self.shared.now();
                    let mut state = self.shared.lock();
                    let group = state
                        .groups
                        .entry(group_id.to_owned())
                        .or_insert_with(|| Group::new(now));
                    for ((topic, partition), offset) in chunk {
                        group
                            .offsets
                            .entry(topic.clone())
                            .or_default()
                            .insert(*partition, offset.clone());
                    }
                }
                Err(e) => {
                    tracing::warn!(group = group_id, error = %e, "could not store committed offsets");
                    for (key, _) in chunk {
                        for (k, ti, pi) in &origin {
                            if k == key {
                                codes[*ti][*pi] = KafkaCode::CoordinatorNotAvailable.code();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Keeps offsets a transaction committed (TxnOffsetCommit) until it ends; a later commit
    /// of the same partition in the same transaction replaces the earlier one.
    pub fn stage_txn_offsets(&self, group_id: &str, producer_id: i64, offsets: &[TxnOffset]) {
        let now_ms = wall_ms(self.shared.settings.clock.as_ref());
        let mut state = self.shared.lock();
        let pending = state
            .txn_pending
            .entry(group_id.to_owned())
            .or_default()
            .entry(producer_id)
            .or_default();
        for o in offsets {
            pending.insert(
                (o.topic.clone(), o.partition),
                StoredOffset {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata.clone(),
                    commit_timestamp_ms: now_ms,
                },
            );
        }
    }

    /// Ends the offsets a transaction staged for `group_id`: on commit they are stored
    /// (durable before this returns) and become the group's committed offsets; on abort
    /// they are dropped. Nothing staged is nothing to do.
    pub async fn end_txn_offsets(
        &self,
        group_id: &str,
        producer_id: i64,
        commit: bool,
    ) -> Result<(), GroupError> {
        let _persist = self.shared.persist.lock().await;
        let staged: Vec<((String, i32), StoredOffset)> = {
            let state = self.shared.lock();
            state
                .txn_pending
                .get(group_id)
                .and_then(|g| g.get(&producer_id))
                .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        if commit {
            for chunk in OffsetStore::chunks(&staged) {
                let changes: Vec<OffsetChange> = chunk
                    .iter()
                    .map(|(k, o)| (k.clone(), Some(o.clone())))
                    .collect();
                self.shared.log(group_id, &changes).await?;
                self.shared.store.put(group_id, chunk).await?;
            }
        }
        let now = self.shared.now();
        let mut state = self.shared.lock();
        if commit {
            let group = state
                .groups
                .entry(group_id.to_owned())
                .or_insert_with(|| Group::new(now));
            for ((topic, partition), offset) in staged {
                group
                    .offsets
                    .entry(topic)
                    .or_default()
                    .insert(partition, offset);
            }
        }
        if let Some(g) = state.txn_pending.get_mut(group_id) {
            g.remove(&producer_id);
            if g.is_empty() {
                state.txn_pending.remove(group_id);
            }
        }
        drop(state);
        self.shared.wake.notify_one();
        Ok(())
    }
    /// OffsetFetch (v1-9; v8+ for several groups at once).
    pub async fn offset_fetch(
        &self,
        req: OffsetFetchRequest,
        version: i16,
        topics: &dyn TopicCatalog,
    ) -> OffsetFetchResponse {
        if version >= 8 {
            let groups = req
                .groups
                .iter()
                .map(|g| {
                    let wanted = g.topics.as_ref().map(|ts| {
                        ts.iter()
                            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                            .collect::<Vec<_>>()
                    });
                    let member = if version >= 9 {
                        g.member_id.as_deref()
                    } else {
                        None
                    };
                    if let Err(e) = self.validate_fetch(&g.group_id, member, g.member_epoch) {
                        return OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id.clone())
                            .with_error_code(e.code());
                    }
                    let (code, found) =
                        self.fetch_one(&g.group_id, wanted, topics, req.require_stable);
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(code)
                        .with_topics(
                            found
                                .into_iter()
                                .map(|(name, partitions)| {
                                    OffsetFetchResponseTopics::default()
                                        .with_name(TopicName(sb(&name)))
                                        .with_partitions(
                                            partitions
                                                .into_iter()
                                                .map(|(index, offset, code)| {
                                                    let (off, epoch, meta) = offset_fields(offset);
                                                    OffsetFetchResponsePartitions::default()
                                                        .with_partition_index(index)
                                                        .with_committed_offset(off)
                                                        .with_committed_leader_epoch(epoch)
                                                        .with_metadata(Some(sb(&meta)))
                                                        .with_error_code(code)
                                                })
                                                .collect(),
                                        )
                                })
                                .collect(),
                        )
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let wanted = req.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                .collect::<Vec<_>>()
        });
        let (code, found) = self.fetch_one(
            &req.group_id,
            wanted,
            topics,
            version >= 7 && req.require_stable,
        );
        let mut response = OffsetFetchResponse::default().with_topics(
            found
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(sb(&name)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(index, offset, partition_code)| {
                                    let (off, epoch, meta) = offset_fields(offset);
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(index)
                                        .with_committed_offset(off)
                                        .with_committed_leader_epoch(if version >= 5 {
                                            epoch
                                        } else {
                                            -1
                                        })
                                        .with_metadata(Some(sb(&meta)))
                                        .with_error_code(if version < 2 && code != 0 {
                                            code
                                        } else {
                                            partition_code
                                        })
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
        if version >= 2 {
            response = response.with_error_code(code);
        }
        response
    }

    /// OffsetFetch v9's member fields, for a consumer-protocol group: none, or a member at
    /// its epoch (UNKNOWN_MEMBER_ID, STALE_MEMBER_EPOCH).
    fn validate_fetch(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), KafkaCode> {
        let state = self.shared.lock();
        match state.consumers.get(group_id) {
            Some(consumer) => consumer.validate_fetch(member_id, member_epoch),
            None => Ok(()),
        }
    }

    /// The committed offsets of one group: `(group error, [(topic, [(partition, offset,
    /// partition error)])])`. `wanted` `None` means every committed partition.
    #[allow(clippy::type_complexity)]
    ///
    /// With `require_stable` (KIP-447), a partition an open transaction committed an offset
    /// for answers UNSTABLE_OFFSET_COMMIT instead of its committed offset.
    fn fetch_one(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
        catalog: &dyn TopicCatalog,
        require_stable: bool,
    ) -> (i16, Vec<(String, Vec<(i32, Option<StoredOffset>, i16)>)>) {
        let state = self.shared.lock();
        let group = state.groups.get(group_id);
        let pending = state.txn_pending.get(group_id);
        let unstable = |topic: &str, partition: i32| {
            require_stable
                && pending.is_some_and(|by_producer| {
                    by_producer
                        .values()
                        .any(|p| p.contains_key(&(topic.to_owned(), partition)))
                })
        };
        let invalid = group_id.is_empty();
        let code = if invalid {
            KafkaCode::InvalidGroupId.code()
        } else {
            0
        };
        match wanted {
            Some(wanted) => {
                let found = wanted
                    .into_iter()
                    .map(|(topic, partitions)| {
                        let committed = group.and_then(|g| g.offsets.get(&topic));
                        let partitions = partitions
                            .into_iter()
                            .map(|p| {
                                if !invalid && unstable(&topic, p) {
                                    return (p, None, KafkaCode::UnstableOffsetCommit.code());
                                }
                                let offset = committed.and_then(|c| c.get(&p)).cloned();
                                (p, if invalid { None } else { offset }, 0)
                            })
                            .collect();
                        (topic, partitions)
                    })
                    .collect();
                (code, found)
            }
            None if invalid => (code, Vec::new()),
            None => {
                let found = group
                    .map(|g| {
                        g.offsets
                            .iter()
                            .filter(|(topic, _)| catalog.partition_count(topic).is_some())
                            .map(|(topic, partitions)| {
                                (
                                    topic.clone(),
                                    partitions
                                        .iter()
                                        .map(|(p, o)| (*p, Some(o.clone()), 0))
                                        .collect(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (code, found)
            }
        }
    }

    /// OffsetDelete (v0): deletes committed offsets of a group that is Empty, or of a
    /// consumer group for topics none of its members subscribes to
    /// (GROUP_SUBSCRIBED_TO_TOPIC otherwise). Partitions without an offset succeed.
    pub async fn offset_delete(
        &self,
        req: OffsetDeleteRequest,
        _version: i16,
        catalog: &dyn TopicCatalog,
    ) -> OffsetDeleteResponse {
        let group_id = req.group_id.to_string();
        if group_id.is_empty() {
            return OffsetDeleteResponse::default()
                .with_error_code(KafkaCode::InvalidGroupId.code());
        }
        let _persist = self.shared.persist.lock().await;
        // One code per requested partition, in request order.
        let mut codes: Vec<Vec<i16>> = Vec::with_capacity(req.topics.len());
        let mut doomed: Vec<(String, String, i32)> = Vec::new();
        let mut origin: Vec<(usize, usize)> = Vec::new();
        {
            let state = self.shared.lock();
            let verdict = state
                .groups
                .get(&group_id)
                .ok_or(KafkaCode::GroupIdNotFound)
                .and_then(|g| match state.consumers.get(&group_id) {
                    // A consumer group with members keeps the offsets of what they subscribe to.
                    Some(c) if !c.members.is_empty() => Ok((g, Some(c.subscribed_topic_names()))),
                    Some(_) => Ok((g, Some(Default::default()))),
                    None => g.offsets_deletable().map(|subscribed| (g, subscribed)),
                });
            let (group, subscribed) = match verdict {
                Ok(v) => v,
                Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
            };
            for (ti, topic) in req.topics.iter().enumerate() {
                let name = topic.name.as_str();
                let count = catalog.partition_count(name);
                let in_use = subscribed.as_ref().is_none_or(|s| s.contains(name));
                let mut topic_codes = Vec::with_capacity(topic.partitions.len());
                for (pi, p) in topic.partitions.iter().enumerate() {
                    let index = p.partition_index;
                    let code = if !count.is_some_and(|c| index >= 0 && index < c) {
                        KafkaCode::UnknownTopicOrPartition.code()
                    } else if in_use {
                        KafkaCode::GroupSubscribedToTopic.code()
                    } else {
                        if group
                            .offsets
                            .get(name)
                            .is_some_and(|o| o.contains_key(&index))
                        {
                            doomed.push((group_id.clone(), name.to_owned(), index));
                            origin.push((ti, pi));
                        }
                        0
                    };
                    topic_codes.push(code);
                }
                codes.push(topic_codes);
            }
        }
        let tombstones: Vec<OffsetChange> = doomed
            .iter()
            .map(|(_, topic, partition)| ((topic.clone(), *partition), None))
            .collect();
        let deleted = match self.shared.log(&group_id, &tombstones).await {
            Ok(()) => self.shared.store.delete_offsets(&doomed).await,
            Err(e) => Err(e),
        };
        match deleted {
            Ok(()) => {
                let mut state = self.shared.lock();
                if let Some(group) = state.groups.get_mut(&group_id) {
                    for (_, topic, partition) in &doomed {
                        if let Some(partitions) = group.offsets.get_mut(topic) {
                            partitions.remove(partition);
                        }
                    }
                    group.offsets.retain(|_, partitions| !partitions.is_empty());
                }
            }
            Err(e) => {
                tracing::warn!(group = %group_id, error = %e, "could not delete committed offsets");
                for (ti, pi) in origin {
                    codes[ti][pi] = KafkaCode::CoordinatorNotAvailable.code();
                }
            }
        }
        drop(_persist);
        self.shared.wake.notify_one();
        OffsetDeleteResponse::default()
            .with_error_code(0)
            .with_topics(
                req.topics
                    .iter()
                    .zip(codes)
                    .map(|(t, codes)| {
                        OffsetDeleteResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .zip(codes)
                                    .map(|(p, code)| {
                                        OffsetDeleteResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
    }

    /// Forgets every group's committed offsets of `topic` (the topic was deleted).
    pub async fn delete_topic_offsets(&self, topic: &str) -> Result<(), GroupError> {
        let _persist = self.shared.persist.lock().await;
        let removed: Vec<(String, Vec<i32>)> = {
            let mut state = self.shared.lock();
            state
                .groups
                .iter_mut()
                .filter_map(|(group_id, g)| {
                    g.offsets
                        .remove(topic)
                        .map(|parts| (group_id.clone(), parts.into_keys().collect()))
                })
                .collect()
        };
        for (group, partitions) in &removed {
            let tombstones: Vec<OffsetChange> = partitions
                .iter()
                .map(|p| ((topic.to_owned(), *p), None))
                .collect();
            self.shared.log(group, &tombstones).await?;
        }
        let groups: Vec<String> = removed.into_iter().map(|(g, _)| g).collect();
        self.shared.store.delete_topic(&groups, topic).await?;
        self.shared.wake.notify_one();
        Ok(())
    }
}
