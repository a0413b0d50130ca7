// wp-service-client: Go Woodpecker's published service-mode client against a LogStore
// cluster, for woodpecker-rs's compatibility tests.
//
// It builds a client with the module's own NewClient (storage.type: service, static
// quorum-buffer-pool seeds, metadata in etcd, object storage for direct reads of sealed
// segments), writes entries through one log writer (segments roll on a small size, so the
// client fences, completes and, through its auditor, compacts segments on the LogStores),
// optionally keeps the writer open until every completed segment is Sealed, then reads
// everything back from the earliest entry and checks ids and payloads. One JSON line on
// stdout says what happened; the module's logs go to stderr.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/zilliztech/woodpecker/common/config"
	"github.com/zilliztech/woodpecker/common/etcd"
	"github.com/zilliztech/woodpecker/proto"
	"github.com/zilliztech/woodpecker/woodpecker"
	wplog "github.com/zilliztech/woodpecker/woodpecker/log"
)

type result struct {
	Log            string  `json:"log"`
	Written        int     `json:"written"`
	Read           int     `json:"read"`
	Segments       int     `json:"segments"`
	Sealed         int     `json:"sealed"`
	SealedRequired bool    `json:"sealed_required"`
	Seconds        float64 `json:"seconds"`
	Error          string  `json:"error,omitempty"`
}

func main() {
	etcdEP := flag.String("etcd", "", "etcd endpoint (http://host:port)")
	s3 := flag.String("s3-endpoint", "", "S3 endpoint (http://host:port)")
	access := flag.String("s3-access", "", "S3 access key")
	secret := flag.String("s3-secret", "", "S3 secret key")
	bucket := flag.String("s3-bucket", "", "bucket")
	root := flag.String("s3-root", "files", "object root path")
	region := flag.String("s3-region", "us-east-1", "S3 region")
	seeds := flag.String("seeds", "", "LogStore gRPC addresses, comma-separated")
	entries := flag.Int("entries", 300, "entries to write")
	size := flag.Int("entry-size", 512, "payload bytes per entry")
	segBytes := flag.String("segment-size", "16k", "segmentRollingPolicy.maxSize")
	waitSealed := flag.Bool("wait-sealed", true, "keep the writer open until completed segments are Sealed")
	inFlight := flag.Int("in-flight", 1, "writes outstanding at once (above 1: WriteAsync, so the client batches them into AddEntries)")
	work := flag.String("work", os.TempDir(), "directory for the generated woodpecker.yaml")
	timeout := flag.Duration("timeout", 3*time.Minute, "overall deadline")
	flag.Parse()

	res := result{Log: fmt.Sprintf("interop-%d", time.Now().UnixNano()), SealedRequired: *waitSealed}
	t0 := time.Now()
	err := run(&res, *etcdEP, *s3, *access, *secret, *bucket, *root, *region, *seeds, *entries, *size, *segBytes, *waitSealed, *inFlight, *work, *timeout)
	res.Seconds = time.Since(t0).Seconds()
	if err != nil {
		res.Error = err.Error()
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	if err != nil {
		os.Exit(1)
	}
}

func payload(i, size int) []byte {
	p := []byte(fmt.Sprintf("entry %06d ", i))
	for len(p) < size {
		p = append(p, byte('a'+i%26))
	}
	return p[:size]
}

func run(res *result, etcdEP, s3, access, secret, bucket, root, region, seeds string, entries, size int, segBytes string, waitSealed bool, inFlight int, work string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	u, err := url.Parse(s3)
	if err != nil {
		return fmt.Errorf("s3 endpoint: %w", err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return fmt.Errorf("s3 endpoint port: %w", err)
	}
	var quoted []string
	for _, s := range strings.Split(seeds, ",") {
		quoted = append(quoted, strconv.Quote(strings.TrimSpace(s)))
	}
	eu, err := url.Parse(etcdEP)
	if err != nil {
		return fmt.Errorf("etcd endpoint: %w", err)
	}
	yaml := fmt.Sprintf(`woodpecker:
  meta:
    type: etcd
    prefix: interop
  client:
    segmentRollingPolicy:
      maxSize: %s
      maxInterval: 10m
    auditor:
      maxInterval: 1s
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
  level: error
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
  rootPath: %s
  region: %s
  cloudProvider: aws
`, segBytes, strings.Join(quoted, ", "), strconv.Quote(eu.Host), strconv.Quote("interop-"+bucket),
		strconv.Quote(u.Hostname()), port, strconv.Quote(access), strconv.Quote(secret),
		strconv.Quote(bucket), strconv.Quote(root), strconv.Quote(region))
	path := filepath.Join(work, "wp-service-client.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		return err
	}
	cfg, err := config.NewConfiguration(path)
	if err != nil {
		return fmt.Errorf("load %s: %w", path, err)
	}
	etcdCli, err := etcd.GetRemoteEtcdClient([]string{eu.Host})
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcdCli.Close()
	client, err := woodpecker.NewClient(ctx, cfg, etcdCli, false)
	if err != nil {
		return fmt.Errorf("service-mode client: %w", err)
	}
	defer client.Close(context.Background())

	if err := client.CreateLog(ctx, res.Log); err != nil {
		return fmt.Errorf("create log: %w", err)
	}
	handle, err := client.OpenLog(ctx, res.Log)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	writer, err := handle.OpenLogWriter(ctx)
	if err != nil {
		return fmt.Errorf("open writer: %w", err)
	}
	ids := make([]*wplog.LogMessageId, entries)
	msg := func(i int) *wplog.WriteMessage {
		return &wplog.WriteMessage{Payload: payload(i, size), Properties: map[string]string{"i": strconv.Itoa(i)}}
	}
	if inFlight <= 1 {
		for i := 0; i < entries; i++ {
			r := writer.Write(ctx, msg(i))
			if r.Err != nil {
				return fmt.Errorf("write %d: %w", i, r.Err)
			}
			ids[i] = r.LogMessageId
			res.Written++
		}
	} else {
		for start := 0; start < entries; start += inFlight {
			end := min(start+inFlight, entries)
			chans := make([]<-chan *wplog.WriteResult, 0, end-start)
			for i := start; i < end; i++ {
				chans = append(chans, writer.WriteAsync(ctx, msg(i)))
			}
			for k, ch := range chans {
				r := <-ch
				if r.Err != nil {
					return fmt.Errorf("write %d: %w", start+k, r.Err)
				}
				ids[start+k] = r.LogMessageId
				res.Written++
			}
		}
	}
	segs, err := handle.GetSegments(ctx)
	if err != nil {
		return fmt.Errorf("segments: %w", err)
	}
	res.Segments = len(segs)
	if waitSealed {
		// The auditor runs while a writer is open: every segment but the active one must end
		// Sealed (fenced, completed and compacted on the LogStores).
		for {
			segs, err = handle.GetSegments(ctx)
			if err != nil {
				return fmt.Errorf("segments: %w", err)
			}
			sealed, last := 0, int64(-1)
			for id := range segs {
				if id > last {
					last = id
				}
			}
			for id, s := range segs {
				if id != last && s.Metadata.State == proto.SegmentState_Sealed {
					sealed++
				}
			}
			res.Sealed = sealed
			if sealed >= len(segs)-1 && len(segs) > 1 {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for sealed segments: %d of %d sealed", sealed, len(segs)-1)
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	if err := writer.Close(ctx); err != nil {
		return fmt.Errorf("close writer: %w", err)
	}
	earliest := wplog.EarliestLogMessageID()
	reader, err := handle.OpenLogReader(ctx, &earliest, "interop-reader")
	if err != nil {
		return fmt.Errorf("open reader: %w", err)
	}
	defer reader.Close(context.Background())
	for i := 0; i < entries; i++ {
		msg, err := reader.ReadNext(ctx)
		if err != nil {
			return fmt.Errorf("read %d: %w", i, err)
		}
		if string(msg.Payload) != string(payload(i, size)) {
			return fmt.Errorf("read %d: payload differs", i)
		}
		if msg.Properties["i"] != strconv.Itoa(i) {
			return fmt.Errorf("read %d: properties %v", i, msg.Properties)
		}
		if msg.Id.SegmentId != ids[i].SegmentId || msg.Id.EntryId != ids[i].EntryId {
			return fmt.Errorf("read %d: id %d/%d, written as %d/%d", i, msg.Id.SegmentId, msg.Id.EntryId, ids[i].SegmentId, ids[i].EntryId)
		}
		res.Read++
	}
	return nil
}
