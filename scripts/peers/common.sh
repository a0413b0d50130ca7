# scripts/peers/common.sh: the parts of the peer contract scripts/peers/kafka and
# scripts/peers/tansu share (see scripts/peers/README.md). Sourced, not run; the sourcing
# script sets PEER (its name, for messages) before calling anything here.
# shellcheck shell=bash

# shellcheck disable=SC2034 # used by the sourcing scripts
PEERS_CACHE="$HOME/.cache/woodpecker-rs/peers"
# How long `start` waits for the broker to answer a metadata request.
PEER_START_TIMEOUT=${PEER_START_TIMEOUT:-120}
# How long `stop` waits after SIGTERM before SIGKILL.
PEER_STOP_TIMEOUT=${PEER_STOP_TIMEOUT:-30}

log() { printf '[peers/%s] %s\n' "$PEER" "$*" >&2; }
die() {
    printf '[peers/%s] ERROR: %s\n' "$PEER" "$*" >&2
    exit 1
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
    timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

check_port() {
    if ! [[ $1 =~ ^[0-9]+$ ]] || ((10#$1 < 1 || 10#$1 > 65535)); then die "not a TCP port: $1"; fi
    if port_in_use "$1"; then die "127.0.0.1:$1 is already in use"; fi
}

# True if process $1 exists and is not a zombie.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) } # the fields after "pid (comm) "; the first is the state
    [[ -n $stat && ${stat:0:1} != Z ]]
}

# The pid in $1/pid if that process is alive and was started by `start` on $1 (its working
# directory is $1: guards against a recycled pid); fails otherwise.
live_pid() {
    local dir=$1 pid
    [[ -f $dir/pid ]] || return 1
    pid=$(<"$dir/pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" == "$(cd "$dir" && pwd -P)" ]] || return 1
    printf '%s\n' "$pid"
}

# Prints the last lines of the log to stderr, stops whatever was started, and exits 1.
start_failed() {
    local dir=$1
    shift
    printf '[peers/%s] ERROR: %s; last lines of %s:\n' "$PEER" "$*" "$dir/log" >&2
    tail -n 40 "$dir/log" >&2 || true
    stop_peer "$dir" >/dev/null 2>&1 || true
    exit 1
}

# Sends one Metadata v1 request (no topics) to 127.0.0.1:$1; succeeds if the answer lists a
# broker at 127.0.0.1:$1, else prints why and fails. A raw request rather than kcat: librdkafka
# up to 2.0 (Debian 12's kcat) misparses the tagged fields of Tansu's ApiVersions response and
# never gets as far as metadata.
probe_metadata() {
    "$PYTHON" - "$1" <<'EOF'
import socket, struct, sys
port = int(sys.argv[1])
try:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(10)
        cid = b"woodpecker-peers-probe"
        msg = struct.pack(">hhih", 3, 1, 1, len(cid)) + cid + struct.pack(">i", 0)
        s.sendall(struct.pack(">i", len(msg)) + msg)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("connection closed before a complete answer")
            buf += chunk
    pos = 8  # size, correlation id
    (n,) = struct.unpack_from(">i", buf, pos)
    pos += 4
    brokers = []
    for _ in range(n):
        node, hlen = struct.unpack_from(">ih", buf, pos)
        pos += 6
        host = buf[pos:pos + hlen].decode()
        pos += hlen
        (bport, rlen) = struct.unpack_from(">ih", buf, pos)
        pos += 6 + max(rlen, 0)
        brokers.append(f"{host}:{bport}")
    if f"127.0.0.1:{port}" not in brokers:
        sys.exit(f"metadata lists brokers {brokers}, not 127.0.0.1:{port}")
except (OSError, struct.error, UnicodeDecodeError) as e:
    sys.exit(f"{type(e).__name__}: {e}")
EOF
}

# Waits until the broker whose pid is in $1/pid answers a metadata request on 127.0.0.1:$2
# that lists 127.0.0.1:$2 as a broker, then prints the export line.
wait_ready() {
    local dir=$1 port=$2 out t0=$SECONDS
    PYTHON=$(command -v python3) || start_failed "$dir" "python3 is needed to probe the broker"
    while :; do
        live_pid "$dir" >/dev/null || start_failed "$dir" "the broker exited during start-up"
        if out=$(probe_metadata "$port" 2>&1); then break; fi
        ((SECONDS - t0 < PEER_START_TIMEOUT)) ||
            start_failed "$dir" "no metadata from 127.0.0.1:$port after ${PEER_START_TIMEOUT}s (last probe: $out)"
        sleep 0.5
    done
    log "serving on 127.0.0.1:$port after $((SECONDS - t0))s (pid $(<"$dir/pid"), log $dir/log)"
    printf 'export PEER_BOOTSTRAP=127.0.0.1:%s\n' "$port"
}

# Starts "$@" in the background in directory $1 (all output to $1/log, pid to $1/pid), in its
# own session so that signals to the caller's process group do not reach it.
spawn() {
    local dir=$1
    shift
    (
        cd "$dir" || exit 1
        exec setsid "$@" </dev/null >>"$dir/log" 2>&1
    ) &
    printf '%s\n' "$!" >"$dir/pid"
}

# SIGTERM, up to PEER_STOP_TIMEOUT seconds, then SIGKILL. Idempotent.
stop_peer() {
    local dir=$1 pid i
    [[ -d $dir ]] || return 0
    if ! pid=$(live_pid "$dir"); then
        rm -f "$dir/pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < PEER_STOP_TIMEOUT * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "pid $pid still running after ${PEER_STOP_TIMEOUT}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while alive "$pid"; do sleep 0.1; done
    fi
    rm -f "$dir/pid"
    log "stopped pid $pid"
}

# The usage text: the header comment of the script $1, up to `set -euo`.
usage() {
    sed -n '2,/^set -euo/p' "$1" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}
