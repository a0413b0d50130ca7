//! DescribeCluster.

use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, describe_cluster_response,
};

use crate::broker::{Broker, str_bytes};
use crate::security::Session;
use crate::security::acl::{CLUSTER_NAME, Operation, ResourceType};

impl Broker {
    pub(crate) fn describe_cluster(
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
