// wp-compat: one operation of the published Go Woodpecker client per run, for the
// compatibility tests of woodpecker-rs (compat-tests/tests/go_woodpecker.rs).
//
// Each run is a fresh embedded client (metadata in etcd, segments in an S3-compatible
// store): it connects, does one thing, closes, and prints one JSON line on stdout,
// {"ok":true,...} or {"ok":false,"error":"..."} with exit status 1. What the module
// itself logs goes to stderr.
//
//	wp-compat [flags] version
//	wp-compat [flags] list
//	wp-compat [flags] exists LOG
//	wp-compat [flags] create LOG
//	wp-compat [flags] write LOG PAYLOAD...   (one entry per payload, then the writer closes)
//	wp-compat [flags] read LOG COUNT         (COUNT entries from the earliest)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zilliztech/woodpecker/common/config"
	"github.com/zilliztech/woodpecker/woodpecker"
	wplog "github.com/zilliztech/woodpecker/woodpecker/log"
)

const modulePath = "github.com/zilliztech/woodpecker"

type flags struct {
	data       string
	etcd       string
	etcdRoot   string
	metaPrefix string
	endpoint   string
	accessKey  string
	secretKey  string
	bucket     string
	rootPath   string
	logLevel   string
	timeout    time.Duration
}

type entry struct {
	Segment int64  `json:"segment"`
	Entry   int64  `json:"entry"`
	Payload string `json:"payload"`
}

type reply struct {
	Ok      bool     `json:"ok"`
	Error   string   `json:"error,omitempty"`
	Version string   `json:"version,omitempty"`
	Logs    []string `json:"logs,omitempty"`
	Exists  *bool    `json:"exists,omitempty"`
	Entries []entry  `json:"entries,omitempty"`
}

func main() {
	var f flags
	flag.StringVar(&f.data, "data", "", "working directory (config file, storage rootPath)")
	flag.StringVar(&f.etcd, "etcd", "", "etcd endpoint host:port")
	flag.StringVar(&f.etcdRoot, "etcd-root-path", "", "etcd.rootPath (empty: the module's default)")
	flag.StringVar(&f.metaPrefix, "meta-prefix", "", "woodpecker.meta.prefix (empty: the module's default)")
	flag.StringVar(&f.endpoint, "s3-endpoint", "", "S3 endpoint host:port (http)")
	flag.StringVar(&f.accessKey, "s3-access-key", "", "S3 access key")
	flag.StringVar(&f.secretKey, "s3-secret-key", "", "S3 secret key")
	flag.StringVar(&f.bucket, "bucket", "", "bucket (created if missing)")
	flag.StringVar(&f.rootPath, "root-path", "files", "minio.rootPath: key prefix inside the bucket")
	flag.StringVar(&f.logLevel, "log-level", "warn", "module log level")
	flag.DurationVar(&f.timeout, "timeout", 2*time.Minute, "give up after this long")
	flag.Parse()

	out, err := keepStdout()
	if err != nil {
		fmt.Fprintf(os.Stderr, "wp-compat: %v\n", err)
		os.Exit(2)
	}
	res, err := run(&f, flag.Args())
	if err != nil {
		res = reply{Error: err.Error()}
	} else {
		res.Ok = true
	}
	line, _ := json.Marshal(res)
	_, _ = out.Write(append(line, '\n'))
	_ = out.Close()
	if !res.Ok {
		os.Exit(1)
	}
}

// keepStdout returns the real stdout and points fd 1 at stderr: the module's logger writes
// to fd 1, and stdout must carry only the reply.
func keepStdout() (*os.File, error) {
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

func run(f *flags, args []string) (reply, error) {
	if len(args) == 0 {
		return reply{}, errors.New("no command (version, list, exists, create, write, read)")
	}
	if args[0] == "version" {
		return reply{Version: moduleVersion()}, nil
	}
	if f.data == "" || f.etcd == "" || f.endpoint == "" || f.bucket == "" {
		return reply{}, errors.New("-data, -etcd, -s3-endpoint and -bucket are required")
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	cfgPath, err := writeConfig(f)
	if err != nil {
		return reply{}, err
	}
	cfg, err := config.NewConfiguration(cfgPath)
	if err != nil {
		return reply{}, fmt.Errorf("load %s: %w", cfgPath, err)
	}
	if err := setEndpoints(&cfg.Etcd, f.etcd); err != nil {
		return reply{}, err
	}
	client, err := woodpecker.NewEmbedClientFromConfig(ctx, cfg)
	if err != nil {
		return reply{}, fmt.Errorf("embedded client: %w", err)
	}
	defer func() {
		_ = client.Close(context.Background())
		_ = woodpecker.StopEmbedLogStore()
	}()
	return command(ctx, client, args)
}

func command(ctx context.Context, client woodpecker.Client, args []string) (reply, error) {
	need := func(n int) error {
		if len(args) < n+1 {
			return fmt.Errorf("%s needs %d argument(s)", args[0], n)
		}
		return nil
	}
	switch args[0] {
	case "list":
		logs, err := client.GetAllLogs(ctx)
		if err != nil {
			return reply{}, fmt.Errorf("list logs: %w", err)
		}
		if logs == nil {
			logs = []string{}
		}
		return reply{Logs: logs}, nil
	case "exists":
		if err := need(1); err != nil {
			return reply{}, err
		}
		ok, err := client.LogExists(ctx, args[1])
		if err != nil {
			return reply{}, fmt.Errorf("log exists: %w", err)
		}
		return reply{Exists: &ok}, nil
	case "create":
		if err := need(1); err != nil {
			return reply{}, err
		}
		if err := client.CreateLog(ctx, args[1]); err != nil {
			return reply{}, fmt.Errorf("create log %s: %w", args[1], err)
		}
		return reply{}, nil
	case "write":
		if err := need(2); err != nil {
			return reply{}, err
		}
		return write(ctx, client, args[1], args[2:])
	case "read":
		if err := need(2); err != nil {
			return reply{}, err
		}
		n, err := strconv.Atoi(args[2])
		if err != nil || n < 0 {
			return reply{}, fmt.Errorf("read: bad count %q", args[2])
		}
		return read(ctx, client, args[1], n)
	default:
		return reply{}, fmt.Errorf("unknown command %q", args[0])
	}
}

func write(ctx context.Context, client woodpecker.Client, name string, payloads []string) (reply, error) {
	handle, err := client.OpenLog(ctx, name)
	if err != nil {
		return reply{}, fmt.Errorf("open log %s: %w", name, err)
	}
	writer, err := handle.OpenLogWriter(ctx)
	if err != nil {
		return reply{}, fmt.Errorf("open writer of %s: %w", name, err)
	}
	var res reply
	for _, p := range payloads {
		r := writer.Write(ctx, &wplog.WriteMessage{Payload: []byte(p)})
		if r == nil || r.Err != nil || r.LogMessageId == nil {
			_ = writer.Close(context.Background())
			if r == nil {
				return reply{}, fmt.Errorf("write %q: no result", p)
			}
			return reply{}, fmt.Errorf("write %q: %v", p, r.Err)
		}
		res.Entries = append(res.Entries, entry{Segment: r.LogMessageId.SegmentId, Entry: r.LogMessageId.EntryId, Payload: p})
	}
	if err := writer.Close(ctx); err != nil {
		return reply{}, fmt.Errorf("close writer of %s: %w", name, err)
	}
	return res, nil
}

func read(ctx context.Context, client woodpecker.Client, name string, n int) (reply, error) {
	handle, err := client.OpenLog(ctx, name)
	if err != nil {
		return reply{}, fmt.Errorf("open log %s: %w", name, err)
	}
	earliest := wplog.EarliestLogMessageID()
	reader, err := handle.OpenLogReader(ctx, &earliest, "wp-compat")
	if err != nil {
		return reply{}, fmt.Errorf("open reader of %s: %w", name, err)
	}
	defer func() { _ = reader.Close(context.Background()) }()
	res := reply{Entries: []entry{}}
	for i := 0; i < n; i++ {
		msg, err := reader.ReadNext(ctx)
		if err != nil {
			return reply{}, fmt.Errorf("read entry %d of %s: %w", i, name, err)
		}
		res.Entries = append(res.Entries, entry{Segment: msg.Id.SegmentId, Entry: msg.Id.EntryId, Payload: string(msg.Payload)})
	}
	return res, nil
}

// setEndpoints sets etcd.endpoints, a comma-separated string up to v0.1.13 and a list later.
func setEndpoints(etcd any, endpoint string) error {
	field := reflect.ValueOf(etcd).Elem().FieldByName("Endpoints")
	switch {
	case field.Kind() == reflect.String:
		field.SetString(endpoint)
	case field.Kind() == reflect.Slice && field.Type().Elem().Kind() == reflect.String:
		field.Set(reflect.ValueOf([]string{endpoint}))
	default:
		return fmt.Errorf("etcd.endpoints has an unexpected type %s", field.Type())
	}
	return nil
}

// writeConfig writes the woodpecker.yaml this run loads over the module's built-in defaults,
// in the subset of the schema every pinned version reads alike (etcd.endpoints, whose type
// changed, is set after loading).
func writeConfig(f *flags) (string, error) {
	host, port, found := strings.Cut(f.endpoint, ":")
	if !found {
		port = "80"
	}
	if _, err := strconv.Atoi(port); err != nil {
		return "", fmt.Errorf("-s3-endpoint port: %w", err)
	}
	meta := ""
	if f.metaPrefix != "" {
		meta = "\n    prefix: " + strconv.Quote(f.metaPrefix)
	}
	etcdRoot := " {}"
	if f.etcdRoot != "" {
		etcdRoot = "\n  rootPath: " + strconv.Quote(f.etcdRoot)
	}
	yaml := fmt.Sprintf(`# written by wp-compat
woodpecker:
  meta:
    type: etcd%s
  logstore:
    segmentSyncPolicy:
      maxInterval: 200
  storage:
    type: minio
    rootPath: %s
log:
  level: %s
  stdout: true
etcd:%s
minio:
  address: %s
  port: %s
  accessKeyID: %s
  secretAccessKey: %s
  useSSL: false
  bucketName: %s
  createBucket: true
  rootPath: %s
  useIAM: false
  cloudProvider: aws
`, meta, strconv.Quote(f.data), f.logLevel, etcdRoot,
		strconv.Quote(host), port, strconv.Quote(f.accessKey), strconv.Quote(f.secretKey),
		strconv.Quote(f.bucket), strconv.Quote(f.rootPath))
	if err := os.MkdirAll(f.data, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(f.data, "wp-compat.woodpecker.yaml")
	return path, os.WriteFile(path, []byte(yaml), 0o600)
}
