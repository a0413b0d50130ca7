//! The condition-write capability probe and the `fencePolicy.conditionWrite` decision.
//!
//! Fencing on object storage is only as good as the store's conditional create. Some stores
//! ignore `If-None-Match` or apply it loosely, so before relying on it the engine runs six steps
//! against two scratch keys under the root, `conditional_write_<id>` (A) and
//! `conditional_write_fenced_<id>` (B), and removes them afterwards:
//!
//! 1. conditional put A: must succeed;
//! 2. conditional put A again (other bytes): must fail with "already exists";
//! 3. fence A: must fail with "already exists" (A holds data, not a fence);
//! 4. fence B: must succeed;
//! 5. conditional put B: must fail with "fenced";
//! 6. fence B again: must succeed as already fenced.
//!
//! [`decide_condition_write`] applies the modes: `disable` never probes; `auto` follows a stored
//! cluster decision when there is one, else probes (up to ten times) and must pass; `enable`
//! probes even over a stored "false". The caller stores [`Decision::store`] in metadata.

use std::fmt;

use bytes::Bytes;

use super::{Created, Fence, ObjectStorage};
use crate::config::ConditionWriteMode;
use crate::error::{Error, Result};

/// How many times a failing probe is repeated before the store is declared unfit.
pub(crate) const PROBE_ATTEMPTS: usize = 10;

/// One probe step and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeStep {
    /// What the step did.
    pub name: &'static str,
    /// What the step needed to see.
    pub expected: &'static str,
    /// What it saw.
    pub observed: String,
    /// Whether the two agree.
    pub passed: bool,
}

/// The outcome of one probe run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The steps run, in order; the run stops at the first failure.
    pub steps: Vec<ProbeStep>,
}

impl ProbeReport {
    /// Whether every step passed.
    pub fn supported(&self) -> bool {
        self.steps.len() == 6 && self.steps.iter().all(|s| s.passed)
    }

    /// The first failed step, if any.
    pub fn failure(&self) -> Option<&ProbeStep> {
        self.steps.iter().find(|s| !s.passed)
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(
                f,
                "{}. {} [{}]: expected {}, observed {}",
                i + 1,
                s.name,
                if s.passed { "ok" } else { "FAILED" },
                s.expected,
                s.observed
            )?;
        }
        Ok(())
    }
}

fn describe<T: fmt::Debug>(r: &Result<T>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(Error::AlreadyExists { .. }) => "already exists".into(),
        Err(Error::Fenced { .. }) => "fenced".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// Runs the six steps once. Conditional writes must be switched on for `storage`; the scratch
/// objects are deleted whatever happens. Transport errors are returned as errors, not as a
/// failed probe.
pub async fn probe_condition_write(storage: &ObjectStorage) -> Result<ProbeReport> {
    if !storage.condition_write_enabled() {
        return Err(Error::Unsupported {
            what: "probing with conditional writes switched off".into(),
        });
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let a = format!("conditional_write_{id}");
    let b = format!("conditional_write_fenced_{id}");
    let result = run_steps(storage, &a, &b).await;
    let cleanup_a = storage.delete(&a).await;
    let cleanup_b = storage.delete(&b).await;
    let report = result?;
    cleanup_a?;
    cleanup_b?;
    Ok(report)
}

async fn run_steps(storage: &ObjectStorage, a: &str, b: &str) -> Result<ProbeReport> {
    let mut steps = Vec::with_capacity(6);
    // Transport failures and settings to fix abort the probe with the error; anything else
    // is an observation. A setting error (a missing bucket, refused credentials) is passed on
    // as it is: it names the setting, the bucket and the endpoint.
    fn check<T>(r: &Result<T>, storage: &ObjectStorage, key: &str) -> Result<()> {
        match r {
            Err(Error::Config { setting, message }) => Err(Error::config(setting, message)),
            Err(e @ Error::Transient { .. }) => Err(Error::Backend {
                op: "condition-write probe",
                path: storage.describe(key),
                source: e.to_string().into(),
            }),
            _ => Ok(()),
        }
    }
    macro_rules! step {
        ($name:expr, $expected:expr, $result:expr, $pass:expr) => {{
            let r = $result;
            check(&r, storage, a)?;
            let passed = $pass(&r);
            steps.push(ProbeStep {
                name: $name,
                expected: $expected,
                observed: describe(&r),
                passed,
            });
            if !passed {
                return Ok(ProbeReport { steps });
            }
        }};
    }
    step!(
        "conditional put of a new object",
        "created",
        storage
            .put_if_absent(a, Bytes::from_static(b"condition-write probe 1"))
            .await,
        |r: &Result<Created>| matches!(r, Ok(Created::New))
    );
    step!(
        "conditional put over that object",
        "already exists",
        storage
            .put_if_absent(a, Bytes::from_static(b"condition-write probe 2"))
            .await,
        |r: &Result<Created>| matches!(r, Err(Error::AlreadyExists { .. }))
    );
    step!(
        "fence over that object",
        "already exists",
        storage.put_fence(a).await,
        |r: &Result<Fence>| matches!(r, Err(Error::AlreadyExists { .. }))
    );
    step!(
        "fence of a new key",
        "placed",
        storage.put_fence(b).await,
        |r: &Result<Fence>| matches!(r, Ok(Fence::Placed))
    );
    step!(
        "conditional put over the fence",
        "fenced",
        storage
            .put_if_absent(b, Bytes::from_static(b"condition-write probe 3"))
            .await,
        |r: &Result<Created>| matches!(r, Err(Error::Fenced { .. }))
    );
    step!(
        "fence over the fence",
        "already fenced",
        storage.put_fence(b).await,
        |r: &Result<Fence>| matches!(r, Ok(Fence::AlreadyFenced))
    );
    Ok(ProbeReport { steps })
}

/// The outcome of [`decide_condition_write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether conditional writes (and so fence objects) are used.
    pub enabled: bool,
    /// A decision to record for the cluster (`<prefix>/conditionwrite`), when one was made now.
    pub store: Option<bool>,
    /// The probe run that decided, if one ran.
    pub report: Option<ProbeReport>,
}

/// Applies `mode` given the cluster's stored decision, probing when needed, and switches
/// `storage` accordingly. A store that fails the probe under `auto` or `enable` is an error
/// naming `woodpecker.logstore.fencePolicy.conditionWrite`.
pub async fn decide_condition_write(
    storage: &ObjectStorage,
    mode: ConditionWriteMode,
    stored: Option<bool>,
) -> Result<Decision> {
    let decision = match (mode, stored) {
        (ConditionWriteMode::Disable, _) => Decision {
            enabled: false,
            store: None,
            report: None,
        },
        (ConditionWriteMode::Auto, Some(enabled)) => Decision {
            enabled,
            store: None,
            report: None,
        },
        (ConditionWriteMode::Auto, None) | (ConditionWriteMode::Enable, _) => {
            storage.set_condition_write(true);
            let mut last = None;
            for attempt in 1..=PROBE_ATTEMPTS {
                let report = probe_condition_write(storage).await?;
                if report.supported() {
                    last = Some(report);
                    break;
                }
                tracing::warn!(attempt, report = %report, "condition-write probe failed");
                last = Some(report);
            }
            let report = last.unwrap_or(ProbeReport { steps: Vec::new() });
            if !report.supported() {
                return Err(Error::config(
                    "woodpecker.logstore.fencePolicy.conditionWrite",
                    format!(
                        "the object store does not honour conditional writes, so fencing cannot be trusted; \
                         use a store that does or set `disable` to fence through the metadata lock instead.\n{report}"
                    ),
                ));
            }
            Decision {
                enabled: true,
                store: (stored != Some(true)).then_some(true),
                report: Some(report),
            }
        }
    };
    storage.set_condition_write(decision.enabled);
    Ok(decision)
}
