// franz-go: an independent Go Kafka client against woodpecker serve.
//
// Usage: franz-go <bootstrap> <topic> <group> <records-per-phase>
//
// It creates a three-partition topic, produces a phase of keyed records (idempotent,
// acks=all), consumes them in a consumer group, then consumes a second phase produced while
// the consumer polls, so that fetches in an open fetch session (KIP-227) return new data. It
// prints one line `RESULT <json>`: counts, the Kafka version franz-go infers from the
// broker's ApiVersions, and the failures it found (lost, duplicated or reordered records);
// it exits 0 only when there are none.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

type summary struct {
	Produced     int      `json:"produced"`
	Consumed     int      `json:"consumed"`
	Duplicates   int      `json:"duplicates"`
	OutOfOrder   int      `json:"out_of_order"`
	Partitions   int      `json:"partitions"`
	VersionGuess string   `json:"version_guess"`
	Failures     []string `json:"failures"`
}

var out = summary{Failures: []string{}}

func report() {
	line, _ := json.Marshal(out)
	fmt.Println("RESULT " + string(line))
}

// fail ends the run with a failure.
func fail(format string, args ...any) {
	out.Failures = append(out.Failures, fmt.Sprintf(format, args...))
	report()
	os.Exit(1)
}

func main() {
	if len(os.Args) != 5 {
		fail("usage: franz-go <bootstrap> <topic> <group> <records-per-phase>")
	}
	bootstrap, topic, group := os.Args[1], os.Args[2], os.Args[3]
	perPhase, err := strconv.Atoi(os.Args[4])
	if err != nil || perPhase <= 0 {
		fail("bad record count %q", os.Args[4])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	admin, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		fail("client: %v", err)
	}
	defer admin.Close()
	versions, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, admin)
	if err != nil {
		fail("ApiVersions: %v", err)
	}
	guess := kversion.FromApiVersionsResponse(versions).VersionGuess()
	create := kmsg.NewPtrCreateTopicsRequest()
	ct := kmsg.NewCreateTopicsRequestTopic()
	ct.Topic = topic
	ct.NumPartitions = 3
	ct.ReplicationFactor = 1
	create.Topics = append(create.Topics, ct)
	created, err := create.RequestWith(ctx, admin)
	if err != nil {
		fail("CreateTopics: %v", err)
	}
	if code := created.Topics[0].ErrorCode; code != 0 {
		fail("CreateTopics: error code %d", code)
	}

	producer, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		fail("producer: %v", err)
	}
	defer producer.Close()
	produce := func(phase int) {
		records := make([]*kgo.Record, 0, perPhase)
		for i := 0; i < perPhase; i++ {
			records = append(records, &kgo.Record{
				Topic: topic,
				Key:   []byte(fmt.Sprintf("k%d", i)),
				Value: []byte(fmt.Sprintf("%d-%d", phase, i)),
			})
		}
		if err := producer.ProduceSync(ctx, records...).FirstErr(); err != nil {
			fail("produce phase %d: %v", phase, err)
		}
	}
	produce(1)

	consumer, err := kgo.NewClient(
		kgo.SeedBrokers(bootstrap),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	if err != nil {
		fail("consumer: %v", err)
	}
	defer consumer.Close()

	seen := map[string]bool{}
	last := map[int32]int64{}
	out.Produced = 2 * perPhase
	out.VersionGuess = guess
	poll := func(until int) {
		for out.Consumed+out.Duplicates < until {
			fetches := consumer.PollFetches(ctx)
			if ctx.Err() != nil {
				fail("timed out with %d of %d records", out.Consumed, until)
			}
			fetches.EachError(func(t string, p int32, err error) {
				fail("fetch %s[%d]: %v", t, p, err)
			})
			fetches.EachRecord(func(r *kgo.Record) {
				if prev, ok := last[r.Partition]; ok && r.Offset <= prev {
					out.OutOfOrder++
				}
				last[r.Partition] = r.Offset
				if seen[string(r.Value)] {
					out.Duplicates++
				} else {
					seen[string(r.Value)] = true
					out.Consumed++
				}
			})
		}
	}
	poll(perPhase)
	go produce(2)
	poll(2 * perPhase)
	if err := consumer.CommitUncommittedOffsets(ctx); err != nil {
		fail("commit: %v", err)
	}
	out.Partitions = len(last)
	if out.Duplicates > 0 {
		out.Failures = append(out.Failures, fmt.Sprintf("%d records delivered twice", out.Duplicates))
	}
	if out.OutOfOrder > 0 {
		out.Failures = append(out.Failures, fmt.Sprintf("%d records out of offset order", out.OutOfOrder))
	}
	if out.Partitions != 3 {
		out.Failures = append(out.Failures, fmt.Sprintf("records came from %d partitions, not 3", out.Partitions))
	}
	report()
	if len(out.Failures) > 0 {
		os.Exit(1)
	}
}
