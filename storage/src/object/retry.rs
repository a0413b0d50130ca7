//! A retrying decorator that is careful with conditional writes.
//!
//! Reads, lists, deletes and plain PUTs are idempotent: they are retried with exponential
//! backoff and jitter while the error is transient ([`super::is_transient`]).
//!
//! A conditional create (`PutMode::Create`) is not idempotent. If an attempt fails in a way that
//! leaves it unknown whether the object landed, the next attempt may find the key taken by our
//! own earlier attempt. Then, and only then, the decorator reads the object back: the very bytes
//! we sent (and the same user metadata) mean our write landed and the create succeeded; anything
//! else is reported as `AlreadyExists`, exactly as the store said. A conditional update
//! (`PutMode::Update`) is retried only when the failed attempt provably never reached the server.
//!
//! Backoff sleeps go through the store's [`Clock`](clock::Clock) ([`SystemClock`] unless
//! [`RetryingStore::with_clock`] says otherwise), so tests and simulations control them.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use clock::{ClockRef, SystemClock};
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    Attributes, CopyMode, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions, Result,
};
use rand::Rng;

use super::{is_not_sent, is_transient};

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts after the first one.
    pub max_retries: u32,
    /// Delay before the first retry.
    pub initial_backoff: Duration,
    /// Upper bound of one delay.
    pub max_backoff: Duration,
    /// Growth factor of the delay.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    /// Five retries from 100 ms up to 1 s: the Go project's flush retry settings
    /// (`maxFlushRetries` 5, `retryInterval` 1000 ms).
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0-based), with full jitter in its upper half.
    pub fn backoff(&self, retry: u32) -> Duration {
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.powi(retry as i32);
        let capped = base.min(self.max_backoff.as_secs_f64());
        let jittered = capped * rand::rng().random_range(0.5..=1.0);
        Duration::from_secs_f64(jittered)
    }
}

/// An [`ObjectStore`] that retries transient failures of the store it wraps.
#[derive(Debug)]
pub struct RetryingStore {
    inner: Arc<dyn ObjectStore>,
    policy: RetryPolicy,
    clock: ClockRef,
}

impl RetryingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>, policy: RetryPolicy) -> Self {
        RetryingStore {
            inner,
            policy,
            clock: SystemClock::shared(),
        }
    }

    /// Sleeps between attempts on `clock`.
    pub fn with_clock(mut self, clock: ClockRef) -> Self {
        self.clock = clock;
        self
    }

    async fn with_retries<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut retry = 0;
        loop {
            match op().await {
                Err(e) if is_transient(&e) && retry < self.policy.max_retries => {
                    tracing::debug!(error = %e, retry, "retrying transient object store error");
                    self.clock.sleep(self.policy.backoff(retry)).await;
                    retry += 1;
                }
                other => return other,
            }
        }
    }

    async fn create_with_retries(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let mut retry = 0;
        // Whether an earlier attempt may have landed without our knowing.
        let mut ambiguous = false;
        loop {
            match self
                .inner
                .put_opts(location, payload.clone(), opts.clone())
                .await
            {
                Ok(r) => return Ok(r),
                Err(e @ object_store::Error::AlreadyExists { .. }) if ambiguous => {
                    return match self.landed_copy(location, &payload, &opts.attributes).await {
                        Some(result) => Ok(result),
                        None => Err(e),
                    };
                }
                Err(e) if is_transient(&e) && retry < self.policy.max_retries => {
                    ambiguous |= !is_not_sent(&e);
                    tracing::debug!(error = %e, retry, %location, "retrying conditional create");
                    self.clock.sleep(self.policy.backoff(retry)).await;
                    retry += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads `location` back and returns a put result if it holds exactly what we sent.
    async fn landed_copy(
        &self,
        location: &Path,
        payload: &PutPayload,
        attributes: &Attributes,
    ) -> Option<PutResult> {
        let got = self
            .with_retries(|| self.inner.get_opts(location, GetOptions::default()))
            .await
            .ok()?;
        let e_tag = got.meta.e_tag.clone();
        let version = got.meta.version.clone();
        let stored_attributes = got.attributes.clone();
        let body = got.bytes().await.ok()?;
        let sent: Bytes = payload.clone().into();
        let same_metadata = attributes.iter().all(|(k, v)| match k {
            object_store::Attribute::Metadata(name) => stored_attributes.iter().any(|(sk, sv)| {
                matches!(sk, object_store::Attribute::Metadata(n) if n.eq_ignore_ascii_case(name))
                    && sv == v
            }),
            _ => true,
        });
        (body == sent && same_metadata).then_some(PutResult {
            e_tag,
            version,
            extensions: Default::default(),
        })
    }
}

impl fmt::Display for RetryingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Retrying({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for RetryingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        match &opts.mode {
            PutMode::Overwrite => {
                self.with_retries(|| self.inner.put_opts(location, payload.clone(), opts.clone()))
                    .await
            }
            PutMode::Create => self.create_with_retries(location, payload, opts).await,
            PutMode::Update(_) => {
                let mut retry = 0;
                loop {
                    match self
                        .inner
                        .put_opts(location, payload.clone(), opts.clone())
                        .await
                    {
                        Err(e) if is_not_sent(&e) && retry < self.policy.max_retries => {
                            self.clock.sleep(self.policy.backoff(retry)).await;
                            retry += 1;
                        }
                        other => return other,
                    }
                }
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.with_retries(|| self.inner.put_multipart_opts(location, opts.clone()))
            .await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.with_retries(|| self.inner.get_opts(location, options.clone()))
            .await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.with_retries(|| self.inner.get_ranges(location, ranges))
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        use futures::StreamExt;
        let inner = Arc::clone(&self.inner);
        let policy = self.policy;
        locations
            .then(move |location| {
                let inner = Arc::clone(&inner);
                async move {
                    let location = location?;
                    let retrying = RetryingStore::new(inner, policy);
                    retrying
                        .with_retries(|| async {
                            let one = futures::stream::iter([Ok(location.clone())]).boxed();
                            let mut results = retrying.inner.delete_stream(one);
                            match results.next().await {
                                Some(r) => r,
                                None => Ok(location.clone()),
                            }
                        })
                        .await
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        // A listing stream cannot be resumed safely from the middle; callers retry whole lists.
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.with_retries(|| self.inner.list_with_delimiter(prefix))
            .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        match options.mode {
            CopyMode::Overwrite => {
                self.with_retries(|| self.inner.copy_opts(from, to, options.clone()))
                    .await
            }
            _ => self.inner.copy_opts(from, to, options).await,
        }
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
