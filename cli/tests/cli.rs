//! The `woodpecker` binary, run as a child process on a temporary data directory.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_woodpecker");

fn woodpecker(dir: &Path, args: &[&str]) -> Output {
    woodpecker_with_input(dir, args, b"")
}

fn woodpecker_with_input(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn woodpecker");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    o
}

#[track_caller]
fn fails(o: Output) -> Output {
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stderr(&o).contains("woodpecker: error: "), "{}", stderr(&o));
    o
}

fn lines(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("line-{i}\n").into_bytes())
        .collect()
}

/// A data directory holding log `a` with `line-0` .. `line-99` in segment 0.
fn log_with_100_entries() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ok(woodpecker(dir.path(), &["log", "create", "a"]));
    let out = ok(woodpecker_with_input(
        dir.path(),
        &["log", "write", "a"],
        &lines(100),
    ));
    let ids: Vec<String> = (0..100).map(|i| format!("0:{i}")).collect();
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), ids);
    dir
}

fn data_file(dir: &Path, segment: i64) -> PathBuf {
    // Log ids start at 1; local segments live under <data dir>/<minio.rootPath = files>.
    dir.join("files")
        .join("1")
        .join(segment.to_string())
        .join("data.log")
}

#[test]
fn create_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(woodpecker(dir.path(), &["log", "list"]));
    assert_eq!(stdout(&out), "");
    ok(woodpecker(dir.path(), &["log", "create", "b"]));
    ok(woodpecker(dir.path(), &["log", "create", "a"]));
    let out = ok(woodpecker(dir.path(), &["log", "list"]));
    assert_eq!(stdout(&out), "a\nb\n");
    let out = fails(woodpecker(dir.path(), &["log", "create", "a"]));
    assert!(stderr(&out).contains("`a`"), "{}", stderr(&out));
}

#[test]
fn write_then_tail_everything() {
    let dir = log_with_100_entries();
    let out = ok(woodpecker(dir.path(), &["log", "tail", "a"]));
    assert_eq!(stdout(&out).into_bytes(), lines(100));
}

#[test]
fn tail_from_an_entry_and_global_options_anywhere() {
    let dir = log_with_100_entries();
    // --data-dir before the subcommand this time.
    let out = ok(Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["log", "tail", "a", "--from", "0:50"])
        .output()
        .unwrap());
    let expected: Vec<u8> = (50..100)
        .flat_map(|i| format!("line-{i}\n").into_bytes())
        .collect();
    assert_eq!(out.stdout, expected);
    // --from latest without --follow: nothing new, exits at once.
    let out = ok(woodpecker(
        dir.path(),
        &["log", "tail", "a", "--from", "latest"],
    ));
    assert_eq!(stdout(&out), "");
    // A malformed position is refused by the parser.
    let out = woodpecker(dir.path(), &["log", "tail", "a", "--from", "soon"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("SEG:ENTRY"), "{}", stderr(&out));
}

#[test]
fn a_second_write_appends_in_a_new_segment_and_empty_lines_are_skipped() {
    let dir = log_with_100_entries();
    let out = ok(woodpecker_with_input(
        dir.path(),
        &["log", "write", "a"],
        b"x\n\ny\r\nz",
    ));
    assert_eq!(stdout(&out), "1:0\n1:1\n1:2\n");
    assert!(stderr(&out).contains("line 2 is empty"), "{}", stderr(&out));
    let out = ok(woodpecker(
        dir.path(),
        &["log", "tail", "a", "--from", "0:99"],
    ));
    assert_eq!(stdout(&out), "line-99\nx\ny\nz\n");
}

#[test]
fn truncate_moves_the_earliest_position() {
    let dir = log_with_100_entries();
    ok(woodpecker(dir.path(), &["log", "truncate", "a", "0:49"]));
    let out = ok(woodpecker(dir.path(), &["log", "tail", "a"]));
    let expected: Vec<u8> = (50..100)
        .flat_map(|i| format!("line-{i}\n").into_bytes())
        .collect();
    assert_eq!(out.stdout, expected);
    let out = ok(woodpecker(dir.path(), &["log", "inspect", "a"]));
    assert!(
        stdout(&out).contains("truncated at 0:49"),
        "{}",
        stdout(&out)
    );
    // Past the end of a completed segment is refused.
    let out = fails(woodpecker(dir.path(), &["log", "truncate", "a", "0:500"]));
    assert!(stderr(&out).contains("`a`"), "{}", stderr(&out));
}

/// The truncation point of log `a`, as `log inspect` shows it.
fn truncation_shown(dir: &Path) -> String {
    let out = ok(woodpecker(dir, &["log", "inspect", "a"]));
    stdout(&out).lines().next().unwrap_or_default().to_string()
}

#[test]
fn truncate_refuses_to_move_back_or_past_the_end_and_changes_nothing() {
    let dir = log_with_100_entries();
    ok(woodpecker(dir.path(), &["log", "truncate", "a", "0:49"]));
    let before = truncation_shown(dir.path());
    assert!(before.contains("truncated at 0:49"), "{before}");

    // Below the current point.
    let out = fails(woodpecker(dir.path(), &["log", "truncate", "a", "0:0"]));
    let err = stderr(&out);
    assert!(err.contains("truncated at 0:49 already"), "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    assert!(!err.contains("truncated at 0:0 (inclusive)"), "{err}");
    assert_eq!(truncation_shown(dir.path()), before);

    // Past the end: in a segment that does not exist, and past the last entry of the last one.
    for past in ["5:0", "1:0", "0:100"] {
        let out = fails(woodpecker(dir.path(), &["log", "truncate", "a", past]));
        let err = stderr(&out);
        assert!(err.contains("last durable entry is 0:99"), "{past}: {err}");
        assert!(err.contains("nothing changed"), "{past}: {err}");
        assert_eq!(truncation_shown(dir.path()), before);
    }

    // The same point again changes nothing and is not an error; a later one moves it.
    let out = ok(woodpecker(dir.path(), &["log", "truncate", "a", "0:49"]));
    assert!(stderr(&out).contains("already"), "{}", stderr(&out));
    ok(woodpecker(dir.path(), &["log", "truncate", "a", "0:99"]));
    assert!(truncation_shown(dir.path()).contains("truncated at 0:99"));

    // An empty log has nothing to truncate.
    ok(woodpecker(dir.path(), &["log", "create", "empty"]));
    let out = fails(woodpecker(dir.path(), &["log", "truncate", "empty", "0:0"]));
    assert!(
        stderr(&out).contains("holds no entries"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn write_refuses_logs_of_the_kafka_front_door_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    ok(woodpecker(dir.path(), &["log", "create", "kafka:demo:1"]));
    let out = fails(woodpecker_with_input(
        dir.path(),
        &["log", "write", "kafka:demo:1"],
        b"not a batch\n",
    ));
    let err = stderr(&out);
    assert!(err.contains("Kafka front door"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(stdout(&out), "");
    let out = ok(woodpecker(dir.path(), &["log", "tail", "kafka:demo:1"]));
    assert_eq!(stdout(&out), "", "nothing was written");
    let out = ok(woodpecker(dir.path(), &["log", "inspect", "kafka:demo:1"]));
    assert!(stdout(&out).contains("0 segment(s)"), "{}", stdout(&out));

    // Refused by name, whether or not the log exists.
    let out = fails(woodpecker_with_input(
        dir.path(),
        &["log", "write", "kafka:other:0"],
        b"x\n",
    ));
    assert!(
        stderr(&out).contains("Kafka front door"),
        "{}",
        stderr(&out)
    );

    let out = ok(woodpecker_with_input(
        dir.path(),
        &["log", "write", "kafka:demo:1", "--force"],
        b"forced\n",
    ));
    assert_eq!(stdout(&out), "0:0\n");
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    let out = ok(woodpecker(dir.path(), &["log", "tail", "kafka:demo:1"]));
    assert_eq!(stdout(&out), "forced\n");
}

#[test]
fn inspect_shows_segments_and_checks_them() {
    let dir = log_with_100_entries();
    let out = ok(woodpecker(dir.path(), &["log", "inspect", "a"]));
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("0 "))
        .unwrap_or_else(|| panic!("no row for segment 0:\n{text}"));
    assert!(row.contains("Completed"), "{row}");
    assert!(row.contains("0..99"), "{row}");
    assert!(row.contains("ok"), "{row}");
    assert!(text.contains("1 segment(s), 0 damaged"), "{text}");
}

/// Damages the payload `needle` in segment 0 of log `a`.
fn damage(dir: &Path, needle: &[u8]) {
    let path = data_file(dir, 0);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("payload in data.log");
    bytes[at + 5] = b'X';
    std::fs::write(&path, &bytes).unwrap();
}

fn lines_of(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("line-{i}")).collect()
}

#[test]
fn a_damaged_block_is_reported_and_never_printed() {
    let dir = log_with_100_entries();
    damage(dir.path(), b"line-50");

    let out = fails(woodpecker(dir.path(), &["log", "inspect", "a"]));
    assert!(stdout(&out).contains("DAMAGED"), "{}", stdout(&out));
    assert!(stdout(&out).contains("cannot be read"), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("segment 0"), "{err}");
    assert!(err.contains("block"), "{err}");
    assert!(err.contains("log repair"), "{err}");

    let out = fails(woodpecker(dir.path(), &["log", "tail", "a"]));
    assert!(!stdout(&out).contains("line-X0"), "{}", stdout(&out));
    assert!(stderr(&out).contains("segment"), "{}", stderr(&out));
}

#[test]
fn meta_prefix_shows_where_the_keys_are() {
    let dir = tempfile::tempdir().unwrap();
    // A fresh store: the prefix published Go Woodpecker uses, before and after a log exists.
    let out = ok(woodpecker(dir.path(), &["meta", "prefix"]));
    let text = stdout(&out);
    assert!(text.contains("store: embedded store in "), "{text}");
    assert!(text.contains("mode: auto"), "{text}");
    assert!(
        text.contains("in use: woodpecker/ (no Woodpecker keys yet"),
        "{text}"
    );
    assert!(
        text.contains("configured: by-dev/woodpecker/ (no Woodpecker keys)"),
        "{text}"
    );
    ok(woodpecker(dir.path(), &["log", "create", "a"]));
    let text = stdout(&ok(woodpecker(dir.path(), &["meta", "prefix"])));
    assert!(
        text.contains("in use: woodpecker/ (the store holds"),
        "{text}"
    );
    assert!(text.contains("legacy: woodpecker/ (1 log: a)"), "{text}");

    // A second root populated by an explicit mode: `auto` refuses, naming both, and `meta
    // prefix` still shows them.
    let configured = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["log", "create", "b"])
        .env(
            "WOODPECKER_CONFIG__WOODPECKER__META__PREFIXMODE",
            "configured",
        )
        .output()
        .unwrap();
    let configured = ok(configured);
    assert!(
        stderr(&configured).contains("woodpecker/` (1 log: a), which this process does not see"),
        "{}",
        stderr(&configured)
    );
    let out = fails(woodpecker(dir.path(), &["log", "list"]));
    assert!(
        stderr(&out).contains("two root prefixes"),
        "{}",
        stderr(&out)
    );
    let out = fails(woodpecker(dir.path(), &["meta", "prefix"]));
    let text = stdout(&out);
    assert!(text.contains("in use: none"), "{text}");
    assert!(text.contains("legacy: woodpecker/ (1 log: a)"), "{text}");
    assert!(
        text.contains("configured: by-dev/woodpecker/ (1 log: b)"),
        "{text}"
    );
}

#[test]
fn damaged_blocks_are_read_around_skipped_and_repaired() {
    let dir = log_with_100_entries();
    ok(woodpecker_with_input(
        dir.path(),
        &["log", "write", "a"],
        b"more-0\nmore-1\n",
    ));
    damage(dir.path(), b"line-50");
    let original = std::fs::read(data_file(dir.path(), 0)).unwrap();

    // Tail stops at the damaged block with what it held and how to read on; what came before
    // it is printed.
    let out = fails(woodpecker(dir.path(), &["log", "tail", "a"]));
    let err = stderr(&out);
    assert!(err.contains("cannot be read"), "{err}");
    assert!(err.contains("--skip-damaged"), "{err}");
    let printed: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let first_lost = printed.len();
    assert!(first_lost <= 50, "{printed:?}");
    assert_eq!(printed, lines_of(0..first_lost));
    let from = err
        .split("--from ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("no --from hint: {err}"))
        .to_string();
    let resume: usize = from.trim_start_matches("0:").parse().unwrap();
    assert!(resume > 50, "{from}");

    // The entries after it, in the same segment and the next, are all there.
    let out = ok(woodpecker(
        dir.path(),
        &["log", "tail", "a", "--from", &from],
    ));
    let mut after = lines_of(resume..100);
    after.extend(["more-0".to_string(), "more-1".to_string()]);
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), after);

    // --skip-damaged prints everything else and says what it skipped.
    let out = ok(woodpecker(
        dir.path(),
        &["log", "tail", "a", "--skip-damaged"],
    ));
    let mut readable = lines_of(0..first_lost);
    readable.extend(after.clone());
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), readable);
    let skipped = format!("skipped entries 0:{first_lost}..=0:{}", resume - 1);
    assert!(stderr(&out).contains(&skipped), "{}", stderr(&out));

    // repair reports exactly what is lost and changes nothing without --apply.
    let out = fails(woodpecker(dir.path(), &["log", "repair", "a"]));
    let report = stdout(&out);
    let lost = format!(
        "entries 0:{first_lost}..=0:{} ({}) cannot be read",
        resume - 1,
        resume - first_lost
    );
    assert!(report.contains(&lost), "{report}");
    assert!(
        report.contains("1 damaged block(s) in 1 segment(s)"),
        "{report}"
    );
    assert!(stderr(&out).contains("nothing changed"), "{}", stderr(&out));
    assert_eq!(std::fs::read(data_file(dir.path(), 0)).unwrap(), original);

    let out = ok(woodpecker(dir.path(), &["log", "repair", "a", "--apply"]));
    let err = stderr(&out);
    assert!(err.contains("lost-entry markers"), "{err}");
    assert!(err.contains("kept as"), "{err}");
    let kept: Vec<_> = std::fs::read_dir(data_file(dir.path(), 0).parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.log.damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");

    // Whole again: inspect and repair find nothing; tail prints everything readable and
    // reports each lost entry on stderr.
    ok(woodpecker(dir.path(), &["log", "inspect", "a"]));
    let out = ok(woodpecker(dir.path(), &["log", "repair", "a"]));
    assert!(
        stdout(&out).contains("0 damaged block(s)"),
        "{}",
        stdout(&out)
    );
    let out = ok(woodpecker(dir.path(), &["log", "tail", "a"]));
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), readable);
    let lost_line = format!(
        "entries 0:{first_lost}..=0:{} of log `a` were lost to a damaged block",
        resume - 1
    );
    assert!(stderr(&out).contains(&lost_line), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn delete_then_list_is_empty() {
    let dir = log_with_100_entries();
    ok(woodpecker(dir.path(), &["log", "delete", "a"]));
    let out = ok(woodpecker(dir.path(), &["log", "list"]));
    assert_eq!(stdout(&out), "");
    assert!(!data_file(dir.path(), 0).exists());
}

#[test]
fn an_unknown_log_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in [
        &["log", "tail", "ghost"][..],
        &["log", "write", "ghost"],
        &["log", "inspect", "ghost"],
        &["log", "delete", "ghost"],
        &["log", "truncate", "ghost", "0:0"],
    ] {
        let out = fails(woodpecker(dir.path(), cmd));
        assert!(stderr(&out).contains("ghost"), "{cmd:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
}

#[test]
fn a_config_file_is_used_and_a_bad_one_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        format!(
            "woodpecker:\n  meta:\n    type: embedded\n  storage:\n    type: local\n    rootPath: {}\n",
            data.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str], input: &[u8]| {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let cfg = good.to_str().unwrap();
    ok(run(&["log", "create", "c", "--config", cfg], b""));
    ok(run(&["--config", cfg, "log", "write", "c"], b"hello\n"));
    let out = ok(run(&["log", "tail", "c", "--config", cfg], b""));
    assert_eq!(stdout(&out), "hello\n");
    assert!(data.join("meta").is_dir());

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "woodpecker:\n  logstore:\n    segmentSyncPolicy:\n      maxEntries: lots\n",
    )
    .unwrap();
    let out = fails(run(
        &["log", "list", "--config", bad.to_str().unwrap()],
        b"",
    ));
    let err = stderr(&out);
    assert!(err.contains("maxEntries"), "{err}");
    assert!(err.contains("bad.yaml"), "{err}");

    let service = dir.path().join("service.yaml");
    std::fs::write(
        &service,
        "woodpecker:\n  meta:\n    type: embedded\n  storage:\n    type: service\n",
    )
    .unwrap();
    let out = fails(run(
        &["log", "list", "--config", service.to_str().unwrap()],
        b"",
    ));
    // Service mode without seeds: refused, naming the missing key.
    assert!(
        stderr(&out).contains("woodpecker.client.quorum.quorumBufferPools"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn environment_variables_override_the_default_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = fails(
        Command::new(BIN)
            .args(["log", "list", "--data-dir"])
            .arg(dir.path())
            .env("WOODPECKER_CONFIG__WOODPECKER__STORAGE__TYPE", "service")
            .output()
            .unwrap(),
    );
    // The override took: service mode, which then needs seeds the default has not.
    assert!(
        stderr(&out).contains("woodpecker.client.quorum.quorumBufferPools"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_running_follower_holds_the_data_dir() {
    let dir = log_with_100_entries();
    let mut follower = Command::new(BIN)
        .args(["log", "tail", "a", "--follow", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once it printed the entries it holds the metadata store (and waits for more).
    let mut out = BufReader::new(follower.stdout.take().unwrap());
    for i in 0..100 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line, format!("line-{i}\n"));
    }

    let started = Instant::now();
    let out2 = fails(woodpecker(dir.path(), &["log", "list"]));
    let err = stderr(&out2);
    assert!(err.contains("in use"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // SIGTERM stops the follower cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &follower.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = follower.wait().unwrap();
    assert!(status.success(), "follower exit: {status:?}");
    assert_eq!(rest, "");
    // The directory is free again.
    ok(woodpecker(dir.path(), &["log", "list"]));
}

#[test]
fn serve_refuses_session_timeout_bounds_that_cross() {
    let dir = tempfile::tempdir().unwrap();
    let out = fails(woodpecker(
        dir.path(),
        &[
            "serve",
            "--kafka-addr",
            "127.0.0.1:0",
            "--milvus-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--kafka-group-min-session-timeout-ms",
            "9000",
            "--kafka-group-max-session-timeout-ms",
            "8000",
        ],
    ));
    assert!(
        stderr(&out).contains(
            "--kafka-group-min-session-timeout-ms (9000) is above \
             --kafka-group-max-session-timeout-ms (8000)"
        ),
        "{}",
        stderr(&out)
    );
    // Out of range for a session timeout (an INT32 of milliseconds).
    let out = woodpecker(
        dir.path(),
        &[
            "serve",
            "--kafka-group-max-session-timeout-ms",
            "3000000000",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--kafka-group-max-session-timeout-ms"),
        "{}",
        stderr(&out)
    );
    // KIP-848 groups: the heartbeat interval must be below the session timeout.
    let out = fails(woodpecker(
        dir.path(),
        &[
            "serve",
            "--kafka-addr",
            "127.0.0.1:0",
            "--milvus-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--kafka-group-consumer-session-timeout-ms",
            "3000",
            "--kafka-group-consumer-heartbeat-interval-ms",
            "3000",
        ],
    ));
    assert!(
        stderr(&out).contains(
            "--kafka-group-consumer-heartbeat-interval-ms (3000) must be below \
             --kafka-group-consumer-session-timeout-ms (3000)"
        ),
        "{}",
        stderr(&out)
    );
}
