//! A small data-driven test runner in the style of raft-rs's `datadriven` tests.
//!
//! A file holds cases, each a command line with optional input lines, a `----` separator,
//! and the expected output up to the next blank line; `#` starts a comment line between
//! cases:
//!
//! ```text
//! # what this case shows
//! command key=value word
//! input line
//! ----
//! expected output
//! ```
//!
//! The runner hands every case to a closure that returns the actual output and compares.
//! With `REWRITE=1` in the environment it writes the actual outputs back into the file
//! instead (review the diff before committing it).

use std::fmt::Write as _;
use std::path::Path;

/// One case of a file.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    /// `file:line` of the command.
    pub(crate) pos: String,
    /// The first word of the command line.
    pub(crate) cmd: String,
    /// The other words: `key=value` or a bare `word` (value `None`).
    pub(crate) args: Vec<(String, Option<String>)>,
    /// Lines between the command and `----`.
    pub(crate) input: Vec<String>,
}

impl Case {
    /// The value of `key=value`; panics naming the case when it is missing.
    pub(crate) fn arg(&self, key: &str) -> &str {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
            .unwrap_or_else(|| panic!("{}: `{}` needs {key}=...", self.pos, self.cmd))
    }
}

enum Chunk {
    Text(String),
    Case { case: Case, expected: String },
}

fn parse(path: &Path, text: &str) -> Vec<Chunk> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() || line.starts_with('#') {
            out.push(Chunk::Text(line.to_string()));
            i += 1;
            continue;
        }
        let pos = format!("{}:{}", path.display(), i + 1);
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or_default().to_string();
        let args = words
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (w.to_string(), None),
            })
            .collect();
        i += 1;
        let mut input = Vec::new();
        while i < lines.len() && lines[i] != "----" {
            input.push(lines[i].to_string());
            i += 1;
        }
        assert!(i < lines.len(), "{pos}: no `----` after the command");
        i += 1;
        let mut expected = String::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            expected.push_str(lines[i]);
            expected.push('\n');
            i += 1;
        }
        out.push(Chunk::Case {
            case: Case {
                pos,
                cmd,
                args,
                input,
            },
            expected,
        });
    }
    out
}

fn render(case: &Case) -> String {
    let mut s = case.cmd.clone();
    for (k, v) in &case.args {
        s.push(' ');
        s.push_str(k);
        if let Some(v) = v {
            s.push('=');
            s.push_str(v);
        }
    }
    s.push('\n');
    for l in &case.input {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// Runs every case of `path` through `run` (in file order, so state may carry over).
pub(crate) fn run_file(path: &Path, mut run: impl FnMut(&Case) -> String) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let rewrite = std::env::var_os("REWRITE").is_some();
    let mut rewritten = String::new();
    let mut failures = Vec::new();
    for chunk in parse(path, &text) {
        match chunk {
            Chunk::Text(t) => {
                rewritten.push_str(&t);
                rewritten.push('\n');
            }
            Chunk::Case { case, expected } => {
                let mut actual = run(&case);
                if !actual.is_empty() && !actual.ends_with('\n') {
                    actual.push('\n');
                }
                rewritten.push_str(&render(&case));
                rewritten.push_str("----\n");
                rewritten.push_str(&actual);
                if actual != expected {
                    let mut msg = String::new();
                    let _ = write!(
                        msg,
                        "{}: {}\n--- expected\n{expected}--- actual\n{actual}",
                        case.pos,
                        render(&case).trim_end()
                    );
                    failures.push(msg);
                }
            }
        }
    }
    if rewrite {
        std::fs::write(path, rewritten)
            .unwrap_or_else(|e| panic!("cannot rewrite {}: {e}", path.display()));
        return;
    }
    assert!(
        failures.is_empty(),
        "{} case(s) of {} differ (REWRITE=1 rewrites the file):\n\n{}",
        failures.len(),
        path.display(),
        failures.join("\n")
    );
}
