"""Shared by the client scripts: collecting failures and printing the summary.

Every script prints exactly one line `RESULT <json>` on stdout (the Rust test parses it) with
what it observed and a list of failures, and exits 0 only when that list is empty. Progress
goes to stderr.
"""

import contextlib
import json
import sys
import time
import traceback


class Run:
    """Failures and observations of one scenario."""

    def __init__(self, name):
        self.name = name
        self.failures = []
        self.result = {"scenario": name}

    def log(self, what):
        print(f"[{self.name}] {what}", file=sys.stderr, flush=True)

    def fail(self, what):
        self.log(f"FAIL {what}")
        self.failures.append(what)

    def check(self, ok, what):
        """Records `what` as a failure unless `ok`; returns `ok`."""
        if not ok:
            self.fail(what)
        return ok

    @contextlib.contextmanager
    def step(self, name):
        """Runs a block; an exception in it becomes a failure named `name`, and the run goes on."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 - every error is a finding
            traceback.print_exc(file=sys.stderr)
            self.fail(f"{name}: {type(e).__name__}: {e}")

    def finish(self):
        self.result["failures"] = self.failures
        print("RESULT " + json.dumps(self.result, sort_keys=True), flush=True)
        sys.exit(0 if not self.failures else 1)


class Deadline:
    """A failure guard for loops that wait for the server: never a timing assertion."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self):
        return max(0.0, self.end - time.monotonic())

    def expired(self):
        return time.monotonic() >= self.end


def main(run, scenarios, argv):
    """Dispatches `argv[1]` to `scenarios[name](run, *argv[2:])` and prints the summary."""
    if len(argv) < 2 or argv[1] not in scenarios:
        print(f"usage: {argv[0]} {{{','.join(sorted(scenarios))}}} ARGS...", file=sys.stderr)
        sys.exit(2)
    run.result["scenario"] = argv[1]
    try:
        scenarios[argv[1]](run, *argv[2:])
    except Exception as e:  # noqa: BLE001 - an abort is a finding too
        traceback.print_exc(file=sys.stderr)
        run.fail(f"aborted: {type(e).__name__}: {e}")
    run.finish()
