//! The Go project's etcd key layout under one root prefix.
//!
//! | key | value |
//! |---|---|
//! | `<P>/instance` | a UUID |
//! | `<P>/version` | `Version{1,0,0}` |
//! | `<P>/logidgen`, `<P>/quorumidgen` | decimal counters |
//! | `<P>/conditionwrite` | `true` / `false` |
//! | `<P>/logs/<name>` | `LogMeta` |
//! | `<P>/logs/<name>/segments/<id>` | `SegmentMetadata` (decimal id, not padded) |
//! | `<P>/logs/<name>/lock/<lease hex>` | empty: the writer lock's mutex keys |
//! | `<P>/readers/<logId>/<reader>` | `ReaderTempInfo`, under a lease |
//! | `<P>/cleaning/<logId>/<segId>` | `SegmentCleanupStatus` |
//! | `<P>/marking/<logId>/<segId>` | `SegmentCompactedNotifyStatus` |
//! | `<P>/logs-deleted/<name>-<unixNano>[/segments/<id>]` | parked copies of a deleted log |
//!
//! `<P>` is chosen by [`super::prefix`]: `woodpecker` (the fixed prefix of Go Woodpecker up to
//! v0.1.29 and of Milvus 2.6) or `<etcd.rootPath>/<woodpecker.meta.prefix>` (Go Woodpecker
//! v0.1.30 and later on a fresh store).

/// The prefix Go Woodpecker up to v0.1.29 hard-codes, and the fallback for an empty one.
pub const LEGACY_PREFIX: &str = "woodpecker";

/// Joins `etcd.rootPath` and `woodpecker.meta.prefix` like Go's `path.Join`, falling back to
/// `woodpecker` when the result is empty or `.`.
pub(crate) fn configured_prefix(etcd_root: &str, meta_prefix: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in etcd_root.split('/').chain(meta_prefix.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        LEGACY_PREFIX.to_string()
    } else {
        parts.join("/")
    }
}

/// Builds every key under one root prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (no trailing slash).
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into().trim_end_matches('/').to_string(),
        }
    }

    /// The root prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn at(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    /// `<P>/instance`.
    pub fn instance(&self) -> String {
        self.at("instance")
    }

    /// `<P>/version`.
    pub fn version(&self) -> String {
        self.at("version")
    }

    /// `<P>/logidgen`.
    pub fn log_id_gen(&self) -> String {
        self.at("logidgen")
    }

    /// `<P>/quorumidgen`.
    pub fn quorum_id_gen(&self) -> String {
        self.at("quorumidgen")
    }

    /// `<P>/conditionwrite`.
    pub fn condition_write(&self) -> String {
        self.at("conditionwrite")
    }

    /// `<P>/logs/` (with the slash: the prefix of every log key).
    pub(crate) fn logs_prefix(&self) -> String {
        self.at("logs/")
    }

    /// `<P>/logs/<name>`.
    pub fn log(&self, name: &str) -> String {
        self.at(&format!("logs/{name}"))
    }

    /// `<P>/logs/<name>/segments/`.
    pub(crate) fn segments_prefix(&self, name: &str) -> String {
        self.at(&format!("logs/{name}/segments/"))
    }

    /// `<P>/logs/<name>/segments/<id>`.
    pub fn segment(&self, name: &str, segment_id: i64) -> String {
        self.at(&format!("logs/{name}/segments/{segment_id}"))
    }

    /// `<P>/logs/<name>/lock` (the mutex prefix; holders add `/<lease hex>`).
    pub fn lock(&self, name: &str) -> String {
        self.at(&format!("logs/{name}/lock"))
    }

    /// `<P>/readers/<logId>/`.
    pub(crate) fn readers_prefix(&self, log_id: i64) -> String {
        self.at(&format!("readers/{log_id}/"))
    }

    /// `<P>/readers/<logId>/<reader>`.
    pub fn reader(&self, log_id: i64, reader: &str) -> String {
        self.at(&format!("readers/{log_id}/{reader}"))
    }

    /// `<P>/cleaning/<logId>/`.
    pub(crate) fn cleaning_prefix(&self, log_id: i64) -> String {
        self.at(&format!("cleaning/{log_id}/"))
    }

    /// `<P>/cleaning/<logId>/<segId>`.
    pub fn cleaning(&self, log_id: i64, segment_id: i64) -> String {
        self.at(&format!("cleaning/{log_id}/{segment_id}"))
    }

    /// `<P>/marking/<logId>/`.
    pub(crate) fn marking_prefix(&self, log_id: i64) -> String {
        self.at(&format!("marking/{log_id}/"))
    }

    /// `<P>/marking/<logId>/<segId>`.
    pub fn marking(&self, log_id: i64, segment_id: i64) -> String {
        self.at(&format!("marking/{log_id}/{segment_id}"))
    }

    /// `<P>/logs-deleted/<name>-<unixNano>`.
    pub(crate) fn deleted_log(&self, name: &str, unix_nanos: u128) -> String {
        self.at(&format!("logs-deleted/{name}-{unix_nanos}"))
    }

    /// `<P>/logs-deleted/<name>-<unixNano>/segments/<id>`.
    pub(crate) fn deleted_segment(&self, name: &str, unix_nanos: u128, segment_id: i64) -> String {
        self.at(&format!(
            "logs-deleted/{name}-{unix_nanos}/segments/{segment_id}"
        ))
    }
}

/// The log name of a key directly under `<P>/logs/`, or `None` for deeper keys
/// (segments, locks).
pub(crate) fn log_name_of<'a>(keys: &Keys, key: &'a str) -> Option<&'a str> {
    let rest = key.strip_prefix(keys.prefix())?.strip_prefix("/logs/")?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// Whether a log name can be stored: non-empty, no `/` (it would collide with the segment and
/// lock keys), no control characters.
pub fn valid_log_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_joins_like_go_path_join() {
        assert_eq!(
            configured_prefix("by-dev", "woodpecker"),
            "by-dev/woodpecker"
        );
        assert_eq!(
            configured_prefix("by-dev/", "/woodpecker/"),
            "by-dev/woodpecker"
        );
        assert_eq!(configured_prefix("", "woodpecker"), "woodpecker");
        assert_eq!(configured_prefix("", ""), "woodpecker");
        assert_eq!(configured_prefix(".", "."), "woodpecker");
        assert_eq!(configured_prefix("a/b", "../c"), "a/c");
    }

    #[test]
    fn keys_follow_the_go_layout() {
        let k = Keys::new("by-dev/woodpecker");
        assert_eq!(k.log("ch_0"), "by-dev/woodpecker/logs/ch_0");
        assert_eq!(
            k.segment("ch_0", 12),
            "by-dev/woodpecker/logs/ch_0/segments/12"
        );
        assert_eq!(k.lock("ch_0"), "by-dev/woodpecker/logs/ch_0/lock");
        assert_eq!(k.reader(3, "r-1"), "by-dev/woodpecker/readers/3/r-1");
        assert_eq!(k.cleaning(3, 4), "by-dev/woodpecker/cleaning/3/4");
        assert_eq!(k.marking(3, 4), "by-dev/woodpecker/marking/3/4");
        assert_eq!(k.log_id_gen(), "by-dev/woodpecker/logidgen");
        assert_eq!(
            k.deleted_segment("ch_0", 17, 2),
            "by-dev/woodpecker/logs-deleted/ch_0-17/segments/2"
        );
        assert_eq!(log_name_of(&k, "by-dev/woodpecker/logs/ch_0"), Some("ch_0"));
        assert_eq!(
            log_name_of(&k, "by-dev/woodpecker/logs/ch_0/segments/1"),
            None
        );
        assert_eq!(log_name_of(&k, "other/logs/ch_0"), None);
    }

    #[test]
    fn log_names() {
        assert!(valid_log_name("by-dev-rootcoord-dml_0"));
        assert!(!valid_log_name(""));
        assert!(!valid_log_name("a/b"));
        assert!(!valid_log_name("a\nb"));
    }
}
