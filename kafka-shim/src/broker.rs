//! The broker: topics, the partition registry, producer ids, retention and request dispatch.
//! The handlers themselves live one per API in `crate::handlers` (and [`crate::groups`],
//! `crate::access`, [`crate::txn`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::future::BoxFuture;
use kafka_protocol::protocol::{Encodable, StrBytes};
use tokio::sync::OnceCell;

use crate::codec::{Body, Request};
use wal::client::Client;
use wal::clock::{Clock, ClockRef, SystemClock};
use wal::meta::kv::Kv;

use crate::TopicCatalog;
use crate::error::{KafkaCode, ShimError};
use crate::fetch_session::FetchSessions;
use crate::groups::{GroupCoordinator, GroupSettings, MemberOrigin, TopicInfo};
use crate::metrics::Metrics;
use crate::partition::{Partition, PartitionSettings, ReopenBackoff};
use crate::quotas::Quotas;
use crate::security::Session;
use crate::security::acl::{Authorizer, AuthorizerConfig};
use crate::security::credentials::Credentials;
use crate::store::ShimStore;
use crate::topics::{ProducerIds, Topic, TopicDefaults, Topics, log_name, log_prefix};
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
    /// Partitions held by fetch sessions over all clients
    /// (`max.incremental.fetch.session.cache.slots`; 0: no sessions).
    pub fetch_session_slots: usize,
    /// How client byte rates are measured for quotas (`quota.window.num`,
    /// `quota.window.size.seconds`).
    pub quota_window: crate::quotas::rate::QuotaWindow,
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
            fetch_session_slots: crate::fetch_session::DEFAULT_SLOTS,
            quota_window: Default::default(),
            clock: SystemClock::shared(),
        }
    }
}

type PartitionCell = Arc<OnceCell<Arc<Partition>>>;

/// A single-node Kafka broker over the engine.
pub struct Broker {
    pub(crate) config: BrokerConfig,
    pub(crate) client: Client,
    pub(crate) topics: Topics,
    pub(crate) partitions: Mutex<HashMap<(String, i32), PartitionCell>>,
    /// Pauses between attempts to open a partition whose storage keeps failing.
    pub(crate) reopen: ReopenBackoff,
    pub(crate) producer_ids: ProducerIds,
    pub(crate) groups: Arc<GroupCoordinator>,
    pub(crate) authorizer: Option<Authorizer>,
    pub(crate) credentials: Credentials,
    pub(crate) txn: TxnCoordinator,
    pub(crate) cluster_id: String,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) fetch_sessions: FetchSessions,
    pub(crate) quotas: Quotas,
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

pub(crate) fn now_ms(clock: &dyn Clock) -> i64 {
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
        let store = ShimStore::new(kv, &format!("{}/kafka", kv_prefix.trim_end_matches('/')));
        let topics = Topics::load(store.clone()).await?;
        let cluster_id = crate::topics::cluster_id(&store).await?;
        let groups = GroupCoordinator::open(store.clone(), config.groups.clone())
            .await
            .map_err(|e| ShimError::Groups(e.to_string()))?;
        let authorizer = match &config.authorizer {
            Some(c) => Some(Authorizer::open(store.clone(), c.clone()).await?),
            None => None,
        };
        let credentials = Credentials::new(store.clone());
        let quotas = Quotas::open(store.clone(), config.quota_window, config.clock.clone()).await?;
        let txn = TxnCoordinator::open(store.clone(), config.transactions.clone()).await?;
        let producer_ids = ProducerIds::new(store);
        metrics
            .topics
            .store(topics.all().len() as i64, Ordering::Relaxed);
        let fetch_sessions = FetchSessions::new(
            config.fetch_session_slots,
            crate::fetch_session::DEFAULT_EVICTION_MS,
        );
        let reopen = ReopenBackoff::new(config.clock.clone());
        let broker = Arc::new(Broker {
            config,
            fetch_sessions,
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
            quotas,
        });
        // Every change of a committed offset is logged to `__consumer_offsets` first.
        let weak: std::sync::Weak<Broker> = Arc::downgrade(&broker);
        let log: std::sync::Weak<dyn crate::offsets_topic::OffsetLog> = weak;
        broker.groups.attach_log(log);
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
            // The start DeleteRecords set may lie inside the oldest batch kept in the log.
            let raised = match self.topics.log_start(topic, index).await {
                Ok(0) => Ok(()),
                Ok(start) => p
                    .advance_log_start(start)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = raised {
                tracing::warn!(error = %e, "restoring a partition's log start offset failed");
                p.close().await;
                return Err(KafkaCode::KafkaStorageError);
            }
            self.metrics.partitions_open.fetch_add(1, Ordering::Relaxed);
            Ok(p)
        })
        .await
        .cloned()
    }

    /// Creates a topic (its logs are created when a partition is first opened).
    pub(crate) async fn create_topic(
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
    pub(crate) async fn delete_topic(&self, topic: &Topic) -> Result<(), ShimError> {
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

    /// Every topic, as the consumer-protocol coordinator sees it.
    pub(crate) fn topic_infos(&self) -> Vec<TopicInfo> {
        self.topics
            .all()
            .iter()
            .map(|t| TopicInfo {
                id: t.id,
                name: t.name.clone(),
                partitions: t.partitions,
            })
            .collect()
    }

    /// Runs retention over every topic once, and compacts the offsets topic where enough of
    /// it is superseded.
    pub async fn apply_retention(&self) {
        if let Err(e) = self
            .groups
            .compact_offsets_log(crate::offsets_topic::COMPACT_MIN_SUPERSEDED)
            .await
        {
            tracing::warn!(error = %e, "compacting the offsets topic failed");
        }
        let now = now_ms(self.config.clock.as_ref());
        for topic in self.topics.all() {
            let ms = topic.retention_ms(&self.config.topic_defaults);
            let bytes = topic.retention_bytes(&self.config.topic_defaults);
            // Kafka's retention only applies to topics whose cleanup policy includes delete.
            if (ms < 0 && bytes < 0) || !topic.deletes_records(&self.config.topic_defaults) {
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
            key,
            version,
            body,
            header,
            size,
        } = request;
        let me = self.clone();
        let s = session.clone();
        let client_id = header.client_id.as_deref().unwrap_or("").to_owned();
        self.metrics.request(key);
        // The authorization hook: requests refused as a whole are answered here.
        if let Some(refused) = self.refuse(session, &body, version) {
            return Ok(Box::pin(async move { refused }));
        }
        Ok(match body {
            Body::Produce(req) => self.produce(session, &client_id, req, version, size).await,
            Body::Fetch(req) => {
                Box::pin(async move { me.fetch(&s, &client_id, req, version).await })
            }
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
            Body::DeleteRecords(req) => {
                Box::pin(async move { me.delete_records(&s, req, version).await })
            }
            Body::CreatePartitions(req) => {
                Box::pin(async move { me.create_partitions(&s, req, version).await })
            }
            Body::OffsetForLeaderEpoch(req) => {
                Box::pin(async move { me.offset_for_leader_epoch(&s, req, version).await })
            }
            Body::AlterConfigs(req) => {
                Box::pin(async move { me.alter_configs(&s, req, version).await })
            }
            Body::IncrementalAlterConfigs(req) => {
                Box::pin(async move { me.incremental_alter_configs(&s, req, version).await })
            }
            Body::DescribeConfigs(req) => {
                Box::pin(async move { encode(&me.describe_configs(&s, req), version) })
            }
            Body::DescribeCluster(req) => {
                Box::pin(async move { encode(&me.describe_cluster(&s, req), version) })
            }
            Body::JoinGroup(req) => {
                let origin = MemberOrigin {
                    client_id: client_id.clone(),
                    host: session.host.clone(),
                };
                Box::pin(async move {
                    encode(
                        &me.groups.join_group_from(req, version, &origin).await,
                        version,
                    )
                })
            }
            Body::SyncGroup(req) => {
                Box::pin(async move { encode(&me.groups.sync_group(req, version).await, version) })
            }
            Body::ConsumerGroupHeartbeat(req) => {
                let origin = MemberOrigin {
                    client_id: header.client_id.as_deref().unwrap_or("").to_owned(),
                    host: session.host.clone(),
                };
                Box::pin(async move {
                    let topics = me.topic_infos();
                    encode(
                        &me.groups
                            .consumer_group_heartbeat(req, version, &origin, &topics)
                            .await,
                        version,
                    )
                })
            }
            Body::ConsumerGroupDescribe(req) => Box::pin(async move {
                encode(
                    &me.authorized_consumer_group_describe(&s, req, version)
                        .await,
                    version,
                )
            }),
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
            Body::OffsetDelete(req) => Box::pin(async move {
                encode(
                    &me.authorized_offset_delete(&s, req, version).await,
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
            Body::DescribeClientQuotas(req) => {
                Box::pin(async move { me.describe_client_quotas(&s, req, version).await })
            }
            Body::AlterClientQuotas(req) => {
                Box::pin(async move { me.alter_client_quotas(&s, req, version).await })
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
                Box::pin(async move { me.txn_offset_commit(&s, req, version).await })
            }
            Body::DescribeProducers(req) => {
                Box::pin(async move { me.describe_producers(&s, req, version).await })
            }
            Body::DescribeTransactions(req) => {
                Box::pin(async move { me.describe_transactions(&s, req, version).await })
            }
            Body::ListTransactions(req) => {
                Box::pin(async move { me.list_transactions(&s, req, version).await })
            }
            Body::ApiVersions(_) | Body::SaslHandshake(_) | Body::SaslAuthenticate(_) => {
                return Err(ShimError::Malformed {
                    api: format!("{key:?} v{version}"),
                    detail: "answered by the listener, not the broker".into(),
                });
            }
        })
    }
}
