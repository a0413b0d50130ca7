// wp-bench: the Go Woodpecker peer of woodpecker-rs's side-by-side benchmark.
//
// It embeds the published github.com/zilliztech/woodpecker client (embedded mode: the
// log store runs in this process, metadata in etcd, data on the local file system or an
// S3-compatible server), writes one log asynchronously with a bounded number of
// outstanding writes, reads it back from the earliest entry, and prints one JSON line on
// stdout. Everything the module logs goes to stderr (or -log-file).
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
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
	"github.com/zilliztech/woodpecker/woodpecker"
	wplog "github.com/zilliztech/woodpecker/woodpecker/log"
)

const modulePath = "github.com/zilliztech/woodpecker"

type options struct {
	mode        string
	data        string
	etcd        string
	s3Endpoint  string
	s3Access    string
	s3Secret    string
	s3Bucket    string
	s3RootPath  string
	s3Region    string
	entrySize   int
	entries     int
	inFlight    int
	logName     string
	warmup      int
	logLevel    string
	logFile     string
	condWrite   string
	syncMaxIntv string
	syncLocIntv string
	syncMaxByte string
	syncMaxEnt  int
	flushMax    string
	flushThr    int
	segMaxSize  string
	segMaxBlks  int
	timeout     time.Duration
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
	Warmup        int     `json:"warmup"`
	Log           string  `json:"log"`
	WriteSeconds  float64 `json:"write_seconds"`
	WriteMiBs     float64 `json:"write_mib_s"`
	WriteEntriesS float64 `json:"write_entries_s"`
	Lat           latency `json:"lat_ms"`
	CloseSeconds  float64 `json:"close_seconds"`
	ReadEntries   int     `json:"read_entries"`
	ReadSeconds   float64 `json:"read_seconds"`
	ReadMiBs      float64 `json:"read_mib_s"`
	Errors        int     `json:"errors"`
	Error         string  `json:"error,omitempty"`
}

func main() {
	var o options
	flag.StringVar(&o.mode, "mode", "local", "storage backend: local | minio")
	flag.StringVar(&o.data, "data", "", "data directory (local storage root; config and logs live here too)")
	flag.StringVar(&o.etcd, "etcd", "", "etcd endpoint(s), comma separated (required)")
	flag.StringVar(&o.s3Endpoint, "s3-endpoint", "", "minio mode: S3 endpoint host:port (http:// or https:// prefix allowed)")
	flag.StringVar(&o.s3Access, "s3-access-key", "", "minio mode: access key")
	flag.StringVar(&o.s3Secret, "s3-secret-key", "", "minio mode: secret key")
	flag.StringVar(&o.s3Bucket, "s3-bucket", "woodpecker-bench", "minio mode: bucket (created if missing)")
	flag.StringVar(&o.s3RootPath, "s3-root-path", "go-woodpecker", "minio mode: key prefix inside the bucket")
	flag.StringVar(&o.s3Region, "s3-region", "", "minio mode: region (empty: the client's default)")
	flag.IntVar(&o.entrySize, "entry-size", 1<<20, "bytes per entry")
	flag.IntVar(&o.entries, "entries", 200, "measured entries to write")
	flag.IntVar(&o.inFlight, "in-flight", 16, "max outstanding async writes")
	flag.StringVar(&o.logName, "log", "wp-bench", "log name prefix (a unique suffix is appended)")
	flag.IntVar(&o.warmup, "warmup", 0, "entries written (same size, same window) before measuring")
	flag.StringVar(&o.logLevel, "log-level", "warn", "module log level: debug | info | warn | error")
	flag.StringVar(&o.logFile, "log-file", "", "append module logs to this file instead of stderr")
	flag.StringVar(&o.condWrite, "condition-write", "auto", "woodpecker.logstore.fencePolicy.conditionWrite: auto | enable | disable")
	// Milvus 2.6 defaults (milvus.yaml, woodpecker section); see README.md.
	flag.StringVar(&o.syncMaxIntv, "sync-max-interval", "200ms", "woodpecker.logstore.segmentSyncPolicy.maxInterval (object storage)")
	flag.StringVar(&o.syncLocIntv, "sync-max-interval-local", "10ms", "woodpecker.logstore.segmentSyncPolicy.maxIntervalForLocalStorage")
	flag.StringVar(&o.syncMaxByte, "sync-max-bytes", "256M", "woodpecker.logstore.segmentSyncPolicy.maxBytes")
	flag.IntVar(&o.syncMaxEnt, "sync-max-entries", 10000, "woodpecker.logstore.segmentSyncPolicy.maxEntries")
	flag.StringVar(&o.flushMax, "flush-max-size", "2M", "woodpecker.logstore.segmentSyncPolicy.maxFlushSize")
	flag.IntVar(&o.flushThr, "flush-max-threads", 32, "woodpecker.logstore.segmentSyncPolicy.maxFlushThreads")
	flag.StringVar(&o.segMaxSize, "segment-max-size", "256M", "woodpecker.client.segmentRollingPolicy.maxSize")
	flag.IntVar(&o.segMaxBlks, "segment-max-blocks", 1000, "woodpecker.client.segmentRollingPolicy.maxBlocks (a block is one sync)")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up after this long")
	flag.Parse()

	// The module's zap logger writes to fd 1, hard-wired at package init. Keep the real
	// stdout for our JSON line and point fd 1 at stderr (or the log file).
	out, err := redirectStdout(o.logFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "wp-bench: %v\n", err)
		os.Exit(2)
	}
	if err := validate(&o); err != nil {
		fmt.Fprintf(os.Stderr, "wp-bench: %v\n", err)
		os.Exit(2)
	}

	res, err := run(&o)
	if err != nil {
		res.Error = err.Error()
		if res.Errors == 0 {
			res.Errors = 1
		}
		fmt.Fprintf(os.Stderr, "wp-bench: %v\n", err)
	}
	line, _ := json.Marshal(res)
	line = append(line, '\n')
	_, _ = out.Write(line)
	_ = out.Close()
	if res.Errors != 0 {
		os.Exit(1)
	}
}

func validate(o *options) error {
	if o.mode != "local" && o.mode != "minio" {
		return fmt.Errorf("-mode must be local or minio, got %q", o.mode)
	}
	if o.data == "" {
		return errors.New("-data is required")
	}
	if o.etcd == "" {
		return errors.New("-etcd is required (the Go client keeps its metadata in etcd)")
	}
	if o.mode == "minio" && (o.s3Endpoint == "" || o.s3Access == "" || o.s3Secret == "") {
		return errors.New("minio mode needs -s3-endpoint, -s3-access-key and -s3-secret-key")
	}
	if o.entrySize <= 0 || o.entries <= 0 || o.inFlight <= 0 || o.warmup < 0 {
		return errors.New("-entry-size, -entries and -in-flight must be positive, -warmup non-negative")
	}
	abs, err := filepath.Abs(o.data)
	if err != nil {
		return err
	}
	o.data = abs
	return os.MkdirAll(o.data, 0o755)
}

// redirectStdout returns a file for the real stdout and makes fd 1 a copy of stderr (or
// of the given log file) so that nothing else can write to the real stdout.
func redirectStdout(logFile string) (*os.File, error) {
	saved, err := syscall.Dup(1)
	if err != nil {
		return nil, fmt.Errorf("dup stdout: %w", err)
	}
	target := 2
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		target = int(f.Fd())
		defer f.Close()
	}
	if err := syscall.Dup3(target, 1, 0); err != nil {
		return nil, fmt.Errorf("redirect stdout: %w", err)
	}
	return os.NewFile(uintptr(saved), "stdout"), nil
}

func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == modulePath {
				if d.Replace != nil {
					return d.Replace.Version
				}
				return d.Version
			}
		}
	}
	return "unknown"
}

// writeConfig writes the woodpecker.yaml overlay (on top of the module's built-in
// defaults) into the data directory and returns its path.
func writeConfig(o *options) (string, error) {
	var endpoints []string
	for _, e := range strings.Split(o.etcd, ",") {
		if e = strings.TrimSpace(e); e != "" {
			endpoints = append(endpoints, strconv.Quote(e))
		}
	}
	storageType := "local"
	minio := ""
	if o.mode == "minio" {
		storageType = "minio"
		ep := o.s3Endpoint
		useSSL := false
		if strings.Contains(ep, "://") {
			u, err := url.Parse(ep)
			if err != nil {
				return "", fmt.Errorf("-s3-endpoint: %w", err)
			}
			useSSL = u.Scheme == "https"
			ep = u.Host
		}
		host, portStr, found := strings.Cut(ep, ":")
		port := 80
		if useSSL {
			port = 443
		}
		if found {
			p, err := strconv.Atoi(portStr)
			if err != nil {
				return "", fmt.Errorf("-s3-endpoint port: %w", err)
			}
			port = p
		}
		minio = fmt.Sprintf(`minio:
  address: %s
  port: %d
  accessKeyID: %s
  secretAccessKey: %s
  useSSL: %t
  bucketName: %s
  createBucket: true
  rootPath: %s
  region: %s
  useIAM: false
  cloudProvider: aws
`, strconv.Quote(host), port, strconv.Quote(o.s3Access), strconv.Quote(o.s3Secret), useSSL,
			strconv.Quote(o.s3Bucket), strconv.Quote(o.s3RootPath), strconv.Quote(o.s3Region))
	}
	yaml := fmt.Sprintf(`# written by wp-bench; overlay on the module's built-in defaults
woodpecker:
  client:
    segmentAppend:
      queueSize: 10000
      maxRetries: 3
    segmentRollingPolicy:
      maxSize: %s
      maxInterval: 10m
      maxBlocks: %d
    auditor:
      maxInterval: 10s
  logstore:
    segmentSyncPolicy:
      maxInterval: %s
      maxIntervalForLocalStorage: %s
      maxBytes: %s
      maxEntries: %d
      maxFlushRetries: 5
      retryInterval: 1000ms
      maxFlushSize: %s
      maxFlushThreads: %d
    segmentReadPolicy:
      maxBatchSize: 16M
      maxFetchThreads: 32
    fencePolicy:
      conditionWrite: %s
  storage:
    type: %s
    rootPath: %s
log:
  level: %s
  stdout: true
etcd:
  endpoints: [%s]
%s`, o.segMaxSize, o.segMaxBlks, o.syncMaxIntv, o.syncLocIntv, o.syncMaxByte, o.syncMaxEnt, o.flushMax, o.flushThr,
		o.condWrite, storageType, strconv.Quote(o.data), o.logLevel,
		strings.Join(endpoints, ", "), minio)
	path := filepath.Join(o.data, "wp-bench.woodpecker.yaml")
	return path, os.WriteFile(path, []byte(yaml), 0o600)
}

func run(o *options) (result, error) {
	res := result{
		System:    "go-woodpecker",
		Version:   moduleVersion(),
		Mode:      o.mode,
		EntrySize: o.entrySize,
		Entries:   o.entries,
		InFlight:  o.inFlight,
		Warmup:    o.warmup,
		Log:       fmt.Sprintf("%s-%d-%d", o.logName, time.Now().UnixNano(), os.Getpid()),
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	cfgPath, err := writeConfig(o)
	if err != nil {
		return res, err
	}
	cfg, err := config.NewConfiguration(cfgPath)
	if err != nil {
		return res, fmt.Errorf("load %s: %w", cfgPath, err)
	}
	client, err := woodpecker.NewEmbedClientFromConfig(ctx, cfg)
	if err != nil {
		return res, fmt.Errorf("embedded client: %w", err)
	}
	defer func() {
		if err := client.Close(context.Background()); err != nil {
			fmt.Fprintf(os.Stderr, "wp-bench: client close: %v\n", err)
		}
		if err := woodpecker.StopEmbedLogStore(); err != nil {
			fmt.Fprintf(os.Stderr, "wp-bench: stop embedded log store: %v\n", err)
		}
	}()

	if err := client.CreateLog(ctx, res.Log); err != nil {
		return res, fmt.Errorf("create log %s: %w", res.Log, err)
	}
	handle, err := client.OpenLog(ctx, res.Log)
	if err != nil {
		return res, fmt.Errorf("open log %s: %w", res.Log, err)
	}
	writer, err := handle.OpenLogWriter(ctx)
	if err != nil {
		return res, fmt.Errorf("open writer: %w", err)
	}

	total := o.warmup + o.entries
	gen := newPayloads(o.entrySize)
	sums := make([]uint32, total)
	ids := make([]*wplog.LogMessageId, total)

	if o.warmup > 0 {
		if _, _, err := writeWindow(ctx, writer, gen, 0, o.warmup, o.inFlight, sums, ids); err != nil {
			_ = writer.Close(context.Background())
			res.Errors = 1
			return res, fmt.Errorf("warmup: %w", err)
		}
	}
	lats, elapsed, werr := writeWindow(ctx, writer, gen, o.warmup, total, o.inFlight, sums, ids)
	res.WriteSeconds = elapsed.Seconds()
	bytes := float64(o.entries) * float64(o.entrySize)
	res.WriteMiBs = bytes / (1 << 20) / res.WriteSeconds
	res.WriteEntriesS = float64(o.entries) / res.WriteSeconds
	res.Lat = summarize(lats)
	t0 := time.Now()
	cerr := writer.Close(ctx)
	res.CloseSeconds = time.Since(t0).Seconds()
	if werr != nil {
		res.Errors = 1
		return res, werr
	}
	if cerr != nil {
		return res, fmt.Errorf("close writer: %w", cerr)
	}

	// Read everything back (warm-up entries included) from the earliest entry.
	earliest := wplog.EarliestLogMessageID()
	reader, err := handle.OpenLogReader(ctx, &earliest, "wp-bench-reader")
	if err != nil {
		return res, fmt.Errorf("open reader: %w", err)
	}
	t0 = time.Now()
	var readBytes int64
	for i := 0; i < total; i++ {
		msg, err := reader.ReadNext(ctx)
		if err != nil {
			_ = reader.Close(context.Background())
			return res, fmt.Errorf("read entry %d: %w", i, err)
		}
		if len(msg.Payload) != o.entrySize {
			_ = reader.Close(context.Background())
			return res, fmt.Errorf("read entry %d: %d bytes, want %d", i, len(msg.Payload), o.entrySize)
		}
		if c := crc32.Checksum(msg.Payload, castagnoli); c != sums[i] {
			_ = reader.Close(context.Background())
			return res, fmt.Errorf("read entry %d: crc32c %08x, wrote %08x", i, c, sums[i])
		}
		if msg.Id == nil || msg.Id.SegmentId != ids[i].SegmentId || msg.Id.EntryId != ids[i].EntryId {
			_ = reader.Close(context.Background())
			return res, fmt.Errorf("read entry %d: id %+v, write acknowledged %+v", i, msg.Id, *ids[i])
		}
		readBytes += int64(len(msg.Payload))
		res.ReadEntries++
	}
	res.ReadSeconds = time.Since(t0).Seconds()
	res.ReadMiBs = float64(readBytes) / (1 << 20) / res.ReadSeconds
	if err := reader.Close(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "wp-bench: reader close: %v\n", err)
	}
	return res, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// payloads makes distinct entry contents cheaply: a window of a random pool, with the
// entry index stamped into the first 8 bytes.
type payloads struct {
	size int
	pool []byte
}

const poolSlack = 1 << 16

func newPayloads(size int) *payloads {
	pool := make([]byte, size+poolSlack)
	r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	for i := 0; i+8 <= len(pool); i += 8 {
		binary.LittleEndian.PutUint64(pool[i:], r.Uint64())
	}
	return &payloads{size: size, pool: pool}
}

func (p *payloads) make(i int) []byte {
	off := int((uint64(i) * 0x9E3779B97F4A7C15) >> 48) // 0..65535
	buf := make([]byte, p.size)
	copy(buf, p.pool[off:off+p.size])
	var idx [8]byte
	binary.LittleEndian.PutUint64(idx[:], uint64(i))
	copy(buf, idx[:])
	return buf
}

// writeWindow writes entries [from, to) with at most inFlight outstanding and returns the
// per-write latencies (issue to acknowledgement) and the wall time from the first issue to
// the last acknowledgement. It stops issuing at the first failed write.
func writeWindow(ctx context.Context, w wplog.LogWriter, gen *payloads, from, to, inFlight int,
	sums []uint32, ids []*wplog.LogMessageId) ([]time.Duration, time.Duration, error) {
	n := to - from
	lats := make([]time.Duration, n)
	sem := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return firstErr != nil
	}

	start := time.Now()
	for i := from; i < to; i++ {
		sem <- struct{}{}
		if failed() {
			<-sem
			break
		}
		payload := gen.make(i)
		sums[i] = crc32.Checksum(payload, castagnoli)
		issued := time.Now()
		ch := w.WriteAsync(ctx, &wplog.WriteMessage{Payload: payload})
		wg.Add(1)
		go func(i int, issued time.Time, ch <-chan *wplog.WriteResult) {
			defer wg.Done()
			defer func() { <-sem }()
			var r *wplog.WriteResult
			select {
			case r = <-ch:
			case <-ctx.Done():
				r = &wplog.WriteResult{Err: ctx.Err()}
			}
			lats[i-from] = time.Since(issued)
			if r == nil || r.Err != nil || r.LogMessageId == nil {
				mu.Lock()
				if firstErr == nil {
					if r == nil {
						firstErr = fmt.Errorf("write %d: closed result channel", i)
					} else {
						firstErr = fmt.Errorf("write %d: %v", i, r.Err)
					}
				}
				mu.Unlock()
				return
			}
			ids[i] = r.LogMessageId
		}(i, issued, ch)
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return lats, elapsed, firstErr
	}
	// Acknowledged ids must be strictly increasing in write order.
	for i := from + 1; i < to; i++ {
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
