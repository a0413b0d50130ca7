//! Fault injection for tests: errors and latency per operation and path prefix.
//!
//! Rules are checked in order; the first rule that matches an operation and whose dice roll
//! fires decides the fault. An injected error is either *before* the operation (the store never
//! saw it: safe to resend anything) or *after* it (the operation was applied but the caller gets
//! an error: the ambiguous case that conditional-write retries must handle). The random source
//! is seeded so a failing test can be replayed.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use clock::{ClockRef, SystemClock};
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The operations a rule can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Any put (plain, conditional create, conditional update, multipart start).
    Put,
    /// A get with a body (whole or ranged).
    Get,
    /// A get with `head: true` (stat).
    Head,
    /// Listing.
    List,
    /// Deletes.
    Delete,
    /// Copies and renames.
    Copy,
}

/// When an injected error happens relative to the real operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTiming {
    /// The error replaces the operation: nothing reached the store.
    Before,
    /// The operation is applied, then the caller gets an error.
    After,
}

/// One fault rule.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// Operations this rule applies to (empty: all).
    pub ops: Vec<Op>,
    /// Path prefix (full path, with the store root) this rule applies to (empty: all).
    pub prefix: String,
    /// Probability in `[0, 1]` that a matching operation fails.
    pub error_rate: f64,
    /// Whether the injected error is transient (retriable) or permanent.
    pub transient: bool,
    /// Whether the error comes before or after the real operation.
    pub timing: FaultTiming,
    /// Extra latency added to every matching operation.
    pub latency: Duration,
    /// How many more errors this rule may inject (`None`: unlimited).
    pub remaining: Option<u64>,
}

impl FaultRule {
    /// A rule failing every matching operation with a transient error before it runs.
    pub fn fail(ops: &[Op]) -> Self {
        FaultRule {
            ops: ops.to_vec(),
            prefix: String::new(),
            error_rate: 1.0,
            transient: true,
            timing: FaultTiming::Before,
            latency: Duration::ZERO,
            remaining: None,
        }
    }

    /// A rule adding latency only.
    pub fn delay(ops: &[Op], latency: Duration) -> Self {
        FaultRule {
            error_rate: 0.0,
            latency,
            ..FaultRule::fail(ops)
        }
    }

    /// Limits the rule to paths under `prefix`.
    pub fn under(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the error probability.
    pub fn rate(mut self, error_rate: f64) -> Self {
        self.error_rate = error_rate;
        self
    }

    /// Makes the error permanent (not retriable).
    pub fn permanent(mut self) -> Self {
        self.transient = false;
        self
    }

    /// Applies the operation before failing it.
    pub fn after_applying(mut self) -> Self {
        self.timing = FaultTiming::After;
        self
    }

    /// Injects at most `n` errors.
    pub fn times(mut self, n: u64) -> Self {
        self.remaining = Some(n);
        self
    }

    fn matches(&self, op: Op, path: &str) -> bool {
        (self.ops.is_empty() || self.ops.contains(&op)) && path.starts_with(&self.prefix)
    }
}

/// The error an injected fault produces (inside `object_store::Error::Generic`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("injected {} fault on {op:?} {path}{}", if *.transient { "transient" } else { "permanent" }, if *.applied { " (after applying it)" } else { "" })]
pub(crate) struct InjectedFault {
    /// The operation.
    pub op: Op,
    /// The full path.
    pub path: String,
    /// Whether a retry may succeed.
    pub transient: bool,
    /// Whether the operation was applied before the error.
    pub applied: bool,
}

/// Counts of what was injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Errors injected before the operation.
    pub before: u64,
    /// Errors injected after applying the operation.
    pub after: u64,
}

#[derive(Debug)]
struct State {
    rules: Vec<FaultRule>,
    rng: StdRng,
    stats: FaultStats,
}

/// An [`ObjectStore`] that injects faults into the store it wraps.
#[derive(Debug, Clone)]
pub struct FaultInjectingStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<Mutex<State>>,
    clock: ClockRef,
}

/// The decision for one operation.
struct Decision {
    latency: Duration,
    fault: Option<(FaultTiming, bool)>,
}

impl FaultInjectingStore {
    /// Wraps `inner` with no rules; `seed` makes the dice reproducible.
    pub fn new(inner: Arc<dyn ObjectStore>, seed: u64) -> Self {
        FaultInjectingStore {
            inner,
            state: Arc::new(Mutex::new(State {
                rules: Vec::new(),
                rng: StdRng::seed_from_u64(seed),
                stats: FaultStats::default(),
            })),
            clock: SystemClock::shared(),
        }
    }

    /// Injected latencies pass on `clock`.
    pub fn with_clock(mut self, clock: ClockRef) -> Self {
        self.clock = clock;
        self
    }

    /// Adds a rule after the existing ones.
    pub fn add_rule(&self, rule: FaultRule) {
        self.lock().rules.push(rule);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// What has been injected so far.
    pub fn stats(&self) -> FaultStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the rules half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn decide(&self, op: Op, path: &str) -> Decision {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut latency = Duration::ZERO;
        let mut fault = None;
        for rule in state.rules.iter_mut() {
            if !rule.matches(op, path) {
                continue;
            }
            latency += rule.latency;
            if fault.is_some() || rule.remaining == Some(0) || rule.error_rate <= 0.0 {
                continue;
            }
            if state.rng.random_bool(rule.error_rate.min(1.0)) {
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                fault = Some((rule.timing, rule.transient));
            }
        }
        match fault {
            Some((FaultTiming::Before, _)) => state.stats.before += 1,
            Some((FaultTiming::After, _)) => state.stats.after += 1,
            None => {}
        }
        Decision { latency, fault }
    }

    fn error(op: Op, path: &str, transient: bool, applied: bool) -> object_store::Error {
        object_store::Error::Generic {
            store: "FaultInjection",
            source: Box::new(InjectedFault {
                op,
                path: path.to_string(),
                transient,
                applied,
            }),
        }
    }

    async fn run<T, Fut>(&self, op: Op, path: &Path, fut: Fut) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        let decision = self.decide(op, path.as_ref());
        if !decision.latency.is_zero() {
            self.clock.sleep(decision.latency).await;
        }
        match decision.fault {
            None => fut.await,
            Some((FaultTiming::Before, transient)) => {
                Err(Self::error(op, path.as_ref(), transient, false))
            }
            Some((FaultTiming::After, transient)) => {
                // The real outcome is discarded: the caller cannot know it.
                let _ = fut.await;
                Err(Self::error(op, path.as_ref(), transient, true))
            }
        }
    }
}

impl fmt::Display for FaultInjectingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultInjecting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultInjectingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.run(
            Op::Put,
            location,
            self.inner.put_opts(location, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.run(
            Op::Put,
            location,
            self.inner.put_multipart_opts(location, opts),
        )
        .await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head { Op::Head } else { Op::Get };
        self.run(op, location, self.inner.get_opts(location, options))
            .await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.run(Op::Get, location, self.inner.get_ranges(location, ranges))
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let this = self.clone();
        locations
            .then(move |location| {
                let this = this.clone();
                async move {
                    let location = location?;
                    let inner = Arc::clone(&this.inner);
                    let target = location.clone();
                    this.run(Op::Delete, &location, async move {
                        let one = futures::stream::iter([Ok(target.clone())]).boxed();
                        let mut results = inner.delete_stream(one);
                        results.next().await.unwrap_or(Ok(target))
                    })
                    .await
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let path = prefix.cloned().unwrap_or_default();
        let decision = self.decide(Op::List, path.as_ref());
        let inner = self.inner.list(prefix);
        let latency = decision.latency;
        let clock = self.clock.clone();
        match decision.fault {
            // A listing is read-only: before and after are the same to the caller.
            Some((_, transient)) => {
                let err = Self::error(Op::List, path.as_ref(), transient, false);
                futures::stream::once(async move {
                    clock.sleep(latency).await;
                    Err(err)
                })
                .boxed()
            }
            None if latency.is_zero() => inner,
            None => futures::stream::once(async move { clock.sleep(latency).await })
                .flat_map(move |_| futures::stream::empty())
                .chain(inner)
                .boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let path = prefix.cloned().unwrap_or_default();
        self.run(Op::List, &path, self.inner.list_with_delimiter(prefix))
            .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.run(Op::Copy, to, self.inner.copy_opts(from, to, options))
            .await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.run(Op::Copy, to, self.inner.rename_opts(from, to, options))
            .await
    }
}
