//! FindCoordinator: this node coordinates every group and transactional id.

use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, find_coordinator_response,
};

use crate::broker::{Broker, str_bytes};
use crate::error::KafkaCode;
use crate::security::Session;

impl Broker {
    pub(crate) fn find_coordinator(
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
}
