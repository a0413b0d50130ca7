//! Which root prefix `<P>` the metadata keys live under, and why.
//!
//! Two prefixes are in use by published Go Woodpecker releases:
//!
//! * **legacy** `woodpecker`: fixed in every release up to v0.1.29, and in the v0.1.13
//!   maintenance line that Milvus 2.6.x embeds (whatever `etcd.rootPath` and
//!   `woodpecker.meta.prefix` say; they are ignored).
//! * **configured** `<etcd.rootPath>/<woodpecker.meta.prefix>` (`by-dev/woodpecker` with the
//!   shipped files): v0.1.30 and later (Milvus 3.x) on a store with no legacy keys. When any
//!   legacy key exists, those releases use the legacy prefix instead.
//!
//! `woodpecker.meta.prefixMode` (this project's extension) picks between them:
//!
//! | mode | prefix used |
//! |---|---|
//! | `auto` (default) | the one that holds Woodpecker keys; `woodpecker` on an empty store; an error naming both when both hold keys |
//! | `legacy` | always `woodpecker` |
//! | `configured` | always `<etcd.rootPath>/<woodpecker.meta.prefix>` |
//!
//! `auto` writes an empty store under `woodpecker`, so every Go release finds the same keys
//! (the old ones because it is their only prefix, the new ones because legacy keys take
//! precedence), and it keeps a store that a newer Go release or an earlier woodpecker-rs
//! initialised under the configured prefix where it is. The choice is made once, when the
//! store is opened; keys another client writes later never move a running process. When both
//! prefixes hold keys no choice is silent: `auto` refuses to open (picking either would hide
//! the other's logs), and an explicit mode opens its prefix and warns, naming the logs it does
//! not see. Nothing is ever copied from one prefix to the other.
//!
//! Two populated prefixes are more than a visibility problem: each has its own `logidgen`, so
//! log ids repeat across them, and segments live at `<minio.rootPath>/<logId>/...` in object
//! storage. Clients on different prefixes that share a bucket and `minio.rootPath` write the
//! same objects for different logs. This is another reason `auto` refuses rather than guesses.
//!
//! A prefix "holds Woodpecker keys" when one of the keys or sub-prefixes Go Woodpecker itself
//! checks exists under it ([`MARKER_KEYS`], [`MARKER_PREFIXES`]).

use std::fmt;

use serde::Deserialize;

use super::error::{MetaError, MetaResult};
use super::keys::{Keys, LEGACY_PREFIX, configured_prefix, log_name_of};
use super::kv::Kv;

/// Keys whose presence under a prefix marks a Woodpecker store (the ones Go checks).
pub(crate) const MARKER_KEYS: [&str; 5] = [
    "instance",
    "version",
    "logidgen",
    "quorumidgen",
    "conditionwrite",
];

/// Sub-prefixes whose presence under a prefix marks a Woodpecker store (the ones Go checks).
pub(crate) const MARKER_PREFIXES: [&str; 5] =
    ["logs/", "quorums/", "logstores/", "readers/", "cleaning/"];

/// `woodpecker.meta.prefixMode`: how the root prefix is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefixMode {
    /// The prefix that holds keys; `woodpecker` on an empty store; an error when both do.
    #[default]
    Auto,
    /// Always `woodpecker` (Go Woodpecker up to v0.1.29, Milvus 2.6).
    Legacy,
    /// Always `<etcd.rootPath>/<woodpecker.meta.prefix>` (Go Woodpecker v0.1.30 and later on
    /// a fresh store, Milvus 3.x).
    Configured,
}

impl fmt::Display for PrefixMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrefixMode::Auto => "auto",
            PrefixMode::Legacy => "legacy",
            PrefixMode::Configured => "configured",
        })
    }
}

/// The two prefixes a store may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixCandidates {
    /// The fixed prefix of the older releases (`woodpecker`).
    pub legacy: String,
    /// `<etcd.rootPath>/<woodpecker.meta.prefix>`.
    pub configured: String,
}

impl PrefixCandidates {
    /// The candidates for `etcd.rootPath` and `woodpecker.meta.prefix`.
    pub fn new(etcd_root: &str, meta_prefix: &str) -> Self {
        PrefixCandidates {
            legacy: LEGACY_PREFIX.to_string(),
            configured: configured_prefix(etcd_root, meta_prefix),
        }
    }
}

/// What one prefix holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixContents {
    /// The prefix.
    pub prefix: String,
    /// Whether any Woodpecker key is under it.
    pub holds_keys: bool,
    /// The logs under it, sorted (only listed when asked for, or when it matters: a conflict).
    pub logs: Option<Vec<String>>,
}

/// Why a prefix was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixReason {
    /// `prefixMode` named it.
    Explicit,
    /// Both candidates are the same prefix.
    Same,
    /// No Woodpecker key under either: the prefix published Go Woodpecker uses.
    EmptyStore,
    /// Only the legacy prefix holds keys.
    OnlyLegacy,
    /// Only the configured prefix holds keys.
    OnlyConfigured,
}

impl fmt::Display for PrefixReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrefixReason::Explicit => "set by woodpecker.meta.prefixMode",
            PrefixReason::Same => "the legacy and the configured prefix are the same",
            PrefixReason::EmptyStore => {
                "no Woodpecker keys yet: the fixed prefix of Go Woodpecker up to v0.1.29 and \
                 Milvus 2.6, which later releases also follow"
            }
            PrefixReason::OnlyLegacy => "the store holds Woodpecker keys under it",
            PrefixReason::OnlyConfigured => {
                "the store holds Woodpecker keys under it and none under the legacy prefix"
            }
        })
    }
}

/// The prefix in use and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixChoice {
    /// The prefix every key goes under.
    pub prefix: String,
    /// The mode it was chosen by.
    pub mode: PrefixMode,
    /// Why.
    pub reason: PrefixReason,
    /// What each candidate held when the choice was made.
    pub legacy: PrefixContents,
    /// See [`PrefixChoice::legacy`].
    pub configured: PrefixContents,
}

impl PrefixChoice {
    /// The candidate not in use, when it holds Woodpecker keys (logs this process does not see).
    pub fn shadowed(&self) -> Option<&PrefixContents> {
        [&self.legacy, &self.configured]
            .into_iter()
            .find(|c| c.prefix != self.prefix && c.holds_keys)
    }
}

/// Whether any Woodpecker key is under `prefix`.
pub async fn holds_keys(kv: &dyn Kv, prefix: &str) -> MetaResult<bool> {
    for key in MARKER_KEYS {
        if kv.get(&format!("{prefix}/{key}")).await?.is_some() {
            return Ok(true);
        }
    }
    for sub in MARKER_PREFIXES {
        if kv.has_prefix(&format!("{prefix}/{sub}")).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The logs under `prefix`, sorted.
pub(crate) async fn logs_under(kv: &dyn Kv, prefix: &str) -> MetaResult<Vec<String>> {
    let keys = Keys::new(prefix);
    let (kvs, _) = kv.get_prefix(&keys.logs_prefix()).await?;
    let mut names: Vec<String> = kvs
        .iter()
        .filter_map(|kv| log_name_of(&keys, &kv.key).map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

async fn survey(kv: &dyn Kv, prefix: &str, list_logs: bool) -> MetaResult<PrefixContents> {
    let holds = holds_keys(kv, prefix).await?;
    let logs = if list_logs && holds {
        Some(logs_under(kv, prefix).await?)
    } else if list_logs {
        Some(Vec::new())
    } else {
        None
    };
    Ok(PrefixContents {
        prefix: prefix.to_string(),
        holds_keys: holds,
        logs,
    })
}

/// Chooses the prefix by `mode` (module docs). `list_logs` lists the logs of both candidates
/// in the answer; they are listed anyway when both hold keys.
///
/// Fails with [`MetaError::PrefixConflict`] in `auto` mode when both candidates hold keys.
pub async fn choose_prefix(
    kv: &dyn Kv,
    mode: PrefixMode,
    candidates: &PrefixCandidates,
    list_logs: bool,
) -> MetaResult<PrefixChoice> {
    let mut legacy = survey(kv, &candidates.legacy, list_logs).await?;
    let mut configured = if candidates.configured == candidates.legacy {
        legacy.clone()
    } else {
        survey(kv, &candidates.configured, list_logs).await?
    };
    let distinct = legacy.prefix != configured.prefix;
    let both = distinct && legacy.holds_keys && configured.holds_keys;
    // Logs that will not be seen are named: both lists in a conflict, the other prefix's when
    // a mode overrides it.
    let name_legacy = both || (distinct && mode == PrefixMode::Configured && legacy.holds_keys);
    let name_configured = both || (distinct && mode == PrefixMode::Legacy && configured.holds_keys);
    if name_legacy && legacy.logs.is_none() {
        legacy.logs = Some(logs_under(kv, &legacy.prefix).await?);
    }
    if name_configured && configured.logs.is_none() {
        configured.logs = Some(logs_under(kv, &configured.prefix).await?);
    }
    let (prefix, reason) = match mode {
        PrefixMode::Legacy => (&legacy.prefix, PrefixReason::Explicit),
        PrefixMode::Configured => (&configured.prefix, PrefixReason::Explicit),
        PrefixMode::Auto if !distinct => (&legacy.prefix, PrefixReason::Same),
        PrefixMode::Auto => match (legacy.holds_keys, configured.holds_keys) {
            (false, false) => (&legacy.prefix, PrefixReason::EmptyStore),
            (true, false) => (&legacy.prefix, PrefixReason::OnlyLegacy),
            (false, true) => (&configured.prefix, PrefixReason::OnlyConfigured),
            (true, true) => {
                return Err(MetaError::PrefixConflict {
                    legacy: legacy.prefix,
                    legacy_logs: legacy.logs.unwrap_or_default(),
                    configured: configured.prefix,
                    configured_logs: configured.logs.unwrap_or_default(),
                });
            }
        },
    };
    Ok(PrefixChoice {
        prefix: prefix.clone(),
        mode,
        reason,
        legacy,
        configured,
    })
}

/// At most `max` names, then how many more.
pub fn name_list(names: &[String], max: usize) -> String {
    if names.is_empty() {
        return "no logs".to_string();
    }
    let shown: Vec<&str> = names.iter().take(max).map(String::as_str).collect();
    let mut text = format!(
        "{} log{}: {}",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        shown.join(", ")
    );
    if names.len() > max {
        text.push_str(&format!(", ... ({} more)", names.len() - max));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_from_yaml() {
        for (text, mode) in [
            ("auto", PrefixMode::Auto),
            ("legacy", PrefixMode::Legacy),
            ("configured", PrefixMode::Configured),
        ] {
            assert_eq!(serde_yaml_ng::from_str::<PrefixMode>(text).unwrap(), mode);
            assert_eq!(mode.to_string(), text);
        }
        assert!(serde_yaml_ng::from_str::<PrefixMode>("root").is_err());
    }

    #[test]
    fn candidates_follow_the_go_join() {
        let c = PrefixCandidates::new("by-dev", "woodpecker");
        assert_eq!(c.legacy, "woodpecker");
        assert_eq!(c.configured, "by-dev/woodpecker");
        assert_eq!(PrefixCandidates::new("", "").configured, "woodpecker");
    }

    #[test]
    fn name_lists_are_bounded() {
        assert_eq!(name_list(&[], 3), "no logs");
        assert_eq!(name_list(&["a".into()], 3), "1 log: a");
        let many: Vec<String> = (0..5).map(|i| format!("l{i}")).collect();
        assert_eq!(name_list(&many, 2), "5 logs: l0, l1, ... (3 more)");
    }
}
