//! ACLs and the authorizer: Kafka's model (resource type, name and pattern type; principal,
//! host, operation, ALLOW/DENY) and the decision its `StandardAuthorizer` makes.
//!
//! A decision for (principal, host, operation, resource):
//! 1. a super user (`super.users`) is allowed everything;
//! 2. the ACLs that apply to the resource are those of its type whose pattern matches the
//!    name: LITERAL with the same name, LITERAL `*`, or PREFIXED with a prefix of the name;
//! 3. if there are none at all (whoever they are for), `allow.everyone.if.no.acl.found`
//!    decides;
//! 4. of those whose principal (or `User:*`) and host (or `*`) match, a DENY for the
//!    operation or ALL denies; otherwise an ALLOW for the operation or ALL allows, where
//!    READ, WRITE, DELETE and ALTER imply DESCRIBE and ALTER_CONFIGS implies
//!    DESCRIBE_CONFIGS; otherwise the operation is denied.
//!
//! ACLs live in the engine's metadata store, one key per binding under
//! `<prefix>/kafka/acls/`, and in memory for the decisions (which are on every request).
//! This module owns the model, the decisions and the store; which API checks what is in
//! [`crate::broker`] and [`crate::server`].

use std::collections::BTreeSet;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::error::ShimError;
use crate::store::{ShimStore, to_json};

/// The name of the cluster resource (`kafka-cluster`).
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The wildcard resource name and host.
pub const WILDCARD: &str = "*";
/// The wildcard principal.
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// Kafka's resource types (`org.apache.kafka.common.resource.ResourceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i8)]
pub enum ResourceType {
    /// Any type (filters only).
    Any = 1,
    /// A topic.
    Topic = 2,
    /// A consumer group.
    Group = 3,
    /// The cluster.
    Cluster = 4,
    /// A transactional id.
    TransactionalId = 5,
    /// A delegation token.
    DelegationToken = 6,
    /// A user.
    User = 7,
}

impl ResourceType {
    /// The type of a wire code; `None` for UNKNOWN (0) and codes Kafka does not define.
    pub fn from_code(code: i8) -> Option<ResourceType> {
        use ResourceType::*;
        [
            Any,
            Topic,
            Group,
            Cluster,
            TransactionalId,
            DelegationToken,
            User,
        ]
        .into_iter()
        .find(|t| *t as i8 == code)
    }

    /// The operations Kafka reports as authorized operations for this type, in code order.
    pub fn operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Delete,
                Alter,
                Describe,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Delete, Describe],
            ResourceType::Cluster => &[
                Create,
                Alter,
                Describe,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
            ],
            ResourceType::TransactionalId => &[Write, Describe],
            ResourceType::DelegationToken => &[Describe],
            ResourceType::User => &[CreateTokens, DescribeTokens],
            ResourceType::Any => &[],
        }
    }
}

/// Kafka's pattern types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i8)]
pub(crate) enum PatternType {
    /// Any pattern type (filters only).
    Any = 1,
    /// Every binding that would apply to the name (filters only).
    Match = 2,
    /// The name exactly, or `*`.
    Literal = 3,
    /// Names starting with it.
    Prefixed = 4,
}

impl PatternType {
    /// The type of a wire code; `None` for UNKNOWN and undefined codes.
    pub(crate) fn from_code(code: i8) -> Option<PatternType> {
        use PatternType::*;
        [Any, Match, Literal, Prefixed]
            .into_iter()
            .find(|t| *t as i8 == code)
    }
}

/// Kafka's ACL operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i8)]
#[allow(missing_docs)]
pub enum Operation {
    Any = 1,
    All = 2,
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
    CreateTokens = 13,
    DescribeTokens = 14,
}

impl Operation {
    /// The operation of a wire code; `None` for UNKNOWN and undefined codes.
    pub fn from_code(code: i8) -> Option<Operation> {
        use Operation::*;
        [
            Any,
            All,
            Read,
            Write,
            Create,
            Delete,
            Alter,
            Describe,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
            CreateTokens,
            DescribeTokens,
        ]
        .into_iter()
        .find(|o| *o as i8 == code)
    }

    /// The operations an ALLOW of which grants this one (itself and its implications).
    fn granted_by(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            Describe => &[Describe, Read, Write, Delete, Alter],
            DescribeConfigs => &[DescribeConfigs, AlterConfigs],
            Read => &[Read],
            Write => &[Write],
            Create => &[Create],
            Delete => &[Delete],
            Alter => &[Alter],
            ClusterAction => &[ClusterAction],
            AlterConfigs => &[AlterConfigs],
            IdempotentWrite => &[IdempotentWrite],
            CreateTokens => &[CreateTokens],
            DescribeTokens => &[DescribeTokens],
            Any | All => &[],
        }
    }
}

/// ALLOW or DENY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i8)]
pub(crate) enum Permission {
    /// Any permission (filters only).
    Any = 1,
    /// Deny.
    Deny = 2,
    /// Allow.
    Allow = 3,
}

impl Permission {
    /// The permission of a wire code; `None` for UNKNOWN and undefined codes.
    pub(crate) fn from_code(code: i8) -> Option<Permission> {
        [Permission::Any, Permission::Deny, Permission::Allow]
            .into_iter()
            .find(|p| *p as i8 == code)
    }
}

/// One ACL: a resource pattern and an access-control entry. Stored as its wire codes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    /// Resource type code.
    pub resource_type: i8,
    /// Resource name (`*` for every resource of the type when LITERAL).
    pub resource_name: String,
    /// Pattern type code (LITERAL or PREFIXED).
    pub pattern_type: i8,
    /// `User:<name>` or `User:*`.
    pub principal: String,
    /// A client IP address, or `*`.
    pub host: String,
    /// Operation code.
    pub operation: i8,
    /// Permission code (ALLOW or DENY).
    pub permission: i8,
}

impl AclBinding {
    /// Checks a binding to be created as Kafka's controller does; the message says why not.
    pub fn validate(&self) -> Result<(), String> {
        match ResourceType::from_code(self.resource_type) {
            None | Some(ResourceType::Any) => return Err("Invalid resourceType".into()),
            Some(_) => {}
        }
        match PatternType::from_code(self.pattern_type) {
            Some(PatternType::Literal | PatternType::Prefixed) => {}
            _ => return Err("Invalid patternType".into()),
        }
        match Operation::from_code(self.operation) {
            None | Some(Operation::Any) => return Err("Invalid operation".into()),
            Some(_) => {}
        }
        match Permission::from_code(self.permission) {
            Some(Permission::Allow | Permission::Deny) => {}
            _ => return Err("Invalid permissionType".into()),
        }
        if self.resource_name.is_empty() {
            return Err("Resource name should not be empty".into());
        }
        if self.resource_type == ResourceType::Cluster as i8 && self.resource_name != CLUSTER_NAME {
            return Err("The only valid name for the CLUSTER resource is kafka-cluster".into());
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => {
                return Err(format!(
                    "Could not parse principal from `{}` (no colon is found separating principal type from principal name)",
                    self.principal
                ));
            }
        }
        if self.host.is_empty() {
            return Err("Invalid host".into());
        }
        Ok(())
    }

    /// Whether this binding's pattern applies to `name` of `resource_type`.
    fn applies_to(&self, resource_type: ResourceType, name: &str) -> bool {
        if self.resource_type != resource_type as i8 {
            return false;
        }
        if self.pattern_type == PatternType::Literal as i8 {
            self.resource_name == name || self.resource_name == WILDCARD
        } else if self.pattern_type == PatternType::Prefixed as i8 {
            name.starts_with(&self.resource_name)
        } else {
            false
        }
    }

    fn for_client(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == WILDCARD_PRINCIPAL)
            && (self.host == host || self.host == WILDCARD)
    }
}

/// A filter of DescribeAcls and DeleteAcls (Kafka's `AclBindingFilter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    /// Resource type code (ANY matches all).
    pub resource_type: i8,
    /// Resource name, or `None` for any.
    pub resource_name: Option<String>,
    /// Pattern type code (ANY, MATCH, LITERAL, PREFIXED).
    pub pattern_type: i8,
    /// Principal, or `None` for any.
    pub principal: Option<String>,
    /// Host, or `None` for any.
    pub host: Option<String>,
    /// Operation code (ANY matches all).
    pub operation: i8,
    /// Permission code (ANY matches all).
    pub permission: i8,
}

impl AclFilter {
    /// Checks the filter as Kafka does: every code must be a known one.
    pub fn validate(&self) -> Result<(), String> {
        if ResourceType::from_code(self.resource_type).is_none() {
            return Err("The resource type is unknown".into());
        }
        if PatternType::from_code(self.pattern_type).is_none() {
            return Err("The pattern type is unknown".into());
        }
        if Operation::from_code(self.operation).is_none() {
            return Err("The operation is unknown".into());
        }
        if Permission::from_code(self.permission).is_none() {
            return Err("The permission type is unknown".into());
        }
        Ok(())
    }

    /// Whether `b` matches the filter.
    pub fn matches(&self, b: &AclBinding) -> bool {
        let any = |code: i8| code == 1;
        if !any(self.resource_type) && self.resource_type != b.resource_type {
            return false;
        }
        let any_pattern = self.pattern_type == PatternType::Any as i8;
        let match_pattern = self.pattern_type == PatternType::Match as i8;
        if !any_pattern && !match_pattern && self.pattern_type != b.pattern_type {
            return false;
        }
        if let Some(name) = &self.resource_name {
            let ok = if any_pattern || self.pattern_type == b.pattern_type {
                *name == b.resource_name
            } else if b.pattern_type == PatternType::Literal as i8 {
                *name == b.resource_name || b.resource_name == WILDCARD
            } else {
                name.starts_with(&b.resource_name)
            };
            if !ok {
                return false;
            }
        }
        self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (any(self.operation) || self.operation == b.operation)
            && (any(self.permission) || self.permission == b.permission)
    }
}

/// How the authorizer is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    /// Principals allowed everything (`super.users`, e.g. `User:admin`).
    pub super_users: BTreeSet<String>,
    /// Allow a resource no ACL applies to (`allow.everyone.if.no.acl.found`).
    pub allow_everyone_if_no_acl_found: bool,
}

/// The ACLs in force and the decisions on them.
#[derive(Debug)]
pub struct Authorizer {
    config: AuthorizerConfig,
    acls: RwLock<BTreeSet<AclBinding>>,
    store: ShimStore,
    prefix: String,
}

impl Authorizer {
    /// Loads the ACLs stored under `<root>/acls/`.
    pub async fn open(store: ShimStore, config: AuthorizerConfig) -> Result<Authorizer, ShimError> {
        let prefix = format!("{}/acls/", store.root());
        let mut acls = BTreeSet::new();
        for record in store.list(&prefix).await? {
            acls.insert(record.json::<AclBinding>("ACL")?);
        }
        Ok(Authorizer {
            config,
            acls: RwLock::new(acls),
            store,
            prefix,
        })
    }

    fn key(&self, b: &AclBinding) -> String {
        let json = serde_json::to_vec(b).expect("a binding serializes");
        let mut key = self.prefix.clone();
        for byte in json {
            key.push_str(&format!("{byte:02x}"));
        }
        key
    }

    /// Whether `principal` from `host` may perform `op` on the resource.
    pub fn authorize(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if self.config.super_users.contains(principal) {
            return true;
        }
        let acls = self.acls.read().unwrap_or_else(|p| p.into_inner());
        let mut applying = acls
            .iter()
            .filter(|b| b.applies_to(resource_type, name))
            .peekable();
        if applying.peek().is_none() {
            return self.config.allow_everyone_if_no_acl_found;
        }
        let mut allowed = false;
        for b in applying.filter(|b| b.for_client(principal, host)) {
            let covers = b.operation == Operation::All as i8
                || op.granted_by().iter().any(|g| *g as i8 == b.operation);
            if b.permission == Permission::Deny as i8
                && (b.operation == Operation::All as i8 || b.operation == op as i8)
            {
                return false;
            }
            if b.permission == Permission::Allow as i8 && covers {
                allowed = true;
            }
        }
        allowed
    }

    /// Whether `principal` may perform `op` on some resource of the type (Kafka's
    /// `authorizeByResourceType`, used for idempotent produce): a super user, an allowed
    /// placeholder resource, or an ALLOW for the operation not cancelled by a DENY that
    /// covers at least as much.
    pub fn authorize_any(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if self.authorize(principal, host, op, resource_type, "hardcode") {
            return true;
        }
        let acls = self.acls.read().unwrap_or_else(|p| p.into_inner());
        let relevant: Vec<&AclBinding> = acls
            .iter()
            .filter(|b| b.resource_type == resource_type as i8 && b.for_client(principal, host))
            .filter(|b| b.operation == op as i8 || b.operation == Operation::All as i8)
            .collect();
        let denied = |name: &str, prefixed: bool| {
            relevant.iter().any(|d| {
                d.permission == Permission::Deny as i8
                    && ((d.pattern_type == PatternType::Literal as i8
                        && (d.resource_name == WILDCARD || (!prefixed && d.resource_name == name)))
                        || (d.pattern_type == PatternType::Prefixed as i8
                            && name.starts_with(&d.resource_name)))
            })
        };
        relevant.iter().any(|a| {
            a.permission == Permission::Allow as i8
                && !denied(
                    &a.resource_name,
                    a.pattern_type == PatternType::Prefixed as i8,
                )
        })
    }

    /// The authorized-operations bit field of a resource (bit `1 << op code`).
    pub fn authorized_operations(
        &self,
        principal: &str,
        host: &str,
        resource_type: ResourceType,
        name: &str,
    ) -> i32 {
        resource_type
            .operations()
            .iter()
            .filter(|op| self.authorize(principal, host, **op, resource_type, name))
            .fold(0i32, |bits, op| bits | (1 << (*op as i8)))
    }

    /// The ACLs matching `filter`.
    pub fn describe(&self, filter: &AclFilter) -> Vec<AclBinding> {
        let acls = self.acls.read().unwrap_or_else(|p| p.into_inner());
        acls.iter().filter(|b| filter.matches(b)).cloned().collect()
    }

    /// Stores a binding (creating one that exists changes nothing).
    pub async fn create(&self, binding: AclBinding) -> Result<(), ShimError> {
        let key = self.key(&binding);
        self.store.put(&key, to_json(&binding, &key)?).await?;
        self.acls
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(binding);
        Ok(())
    }

    /// Deletes the bindings matching `filter`; returns them.
    pub async fn delete(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, ShimError> {
        let matching = self.describe(filter);
        for b in &matching {
            self.store.delete(&self.key(b)).await?;
            self.acls
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(b);
        }
        Ok(matching)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use wal::clock::SystemClock;
    use wal::meta::embedded::EmbeddedKv;
    use wal::meta::kv::Kv;

    async fn store(dir: &tempfile::TempDir) -> Arc<dyn Kv> {
        Arc::new(
            EmbeddedKv::open(dir.path(), SystemClock::shared())
                .await
                .unwrap(),
        )
    }

    fn acl(
        rt: ResourceType,
        name: &str,
        pt: PatternType,
        who: &str,
        op: Operation,
        perm: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt as i8,
            resource_name: name.into(),
            pattern_type: pt as i8,
            principal: who.into(),
            host: "*".into(),
            operation: op as i8,
            permission: perm as i8,
        }
    }

    async fn authorizer(dir: &tempfile::TempDir, config: AuthorizerConfig) -> Authorizer {
        Authorizer::open(ShimStore::new(store(dir).await, "p/kafka"), config)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn decisions_follow_kafkas_rules() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let mut config = AuthorizerConfig::default();
        config.super_users.insert("User:admin".into());
        let dir = tempfile::tempdir().unwrap();
        let a = authorizer(&dir, config).await;
        // No ACL at all: denied (allow.everyone.if.no.acl.found=false), except super users.
        assert!(!a.authorize("User:alice", "127.0.0.1", Read, Topic, "t"));
        assert!(a.authorize("User:admin", "127.0.0.1", Read, Topic, "t"));
        a.create(acl(Topic, "orders-", Prefixed, "User:alice", Read, Allow))
            .await
            .unwrap();
        a.create(acl(
            Topic,
            "orders-secret",
            Literal,
            "User:alice",
            All,
            Deny,
        ))
        .await
        .unwrap();
        a.create(acl(Topic, "*", Literal, "User:*", Write, Allow))
            .await
            .unwrap();
        a.create(acl(Group, "g", Literal, "User:alice", Read, Allow))
            .await
            .unwrap();
        assert!(a.authorize("User:alice", "h", Read, Topic, "orders-1"));
        // READ implies DESCRIBE; nothing implies CREATE.
        assert!(a.authorize("User:alice", "h", Describe, Topic, "orders-1"));
        assert!(!a.authorize("User:alice", "h", Create, Topic, "orders-1"));
        // DENY wins.
        assert!(!a.authorize("User:alice", "h", Read, Topic, "orders-secret"));
        // The wildcard ACL applies to every topic and every user.
        assert!(a.authorize("User:bob", "h", Write, Topic, "anything"));
        assert!(!a.authorize("User:bob", "h", Read, Topic, "anything"));
        assert!(a.authorize("User:alice", "h", Read, Group, "g"));
        assert!(!a.authorize("User:bob", "h", Read, Group, "g"));
        let ops = a.authorized_operations("User:alice", "h", Topic, "orders-1");
        assert_eq!(ops, (1 << 3) | (1 << 4) | (1 << 8));
        // Idempotent produce: WRITE on some topic.
        assert!(a.authorize_any("User:bob", "h", Write, Topic));
        assert!(!a.authorize_any("User:bob", "h", Read, Topic));
        assert!(a.authorize_any("User:alice", "h", Read, Topic));
        // Host-specific ACLs.
        let mut only_local = acl(
            Cluster,
            CLUSTER_NAME,
            Literal,
            "User:carol",
            Describe,
            Allow,
        );
        only_local.host = "127.0.0.1".into();
        a.create(only_local).await.unwrap();
        assert!(a.authorize("User:carol", "127.0.0.1", Describe, Cluster, CLUSTER_NAME));
        assert!(!a.authorize("User:carol", "10.1.1.1", Describe, Cluster, CLUSTER_NAME));
    }

    #[tokio::test]
    async fn allow_everyone_when_no_acl_applies() {
        let dir = tempfile::tempdir().unwrap();
        let a = authorizer(
            &dir,
            AuthorizerConfig {
                allow_everyone_if_no_acl_found: true,
                ..Default::default()
            },
        )
        .await;
        assert!(a.authorize("User:x", "h", Operation::Read, ResourceType::Topic, "t"));
        a.create(acl(
            ResourceType::Topic,
            "t",
            PatternType::Literal,
            "User:y",
            Operation::Read,
            Permission::Allow,
        ))
        .await
        .unwrap();
        assert!(!a.authorize("User:x", "h", Operation::Read, ResourceType::Topic, "t"));
        assert!(a.authorize("User:x", "h", Operation::Read, ResourceType::Topic, "u"));
    }

    #[tokio::test]
    async fn filters_describe_and_delete_and_the_store_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let kv = store(&dir).await;
        let a = Authorizer::open(
            ShimStore::new(kv.clone(), "p/kafka"),
            AuthorizerConfig::default(),
        )
        .await
        .unwrap();
        let lit = acl(
            ResourceType::Topic,
            "orders",
            PatternType::Literal,
            "User:a",
            Operation::Read,
            Permission::Allow,
        );
        let pre = acl(
            ResourceType::Topic,
            "ord",
            PatternType::Prefixed,
            "User:b",
            Operation::Write,
            Permission::Allow,
        );
        let star = acl(
            ResourceType::Topic,
            "*",
            PatternType::Literal,
            "User:c",
            Operation::Read,
            Permission::Deny,
        );
        for b in [&lit, &pre, &star] {
            a.create(b.clone()).await.unwrap();
        }
        a.create(lit.clone()).await.unwrap();
        let all = AclFilter {
            resource_type: 1,
            resource_name: None,
            pattern_type: 1,
            principal: None,
            host: None,
            operation: 1,
            permission: 1,
        };
        assert_eq!(a.describe(&all).len(), 3);
        let matching = AclFilter {
            resource_name: Some("orders".into()),
            pattern_type: PatternType::Match as i8,
            ..all.clone()
        };
        assert_eq!(a.describe(&matching).len(), 3);
        let exact = AclFilter {
            resource_name: Some("orders".into()),
            pattern_type: PatternType::Any as i8,
            ..all.clone()
        };
        assert_eq!(a.describe(&exact), vec![lit.clone()]);
        let reopened = Authorizer::open(
            ShimStore::new(kv.clone(), "p/kafka"),
            AuthorizerConfig::default(),
        )
        .await
        .unwrap();
        assert_eq!(reopened.describe(&all).len(), 3);
        let deleted = a
            .delete(&AclFilter {
                principal: Some("User:b".into()),
                ..all.clone()
            })
            .await
            .unwrap();
        assert_eq!(deleted, vec![pre]);
        let reopened = Authorizer::open(ShimStore::new(kv, "p/kafka"), AuthorizerConfig::default())
            .await
            .unwrap();
        assert_eq!(reopened.describe(&all).len(), 2);
    }

    #[test]
    fn bindings_are_validated() {
        let good = acl(
            ResourceType::Topic,
            "t",
            PatternType::Literal,
            "User:a",
            Operation::Read,
            Permission::Allow,
        );
        assert!(good.validate().is_ok());
        for bad in [
            AclBinding {
                resource_type: 1,
                ..good.clone()
            },
            AclBinding {
                pattern_type: 2,
                ..good.clone()
            },
            AclBinding {
                operation: 1,
                ..good.clone()
            },
            AclBinding {
                permission: 1,
                ..good.clone()
            },
            AclBinding {
                principal: "alice".into(),
                ..good.clone()
            },
            AclBinding {
                resource_name: String::new(),
                ..good.clone()
            },
            AclBinding {
                resource_type: 4,
                resource_name: "c".into(),
                ..good.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
