//! InitProducerId: idempotent producer ids, epoch bumps (KIP-360) and transactional ids.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};

use crate::broker::{Broker, Reply, encode};
use crate::error::KafkaCode;

impl Broker {
    pub(crate) async fn init_producer_id(
        self: Arc<Self>,
        req: InitProducerIdRequest,
        version: i16,
    ) -> Reply {
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
                resp.error_code = KafkaCode::InvalidProducerIdMapping.code();
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
}
