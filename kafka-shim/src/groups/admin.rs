//! The group administration APIs of the coordinator: ListGroups, DescribeGroups and
//! DeleteGroups, over classic and consumer-protocol groups.

use super::*;

impl GroupCoordinator {
    /// ListGroups (v0-4; v4 filters by state).
    pub async fn list_groups(&self, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        let states: Vec<String> = if version >= 4 {
            req.states_filter
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect()
        } else {
            Vec::new()
        };
        let types: Vec<String> = if version >= 5 {
            req.types_filter
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect()
        } else {
            Vec::new()
        };
        let state = self.shared.lock();
        let mut ids: Vec<&String> = state.groups.keys().chain(state.consumers.keys()).collect();
        ids.sort();
        ids.dedup();
        let groups = ids
            .into_iter()
            .filter_map(|id| {
                let (name, protocol_type, group_type) = match state.consumers.get(id) {
                    Some(c) => (c.state().as_str(), "consumer", "consumer"),
                    None => {
                        let group = state.groups.get(id)?;
                        (
                            group.state.as_str(),
                            group.protocol_type.as_deref().unwrap_or(""),
                            "classic",
                        )
                    }
                };
                if !states.is_empty() && !states.iter().any(|s| s == &name.to_ascii_lowercase()) {
                    return None;
                }
                if !types.is_empty() && !types.iter().any(|t| t == group_type) {
                    return None;
                }
                let mut listed = ListedGroup::default()
                    .with_group_id(GroupId(sb(id)))
                    .with_protocol_type(sb(protocol_type));
                if version >= 4 {
                    listed = listed.with_group_state(sb(name));
                }
                if version >= 5 {
                    listed = listed.with_group_type(sb(group_type));
                }
                Some(listed)
            })
            .collect();
        ListGroupsResponse::default()
            .with_error_code(0)
            .with_groups(groups)
    }

    /// DescribeGroups (v0-5).
    pub async fn describe_groups(
        &self,
        req: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        let state = self.shared.lock();
        let groups = req
            .groups
            .iter()
            .map(|group_id| {
                let described = DescribedGroup::default()
                    .with_group_id(group_id.clone())
                    .with_authorized_operations(i32::MIN);
                if group_id.is_empty() {
                    return described
                        .with_error_code(KafkaCode::InvalidGroupId.code())
                        .with_group_state(sb(GroupState::Dead.as_str()));
                }
                // A consumer-protocol group is no classic group: Kafka describes it as Dead.
                let Some(group) = state
                    .groups
                    .get(group_id.as_str())
                    .filter(|_| !state.consumers.contains_key(group_id.as_str()))
                else {
                    return described.with_group_state(sb(GroupState::Dead.as_str()));
                };
                let stable = group.state == GroupState::Stable;
                let protocol = if stable {
                    group.protocol_name.as_deref()
                } else {
                    None
                };
                let members = group
                    .members
                    .iter()
                    .map(|m| {
                        let mut member = DescribedGroupMember::default()
                            .with_member_id(sb(&m.id))
                            .with_client_id(sb(&m.client_id))
                            .with_client_host(sb(&m.client_host));
                        if version >= 4 {
                            member =
                                member.with_group_instance_id(m.instance_id.as_deref().map(sb));
                        }
                        if stable {
                            member = member
                                .with_member_metadata(m.metadata_for(protocol))
                                .with_member_assignment(m.assignment.clone());
                        }
                        member
                    })
                    .collect();
                described
                    .with_error_code(0)
                    .with_group_state(sb(group.state.as_str()))
                    .with_protocol_type(sb(group.protocol_type.as_deref().unwrap_or("")))
                    .with_protocol_data(sb(protocol.unwrap_or("")))
                    .with_members(members)
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    /// DeleteGroups (v0-2): only Empty groups; their committed offsets go too.
    pub async fn delete_groups(
        &self,
        req: DeleteGroupsRequest,
        _version: i16,
    ) -> DeleteGroupsResponse {
        let _persist = self.shared.persist.lock().await;
        let mut results = Vec::with_capacity(req.groups_names.len());
        for group_id in &req.groups_names {
            let code = self.delete_one(group_id).await;
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group_id.clone())
                    .with_error_code(code),
            );
        }
        DeleteGroupsResponse::default().with_results(results)
    }

    /// Deletes one group; the caller holds the persist lock.
    async fn delete_one(&self, group_id: &str) -> i16 {
        if group_id.is_empty() {
            return KafkaCode::InvalidGroupId.code();
        }
        let removed = {
            let mut state = self.shared.lock();
            if let Some(consumer) = state.consumers.get(group_id) {
                if !consumer.members.is_empty() {
                    return KafkaCode::NonEmptyGroup.code();
                }
                state.consumers.remove(group_id);
                if !state.groups.contains_key(group_id) {
                    return 0;
                }
            }
            match state.groups.get(group_id) {
                None => return KafkaCode::GroupIdNotFound.code(),
                Some(g) if g.state == GroupState::Dead => {
                    return KafkaCode::GroupIdNotFound.code();
                }
                Some(g) if g.state != GroupState::Empty || !g.members.is_empty() => {
                    return KafkaCode::NonEmptyGroup.code();
                }
                Some(_) => state.groups.remove(group_id),
            }
        };
        let Some(removed) = removed else {
            return KafkaCode::GroupIdNotFound.code();
        };
        let tombstones: Vec<OffsetChange> = removed
            .offsets
            .iter()
            .flat_map(|(topic, parts)| parts.keys().map(|p| ((topic.clone(), *p), None)))
            .collect();
        let deleted = match self.shared.log(group_id, &tombstones).await {
            Ok(()) => self.shared.store.delete_group(group_id).await,
            Err(e) => Err(e),
        };
        match deleted {
            Ok(()) => 0,
            Err(e) => {
                tracing::warn!(group = group_id, error = %e, "could not delete group offsets");
                // Keep what is still stored visible.
                let now = self.shared.now();
                let mut state = self.shared.lock();
                let group = state
                    .groups
                    .entry(group_id.to_owned())
                    .or_insert_with(|| Group::new(now));
                for (topic, partitions) in removed.offsets {
                    let entry = group.offsets.entry(topic).or_default();
                    for (p, o) in partitions {
                        entry.entry(p).or_insert(o);
                    }
                }
                KafkaCode::CoordinatorNotAvailable.code()
            }
        }
    }
}
