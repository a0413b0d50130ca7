//! Conditional create for stores that spell it as a "forbid overwrite" header.
//!
//! Alibaba OSS (`x-oss-forbid-overwrite: true`) and Tencent COS (`x-cos-forbid-overwrite: true`)
//! refuse to replace an existing object when the header is present and answer 409
//! `FileAlreadyExists`, which `object_store` reports as `AlreadyExists`. The header must not be
//! sent with the overwriting PUTs of compaction, so two clients are kept: one that always sends
//! it, used for creates only, and a plain one for everything else.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Routes creates to a client that sends the provider's forbid-overwrite header.
#[derive(Debug)]
pub(crate) struct ForbidOverwriteStore {
    plain: Arc<dyn ObjectStore>,
    forbidding: Arc<dyn ObjectStore>,
}

impl ForbidOverwriteStore {
    /// `forbidding` must send the forbid-overwrite header on every request.
    pub(crate) fn new(plain: Arc<dyn ObjectStore>, forbidding: Arc<dyn ObjectStore>) -> Self {
        ForbidOverwriteStore { plain, forbidding }
    }
}

impl fmt::Display for ForbidOverwriteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ForbidOverwrite({})", self.plain)
    }
}

#[async_trait]
impl ObjectStore for ForbidOverwriteStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        match opts.mode {
            PutMode::Create => {
                let opts = PutOptions {
                    mode: PutMode::Overwrite,
                    ..opts
                };
                self.forbidding.put_opts(location, payload, opts).await
            }
            _ => self.plain.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.plain.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.plain.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.plain.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.plain.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.plain.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.plain.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.plain.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.plain.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.plain.rename_opts(from, to, options).await
    }
}
