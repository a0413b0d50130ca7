//! Every configuration in `deployments/config` starts `woodpecker serve` as its comments say,
//! and the errors of a misconfigured store print no credentials.
//!
//! Each file says what it needs in a `# Needs:` comment. A file that needs nothing else is
//! started with etcd and MinIO endpoints that answer nobody (so a file that quietly needs
//! either fails); one that needs etcd and MinIO is started against the test services
//! (`eval "$(scripts/services start)"`: `WOODPECKER_TEST_S3_*`, `WOODPECKER_TEST_ETCD_ENDPOINT`)
//! through `WOODPECKER_CONFIG__*` overrides, with its own bucket and etcd prefix. Without the
//! services those cases fail (they never skip).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_woodpecker");
/// Hang guard for a start or a stop; never a latency assertion.
const HANG_GUARD: Duration = Duration::from_secs(90);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs MinIO and etcd; run \
             `eval \"$(scripts/services start)\"` first (or use scripts/test)"
        )
    })
}

fn configs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deployments/config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no configuration in {}", dir.display());
    files
}

/// What a file's `# Needs:` comment (with its continuation lines) asks for.
#[derive(Debug, PartialEq, Eq)]
struct Needs {
    etcd: bool,
    s3: bool,
}

fn needs(path: &Path) -> Needs {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().skip_while(|l| !l.starts_with("# Needs:"));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("{} has no `# Needs:` comment", path.display()));
    let mut said = first.trim_start_matches("# Needs:").to_string();
    for l in lines.take_while(|l| l.starts_with("# ") && !l.trim_start_matches("# ").is_empty()) {
        said.push(' ');
        said.push_str(l.trim_start_matches("# "));
    }
    let said = said.to_lowercase();
    let needs = Needs {
        etcd: said.contains("etcd"),
        s3: said.contains("minio") || said.contains("s3"),
    };
    if !needs.etcd && !needs.s3 {
        assert!(
            said.contains("nothing"),
            "{}: `# Needs:` names neither etcd, MinIO nor nothing: {said}",
            path.display()
        );
    }
    needs
}

/// `WOODPECKER_TEST_S3_ENDPOINT` as (host, port, ssl).
fn s3_endpoint() -> (String, u16, bool) {
    let s3 = env("WOODPECKER_TEST_S3_ENDPOINT");
    let (ssl, host_port) = match s3.trim_end_matches('/').split_once("://") {
        Some((scheme, rest)) => (scheme == "https", rest.to_string()),
        None => (false, s3.clone()),
    };
    let (host, port) = host_port
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("WOODPECKER_TEST_S3_ENDPOINT={s3} has no port"));
    (host.to_string(), port.parse().unwrap(), ssl)
}

/// The overrides that point a configuration at the test services, in a bucket and an etcd
/// prefix of its own.
fn service_overrides(needs: &Needs, id: &str) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    let mut set = |k: &str, v: String| vars.push((format!("WOODPECKER_CONFIG__{k}"), v));
    if needs.etcd {
        set("ETCD__ENDPOINTS", env("WOODPECKER_TEST_ETCD_ENDPOINT"));
        set("ETCD__ROOTPATH", format!("wp-deploy-{id}"));
        set("WOODPECKER__META__PREFIX", format!("wp-deploy-{id}"));
        set("WOODPECKER__META__PREFIXMODE", "configured".into());
    } else {
        // Nobody answers there: a file that needs nothing must not try it.
        set("ETCD__ENDPOINTS", "127.0.0.1:1".into());
    }
    if needs.s3 {
        let (host, port, ssl) = s3_endpoint();
        set("MINIO__ADDRESS", host);
        set("MINIO__PORT", port.to_string());
        set("MINIO__USESSL", ssl.to_string());
        set(
            "MINIO__ACCESSKEYID",
            env("WOODPECKER_TEST_S3_ACCESS_KEY_ID"),
        );
        set(
            "MINIO__SECRETACCESSKEY",
            env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY"),
        );
        set("MINIO__REGION", env("WOODPECKER_TEST_S3_REGION"));
        set("MINIO__BUCKETNAME", format!("wp-deploy-{id}"));
    } else {
        set("MINIO__ADDRESS", "127.0.0.1".into());
        set("MINIO__PORT", "1".into());
    }
    vars
}

/// Reads the child's stdout until `kafka listening on ADDR`; the lines read and the address.
fn wait_listening(child: &mut Child) -> Result<String, String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(addr) = line.strip_prefix("kafka listening on ") {
                let _ = tx.send(Ok(addr.trim().to_string()));
                // Keep draining so that the server never blocks on a full pipe.
                continue;
            }
        }
        let _ = tx.send(Err(seen));
    });
    rx.recv_timeout(HANG_GUARD)
        .unwrap_or_else(|_| Err("no `kafka listening on` line in time".into()))
}

/// An ApiVersions v0 request; the response must carry its correlation id and no error.
fn kafka_answers(addr: &str) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(HANG_GUARD)).unwrap();
    let client = b"deploy-test";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // v0
    body.extend_from_slice(&4242i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    s.write_all(&frame).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    assert_eq!(i32::from_be_bytes(resp[0..4].try_into().unwrap()), 4242);
    assert_eq!(i16::from_be_bytes(resp[4..6].try_into().unwrap()), 0);
}

fn stop(mut child: Child) -> Output {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (tx, rx) = mpsc::channel();
    let mut stderr = child.stderr.take().unwrap();
    thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        let _ = tx.send(text);
    });
    let stderr = rx
        .recv_timeout(HANG_GUARD)
        .expect("the server did not stop");
    Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr,
    }
}

#[test]
fn every_deployment_config_starts_as_its_comments_say() {
    for path in configs() {
        let needs = needs(&path);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let work = tempfile::tempdir().unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .args([
                "--kafka-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
                "--milvus-addr",
                "127.0.0.1:0",
            ])
            .envs(service_overrides(&needs, &id))
            .env_remove("RUST_LOG")
            .current_dir(work.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let addr = match wait_listening(&mut child) {
            Ok(addr) => addr,
            Err(seen) => {
                let out = stop(child);
                panic!(
                    "{} ({needs:?}) did not start: stdout {seen}\nstderr {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        kafka_answers(&addr);
        let out = stop(child);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{}: exit {:?}\n{stderr}",
            path.display(),
            out.status
        );
        if !needs.etcd {
            // The embedded store, under the file's relative rootPath in the working directory.
            assert!(
                work.path().join("data/meta").is_dir(),
                "{}: no embedded metadata under ./data",
                path.display()
            );
        }
    }
}

/// `woodpecker log list --config <minio file>` with these overrides.
fn list_with(overrides: &[(&str, String)]) -> Output {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deployments/config/woodpecker.minio.yaml");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut cmd = Command::new(BIN);
    cmd.args(["log", "list", "--config"])
        .arg(path)
        .env(
            "WOODPECKER_CONFIG__ETCD__ENDPOINTS",
            env("WOODPECKER_TEST_ETCD_ENDPOINT"),
        )
        .env(
            "WOODPECKER_CONFIG__ETCD__ROOTPATH",
            format!("wp-secret-{id}"),
        )
        .env(
            "WOODPECKER_CONFIG__WOODPECKER__META__PREFIX",
            format!("wp-secret-{id}"),
        )
        // Keys under this run's own root, whatever other tests left under `woodpecker/` on
        // the shared etcd (a recorded condition-write decision would skip the bucket check).
        .env(
            "WOODPECKER_CONFIG__WOODPECKER__META__PREFIXMODE",
            "configured",
        )
        .env("WOODPECKER_CONFIG__MINIO__REQUESTTIMEOUTMS", "3000")
        .env_remove("RUST_LOG");
    for (k, v) in overrides {
        cmd.env(format!("WOODPECKER_CONFIG__{k}"), v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{overrides:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An access key id and a secret no message has any other reason to contain.
const KEY_ID: &str = "AKIDSENTINEL7Q2X";
const SECRET: &str = "secretSENTINEL9f3kZ";

#[track_caller]
fn clean(out: &Output, secrets: &[&str]) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for s in secrets {
        assert!(!text.contains(s), "`{s}` printed: {text}");
    }
    for s in ["X-Amz-Credential", "X-Amz-Signature", "Signature="] {
        assert!(!text.contains(s), "`{s}` printed: {text}");
    }
    text
}

#[test]
fn an_unreachable_store_is_named_without_credentials() {
    for create in ["true", "false"] {
        let out = list_with(&[
            ("MINIO__ADDRESS", "127.0.0.1".into()),
            ("MINIO__PORT", "1".into()),
            ("MINIO__ACCESSKEYID", KEY_ID.into()),
            ("MINIO__SECRETACCESSKEY", SECRET.into()),
            ("MINIO__CREATEBUCKET", create.into()),
        ]);
        let text = clean(&out, &[KEY_ID, SECRET]);
        assert!(
            text.contains("127.0.0.1:1"),
            "createBucket {create}: {text}"
        );
    }
}

#[test]
fn refused_credentials_are_named_without_them() {
    let (host, port, ssl) = s3_endpoint();
    for create in ["true", "false"] {
        let out = list_with(&[
            ("MINIO__ADDRESS", host.clone()),
            ("MINIO__PORT", port.to_string()),
            ("MINIO__USESSL", ssl.to_string()),
            ("MINIO__ACCESSKEYID", KEY_ID.into()),
            ("MINIO__SECRETACCESSKEY", SECRET.into()),
            ("MINIO__CREATEBUCKET", create.into()),
        ]);
        let text = clean(&out, &[KEY_ID, SECRET]);
        assert!(
            text.contains("minio.accessKeyID"),
            "createBucket {create}: {text}"
        );
    }
}

#[test]
fn a_missing_bucket_is_named_with_its_endpoint() {
    let (host, port, ssl) = s3_endpoint();
    let bucket = format!(
        "wp-missing-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let secret = env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY");
    let out = list_with(&[
        ("MINIO__ADDRESS", host.clone()),
        ("MINIO__PORT", port.to_string()),
        ("MINIO__USESSL", ssl.to_string()),
        (
            "MINIO__ACCESSKEYID",
            env("WOODPECKER_TEST_S3_ACCESS_KEY_ID"),
        ),
        ("MINIO__SECRETACCESSKEY", secret.clone()),
        ("MINIO__REGION", env("WOODPECKER_TEST_S3_REGION")),
        ("MINIO__BUCKETNAME", bucket.clone()),
        ("MINIO__CREATEBUCKET", "false".into()),
    ]);
    let text = clean(&out, &[&secret]);
    assert!(text.contains("minio.bucketName"), "{text}");
    assert!(
        text.contains(&format!("bucket `{bucket}` does not exist at")),
        "{text}"
    );
    assert!(text.contains(&format!("{host}:{port}")), "{text}");
    assert!(!text.contains("on :"), "{text}");
}

#[test]
fn an_etcd_password_is_never_printed() {
    let out = list_with(&[
        ("ETCD__ENDPOINTS", "127.0.0.1:1".into()),
        ("ETCD__AUTH__ENABLED", "true".into()),
        ("ETCD__AUTH__USERNAME", "root".into()),
        ("ETCD__AUTH__PASSWORD", SECRET.into()),
        ("MINIO__SECRETACCESSKEY", SECRET.into()),
    ]);
    let text = clean(&out, &[SECRET]);
    assert!(text.contains("127.0.0.1:1"), "{text}");
}
