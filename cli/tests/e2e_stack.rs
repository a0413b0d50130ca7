//! The `woodpecker` binary on the MinIO + etcd stack: segments in MinIO, metadata in etcd,
//! several processes on one log at a time.
//!
//! Needs the services `scripts/services start` runs (`eval "$(scripts/services start)"`):
//! `WOODPECKER_TEST_S3_{ENDPOINT,ACCESS_KEY_ID,SECRET_ACCESS_KEY,REGION}` and
//! `WOODPECKER_TEST_ETCD_ENDPOINT`. Without them every case fails (it never skips). Each case
//! works in its own bucket and its own etcd root path.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_woodpecker");
/// Hang guard for one process or one expected line; never a latency assertion.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs MinIO and etcd; run \
             `eval \"$(scripts/services start)\"` first (or use scripts/test)"
        )
    })
}

/// A woodpecker.yaml for MinIO + etcd in a fresh bucket and a fresh etcd root path (used as
/// the key root: `prefixMode: configured`).
struct Stack {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Stack {
    fn new() -> Stack {
        let s3 = env("WOODPECKER_TEST_S3_ENDPOINT");
        let key = env("WOODPECKER_TEST_S3_ACCESS_KEY_ID");
        let secret = env("WOODPECKER_TEST_S3_SECRET_ACCESS_KEY");
        let region = env("WOODPECKER_TEST_S3_REGION");
        let etcd = env("WOODPECKER_TEST_ETCD_ENDPOINT");

        // `http://host:port` (or without a scheme) as minio.address/port/useSSL.
        let (ssl, host_port) = match s3.trim_end_matches('/').split_once("://") {
            Some((scheme, rest)) => (scheme == "https", rest.to_string()),
            None => (false, s3.clone()),
        };
        let (host, port) = host_port
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("WOODPECKER_TEST_S3_ENDPOINT={s3} has no port"));
        let port: u16 = port
            .parse()
            .unwrap_or_else(|_| panic!("WOODPECKER_TEST_S3_ENDPOINT={s3}: bad port"));

        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("woodpecker.yaml");
        let yaml = format!(
            "woodpecker:
  meta:
    type: etcd
    prefixMode: configured   # keys under the fresh etcd.rootPath, apart from other tests
  storage:
    type: minio
    rootPath: {data}
etcd:
  endpoints: [\"{etcd}\"]
  rootPath: wp-e2e-{id}
minio:
  address: \"{host}\"
  port: {port}
  useSSL: {ssl}
  accessKeyID: \"{key}\"
  secretAccessKey: \"{secret}\"
  region: \"{region}\"
  bucketName: wp-e2e-{id}
  createBucket: true
  rootPath: files
",
            data = dir.path().join("data").display(),
        );
        std::fs::write(&config, yaml).unwrap();
        Stack { dir, config }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_input(args, b"")
    }

    fn run_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn woodpecker");
        child.stdin.take().unwrap().write_all(input).unwrap();
        wait_output(child, args)
    }
}

/// `wait_with_output` with a hang guard: a child still running when it expires is killed
/// and the test fails.
fn wait_output(child: Child, what: &[&str]) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let guard = thread::spawn(move || {
        if rx.recv_timeout(HANG_GUARD).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            return true;
        }
        false
    });
    let out = child.wait_with_output().expect("wait for woodpecker");
    let _ = tx.send(());
    let hung = guard.join().unwrap();
    assert!(
        !hung,
        "woodpecker {what:?} did not finish within {HANG_GUARD:?} (killed)\nstdout: {}\nstderr: {}",
        lossy(&out.stdout),
        lossy(&out.stderr)
    );
    out
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        lossy(&o.stdout),
        lossy(&o.stderr)
    );
    lossy(&o.stdout)
}

/// The lines a child prints on stdout, through a channel (read with a hang guard).
fn line_channel(out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[track_caller]
fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(HANG_GUARD)
        .unwrap_or_else(|e| panic!("{what}: no line within {HANG_GUARD:?} ({e})"))
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> String {
    range.map(|i| format!("{prefix}-{i}\n")).collect()
}

/// The segment rows of `log inspect`: (segment, state, entries, check).
fn inspect_rows(text: &str) -> Vec<(String, String, String, String)> {
    text.lines()
        .skip(2)
        .take_while(|l| !l.contains("segment(s)"))
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            assert!(c.len() >= 6, "unexpected inspect row {l:?} in\n{text}");
            (
                c[0].to_string(),
                c[1].to_string(),
                c[2].to_string(),
                c[5..].join(" "),
            )
        })
        .collect()
}

#[test]
fn a_log_lives_its_whole_life_on_minio_and_etcd() {
    let stack = Stack::new();
    ok(stack.run(&["log", "create", "life"]));
    assert_eq!(ok(stack.run(&["log", "list"])), "life\n");

    let input = numbered("entry", 0..50);
    let out = ok(stack.run_with_input(&["log", "write", "life"], input.as_bytes()));
    let ids: String = (0..50).map(|i| format!("0:{i}\n")).collect();
    assert_eq!(out, ids);

    assert_eq!(ok(stack.run(&["log", "tail", "life"])), input);
    assert_eq!(
        ok(stack.run(&["log", "tail", "life", "--from", "0:45"])),
        numbered("entry", 45..50)
    );

    ok(stack.run(&["log", "truncate", "life", "0:19"]));
    assert_eq!(
        ok(stack.run(&["log", "tail", "life"])),
        numbered("entry", 20..50)
    );

    let text = ok(stack.run(&["log", "inspect", "life"]));
    assert!(text.contains("truncated at 0:19"), "{text}");
    assert!(text.contains("1 segment(s), 0 damaged"), "{text}");
    let rows = inspect_rows(&text);
    assert_eq!(rows.len(), 1, "{text}");
    let (seg, state, entries, check) = &rows[0];
    assert_eq!(seg, "0", "{text}");
    assert_eq!(state, "Completed", "{text}");
    assert_eq!(entries, "0..49", "{text}");
    assert!(check.starts_with("ok"), "{text}");

    ok(stack.run(&["log", "delete", "life"]));
    assert_eq!(ok(stack.run(&["log", "list"])), "");
    let out = stack.run(&["log", "tail", "life"]);
    assert_eq!(out.status.code(), Some(1), "{}", lossy(&out.stderr));
    assert!(
        lossy(&out.stderr).contains("life"),
        "{}",
        lossy(&out.stderr)
    );
}

#[test]
fn a_follower_in_another_process_sees_a_new_entry() {
    let stack = Stack::new();
    ok(stack.run(&["log", "create", "f"]));
    ok(stack.run_with_input(&["log", "write", "f"], numbered("old", 0..5).as_bytes()));

    let mut follower = stack
        .command(&["log", "tail", "f", "--follow", "--from", "earliest"])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the follower");
    let lines = line_channel(follower.stdout.take().unwrap());
    // Once it printed what was there, it is waiting at the end of the log.
    for i in 0..5 {
        assert_eq!(
            next_line(&lines, "follower, old entries"),
            format!("old-{i}")
        );
    }

    // Another process appends (etcd metadata: no data-directory lock between them).
    let out = ok(stack.run_with_input(&["log", "write", "f"], b"fresh\n"));
    assert_eq!(out, "1:0\n");
    assert_eq!(next_line(&lines, "follower, the new entry"), "fresh");

    // SIGTERM ends the follower cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &follower.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut stderr = String::new();
    follower
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = follower.wait().unwrap();
    assert!(status.success(), "follower exit {status:?}: {stderr}");
    assert!(lines.recv_timeout(HANG_GUARD).is_err(), "extra output");
}

/// A `log write` process kept open with its stdin.
struct OpenWriter {
    child: Child,
    stdin: Option<ChildStdin>,
    ids: mpsc::Receiver<String>,
}

impl OpenWriter {
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
}

/// Log `t` with `first-0..2` written by a `log write` process that is still open (returned),
/// then `second-0..2` written by a second process, which fenced the first.
fn first_writer_fenced_by_a_second(stack: &Stack) -> OpenWriter {
    ok(stack.run(&["log", "create", "t"]));
    let mut child = stack
        .command(&["log", "write", "t"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn the first writer");
    let stdin = child.stdin.take();
    let ids = line_channel(child.stdout.take().unwrap());
    let mut first = OpenWriter { child, stdin, ids };
    for i in 0..3 {
        first.send(&format!("first-{i}"));
    }
    let acked: Vec<String> = (0..3)
        .map(|_| next_line(&first.ids, "first writer's ids"))
        .collect();
    assert_eq!(acked, ["0:0", "0:1", "0:2"]);

    // A second process opens a writer: it fences the first one.
    let out = ok(stack.run_with_input(&["log", "write", "t"], numbered("second", 0..3).as_bytes()));
    assert_eq!(out, "1:0\n1:1\n1:2\n");
    first
}

#[test]
fn a_second_writer_process_takes_the_log_over() {
    let stack = Stack::new();
    let mut first = first_writer_fenced_by_a_second(&stack);

    // The first writer's next entry must fail, and it says why.
    first.send("first-late");
    drop(first.stdin.take());
    let mut stderr = String::new();
    let output = {
        let OpenWriter { child, ids, .. } = first;
        let out = wait_output(child, &["log", "write", "t (first)"]);
        let late: Vec<String> = ids.try_iter().collect();
        (out, late)
    };
    let (out, late_ids) = output;
    stderr.push_str(&lossy(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "the fenced writer must fail; ids printed: {late_ids:?}; stderr: {stderr}"
    );
    assert!(
        late_ids.is_empty(),
        "the fenced writer acknowledged {late_ids:?}"
    );
    assert!(stderr.contains("lost its log"), "{stderr}");

    // The log: the first writer's three entries, then the second's, nothing else.
    let expected = format!("{}{}", numbered("first", 0..3), numbered("second", 0..3));
    assert_eq!(ok(stack.run(&["log", "tail", "t"])), expected);
    let text = ok(stack.run(&["log", "inspect", "t"]));
    let rows = inspect_rows(&text);
    let ranges: Vec<(&str, &str)> = rows
        .iter()
        .map(|(s, _, e, _)| (s.as_str(), e.as_str()))
        .collect();
    assert_eq!(ranges, [("0", "0..2"), ("1", "0..2")], "{text}");
    assert!(text.contains("0 damaged"), "{text}");
}

/// A fenced `log write` reports the failed append and exits at once, without waiting for more
/// input or for stdin to close: a producer that waits for each id must learn it lost the log.
#[test]
fn a_fenced_writer_fails_without_waiting_for_more_input() {
    let stack = Stack::new();
    let mut first = first_writer_fenced_by_a_second(&stack);
    first.send("first-late");
    // stdin stays open: the failed append alone must end the process.
    let OpenWriter { child, stdin, .. } = first;
    let out = wait_output(child, &["log", "write", "t (first, stdin open)"]);
    drop(stdin);
    assert_eq!(out.status.code(), Some(1), "{}", lossy(&out.stderr));
    assert!(
        lossy(&out.stderr).contains("lost its log"),
        "{}",
        lossy(&out.stderr)
    );
}
