// Command walbench appends messages to one pchannel through a Milvus 2.6 walimpls
// implementation, as Milvus's streaming node does (concurrent Append calls, each returning
// once the message is durable), and prints one JSON object with the throughput and the
// per-append latency.
//
//	walbench -wal woodpeckerrs -addr 127.0.0.1:9096 -messages 20000 -size 1024 -inflight 5
//	walbench -wal kafka -addr 127.0.0.1:9092 ...   # Milvus's own Kafka WAL (librdkafka 1.9)
//
// woodpeckerrs is this repository's walimpls package (woodpecker serve's --milvus-addr);
// kafka is Milvus's Kafka WAL with Milvus's producer settings (zstd, linger.ms 5, acks=all),
// pointed at a Kafka listener through kafka.brokerList. Every message carries the same six
// properties, shaped like Milvus's message headers (about 120 bytes), and a payload of
// random bytes. A warm-up of unmeasured appends runs first (topic creation, connections).
// The benchmark driver is the `milvus_wal` binary of the benches crate.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/milvus-io/milvus/pkg/v2/streaming/util/message"
	"github.com/milvus-io/milvus/pkg/v2/streaming/util/types"
	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls"
	_ "github.com/milvus-io/milvus/pkg/v2/streaming/walimpls/impls/kafka"
	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls/registry"
	"github.com/milvus-io/milvus/pkg/v2/util/paramtable"

	"github.com/woodpecker-rs/woodpecker-rs/milvus-adapter/go/woodpeckerrs"
)

type result struct {
	WAL          string  `json:"wal"`
	Messages     int     `json:"messages"`
	MessageBytes int     `json:"message_bytes"`
	InFlight     int     `json:"in_flight"`
	Bytes        int64   `json:"bytes"`
	Seconds      float64 `json:"seconds"`
	MiBPerS      float64 `json:"mib_per_s"`
	MsgsPerS     float64 `json:"messages_per_s"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	P999Ms       float64 `json:"p999_ms"`
	MaxMs        float64 `json:"max_ms"`
	MeanMs       float64 `json:"mean_ms"`
}

func main() {
	wal := flag.String("wal", "woodpeckerrs", "woodpeckerrs or kafka")
	addr := flag.String("addr", woodpeckerrs.DefaultAddress, "the server: --milvus-addr for woodpeckerrs, the Kafka listener for kafka")
	messages := flag.Int("messages", 20000, "measured appends")
	warmup := flag.Int("warmup", 200, "unmeasured appends first")
	size := flag.Int("size", 1024, "payload bytes per message")
	inFlight := flag.Int("inflight", 5, "appends in flight at most")
	pchannel := flag.String("pchannel", "", "the pchannel (default: a fresh name)")
	flag.Parse()
	if err := run(*wal, *addr, *messages, *warmup, *size, *inFlight, *pchannel); err != nil {
		fmt.Fprintf(os.Stderr, "walbench: %v\n", err)
		os.Exit(1)
	}
}

func run(wal, addr string, messages, warmup, size, inFlight int, pchannel string) error {
	if messages <= 0 || size < 0 || inFlight <= 0 || warmup < 0 {
		return fmt.Errorf("-messages and -inflight must be positive, -size and -warmup not negative")
	}
	if pchannel == "" {
		pchannel = fmt.Sprintf("walbench_%s_%d", wal, time.Now().UnixNano())
	}
	var builder walimpls.OpenerBuilderImpls
	switch wal {
	case "woodpeckerrs":
		paramtable.Init()
		builder = woodpeckerrs.NewBuilder(woodpeckerrs.Config{Address: addr})
	case "kafka":
		// Milvus's configuration reads kafka.brokerList from the environment.
		if err := os.Setenv("KAFKA_BROKERLIST", addr); err != nil {
			return err
		}
		paramtable.Init()
		builder = registry.MustGetBuilder(message.WALNameKafka)
	default:
		return fmt.Errorf("-wal %q: woodpeckerrs or kafka", wal)
	}
	opener, err := builder.Build()
	if err != nil {
		return fmt.Errorf("building the %s opener: %w", wal, err)
	}
	defer opener.Close()
	ctx := context.Background()
	w, err := opener.Open(ctx, &walimpls.OpenOption{Channel: types.PChannelInfo{
		Name: pchannel, Term: 1, AccessMode: types.AccessModeRW,
	}})
	if err != nil {
		return fmt.Errorf("opening %s: %w", pchannel, err)
	}
	defer w.Close()

	payload := make([]byte, size)
	rand.New(rand.NewSource(1)).Read(payload)
	newMessage := func(i int) message.MutableMessage {
		return message.NewMutableMessageBeforeAppend(payload, map[string]string{
			"_v":  "2",
			"_t":  "1",
			"_tt": strconv.FormatUint(uint64(time.Now().UnixNano())<<18, 10),
			"_vc": pchannel + "_v0",
			"_lc": "CAEQKg==",
			"_wt": "1",
			"i":   strconv.Itoa(i),
		})
	}
	// appendAll appends n messages with at most inFlight outstanding and returns each
	// append's latency.
	appendAll := func(n int) ([]time.Duration, error) {
		lat := make([]time.Duration, n)
		errs := make(chan error, 1)
		sem := make(chan struct{}, inFlight)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			sem <- struct{}{}
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				defer func() { <-sem }()
				start := time.Now()
				if _, err := w.Append(ctx, newMessage(i)); err != nil {
					select {
					case errs <- fmt.Errorf("append %d: %w", i, err):
					default:
					}
					return
				}
				lat[i] = time.Since(start)
			}(i)
		}
		wg.Wait()
		select {
		case err := <-errs:
			return nil, err
		default:
			return lat, nil
		}
	}
	if warmup > 0 {
		if _, err := appendAll(warmup); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	t0 := time.Now()
	lat, err := appendAll(messages)
	if err != nil {
		return err
	}
	seconds := time.Since(t0).Seconds()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		rank := int(p*float64(len(lat)) + 0.999999)
		if rank < 1 {
			rank = 1
		}
		if rank > len(lat) {
			rank = len(lat)
		}
		return float64(lat[rank-1]) / 1e6
	}
	var total time.Duration
	for _, l := range lat {
		total += l
	}
	bytes := int64(messages) * int64(size)
	out := result{
		WAL: wal, Messages: messages, MessageBytes: size, InFlight: inFlight, Bytes: bytes,
		Seconds: seconds, MiBPerS: float64(bytes) / (1 << 20) / seconds, MsgsPerS: float64(messages) / seconds,
		P50Ms: pct(0.50), P99Ms: pct(0.99), P999Ms: pct(0.999), MaxMs: float64(lat[len(lat)-1]) / 1e6,
		MeanMs: float64(total) / float64(len(lat)) / 1e6,
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
