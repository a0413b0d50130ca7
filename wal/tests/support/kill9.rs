//! The plumbing the `kill -9` tests share: the test binary runs itself as the child process
//! (its `#[ignore]`d `child_process` test does nothing unless [`DIR_ENV`] is set), the child
//! reports on stdout behind a marker, and the parent reads only complete lines (a line cut by
//! the kill is not a report).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Tells the child process where its store is (and that it is the child).
pub(crate) const DIR_ENV: &str = "WOODPECKER_KILL9_DIR";
/// The child's run number.
pub(crate) const RUN_ENV: &str = "WOODPECKER_KILL9_RUN";

/// The child's arguments when this process is one: its directory and run number.
pub(crate) fn child_args<T: std::str::FromStr>() -> Option<(String, T)>
where
    T::Err: std::fmt::Debug,
{
    let dir = std::env::var(DIR_ENV).ok()?;
    let run = std::env::var(RUN_ENV).unwrap().parse().unwrap();
    Some((dir, run))
}

/// Prints one report line behind `mark`, flushed at once.
pub(crate) fn say(mark: &str, line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{mark}{line}").unwrap();
    out.flush().unwrap();
}

/// Forwards the child's complete stdout lines.
pub(crate) fn forward_lines(stdout: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if line.ends_with('\n') && tx.send(line.trim_end().to_owned()).is_err() {
                return;
            }
            line.clear();
        }
    });
    rx
}

/// Starts this test binary as the child of run `run`, working in `dir`.
pub(crate) fn spawn_child(dir: &Path, run: impl ToString) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir)
        .env(RUN_ENV, run.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child")
}

/// One child process of a kill test, from start to `kill -9`.
pub(crate) struct Run {
    label: String,
    mark: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    errors: thread::JoinHandle<String>,
    seen: Vec<String>,
}

impl Run {
    /// Starts the child of run `run` in `dir`; its report lines carry `mark`.
    pub(crate) fn start(dir: &Path, run: impl ToString, mark: &'static str) -> Run {
        let label = run.to_string();
        let mut child = spawn_child(dir, &label);
        let lines = forward_lines(child.stdout.take().unwrap());
        let mut stderr = child.stderr.take().unwrap();
        let errors = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Run {
            label,
            mark,
            child,
            lines,
            errors,
            seen: Vec::new(),
        }
    }

    /// Waits for the child's `ready` report (at most 20 s, then fails with its stderr).
    pub(crate) fn wait_ready(&mut self) {
        let ready = format!("{}ready", self.mark);
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    let done = line.contains(&ready);
                    self.seen.push(line);
                    if done {
                        return;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stderr = std::mem::replace(&mut self.errors, thread::spawn(String::new));
                    panic!(
                        "run {}: the child never got ready ({e}); its stderr:\n{}",
                        self.label,
                        stderr.join().unwrap()
                    );
                }
            }
        }
    }

    /// Kills the child with SIGKILL and returns every complete line it printed; fails unless
    /// it died of the kill.
    pub(crate) fn kill(mut self) -> Vec<String> {
        use std::os::unix::process::ExitStatusExt;
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.iter());
        let stderr = self.errors.join().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "run {}: the child ended on its own ({status}); its stderr:\n{stderr}",
            self.label
        );
        self.seen
    }
}
