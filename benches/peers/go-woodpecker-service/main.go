// wp-service-bench: the Go Woodpecker service-mode peer of woodpecker-rs's side-by-side
// benchmark.
//
// It builds the published github.com/zilliztech/woodpecker client in service mode
// (storage.type: service, static quorum-buffer-pool seeds naming the LogStore nodes, three
// replicas, metadata in etcd), writes one log asynchronously with a bounded number of
// outstanding writes, checks that the acknowledged ids increase in write order, and prints
// one JSON line on stdout in the shape wp-bench prints. The first write (segment creation,
// node selection while the nodes' gossip settles) is retried and not measured. Everything
// the module logs goes to stderr.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/zilliztech/woodpecker/common/config"
	"github.com/zilliztech/woodpecker/common/etcd"
	"github.com/zilliztech/woodpecker/woodpecker"
	wplog "github.com/zilliztech/woodpecker/woodpecker/log"
)

const modulePath = "github.com/zilliztech/woodpecker"

type options struct {
	etcd       string
	s3Endpoint string
	s3Access   string
	s3Secret   string
	s3Bucket   string
	s3Region   string
	seeds      string
	etcdRoot   string
	work       string
	entrySize  int
	entries    int
	inFlight   int
	timeout    time.Duration
}

type latency struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Avg  float64 `json:"avg"`
	Max  float64 `json:"max"`
}

type result struct {
	System        string  `json:"system"`
	Version       string  `json:"version"`
	Mode          string  `json:"mode"`
	EntrySize     int     `json:"entry_size"`
	Entries       int     `json:"entries"`
	InFlight      int     `json:"in_flight"`
	Log           string  `json:"log"`
	WriteSeconds  float64 `json:"write_seconds"`
	WriteMiBs     float64 `json:"write_mib_s"`
	WriteEntriesS float64 `json:"write_entries_s"`
	Lat           latency `json:"lat_ms"`
	Error         string  `json:"error,omitempty"`
}

func main() {
	var o options
	flag.StringVar(&o.etcd, "etcd", "", "etcd endpoint (http://host:port, required)")
	flag.StringVar(&o.s3Endpoint, "s3-endpoint", "", "S3 endpoint (http://host:port, required: the client reads sealed segments there)")
	flag.StringVar(&o.s3Access, "s3-access-key", "", "S3 access key")
	flag.StringVar(&o.s3Secret, "s3-secret-key", "", "S3 secret key")
	flag.StringVar(&o.s3Bucket, "s3-bucket", "wp-service-bench", "bucket (created if missing; the LogStores' bucket)")
	flag.StringVar(&o.s3Region, "s3-region", "us-east-1", "S3 region")
	flag.StringVar(&o.seeds, "seeds", "", "LogStore gRPC addresses host:port, comma separated (required)")
	flag.StringVar(&o.etcdRoot, "etcd-root", "", "etcd root path and metadata prefix (default: unique per run); every client of one LogStore cluster must share it, since LogStores key segments by log id")
	flag.StringVar(&o.work, "work", os.TempDir(), "directory for the generated woodpecker.yaml")
	flag.IntVar(&o.entrySize, "entry-size", 1024, "bytes per entry")
	flag.IntVar(&o.entries, "entries", 1000, "measured entries to write")
	flag.IntVar(&o.inFlight, "in-flight", 1, "max outstanding async writes")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up after this long")
	flag.Parse()

	// The module's logger writes to fd 1; keep the real stdout for the JSON line.
	out, err := redirectStdout()
	if err != nil {
		fmt.Fprintf(os.Stderr, "wp-service-bench: %v\n", err)
		os.Exit(2)
	}
	if o.etcd == "" || o.s3Endpoint == "" || o.seeds == "" {
		fmt.Fprintln(os.Stderr, "wp-service-bench: -etcd, -s3-endpoint and -seeds are required")
		os.Exit(2)
	}
	if o.entrySize <= 0 || o.entries <= 0 || o.inFlight <= 0 {
		fmt.Fprintln(os.Stderr, "wp-service-bench: -entry-size, -entries and -in-flight must be positive")
		os.Exit(2)
	}
	res, err := run(&o)
	status := 0
	if err != nil {
		res.Error = err.Error()
		fmt.Fprintf(os.Stderr, "wp-service-bench: %v\n", err)
		status = 1
	}
	line, _ := json.Marshal(res)
	_, _ = out.Write(append(line, '\n'))
	_ = out.Close()
	os.Exit(status)
}

func redirectStdout() (*os.File, error) {
	saved, err := syscall.Dup(1)
	if err != nil {
		return nil, fmt.Errorf("dup stdout: %w", err)
	}
	if err := syscall.Dup3(2, 1, 0); err != nil {
		return nil, fmt.Errorf("redirect stdout: %w", err)
	}
	return os.NewFile(uintptr(saved), "stdout"), nil
}

func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == modulePath {
				return d.Version
			}
		}
	}
	return "unknown"
}

func writeConfig(o *options, root string) (string, error) {
	u, err := url.Parse(o.s3Endpoint)
	if err != nil {
		return "", fmt.Errorf("s3 endpoint: %w", err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return "", fmt.Errorf("s3 endpoint port: %w", err)
	}
	eu, err := url.Parse(o.etcd)
	if err != nil {
		return "", fmt.Errorf("etcd endpoint: %w", err)
	}
	var quoted []string
	for _, s := range strings.Split(o.seeds, ",") {
		quoted = append(quoted, strconv.Quote(strings.TrimSpace(s)))
	}
	// Rolling as the embedded peer does (256M, 10m); replicas 3 gives wq 3, aq 2.
	yaml := fmt.Sprintf(`woodpecker:
  meta:
    type: etcd
    prefix: %s
  client:
    segmentAppend:
      queueSize: 10000
      maxRetries: 3
    segmentRollingPolicy:
      maxSize: 256M
      maxInterval: 10m
    quorum:
      quorumBufferPools:
        - name: default-region-pool
          seeds: [%s]
      quorumSelectStrategy:
        affinityMode: soft
        replicas: 3
        strategy: random
  storage:
    type: service
log:
  level: warn
  stdout: true
etcd:
  endpoints: [%s]
  rootPath: %s
minio:
  address: %s
  port: %d
  accessKeyID: %s
  secretAccessKey: %s
  useSSL: false
  bucketName: %s
  createBucket: true
  rootPath: files
  region: %s
  cloudProvider: aws
`, strconv.Quote(root), strings.Join(quoted, ", "), strconv.Quote(eu.Host), strconv.Quote(root),
		strconv.Quote(u.Hostname()), port, strconv.Quote(o.s3Access), strconv.Quote(o.s3Secret),
		strconv.Quote(o.s3Bucket), strconv.Quote(o.s3Region))
	path := filepath.Join(o.work, "wp-service-bench.yaml")
	return path, os.WriteFile(path, []byte(yaml), 0o600)
}

func run(o *options) (result, error) {
	tag := fmt.Sprintf("wp-service-bench-%d-%d", time.Now().UnixNano(), os.Getpid())
	res := result{
		System:    "go-woodpecker",
		Version:   moduleVersion(),
		Mode:      "service",
		EntrySize: o.entrySize,
		Entries:   o.entries,
		InFlight:  o.inFlight,
		Log:       tag,
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	root := o.etcdRoot
	if root == "" {
		root = tag
	}
	path, err := writeConfig(o, root)
	if err != nil {
		return res, err
	}
	cfg, err := config.NewConfiguration(path)
	if err != nil {
		return res, fmt.Errorf("load %s: %w", path, err)
	}
	eu, _ := url.Parse(o.etcd)
	etcdCli, err := etcd.GetRemoteEtcdClient([]string{eu.Host})
	if err != nil {
		return res, fmt.Errorf("etcd: %w", err)
	}
	defer etcdCli.Close()
	client, err := woodpecker.NewClient(ctx, cfg, etcdCli, false)
	if err != nil {
		return res, fmt.Errorf("service-mode client: %w", err)
	}
	defer client.Close(context.Background())
	if err := client.CreateLog(ctx, tag); err != nil {
		return res, fmt.Errorf("create log: %w", err)
	}
	handle, err := client.OpenLog(ctx, tag)
	if err != nil {
		return res, fmt.Errorf("open log: %w", err)
	}
	writer, err := handle.OpenLogWriter(ctx)
	if err != nil {
		return res, fmt.Errorf("open writer: %w", err)
	}
	defer writer.Close(context.Background())

	payload := make([]byte, o.entrySize)
	for i := range payload {
		payload[i] = byte(i*131 + 7)
	}
	// Unmeasured first write: segment creation and node selection, retried while the nodes'
	// gossip settles.
	for first := time.Now(); ; {
		r := writer.Write(ctx, &wplog.WriteMessage{Payload: payload})
		if r.Err == nil {
			break
		}
		if time.Since(first) > time.Minute {
			return res, fmt.Errorf("first write: %w", r.Err)
		}
		time.Sleep(500 * time.Millisecond)
	}

	lats, elapsed, err := writeWindow(ctx, writer, payload, o.entries, o.inFlight)
	res.WriteSeconds = elapsed.Seconds()
	res.WriteEntriesS = float64(o.entries) / res.WriteSeconds
	res.WriteMiBs = res.WriteEntriesS * float64(o.entrySize) / (1 << 20)
	res.Lat = summarize(lats)
	return res, err
}

// writeWindow writes n entries with at most inFlight outstanding and returns the per-write
// latencies (issue to acknowledgement) and the time from the first issue to the last
// acknowledgement.
func writeWindow(ctx context.Context, w wplog.LogWriter, payload []byte, n, inFlight int) ([]time.Duration, time.Duration, error) {
	lats := make([]time.Duration, n)
	ids := make([]*wplog.LogMessageId, n)
	sem := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop {
			break
		}
		issued := time.Now()
		ch := w.WriteAsync(ctx, &wplog.WriteMessage{Payload: payload})
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			var r *wplog.WriteResult
			select {
			case r = <-ch:
			case <-ctx.Done():
				r = &wplog.WriteResult{Err: ctx.Err()}
			}
			lats[i] = time.Since(issued)
			if r == nil || r.Err != nil || r.LogMessageId == nil {
				mu.Lock()
				if firstErr == nil {
					if r == nil || r.Err == nil {
						firstErr = fmt.Errorf("write %d: no result", i)
					} else {
						firstErr = fmt.Errorf("write %d: %w", i, r.Err)
					}
				}
				mu.Unlock()
				return
			}
			ids[i] = r.LogMessageId
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return lats, elapsed, firstErr
	}
	for i := 1; i < n; i++ {
		a, b := ids[i-1], ids[i]
		if b.SegmentId < a.SegmentId || (b.SegmentId == a.SegmentId && b.EntryId <= a.EntryId) {
			return lats, elapsed, fmt.Errorf("write %d acknowledged as %+v after %+v", i, *b, *a)
		}
	}
	return lats, elapsed, nil
}

func summarize(lats []time.Duration) latency {
	if len(lats) == 0 {
		return latency{}
	}
	ms := make([]float64, len(lats))
	sum := 0.0
	for i, d := range lats {
		ms[i] = float64(d.Nanoseconds()) / 1e6
		sum += ms[i]
	}
	sort.Float64s(ms)
	rank := func(q float64) float64 { // nearest rank
		k := int(math.Ceil(q*float64(len(ms)))) - 1
		return ms[max(0, min(k, len(ms)-1))]
	}
	round := func(v float64) float64 { return math.Round(v*1000) / 1000 }
	return latency{
		P50:  round(rank(0.50)),
		P99:  round(rank(0.99)),
		P999: round(rank(0.999)),
		Avg:  round(sum / float64(len(ms))),
		Max:  round(ms[len(ms)-1]),
	}
}
