//! The broker: topics, partitions, producer ids and the request handlers that are not about
//! consumer groups (those live in [`crate::groups`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, FetchRequest, FetchResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest,
    ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    TopicName, create_topics_response, delete_topics_response, describe_cluster_response,
    describe_configs_response, fetch_response, find_coordinator_response, list_offsets_response,
    metadata_response, produce_response,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use tokio::sync::OnceCell;

use crate::codec::{Body, Request};
use wal::client::Client;
use wal::clock::{Clock, ClockRef, SystemClock};
use wal::meta::kv::Kv;

use crate::TopicCatalog;
use crate::batch::{self, BatchError};
use crate::error::{KafkaCode, ShimError};
use crate::groups::{GroupCoordinator, GroupSettings};
use crate::metrics::Metrics;
use crate::partition::{Partition, PartitionSettings, ReopenBackoff};
use crate::security::Session;
use crate::security::acl::{Authorizer, AuthorizerConfig, CLUSTER_NAME, Operation, ResourceType};
use crate::security::credentials::Credentials;
use crate::topics::{
    MAX_RECORDS_PER_REQUEST, ProducerIds, TOPIC_CONFIG_KEYS, Topic, TopicDefaults, Topics,
    log_name, log_prefix, valid_topic_name, validate_configs,
};
use crate::txn::{TxnCoordinator, TxnSettings};

/// Settings of the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// This node's id.
    pub node_id: i32,
    /// The host clients are told to connect to.
    pub advertised_host: String,
    /// The port clients are told to connect to.
    pub advertised_port: i32,
    /// Create unknown topics on Metadata requests (`auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Defaults for topic configurations.
    pub topic_defaults: TopicDefaults,
    /// Recent bytes kept in memory per partition for tail reads.
    pub tail_cache_bytes: usize,
    /// How often retention runs.
    pub retention_check_interval: Duration,
    /// Consumer-group settings.
    pub groups: GroupSettings,
    /// ACLs enforced by this authorizer; `None`: no authorizer (everything allowed, the ACL
    /// APIs answer `SECURITY_DISABLED`).
    pub authorizer: Option<AuthorizerConfig>,
    /// The broker's `advertised.listeners` as DescribeConfigs reports it (default:
    /// `PLAINTEXT://<advertised_host>:<advertised_port>`).
    pub advertised_listeners: Option<String>,
    /// Transaction-coordinator settings.
    pub transactions: TxnSettings,
    /// The broker's time: topic creation times, retention, fetch waits, reopen pauses. The
    /// group and transaction coordinators read the clocks of their own settings;
    /// [`BrokerConfig::with_clock`] sets all three.
    pub clock: ClockRef,
}

impl BrokerConfig {
    /// These settings with `clock` as the time of the broker and of its coordinators.
    pub fn with_clock(mut self, clock: ClockRef) -> Self {
        self.groups.clock = clock.clone();
        self.transactions.clock = clock.clone();
        self.clock = clock;
        self
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 0,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            auto_create_topics: true,
            topic_defaults: TopicDefaults::default(),
            tail_cache_bytes: 16 * 1024 * 1024,
            retention_check_interval: Duration::from_secs(300),
            groups: GroupSettings::default(),
            authorizer: None,
            advertised_listeners: None,
            transactions: TxnSettings::default(),
            clock: SystemClock::shared(),
        }
    }
}

type PartitionCell = Arc<OnceCell<Arc<Partition>>>;

/// A single-node Kafka broker over the engine.
pub struct Broker {
    config: BrokerConfig,
    client: Client,
    topics: Topics,
    partitions: Mutex<HashMap<(String, i32), PartitionCell>>,
    /// Pauses between attempts to open a partition whose storage keeps failing.
    reopen: ReopenBackoff,
    producer_ids: ProducerIds,
    groups: Arc<GroupCoordinator>,
    authorizer: Option<Authorizer>,
    credentials: Credentials,
    txn: TxnCoordinator,
    cluster_id: String,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("node_id", &self.config.node_id)
            .field("cluster_id", &self.cluster_id)
            .finish()
    }
}

impl TopicCatalog for Broker {
    fn partition_count(&self, topic: &str) -> Option<i32> {
        self.topics.get(topic).map(|t| t.partitions)
    }
}

/// The answer to one request: an encoded response body, or nothing (acks=0 produce).
pub type Reply = Result<Option<BytesMut>, ShimError>;

fn now_ms(clock: &dyn Clock) -> i64 {
    i64::try_from(clock.now_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn encode<T: Encodable>(msg: &T, version: i16) -> Reply {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf, version)
        .map_err(|e| ShimError::Encode(e.to_string()))?;
    Ok(Some(buf))
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn batch_code(e: &BatchError) -> KafkaCode {
    match e {
        BatchError::Malformed(_) | BatchError::Crc { .. } => KafkaCode::CorruptMessage,
        BatchError::Magic(_) | BatchError::Invalid(_) => KafkaCode::InvalidRecord,
        BatchError::Compression(_) => KafkaCode::UnsupportedCompressionType,
    }
}

impl Broker {
    /// Opens the broker over an engine client and its metadata store. Shim state lives
    /// under `<kv_prefix>/kafka/`.
    pub async fn open(
        client: Client,
        kv: Arc<dyn Kv>,
        kv_prefix: &str,
        config: BrokerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Broker>, ShimError> {
        let prefix = format!("{}/kafka", kv_prefix.trim_end_matches('/'));
        let topics = Topics::load(kv.clone(), &prefix).await?;
        let cluster_id = crate::topics::cluster_id(&kv, &prefix).await?;
        let groups = GroupCoordinator::open(kv.clone(), &prefix, config.groups.clone())
            .await
            .map_err(|e| ShimError::Groups(e.to_string()))?;
        let authorizer = match &config.authorizer {
            Some(c) => Some(Authorizer::open(kv.clone(), &prefix, c.clone()).await?),
            None => None,
        };
        let credentials = Credentials::new(kv.clone(), &prefix);
        let txn = TxnCoordinator::open(kv.clone(), &prefix, config.transactions.clone()).await?;
        let producer_ids = ProducerIds::new(kv, &prefix);
        metrics
            .topics
            .store(topics.all().len() as i64, Ordering::Relaxed);
        let reopen = ReopenBackoff::new(config.clock.clone());
        let broker = Arc::new(Broker {
            config,
            client,
            topics,
            partitions: Mutex::new(HashMap::new()),
            reopen,
            producer_ids,
            groups,
            authorizer,
            credentials,
            txn,
            cluster_id,
            metrics,
        });
        // Transactions a crash left prepared are completed before anything is served, as a
        // Kafka coordinator does when it loads its log; expired open ones are aborted.
        broker.txn.check_transactions(&broker).await;
        Ok(broker)
    }

    /// The transaction coordinator.
    pub fn txn(&self) -> &TxnCoordinator {
        &self.txn
    }

    /// A producer id never handed out before.
    pub(crate) async fn next_producer_id(&self) -> Result<i64, ShimError> {
        self.producer_ids.next().await
    }

    /// Has partition `partition` of `topic` write a transaction marker (what Kafka's
    /// WriteTxnMarkers asks of a partition leader) and waits until it is durable. A topic
    /// deleted meanwhile has nothing to mark.
    pub(crate) async fn write_marker(
        &self,
        topic: &str,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        marker: crate::batch::Marker,
        timestamp: i64,
    ) -> Result<(), KafkaCode> {
        let Some(t) = self.topics.get(topic) else {
            return Ok(());
        };
        let p = self.partition(&t, partition).await?;
        p.write_marker(
            producer_id,
            producer_epoch,
            marker,
            crate::txn::COORDINATOR_EPOCH,
            timestamp,
        )
        .await
        .map(|_| ())
    }

    /// Starts the periodic transaction check: prepared transactions are completed and open
    /// ones past their timeout aborted.
    pub fn spawn_transaction_timeouts(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        let every = self.config.transactions.abort_check_interval;
        let clock = self.config.transactions.clock.clone();
        tokio::spawn(async move {
            loop {
                clock.sleep(every).await;
                let Some(broker) = me.upgrade() else { return };
                broker.txn.check_transactions(&broker).await;
            }
        })
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The ACL authorizer, when ACLs are enforced.
    pub fn authorizer(&self) -> Option<&Authorizer> {
        self.authorizer.as_ref()
    }

    /// The SCRAM credential store (also what SASL/PLAIN checks passwords against).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The session of a client of the default listener (`advertised_host:port`), for
    /// callers that serve the broker without the listener: anonymous, from 127.0.0.1.
    pub fn default_session(&self) -> Arc<Session> {
        Arc::new(Session::anonymous(
            "PLAINTEXT",
            &self.config.advertised_host,
            self.config.advertised_port,
        ))
    }

    /// The group coordinator.
    pub fn groups(&self) -> &Arc<GroupCoordinator> {
        &self.groups
    }

    /// The topic registry.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The open partition, opening (or reopening after a failure) it from its log.
    pub async fn partition(&self, topic: &Topic, index: i32) -> Result<Arc<Partition>, KafkaCode> {
        if index < 0 || index >= topic.partitions {
            return Err(KafkaCode::UnknownTopicOrPartition);
        }
        let key = (topic.name.clone(), index);
        let (cell, stale) = {
            let mut map = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
            let cell = map.entry(key.clone()).or_default().clone();
            match cell.get() {
                Some(p) if p.is_failed() => {
                    let fresh: PartitionCell = Arc::default();
                    map.insert(key.clone(), fresh.clone());
                    (fresh, Some(p.clone()))
                }
                _ => (cell, None),
            }
        };
        if let Some(old) = stale {
            self.reopen.partition_failed(&key, &old);
            old.close().await;
        }
        if let Some(p) = cell.get() {
            return Ok(p.clone());
        }
        self.reopen.check(&key)?;
        let settings = PartitionSettings {
            tail_cache_bytes: self.config.tail_cache_bytes,
            leader_epoch: 0,
        };
        cell.get_or_try_init(|| async {
            let p = Partition::open(
                &self.client,
                &topic.name,
                index,
                &log_name(&topic.name, index),
                settings,
            )
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "opening a partition failed");
                self.reopen.open_failed(&key, KafkaCode::KafkaStorageError);
                KafkaCode::KafkaStorageError
            })?;
            self.metrics.partitions_open.fetch_add(1, Ordering::Relaxed);
            Ok(p)
        })
        .await
        .cloned()
    }

    /// Creates a topic (its logs are created when a partition is first opened).
    async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<Result<Arc<Topic>, KafkaCode>, ShimError> {
        let topic = Topic {
            name: name.to_string(),
            id: uuid::Uuid::new_v4(),
            partitions,
            configs,
            created_ms: now_ms(self.config.clock.as_ref()),
        };
        let created = self.topics.create(topic).await?;
        if created.is_ok() {
            self.metrics.topics.fetch_add(1, Ordering::Relaxed);
            tracing::info!(topic = name, partitions, "topic created");
        }
        Ok(created)
    }

    /// Deletes a topic: closes its partitions, deletes its logs and committed offsets,
    /// then its record.
    async fn delete_topic(&self, topic: &Topic) -> Result<(), ShimError> {
        let cells: Vec<PartitionCell> = {
            let mut map = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
            let open: Vec<(String, i32)> = map
                .keys()
                .filter(|(t, _)| *t == topic.name)
                .cloned()
                .collect();
            open.iter().filter_map(|k| map.remove(k)).collect()
        };
        for cell in cells {
            if let Some(p) = cell.get() {
                p.close().await;
                self.metrics.partitions_open.fetch_sub(1, Ordering::Relaxed);
            }
        }
        // The logs that exist (partitions are created when first used), not every index the
        // topic claims: a damaged record may claim billions.
        let logs = self
            .client
            .list_logs_with_prefix(&log_prefix(&topic.name))
            .await?;
        for name in logs {
            self.client.delete_log(&name).await?;
        }
        self.groups
            .delete_topic_offsets(&topic.name)
            .await
            .map_err(|e| ShimError::Groups(e.to_string()))?;
        self.topics.remove(&topic.name).await?;
        self.metrics.topics.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(topic = %topic.name, "topic deleted");
        Ok(())
    }

    /// Runs retention over every topic once.
    pub async fn apply_retention(&self) {
        let now = now_ms(self.config.clock.as_ref());
        for topic in self.topics.all() {
            let ms = topic.retention_ms(&self.config.topic_defaults);
            let bytes = topic.retention_bytes(&self.config.topic_defaults);
            if ms < 0 && bytes < 0 {
                continue;
            }
            for i in 0..topic.partitions {
                let Ok(p) = self.partition(&topic, i).await else {
                    continue;
                };
                if let Err(e) = p.apply_retention(now, ms, bytes).await {
                    tracing::warn!(topic = %topic.name, partition = i, error = %e, "retention failed");
                }
            }
        }
    }

    /// Starts the periodic retention task.
    pub fn spawn_retention(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        let every = self.config.retention_check_interval;
        let clock = self.config.clock.clone();
        tokio::spawn(async move {
            loop {
                clock.sleep(every).await;
                let Some(broker) = me.upgrade() else { return };
                broker.apply_retention().await;
            }
        })
    }

    /// Closes every partition (flushing writes) and stops the group timers.
    pub async fn shutdown(&self) {
        self.groups.shutdown();
        let cells: Vec<PartitionCell> = {
            let mut map = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
            map.drain().map(|(_, c)| c).collect()
        };
        for cell in cells {
            if let Some(p) = cell.get() {
                p.close().await;
            }
        }
    }

    /// Handles one decoded request. The ordered part (for Produce: offset assignment and
    /// issuing the writes) is done before this returns; the returned future finishes the
    /// request and may run concurrently with later requests of the same connection.
    pub async fn handle(
        self: &Arc<Self>,
        session: &Arc<Session>,
        request: Request,
    ) -> Result<BoxFuture<'static, Reply>, ShimError> {
        let Request {
            key, version, body, ..
        } = request;
        let me = self.clone();
        let s = session.clone();
        self.metrics.request(key);
        // The authorization hook: requests refused as a whole are answered here.
        if let Some(refused) = self.refuse(session, &body, version) {
            return Ok(Box::pin(async move { refused }));
        }
        Ok(match body {
            Body::Produce(req) => self.produce(session, req, version).await,
            Body::Fetch(req) => Box::pin(async move { me.fetch(&s, req, version).await }),
            Body::ListOffsets(req) => {
                Box::pin(async move { me.list_offsets(&s, req, version).await })
            }
            Body::Metadata(req) => Box::pin(async move { me.metadata(&s, req, version).await }),
            Body::FindCoordinator(req) => Box::pin(async move {
                let (key_type, key) = (req.key_type, req.key.as_str().to_string());
                let resp = me.find_coordinator(&s, req, version);
                encode(
                    &me.filter_coordinators(&s, key_type, &key, resp, version),
                    version,
                )
            }),
            Body::InitProducerId(req) => {
                Box::pin(async move { me.init_producer_id(req, version).await })
            }
            Body::CreateTopics(req) => {
                Box::pin(async move { me.create_topics(&s, req, version).await })
            }
            Body::DeleteTopics(req) => {
                Box::pin(async move { me.delete_topics(&s, req, version).await })
            }
            Body::DescribeConfigs(req) => {
                Box::pin(async move { encode(&me.describe_configs(&s, req), version) })
            }
            Body::DescribeCluster(req) => {
                Box::pin(async move { encode(&me.describe_cluster(&s, req), version) })
            }
            Body::JoinGroup(req) => {
                Box::pin(async move { encode(&me.groups.join_group(req, version).await, version) })
            }
            Body::SyncGroup(req) => {
                Box::pin(async move { encode(&me.groups.sync_group(req, version).await, version) })
            }
            Body::Heartbeat(req) => {
                Box::pin(async move { encode(&me.groups.heartbeat(req, version).await, version) })
            }
            Body::LeaveGroup(req) => {
                Box::pin(async move { encode(&me.groups.leave_group(req, version).await, version) })
            }
            Body::OffsetCommit(req) => Box::pin(async move {
                encode(
                    &me.authorized_offset_commit(&s, req, version).await,
                    version,
                )
            }),
            Body::OffsetFetch(req) => Box::pin(async move {
                encode(&me.authorized_offset_fetch(&s, req, version).await, version)
            }),
            Body::ListGroups(req) => Box::pin(async move {
                let resp = me.groups.list_groups(req, version).await;
                encode(&me.filter_groups(&s, resp), version)
            }),
            Body::DescribeGroups(req) => Box::pin(async move {
                encode(
                    &me.authorized_describe_groups(&s, req, version).await,
                    version,
                )
            }),
            Body::DeleteGroups(req) => Box::pin(async move {
                encode(
                    &me.authorized_delete_groups(&s, req, version).await,
                    version,
                )
            }),
            Body::DescribeAcls(req) => Box::pin(async move { me.describe_acls(&s, req, version) }),
            Body::CreateAcls(req) => {
                Box::pin(async move { me.create_acls(&s, req, version).await })
            }
            Body::DeleteAcls(req) => {
                Box::pin(async move { me.delete_acls(&s, req, version).await })
            }
            Body::DescribeUserScramCredentials(req) => {
                Box::pin(async move { me.describe_scram_credentials(&s, req, version).await })
            }
            Body::AlterUserScramCredentials(req) => {
                Box::pin(async move { me.alter_scram_credentials(&s, req, version).await })
            }
            Body::AddPartitionsToTxn(req) => {
                Box::pin(async move { me.add_partitions_to_txn(req, version).await })
            }
            Body::AddOffsetsToTxn(req) => {
                Box::pin(async move { me.add_offsets_to_txn(req, version).await })
            }
            Body::EndTxn(req) => Box::pin(async move { me.end_txn(req, version).await }),
            Body::TxnOffsetCommit(req) => {
                Box::pin(async move { me.txn_offset_commit(req, version).await })
            }
            Body::DescribeProducers(req) => {
                Box::pin(async move { me.describe_producers(req, version).await })
            }
            Body::DescribeTransactions(req) => {
                Box::pin(async move { me.describe_transactions(req, version).await })
            }
            Body::ListTransactions(req) => {
                Box::pin(async move { me.list_transactions(req, version).await })
            }
            Body::ApiVersions(_) | Body::SaslHandshake(_) | Body::SaslAuthenticate(_) => {
                return Err(ShimError::Malformed {
                    api: format!("{key:?} v{version}"),
                    detail: "answered by the listener, not the broker".into(),
                });
            }
        })
    }

    // ---------------------------------------------------------------- produce

    async fn produce(
        self: &Arc<Self>,
        session: &Session,
        req: ProduceRequest,
        version: i16,
    ) -> BoxFuture<'static, Reply> {
        let acks = req.acks;
        let timeout_ms = req.timeout_ms;
        let mut issued = Vec::new();
        let transactional_id = req
            .transactional_id
            .as_ref()
            .map(|t| t.as_str().to_string());
        for topic_data in req.topic_data {
            let name = topic_data.name.0.as_str().to_string();
            let topic = self.topics.get(&name);
            for part in topic_data.partition_data {
                let index = part.index;
                let outcome: Result<(Arc<Partition>, i64, i64), KafkaCode> = async {
                    if transactional_id.as_deref().is_some_and(|t| {
                        !self.allowed(session, Operation::Write, ResourceType::TransactionalId, t)
                    }) {
                        return Err(KafkaCode::TransactionalIdAuthorizationFailed);
                    }
                    if !self.allowed(session, Operation::Write, ResourceType::Topic, &name) {
                        return Err(KafkaCode::TopicAuthorizationFailed);
                    }
                    let topic = topic.as_ref().ok_or(KafkaCode::UnknownTopicOrPartition)?;
                    let records = part.records.as_ref().ok_or(KafkaCode::CorruptMessage)?;
                    let batches = batch::split_and_validate(records).map_err(|e| {
                        tracing::debug!(topic = %name, partition = index, error = %e, "produce refused");
                        batch_code(&e)
                    })?;
                    let limit = topic.max_message_bytes(&self.config.topic_defaults);
                    for (h, _) in &batches {
                        if h.size as i64 > limit {
                            return Err(KafkaCode::MessageTooLarge);
                        }
                        if h.compression() == 4 && version < 7 {
                            return Err(KafkaCode::UnsupportedCompressionType);
                        }
                    }
                    // A transactional batch only into a partition of its producer's open
                    // transaction (Kafka's verification, KIP-890); one without a
                    // transactional id in the request cannot be checked.
                    if let Some((h, _)) = batches.iter().find(|(h, _)| h.is_transactional()) {
                        let id = transactional_id
                            .as_deref()
                            .ok_or(KafkaCode::InvalidTxnState)?;
                        self.txn
                            .check_produce(id, h.producer_id, h.producer_epoch, &name, index)
                            .await?;
                    }
                    let bytes: u64 = batches.iter().map(|(h, _)| h.size as u64).sum();
                    let records: i64 = batches.iter().map(|(h, _)| i64::from(h.record_count)).sum();
                    let p = self.partition(topic, index).await?;
                    let (first, last) = p.issue(batches).await?;
                    self.metrics.produced(bytes, records);
                    Ok((p, first, last))
                }
                .await;
                issued.push((name.clone(), index, outcome));
            }
        }
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let mut topics: Vec<produce_response::TopicProduceResponse> = Vec::new();
            for (name, index, outcome) in issued {
                let mut resp = produce_response::PartitionProduceResponse::default()
                    .with_index(index)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1);
                let result = match outcome {
                    Ok((p, first, last)) => p
                        .wait_acknowledged(last, timeout_ms)
                        .await
                        .map(|()| (p, first)),
                    Err(code) => Err(code),
                };
                match result {
                    Ok((p, first)) => {
                        resp.base_offset = first;
                        resp.log_start_offset = p.offsets().0;
                    }
                    Err(code) => {
                        metrics.produce_errors.fetch_add(1, Ordering::Relaxed);
                        resp.error_code = code.code();
                    }
                }
                match topics.last_mut() {
                    Some(t) if t.name.0.as_str() == name => t.partition_responses.push(resp),
                    _ => topics.push(
                        produce_response::TopicProduceResponse::default()
                            .with_name(TopicName(str_bytes(&name)))
                            .with_partition_responses(vec![resp]),
                    ),
                }
            }
            if acks == 0 {
                return Ok(None);
            }
            encode(&ProduceResponse::default().with_responses(topics), version)
        })
    }

    // ---------------------------------------------------------------- fetch

    async fn fetch(self: Arc<Self>, session: &Session, req: FetchRequest, version: i16) -> Reply {
        let clock = self.config.clock.clone();
        let deadline = clock.now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
        let max_bytes = if version >= 3 && req.max_bytes > 0 {
            req.max_bytes as usize
        } else {
            usize::MAX
        };
        let min_bytes = req.min_bytes.max(0) as usize;
        // read_committed: nothing at or past the last stable offset, and the aborted
        // transactions of what is returned.
        let committed_only = req.isolation_level == 1;
        // Resolve the partitions once.
        let mut wanted = Vec::new();
        for t in &req.topics {
            let name = t.topic.0.as_str().to_string();
            let topic = self.topics.get(&name);
            let readable = self.allowed(session, Operation::Read, ResourceType::Topic, &name);
            for p in &t.partitions {
                let part = match &topic {
                    _ if !readable => Err(KafkaCode::TopicAuthorizationFailed),
                    Some(topic) => self.partition(topic, p.partition).await,
                    None => Err(KafkaCode::UnknownTopicOrPartition),
                };
                wanted.push((name.clone(), p.clone(), part));
            }
        }
        loop {
            let mut total = 0usize;
            let mut errors = false;
            let mut topics: Vec<fetch_response::FetchableTopicResponse> = Vec::new();
            for (name, fp, part) in &wanted {
                let mut pd = fetch_response::PartitionData::default()
                    .with_partition_index(fp.partition)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_aborted_transactions(None)
                    .with_log_start_offset(-1);
                if version >= 11 {
                    pd.preferred_read_replica = BrokerId(-1);
                }
                match part {
                    Err(code) => {
                        pd.error_code = code.code();
                        errors = true;
                    }
                    Ok(p) => {
                        let (start, hwm) = p.offsets();
                        let lso = p.last_stable_offset();
                        pd.high_watermark = hwm;
                        pd.last_stable_offset = lso;
                        pd.log_start_offset = start;
                        // Kafka lists aborted transactions (maybe none) to read_committed
                        // fetches only; read_uncommitted ones get null.
                        pd.aborted_transactions = committed_only.then(Vec::new);
                        let budget = (fp.partition_max_bytes.max(0) as usize)
                            .min(max_bytes.saturating_sub(total));
                        // KIP-74: the first batch of the first partition with data is
                        // returned whole even when it exceeds the limits; every other batch
                        // fits within both the partition's and the response's limit.
                        let whole_first = total == 0;
                        if budget > 0 || whole_first {
                            match p
                                .read(fp.fetch_offset, budget, whole_first, committed_only)
                                .await
                            {
                                Ok(None) => {
                                    pd.error_code = KafkaCode::OffsetOutOfRange.code();
                                    errors = true;
                                }
                                Ok(Some(batches)) if !batches.is_empty() => {
                                    if version < 10
                                        && batches.iter().any(|b| {
                                            batch::read_header(b)
                                                .is_ok_and(|h| h.compression() == 4)
                                        })
                                    {
                                        pd.error_code =
                                            KafkaCode::UnsupportedCompressionType.code();
                                        errors = true;
                                    } else {
                                        let size: usize = batches.iter().map(Bytes::len).sum();
                                        let mut buf = BytesMut::with_capacity(size);
                                        for b in &batches {
                                            buf.extend_from_slice(b);
                                        }
                                        if committed_only {
                                            let end = batches
                                                .last()
                                                .and_then(|b| batch::read_header(b).ok())
                                                .map_or(lso, |h| h.base_offset + h.offset_count());
                                            pd.aborted_transactions = Some(
                                                p.aborted_between(fp.fetch_offset, end)
                                                    .into_iter()
                                                    .map(|a| {
                                                        fetch_response::AbortedTransaction::default(
                                                        )
                                                        .with_producer_id(a.producer_id.into())
                                                        .with_first_offset(a.first_offset)
                                                    })
                                                    .collect(),
                                            );
                                        }
                                        total += size;
                                        pd.records = Some(buf.freeze());
                                    }
                                }
                                Ok(Some(_)) => {}
                                Err(code) => {
                                    pd.error_code = code.code();
                                    errors = true;
                                }
                            }
                        }
                    }
                }
                match topics.last_mut() {
                    Some(t) if t.topic.0.as_str() == name => t.partitions.push(pd),
                    _ => topics.push(
                        fetch_response::FetchableTopicResponse::default()
                            .with_topic(TopicName(str_bytes(name)))
                            .with_partitions(vec![pd]),
                    ),
                }
            }
            let now = clock.now();
            if total >= min_bytes.max(1) || errors || now >= deadline || wanted.is_empty() {
                self.metrics.fetched(total as u64);
                return encode(&FetchResponse::default().with_responses(topics), version);
            }
            // Long poll: wait for any partition's high watermark to move.
            let mut receivers: Vec<_> = wanted
                .iter()
                .filter_map(|(_, _, p)| p.as_ref().ok().map(|p| p.subscribe()))
                .collect();
            for r in &mut receivers {
                r.borrow_and_update();
            }
            let changed = futures::future::select_all(
                receivers
                    .iter_mut()
                    .map(|r| Box::pin(r.changed()))
                    .collect::<Vec<_>>(),
            );
            tokio::select! {
                _ = changed => {}
                () = clock.sleep_until(deadline) => {}
            }
        }
    }

    // ---------------------------------------------------------------- list offsets

    async fn list_offsets(
        self: Arc<Self>,
        session: &Session,
        req: ListOffsetsRequest,
        version: i16,
    ) -> Reply {
        let mut topics = Vec::new();
        for t in req.topics {
            let name = t.name.0.as_str().to_string();
            let topic = self.topics.get(&name);
            let described = self.allowed(session, Operation::Describe, ResourceType::Topic, &name);
            let mut parts = Vec::new();
            for p in t.partitions {
                let mut r = list_offsets_response::ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_timestamp(-1)
                    .with_offset(-1);
                let part = match &topic {
                    _ if !described => Err(KafkaCode::TopicAuthorizationFailed),
                    Some(topic) => self.partition(topic, p.partition_index).await,
                    None => Err(KafkaCode::UnknownTopicOrPartition),
                };
                match part {
                    Err(code) => r.error_code = code.code(),
                    Ok(part) => {
                        let (start, hwm) = part.offsets();
                        if version >= 4 {
                            r.leader_epoch = 0;
                        }
                        match p.timestamp {
                            // read_committed consumers end at the last stable offset.
                            -1 if version >= 2 && req.isolation_level == 1 => {
                                r.offset = part.last_stable_offset();
                            }
                            -1 => r.offset = hwm,
                            -2 => r.offset = start,
                            -3 if version >= 7 => match part.max_timestamp().await {
                                Ok(Some((offset, ts))) => {
                                    r.offset = offset;
                                    r.timestamp = ts;
                                }
                                Ok(None) => {}
                                Err(code) => r.error_code = code.code(),
                            },
                            ts if ts >= 0 => match part.offset_for_timestamp(ts).await {
                                Ok(Some((offset, found))) => {
                                    r.offset = offset;
                                    r.timestamp = found;
                                }
                                Ok(None) => {}
                                Err(code) => r.error_code = code.code(),
                            },
                            _ => r.error_code = KafkaCode::InvalidRequest.code(),
                        }
                    }
                }
                parts.push(r);
            }
            topics.push(
                list_offsets_response::ListOffsetsTopicResponse::default()
                    .with_name(TopicName(str_bytes(&name)))
                    .with_partitions(parts),
            );
        }
        encode(&ListOffsetsResponse::default().with_topics(topics), version)
    }

    // ---------------------------------------------------------------- metadata

    /// This broker as the listener the session connected through advertises it.
    fn broker_entry(&self, session: &Session) -> metadata_response::MetadataResponseBroker {
        metadata_response::MetadataResponseBroker::default()
            .with_node_id(BrokerId(self.config.node_id))
            .with_host(str_bytes(&session.advertised_host))
            .with_port(session.advertised_port)
    }

    fn topic_entry(&self, topic: &Topic) -> metadata_response::MetadataResponseTopic {
        let node = BrokerId(self.config.node_id);
        let partitions = (0..topic.partitions)
            .map(|i| {
                metadata_response::MetadataResponsePartition::default()
                    .with_partition_index(i)
                    .with_leader_id(node)
                    .with_leader_epoch(0)
                    .with_replica_nodes(vec![node])
                    .with_isr_nodes(vec![node])
            })
            .collect();
        metadata_response::MetadataResponseTopic::default()
            .with_name(Some(TopicName(str_bytes(&topic.name))))
            .with_topic_id(topic.id)
            .with_partitions(partitions)
    }

    async fn metadata(
        self: Arc<Self>,
        session: &Session,
        req: MetadataRequest,
        version: i16,
    ) -> Reply {
        let described =
            |name: &str| self.allowed(session, Operation::Describe, ResourceType::Topic, name);
        let denied = |name: &str| {
            metadata_response::MetadataResponseTopic::default()
                .with_name(Some(TopicName(str_bytes(name))))
                .with_error_code(KafkaCode::TopicAuthorizationFailed.code())
        };
        // v0: an empty list means all topics; v1+: null means all, empty means none.
        let requested: Option<Vec<(Option<String>, uuid::Uuid)>> = match req.topics {
            None => None,
            Some(list) if list.is_empty() && version == 0 => None,
            Some(list) => Some(
                list.into_iter()
                    .map(|t| (t.name.map(|n| n.0.as_str().to_string()), t.topic_id))
                    .collect(),
            ),
        };
        let auto_create =
            self.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
        let mut topics = Vec::new();
        match requested {
            None => {
                for t in self.topics.all() {
                    if described(&t.name) {
                        topics.push(self.topic_entry(&t));
                    }
                }
            }
            Some(list) => {
                for (name, id) in list {
                    let Some(name) = name else {
                        // By topic id (v10+).
                        let found = self.topics.all().into_iter().find(|t| t.id == id);
                        topics.push(match found {
                            Some(t) if !described(&t.name) => {
                                metadata_response::MetadataResponseTopic::default()
                                    .with_topic_id(id)
                                    .with_error_code(KafkaCode::TopicAuthorizationFailed.code())
                            }
                            Some(t) => self.topic_entry(&t),
                            None => metadata_response::MetadataResponseTopic::default()
                                .with_topic_id(id)
                                .with_error_code(100), // UNKNOWN_TOPIC_ID
                        });
                        continue;
                    };
                    let may_create = || {
                        self.allowed(
                            session,
                            Operation::Create,
                            ResourceType::Cluster,
                            CLUSTER_NAME,
                        ) || self.allowed(session, Operation::Create, ResourceType::Topic, &name)
                    };
                    let entry = if !described(&name) {
                        denied(&name)
                    } else if let Some(t) = self.topics.get(&name) {
                        self.topic_entry(&t)
                    } else if !valid_topic_name(&name) {
                        metadata_response::MetadataResponseTopic::default()
                            .with_name(Some(TopicName(str_bytes(&name))))
                            .with_error_code(KafkaCode::InvalidTopicException.code())
                    } else if self.topics.unservable(&name).is_some() {
                        // Stored but not served (see `Topic::unservable`); never re-created.
                        metadata_response::MetadataResponseTopic::default()
                            .with_name(Some(TopicName(str_bytes(&name))))
                            .with_error_code(KafkaCode::UnknownTopicOrPartition.code())
                    } else if auto_create && !may_create() {
                        denied(&name)
                    } else if auto_create {
                        let partitions = self.config.topic_defaults.partitions;
                        match self
                            .create_topic(&name, partitions, BTreeMap::new())
                            .await?
                        {
                            Ok(t) => self.topic_entry(&t),
                            Err(_) => match self.topics.get(&name) {
                                Some(t) => self.topic_entry(&t),
                                None => metadata_response::MetadataResponseTopic::default()
                                    .with_name(Some(TopicName(str_bytes(&name))))
                                    .with_error_code(KafkaCode::UnknownTopicOrPartition.code()),
                            },
                        }
                    } else {
                        metadata_response::MetadataResponseTopic::default()
                            .with_name(Some(TopicName(str_bytes(&name))))
                            .with_error_code(KafkaCode::UnknownTopicOrPartition.code())
                    };
                    topics.push(entry);
                }
            }
        }
        if version >= 8 {
            for t in &mut topics {
                t.topic_authorized_operations = match &t.name {
                    Some(n) if req.include_topic_authorized_operations => {
                        self.authorized_operations(session, ResourceType::Topic, n.as_str())
                    }
                    _ => i32::MIN,
                };
            }
        }
        let mut resp = MetadataResponse::default()
            .with_brokers(vec![self.broker_entry(session)])
            .with_cluster_id(Some(str_bytes(&self.cluster_id)))
            .with_controller_id(BrokerId(self.config.node_id))
            .with_topics(topics);
        if (8..=10).contains(&version) {
            resp.cluster_authorized_operations = if !req.include_cluster_authorized_operations {
                i32::MIN
            } else if self.allowed(
                session,
                Operation::Describe,
                ResourceType::Cluster,
                CLUSTER_NAME,
            ) {
                self.authorized_operations(session, ResourceType::Cluster, CLUSTER_NAME)
            } else {
                0
            };
        }
        encode(&resp, version)
    }

    // ---------------------------------------------------------------- coordinator, producer ids

    fn find_coordinator(
        &self,
        session: &Session,
        req: FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        let node = BrokerId(self.config.node_id);
        let host = str_bytes(&session.advertised_host);
        let port = session.advertised_port;
        // This node coordinates every group (key type 0) and transactional id (1).
        let code = if req.key_type == 0 || req.key_type == 1 {
            KafkaCode::None
        } else {
            KafkaCode::InvalidRequest
        };
        if version >= 4 {
            let coordinators = req
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    let mut c = find_coordinator_response::Coordinator::default()
                        .with_key(key)
                        .with_error_code(code.code());
                    if code == KafkaCode::None {
                        c = c.with_node_id(node).with_host(host.clone()).with_port(port);
                    } else {
                        c = c.with_node_id(BrokerId(-1)).with_port(-1);
                    }
                    c
                })
                .collect();
            return FindCoordinatorResponse::default().with_coordinators(coordinators);
        }
        if code == KafkaCode::None {
            FindCoordinatorResponse::default()
                .with_node_id(node)
                .with_host(host)
                .with_port(port)
        } else {
            FindCoordinatorResponse::default()
                .with_error_code(code.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1)
        }
    }

    async fn init_producer_id(self: Arc<Self>, req: InitProducerIdRequest, version: i16) -> Reply {
        let mut resp = InitProducerIdResponse::default();
        if let Some(id) = req.transactional_id.as_ref() {
            // Kafka: an empty transactional id is INVALID_REQUEST; any other is the
            // transaction coordinator's.
            let expected = (version >= 3 && req.producer_id.0 >= 0)
                .then_some((req.producer_id.0, req.producer_epoch));
            let outcome = if id.is_empty() {
                Err(KafkaCode::InvalidRequest)
            } else {
                self.txn
                    .init_producer_id(&self, id.as_str(), req.transaction_timeout_ms, expected)
                    .await
            };
            match outcome {
                Ok((pid, epoch)) => {
                    resp.producer_id = pid.into();
                    resp.producer_epoch = epoch;
                }
                Err(code) => {
                    resp.error_code = code.fenced_for(version, 4).code();
                    resp.producer_id = (-1).into();
                    resp.producer_epoch = -1;
                }
            }
            return encode(&resp, version);
        }
        let pid = req.producer_id.0;
        if pid >= 0 && req.producer_epoch >= 0 {
            // KIP-360: bump the epoch of a producer id this broker issued.
            if !self.producer_ids.was_issued(pid).await? {
                resp.error_code = 49; // INVALID_PRODUCER_ID_MAPPING
                resp.producer_id = (-1).into();
                resp.producer_epoch = -1;
                return encode(&resp, version);
            }
            if req.producer_epoch < i16::MAX - 1 {
                resp.producer_id = pid.into();
                resp.producer_epoch = req.producer_epoch + 1;
                return encode(&resp, version);
            }
        }
        resp.producer_id = self.producer_ids.next().await?.into();
        resp.producer_epoch = 0;
        encode(&resp, version)
    }

    // ---------------------------------------------------------------- admin

    fn config_entries(
        &self,
        topic: &Topic,
        keys: Option<&[StrBytes]>,
    ) -> Vec<(String, String, bool, bool)> {
        TOPIC_CONFIG_KEYS
            .iter()
            .filter(|(k, _)| {
                keys.is_none_or(|ks| ks.is_empty() || ks.iter().any(|x| x.as_str() == *k))
            })
            .filter_map(|(k, read_only)| {
                topic
                    .config(k, &self.config.topic_defaults)
                    .map(|(v, set)| (k.to_string(), v, *read_only, set))
            })
            .collect()
    }

    async fn create_topics(
        self: Arc<Self>,
        session: &Session,
        req: CreateTopicsRequest,
        version: i16,
    ) -> Reply {
        let cluster_create = self.allowed(
            session,
            Operation::Create,
            ResourceType::Cluster,
            CLUSTER_NAME,
        );
        // Like Kafka's controller, refuse the whole request when it would create more than
        // MAX_RECORDS_PER_REQUEST records (a topic, each partition, each configuration).
        let records: i64 = req
            .topics
            .iter()
            .map(|t| {
                let partitions = if t.num_partitions == -1 {
                    i64::from(self.config.topic_defaults.partitions).max(t.assignments.len() as i64)
                } else {
                    i64::from(t.num_partitions.max(0))
                };
                1 + partitions + t.configs.len() as i64
            })
            .sum();
        let too_large = records > MAX_RECORDS_PER_REQUEST;
        let mut results = Vec::new();
        for t in req.topics {
            let name = t.name.0.as_str().to_string();
            let mut r = create_topics_response::CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            let partitions = if t.num_partitions == -1 && t.assignments.is_empty() {
                self.config.topic_defaults.partitions
            } else if !t.assignments.is_empty() {
                t.assignments.len() as i32
            } else {
                t.num_partitions
            };
            let configs: BTreeMap<String, String> = t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.as_str().to_string(), v.as_str().to_string()))
                })
                .collect();
            let refusal: Option<(KafkaCode, String)> = if too_large {
                Some((
                    KafkaCode::PolicyViolation,
                    "Unable to perform excessively large batch operation.".into(),
                ))
            } else if !cluster_create
                && !self.allowed(session, Operation::Create, ResourceType::Topic, &name)
            {
                Some((
                    KafkaCode::TopicAuthorizationFailed,
                    "Authorization failed.".into(),
                ))
            } else if !valid_topic_name(&name) {
                Some((
                    KafkaCode::InvalidTopicException,
                    format!("`{name}` is not a legal topic name (1-249 of [a-zA-Z0-9._-])"),
                ))
            } else if self.topics.get(&name).is_some() {
                Some((
                    KafkaCode::TopicAlreadyExists,
                    format!("Topic '{name}' already exists."),
                ))
            } else if !t.assignments.is_empty() && t.num_partitions != -1 {
                Some((
                    KafkaCode::InvalidRequest,
                    "A manual partition assignment was specified, but numPartitions was not set to -1.".into(),
                ))
            } else if partitions < 1 {
                Some((
                    KafkaCode::InvalidPartitions,
                    "Number of partitions was set to an invalid non-positive value.".into(),
                ))
            } else if t.replication_factor == 0 || t.replication_factor < -1 {
                Some((
                    KafkaCode::InvalidReplicationFactor,
                    "Replication factor must be larger than 0, or -1 to use the default value."
                        .into(),
                ))
            } else if t.replication_factor > 1 {
                Some((
                    KafkaCode::InvalidReplicationFactor,
                    format!(
                        "replication factor {} is larger than the 1 available broker",
                        t.replication_factor
                    ),
                ))
            } else if t
                .assignments
                .iter()
                .any(|a| a.broker_ids.len() != 1 || *a.broker_ids[0] != self.config.node_id)
            {
                Some((
                    KafkaCode::InvalidRequest,
                    format!(
                        "replicas may only be assigned to broker {}",
                        self.config.node_id
                    ),
                ))
            } else if let Err(msg) = validate_configs(&configs) {
                Some((KafkaCode::InvalidConfig, msg))
            } else {
                None
            };
            match refusal {
                Some((code, msg)) => {
                    r.error_code = code.code();
                    r.error_message = Some(str_bytes(&msg));
                }
                None if req.validate_only => {
                    r.num_partitions = partitions;
                    r.replication_factor = 1;
                }
                None => match self.create_topic(&name, partitions, configs).await? {
                    Ok(topic) => {
                        r.topic_id = topic.id;
                        r.num_partitions = partitions;
                        r.replication_factor = 1;
                        if version >= 5
                            && !self.allowed(
                                session,
                                Operation::DescribeConfigs,
                                ResourceType::Topic,
                                &name,
                            )
                        {
                            r.topic_config_error_code = KafkaCode::TopicAuthorizationFailed.code();
                        } else if version >= 5 {
                            r.configs = Some(
                                self.config_entries(&topic, None)
                                    .into_iter()
                                    .map(|(k, v, read_only, set)| {
                                        create_topics_response::CreatableTopicConfigs::default()
                                            .with_name(str_bytes(&k))
                                            .with_value(Some(str_bytes(&v)))
                                            .with_read_only(read_only)
                                            .with_config_source(if set { 1 } else { 5 })
                                    })
                                    .collect(),
                            );
                        }
                    }
                    Err(code) => {
                        r.error_code = code.code();
                        r.error_message =
                            Some(str_bytes(&format!("Topic '{name}' already exists.")));
                    }
                },
            }
            if version < 5 {
                r.num_partitions = -1;
                r.replication_factor = -1;
            }
            if version < 1 {
                r.error_message = None;
            }
            results.push(r);
        }
        encode(
            &CreateTopicsResponse::default().with_topics(results),
            version,
        )
    }

    async fn delete_topics(
        self: Arc<Self>,
        session: &Session,
        req: DeleteTopicsRequest,
        version: i16,
    ) -> Reply {
        let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
            req.topics
                .into_iter()
                .map(|t| (t.name.map(|n| n.0.as_str().to_string()), t.topic_id))
                .collect()
        } else {
            req.topic_names
                .into_iter()
                .map(|n| (Some(n.0.as_str().to_string()), uuid::Uuid::nil()))
                .collect()
        };
        let mut responses = Vec::new();
        for (name, id) in targets {
            let topic = match &name {
                Some(n) => self.topics.get(n).or_else(|| self.topics.unservable(n)),
                None => self.topics.all().into_iter().find(|t| t.id == id),
            };
            let mut r = delete_topics_response::DeletableTopicResult::default()
                .with_name(name.as_deref().map(|n| TopicName(str_bytes(n))))
                .with_topic_id(id);
            let deletable =
                |t: &str| self.allowed(session, Operation::Delete, ResourceType::Topic, t);
            match topic {
                _ if name.as_deref().is_some_and(|n| !deletable(n)) => {
                    r.error_code = KafkaCode::TopicAuthorizationFailed.code();
                }
                Some(topic) if !deletable(&topic.name) => {
                    r.error_code = KafkaCode::TopicAuthorizationFailed.code();
                }
                None => {
                    r.error_code = if name.is_some() {
                        KafkaCode::UnknownTopicOrPartition.code()
                    } else {
                        100 // UNKNOWN_TOPIC_ID
                    };
                }
                Some(topic) => {
                    r.name = Some(TopicName(str_bytes(&topic.name)));
                    r.topic_id = topic.id;
                    if let Err(e) = self.delete_topic(&topic).await {
                        tracing::warn!(topic = %topic.name, error = %e, "deleting a topic failed");
                        r.error_code = KafkaCode::KafkaStorageError.code();
                        r.error_message = Some(str_bytes(&e.to_string()));
                    }
                }
            }
            responses.push(r);
        }
        encode(
            &DeleteTopicsResponse::default().with_responses(responses),
            version,
        )
    }

    fn describe_configs(
        &self,
        session: &Session,
        req: DescribeConfigsRequest,
    ) -> DescribeConfigsResponse {
        let mut results = Vec::new();
        for res in req.resources {
            let name = res.resource_name.as_str().to_string();
            let mut r = describe_configs_response::DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let entries: Option<Vec<(String, String, bool, bool)>> = match res.resource_type {
                2 if !self.allowed(
                    session,
                    Operation::DescribeConfigs,
                    ResourceType::Topic,
                    &name,
                ) =>
                {
                    r.error_code = KafkaCode::TopicAuthorizationFailed.code();
                    r.error_message = Some(str_bytes("Topic authorization failed."));
                    None
                }
                4 if !self.allowed(
                    session,
                    Operation::DescribeConfigs,
                    ResourceType::Cluster,
                    CLUSTER_NAME,
                ) =>
                {
                    r.error_code = KafkaCode::ClusterAuthorizationFailed.code();
                    r.error_message = Some(str_bytes("Cluster authorization failed."));
                    None
                }
                2 => match self.topics.get(&name) {
                    Some(topic) => {
                        Some(self.config_entries(&topic, res.configuration_keys.as_deref()))
                    }
                    None => {
                        r.error_code = KafkaCode::UnknownTopicOrPartition.code();
                        r.error_message = Some(str_bytes(&format!("Topic {name} does not exist")));
                        None
                    }
                },
                4 if name.is_empty() || name == self.config.node_id.to_string() => {
                    Some(self.broker_configs(res.configuration_keys.as_deref()))
                }
                4 => {
                    r.error_code = KafkaCode::InvalidRequest.code();
                    r.error_message = Some(str_bytes(&format!("unknown broker {name}")));
                    None
                }
                other => {
                    r.error_code = KafkaCode::InvalidRequest.code();
                    r.error_message =
                        Some(str_bytes(&format!("resource type {other} is not served")));
                    None
                }
            };
            if let Some(entries) = entries {
                r.configs = entries
                    .into_iter()
                    .map(|(k, v, read_only, set)| {
                        let source = match (res.resource_type, set) {
                            (2, true) => 1, // TOPIC_CONFIG
                            (4, true) => 4, // STATIC_BROKER_CONFIG
                            _ => 5,         // DEFAULT_CONFIG
                        };
                        describe_configs_response::DescribeConfigsResourceResult::default()
                            .with_name(str_bytes(&k))
                            .with_value(Some(str_bytes(&v)))
                            .with_read_only(read_only)
                            .with_config_source(source)
                            .with_config_type(config_type(&k))
                    })
                    .collect();
            }
            results.push(r);
        }
        DescribeConfigsResponse::default().with_results(results)
    }

    fn broker_configs(&self, keys: Option<&[StrBytes]>) -> Vec<(String, String, bool, bool)> {
        let d = &self.config.topic_defaults;
        let all = [
            (
                "advertised.listeners",
                self.config.advertised_listeners.clone().unwrap_or_else(|| {
                    format!(
                        "PLAINTEXT://{}:{}",
                        self.config.advertised_host, self.config.advertised_port
                    )
                }),
                true,
            ),
            (
                "auto.create.topics.enable",
                self.config.auto_create_topics.to_string(),
                true,
            ),
            ("broker.id", self.config.node_id.to_string(), true),
            ("default.replication.factor", "1".to_string(), false),
            ("log.retention.bytes", d.retention_bytes.to_string(), false),
            ("log.retention.ms", d.retention_ms.to_string(), false),
            ("message.max.bytes", d.max_message_bytes.to_string(), false),
            ("min.insync.replicas", "1".to_string(), false),
            ("num.partitions", d.partitions.to_string(), true),
            ("offsets.topic.replication.factor", "1".to_string(), false),
            (
                "transaction.state.log.replication.factor",
                "1".to_string(),
                false,
            ),
            (
                "transaction.max.timeout.ms",
                self.config.transactions.max_timeout.as_millis().to_string(),
                true,
            ),
        ];
        all.into_iter()
            .filter(|(k, _, _)| {
                keys.is_none_or(|ks| ks.is_empty() || ks.iter().any(|x| x.as_str() == *k))
            })
            .map(|(k, v, set)| (k.to_string(), v, true, set))
            .collect()
    }

    fn describe_cluster(
        &self,
        session: &Session,
        req: DescribeClusterRequest,
    ) -> DescribeClusterResponse {
        let ops = if !req.include_cluster_authorized_operations {
            i32::MIN
        } else if self.allowed(
            session,
            Operation::Describe,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ) {
            self.authorized_operations(session, ResourceType::Cluster, CLUSTER_NAME)
        } else {
            0
        };
        DescribeClusterResponse::default()
            .with_cluster_authorized_operations(ops)
            .with_cluster_id(str_bytes(&self.cluster_id))
            .with_controller_id(BrokerId(self.config.node_id))
            .with_endpoint_type(1)
            .with_brokers(vec![
                describe_cluster_response::DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(self.config.node_id))
                    .with_host(str_bytes(&session.advertised_host))
                    .with_port(session.advertised_port),
            ])
    }
}

/// Kafka's config types: 1 boolean, 2 string, 3 int, 5 long, 7 list.
fn config_type(key: &str) -> i8 {
    match key {
        "retention.ms" | "retention.bytes" | "log.retention.ms" | "log.retention.bytes" => 5,
        "max.message.bytes"
        | "segment.bytes"
        | "min.insync.replicas"
        | "message.max.bytes"
        | "num.partitions"
        | "transaction.max.timeout.ms"
        | "broker.id" => 3,
        "default.replication.factor"
        | "offsets.topic.replication.factor"
        | "transaction.state.log.replication.factor" => 4,
        "auto.create.topics.enable" => 1,
        "cleanup.policy" => 7,
        _ => 2,
    }
}
