//! The storage sections of the Go project's `woodpecker.yaml` schema.
//!
//! This crate owns the types of the keys it acts on: the `minio:` section, `woodpecker.storage`
//! and `woodpecker.logstore.fencePolicy`. The schema of the whole file is defined once, in
//! `wal::config::Config`, which composes these types with the engine's sections and parses
//! the file; there is no second document model here. Field names follow the Go YAML exactly
//! (`accessKeyID`, `useSSL`, `useIAM`, ...), defaults follow the Go reference file, and
//! [`validate`] names the YAML key to fix when a value is wrong.

use serde::Deserialize;

use crate::error::{Error, Result};

/// Where segment data lives (`woodpecker.storage.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum StorageType {
    /// Embedded object storage (`minio`, `default` or empty in the Go schema).
    #[default]
    #[serde(alias = "minio", alias = "default", alias = "")]
    Minio,
    /// Embedded local files (`local`): one `data.log` per segment.
    #[serde(alias = "local")]
    Local,
    /// A LogStore cluster (`service`).
    #[serde(alias = "service")]
    Service,
}

impl StorageType {
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageType::Minio => "minio",
            StorageType::Local => "local",
            StorageType::Service => "service",
        }
    }
}

/// `woodpecker.storage`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StorageSection {
    /// `type`: `minio` (also `default`), `local` or `service`.
    #[serde(rename = "type")]
    pub kind: StorageType,
    /// `rootPath`: local directory for `local` mode and for staged data.
    pub root_path: String,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            kind: StorageType::Minio,
            root_path: "/var/lib/woodpecker".to_string(),
        }
    }
}

/// `woodpecker.logstore.fencePolicy.conditionWrite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConditionWriteMode {
    /// Follow a stored cluster decision, else probe the store and require support.
    #[default]
    Auto,
    /// Probe and require support, ignoring a stored "false".
    Enable,
    /// Never use conditional writes: plain PUTs, and a lock in metadata for single-writer.
    Disable,
}

/// `woodpecker.logstore.fencePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FencePolicy {
    /// `conditionWrite`: `auto`, `enable` or `disable`.
    pub condition_write: ConditionWriteMode,
}

/// Object store provider (`minio.cloudProvider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudProvider {
    /// AWS S3 and every store speaking S3 with signature v4 (MinIO, Ceph, ...).
    #[default]
    Aws,
    /// MinIO (same as `aws`).
    Minio,
    /// Google Cloud Storage through its S3-interoperable endpoint with HMAC keys.
    Gcp,
    /// Google Cloud Storage through its native API with service-account credentials.
    Gcpnative,
    /// Alibaba Cloud OSS (virtual-host style, `x-oss-forbid-overwrite`).
    Aliyun,
    /// Tencent COS (virtual-host style, `x-cos-forbid-overwrite`).
    Tencent,
    /// Azure Blob Storage (`accessKeyID` is the account, `secretAccessKey` the key).
    Azure,
    /// woodpecker-rs extension: the object layout in a local directory named by `address`.
    Local,
    /// woodpecker-rs extension: the object layout in process memory (tests, throwaway runs).
    Memory,
}

impl CloudProvider {
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CloudProvider::Aws => "aws",
            CloudProvider::Minio => "minio",
            CloudProvider::Gcp => "gcp",
            CloudProvider::Gcpnative => "gcpnative",
            CloudProvider::Aliyun => "aliyun",
            CloudProvider::Tencent => "tencent",
            CloudProvider::Azure => "azure",
            CloudProvider::Local => "local",
            CloudProvider::Memory => "memory",
        }
    }
}

/// `minio.ssl`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct MinioSsl {
    /// `tlsCACert`: PEM file of an extra CA to trust.
    #[serde(rename = "tlsCACert")]
    pub tls_ca_cert: String,
}

/// The `minio:` section: the object store of embedded and service mode.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MinioConfig {
    /// `address`: host name or IP of the S3 endpoint (may carry a scheme for Azure emulators).
    pub address: String,
    /// `port`.
    pub port: u16,
    /// `accessKeyID`.
    #[serde(rename = "accessKeyID")]
    pub access_key_id: String,
    /// `secretAccessKey`.
    #[serde(rename = "secretAccessKey")]
    pub secret_access_key: String,
    /// `useSSL`.
    #[serde(rename = "useSSL")]
    pub use_ssl: bool,
    /// `ssl`.
    pub ssl: MinioSsl,
    /// `bucketName`.
    #[serde(rename = "bucketName")]
    pub bucket_name: String,
    /// `createBucket`: create the bucket at start-up when missing.
    #[serde(rename = "createBucket")]
    pub create_bucket: bool,
    /// `rootPath`: key prefix of everything this instance writes.
    #[serde(rename = "rootPath")]
    pub root_path: String,
    /// `useIAM`: take credentials from the environment (instance role, workload identity).
    #[serde(rename = "useIAM")]
    pub use_iam: bool,
    /// `cloudProvider`.
    #[serde(rename = "cloudProvider")]
    pub cloud_provider: CloudProvider,
    /// `gcpCredentialJSON`: service-account JSON for `gcpnative`.
    #[serde(rename = "gcpCredentialJSON")]
    pub gcp_credential_json: String,
    /// `iamEndpoint`: custom credentials endpoint for `useIAM` on AWS.
    #[serde(rename = "iamEndpoint")]
    pub iam_endpoint: String,
    /// `region`.
    pub region: String,
    /// `useVirtualHost`: `bucket.host` addressing instead of `host/bucket`.
    #[serde(rename = "useVirtualHost")]
    pub use_virtual_host: bool,
    /// `requestTimeoutMs`: timeout of one request.
    #[serde(rename = "requestTimeoutMs")]
    pub request_timeout_ms: u64,
    /// `listObjectsMaxKeys` (accepted for compatibility; listing pages are the server's).
    #[serde(rename = "listObjectsMaxKeys")]
    pub list_objects_max_keys: u32,
    /// `logLevel` (accepted for compatibility; logging goes through `tracing`).
    #[serde(rename = "logLevel")]
    pub log_level: String,
}

impl Default for MinioConfig {
    fn default() -> Self {
        MinioConfig {
            address: "localhost".into(),
            port: 9000,
            access_key_id: "minioadmin".into(),
            secret_access_key: "minioadmin".into(),
            use_ssl: false,
            ssl: MinioSsl::default(),
            bucket_name: "a-bucket".into(),
            create_bucket: true,
            root_path: "files".into(),
            use_iam: false,
            cloud_provider: CloudProvider::Aws,
            gcp_credential_json: String::new(),
            iam_endpoint: String::new(),
            region: String::new(),
            use_virtual_host: false,
            request_timeout_ms: 10_000,
            list_objects_max_keys: 0,
            log_level: "fatal".into(),
        }
    }
}

impl std::fmt::Debug for MinioConfig {
    // Secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MinioConfig")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("use_ssl", &self.use_ssl)
            .field("bucket_name", &self.bucket_name)
            .field("create_bucket", &self.create_bucket)
            .field("root_path", &self.root_path)
            .field("use_iam", &self.use_iam)
            .field("cloud_provider", &self.cloud_provider)
            .field("region", &self.region)
            .field("use_virtual_host", &self.use_virtual_host)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish_non_exhaustive()
    }
}

impl MinioConfig {
    /// The endpoint URL built from `useSSL`, `address` and `port`. An `address` that already
    /// carries a scheme is taken as it is (with the port appended when it has none).
    pub fn endpoint_url(&self) -> String {
        let address = self.address.trim().trim_end_matches('/');
        if address.starts_with("http://") || address.starts_with("https://") {
            let after_scheme = address.split_once("://").map(|(_, r)| r).unwrap_or("");
            if after_scheme.contains(':') || self.port == 0 {
                address.to_string()
            } else {
                format!("{address}:{}", self.port)
            }
        } else {
            let scheme = if self.use_ssl { "https" } else { "http" };
            format!("{scheme}://{address}:{}", self.port)
        }
    }

    /// The region to sign with: the configured one, else `us-east-1`.
    pub fn effective_region(&self) -> &str {
        if self.region.trim().is_empty() {
            "us-east-1"
        } else {
            self.region.trim()
        }
    }

    /// Checks every value this crate will use and names the key of the first wrong one.
    pub fn validate(&self) -> Result<()> {
        let p = self.cloud_provider;
        match p {
            CloudProvider::Memory => {
                return validate_root_path("minio.rootPath", &self.root_path);
            }
            CloudProvider::Local => {
                if self.address.trim().is_empty() {
                    return Err(Error::config(
                        "minio.address",
                        "empty; with cloudProvider `local` it names the directory to store objects in",
                    ));
                }
                return validate_root_path("minio.rootPath", &self.root_path);
            }
            _ => {}
        }
        if p != CloudProvider::Gcpnative && self.address.trim().is_empty() {
            return Err(Error::config(
                "minio.address",
                "empty; set the host name or IP of the object store",
            ));
        }
        if p != CloudProvider::Gcpnative && self.port == 0 && !self.address.contains("://") {
            return Err(Error::config("minio.port", "must be between 1 and 65535"));
        }
        validate_bucket_name(&self.bucket_name, p)?;
        validate_root_path("minio.rootPath", &self.root_path)?;
        if self.request_timeout_ms == 0 {
            return Err(Error::config(
                "minio.requestTimeoutMs",
                "must be greater than 0",
            ));
        }
        if !self.use_iam {
            let has_id = !self.access_key_id.is_empty();
            let has_secret = !self.secret_access_key.is_empty();
            match p {
                CloudProvider::Gcpnative => {
                    // Credentials come from gcpCredentialJSON or the environment.
                }
                _ if has_id != has_secret => {
                    let missing = if has_id {
                        "minio.secretAccessKey"
                    } else {
                        "minio.accessKeyID"
                    };
                    return Err(Error::config(
                        missing,
                        "empty while the other key of the pair is set; set both, or set minio.useIAM: true",
                    ));
                }
                CloudProvider::Azure if !has_id => {
                    return Err(Error::config(
                        "minio.accessKeyID",
                        "Azure needs the storage account name here (and its key in minio.secretAccessKey), or minio.useIAM: true",
                    ));
                }
                _ => {}
            }
        }
        if !self.ssl.tls_ca_cert.is_empty() && self.use_ssl {
            let path = std::path::Path::new(&self.ssl.tls_ca_cert);
            if !path.is_file() {
                return Err(Error::config(
                    "minio.ssl.tlsCACert",
                    format!("no such file: {}", self.ssl.tls_ca_cert),
                ));
            }
        }
        Ok(())
    }
}

/// Checks an S3/GCS bucket or Azure container name.
fn validate_bucket_name(name: &str, provider: CloudProvider) -> Result<()> {
    const KEY: &str = "minio.bucketName";
    if name.is_empty() {
        return Err(Error::config(KEY, "empty; set the bucket name"));
    }
    if name.len() < 3 || name.len() > 63 {
        return Err(Error::config(
            KEY,
            format!("`{name}` must be 3 to 63 characters long"),
        ));
    }
    let allowed = |c: char| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || c == '-'
            || (c == '.' && provider != CloudProvider::Azure)
            || (c == '_' && matches!(provider, CloudProvider::Gcp | CloudProvider::Gcpnative))
    };
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return Err(Error::config(
            KEY,
            format!("`{name}` contains `{bad}`; use lowercase letters, digits, `-` and `.`"),
        ));
    }
    let first = name.chars().next().unwrap_or('-');
    let last = name.chars().last().unwrap_or('-');
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err(Error::config(
            KEY,
            format!("`{name}` must start and end with a letter or digit"),
        ));
    }
    Ok(())
}

/// Checks an object key prefix: no empty, `.` or `..` segments once outer slashes are trimmed.
pub(crate) fn validate_root_path(key: &str, root: &str) -> Result<()> {
    let trimmed = root.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(());
    }
    for part in trimmed.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(Error::config(
                key,
                format!("`{root}` has an empty, `.` or `..` path segment"),
            ));
        }
        if part.chars().any(|c| c.is_control() || c == '\\') {
            return Err(Error::config(
                key,
                format!("`{root}` contains a control character or backslash"),
            ));
        }
    }
    Ok(())
}

/// Validates the storage settings of `woodpecker.yaml` (`woodpecker.storage` and `minio`)
/// for the configured storage type. The schema of the whole file, which parses them, is
/// `wal::config::Config`; errors name the key as it is spelled there.
pub fn validate(storage: &StorageSection, minio: &MinioConfig) -> Result<()> {
    match storage.kind {
        StorageType::Minio | StorageType::Service => minio.validate()?,
        StorageType::Local => {
            if storage.root_path.trim().is_empty() {
                return Err(Error::config(
                    "woodpecker.storage.rootPath",
                    "empty; set the directory that holds local segment files",
                ));
            }
            validate_root_path("minio.rootPath", &minio.root_path)?;
        }
    }
    Ok(())
}

/// Turns a YAML error into a config error that names the offending key.
pub fn yaml_error(e: serde_yaml_ng::Error) -> Error {
    let msg = e.to_string();
    // serde_yaml_ng prefixes errors inside a mapping with the dotted key path: "minio.port: ...".
    let (setting, message) = match msg.split_once(": ") {
        Some((path, rest))
            if !path.contains(' ')
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._[]".contains(c)) =>
        {
            (path.to_string(), rest.to_string())
        }
        _ => ("<document>".to_string(), msg.clone()),
    };
    Error::config(setting, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting_of(storage: &StorageSection, minio: &MinioConfig) -> String {
        match validate(storage, minio) {
            Err(Error::Config { setting, .. }) => setting,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn the_defaults_are_valid_and_match_the_go_reference_file() {
        let (storage, minio) = (StorageSection::default(), MinioConfig::default());
        validate(&storage, &minio).unwrap();
        assert_eq!(storage.kind, StorageType::Minio);
        assert_eq!(storage.root_path, "/var/lib/woodpecker");
        assert_eq!(minio.bucket_name, "a-bucket");
        assert_eq!(minio.root_path, "files");
        assert_eq!(minio.request_timeout_ms, 10_000);
        assert_eq!(minio.endpoint_url(), "http://localhost:9000");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let storage = StorageSection::default();
        let minio = |f: fn(&mut MinioConfig)| {
            let mut m = MinioConfig::default();
            f(&mut m);
            m
        };
        assert_eq!(setting_of(&storage, &minio(|m| m.port = 0)), "minio.port");
        assert_eq!(
            setting_of(&storage, &minio(|m| m.bucket_name = String::new())),
            "minio.bucketName"
        );
        assert_eq!(
            setting_of(&storage, &minio(|m| m.bucket_name = "My_Bucket".into())),
            "minio.bucketName"
        );
        assert_eq!(
            setting_of(&storage, &minio(|m| m.root_path = "a//b".into())),
            "minio.rootPath"
        );
        assert_eq!(
            setting_of(&storage, &minio(|m| m.root_path = "a/../b".into())),
            "minio.rootPath"
        );
        assert_eq!(
            setting_of(&storage, &minio(|m| m.request_timeout_ms = 0)),
            "minio.requestTimeoutMs"
        );
        let local_without_root = StorageSection {
            kind: StorageType::Local,
            root_path: String::new(),
        };
        assert_eq!(
            setting_of(&local_without_root, &MinioConfig::default()),
            "woodpecker.storage.rootPath"
        );
    }

    #[test]
    fn local_storage_does_not_need_minio_credentials() {
        let local = StorageSection {
            kind: StorageType::Local,
            root_path: "./data".into(),
        };
        validate(&local, &minio_without_bucket()).unwrap();
        assert!(validate(&StorageSection::default(), &minio_without_bucket()).is_err());
    }

    fn minio_without_bucket() -> MinioConfig {
        MinioConfig {
            bucket_name: String::new(),
            ..MinioConfig::default()
        }
    }
}
