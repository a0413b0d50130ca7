package woodpeckerrs

// What Milvus's conformance framework does not check, against real `woodpecker serve`
// processes: payloads and properties byte for byte, every deliver policy, term fencing
// between two servers on one etcd, a restart of the server between terms, truncation down
// to the data on disk, and read-only handles.

import (
	"bytes"
	"context"
	"encoding/base64"
	stderrors "errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus/pkg/v2/streaming/util/message"
	"github.com/milvus-io/milvus/pkg/v2/streaming/util/options"
	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls"

	"github.com/woodpecker-rs/woodpecker-rs/milvus-adapter/go/walpb"
)

func msg(payload []byte, props map[string]string) message.MutableMessage {
	return message.NewMutableMessageBeforeAppend(payload, props)
}

// appendAll appends the messages concurrently (5 at a time, as Milvus's framework) and
// returns their ids in the messages' order.
func appendAll(t *testing.T, w walimpls.WALImpls, msgs []message.MutableMessage) []message.MessageID {
	t.Helper()
	ids := make([]message.MessageID, len(msgs))
	errs := make([]error, len(msgs))
	sem := make(chan struct{}, 5)
	var wg sync.WaitGroup
	for i := range msgs {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			ids[i], errs[i] = w.Append(testCtx(t), msgs[i])
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "append %d", i)
		require.NotNil(t, ids[i])
	}
	return ids
}

// readN reads n messages from a scanner (failing after a minute).
func readN(t *testing.T, s walimpls.ScannerImpls, n int) []message.ImmutableMessage {
	t.Helper()
	out := make([]message.ImmutableMessage, 0, n)
	timeout := time.After(time.Minute)
	for len(out) < n {
		select {
		case m, ok := <-s.Chan():
			if !ok {
				t.Fatalf("scanner ended after %d of %d messages: %v", len(out), n, s.Error())
			}
			out = append(out, m)
		case <-timeout:
			t.Fatalf("read %d of %d messages in a minute", len(out), n)
		}
	}
	return out
}

func scan(t *testing.T, w walimpls.ROWALImpls, name string, policy options.DeliverPolicy) walimpls.ScannerImpls {
	t.Helper()
	s, err := w.Read(testCtx(t), walimpls.ReadOption{Name: name, DeliverPolicy: policy})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func requireIDs(t *testing.T, want []message.MessageID, got []message.ImmutableMessage) {
	t.Helper()
	require.Equal(t, len(want), len(got))
	for i := range want {
		require.True(t, want[i].EQ(got[i].MessageID()), "message %d: want %s, got %s", i, want[i], got[i].MessageID())
	}
}

func requireFenced(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	require.True(t, errors.Is(err, walimpls.ErrFenced), "not ErrFenced: %v", err)
	require.True(t, stderrors.Is(err, walimpls.ErrFenced), "not ErrFenced for the standard errors.Is: %v", err)
}

func TestPayloadsAndPropertiesComeBackExactly(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	o := s.opener()
	ctx := testCtx(t)
	w, err := o.Open(ctx, rw(pchannel("payloads"), 1))
	require.NoError(t, err)
	defer w.Close()

	r := rand.New(rand.NewSource(7))
	blob := func(n int) []byte {
		b := make([]byte, n)
		r.Read(b)
		return b
	}
	long := base64.StdEncoding.EncodeToString(blob(768)) // about 1 KiB, as Milvus's headers
	var msgs []message.MutableMessage
	for i, size := range []int{0, 1, 17, 1000, 4096, 1 << 20, 8 << 20, 0, 3} {
		msgs = append(msgs, msg(blob(size), map[string]string{
			"i":      strconv.Itoa(i),
			"empty":  "",
			"long":   long,
			"名前":     "値 ✓",
			"binary": string([]byte{0x00, 0x01, 0x7f}),
		}))
	}
	ids := appendAll(t, w, msgs)
	for i := 1; i < len(ids); i++ {
		require.False(t, ids[i].EQ(ids[i-1]), "one id per message")
	}

	got := readN(t, scan(t, w, "exact", options.DeliverPolicyAll()), len(msgs))
	byIndex := map[string]message.ImmutableMessage{}
	for i := 1; i < len(got); i++ {
		require.True(t, got[i-1].MessageID().LT(got[i].MessageID()), "read order")
	}
	for _, m := range got {
		i, _ := m.Properties().Get("i")
		byIndex[i] = m
	}
	for i, want := range msgs {
		m := byIndex[strconv.Itoa(i)]
		require.NotNil(t, m, "message %d not read", i)
		require.True(t, ids[i].EQ(m.MessageID()), "message %d: appended as %s, read as %s", i, ids[i], m.MessageID())
		require.True(t, bytes.Equal(want.Payload(), m.Payload()), "payload %d (%d bytes) differs", i, len(want.Payload()))
		require.Equal(t, want.Properties().ToRawMap(), m.Properties().ToRawMap(), "properties of %d", i)
	}
}

func TestDeliverPolicies(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	o := s.opener()
	ctx := testCtx(t)
	name := pchannel("policies")
	w, err := o.Open(ctx, rw(name, 1))
	require.NoError(t, err)
	defer w.Close()

	var ids []message.MessageID
	for i := 0; i < 10; i++ {
		id, err := w.Append(ctx, msg([]byte{byte(i)}, map[string]string{"i": strconv.Itoa(i)}))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	requireIDs(t, ids, readN(t, scan(t, w, "all", options.DeliverPolicyAll()), 10))
	requireIDs(t, ids[3:], readN(t, scan(t, w, "from", options.DeliverPolicyStartFrom(ids[3])), 7))
	requireIDs(t, ids[4:], readN(t, scan(t, w, "after", options.DeliverPolicyStartAfter(ids[3])), 6))

	// At the tail: StartAfter the last id, Latest and All wait for the next append.
	after := scan(t, w, "after-last", options.DeliverPolicyStartAfter(ids[9]))
	latest := scan(t, w, "latest", options.DeliverPolicyLatest())
	all := scan(t, w, "all-tail", options.DeliverPolicyAll())
	requireIDs(t, ids, readN(t, all, 10))
	// A read-only handle of the same term reads the same pchannel.
	r, err := o.Open(ctx, ro(name, 1))
	require.NoError(t, err)
	defer r.Close()
	roLatest := scan(t, r, "ro-latest", options.DeliverPolicyLatest())

	next, err := w.Append(ctx, msg([]byte("next"), map[string]string{"i": "10"}))
	require.NoError(t, err)
	for _, sc := range []walimpls.ScannerImpls{after, latest, all, roLatest} {
		got := readN(t, sc, 1)
		require.True(t, next.EQ(got[0].MessageID()), "%s read %s, want %s", sc.Name(), got[0].MessageID(), next)
		require.Equal(t, []byte("next"), got[0].Payload())
	}

	// Closing a scanner waiting at the tail ends it without an error.
	require.NoError(t, latest.Close())
	_, open := <-latest.Chan()
	require.False(t, open)
	require.NoError(t, latest.Error())
	select {
	case <-latest.Done():
	default:
		t.Fatal("a closed scanner is done")
	}

	// Ids of another pchannel's shape that the pchannel does not hold yet: the read waits.
	far := scan(t, w, "far", options.DeliverPolicyStartFrom(NewMessageID(1000, 0)))
	select {
	case m := <-far.Chan():
		t.Fatalf("read %s from a segment that does not exist", m.MessageID())
	case <-time.After(300 * time.Millisecond):
	}
	// A garbage id is refused before any call.
	_, err = w.Read(ctx, walimpls.ReadOption{Name: "bad", DeliverPolicy: options.DeliverPolicyStartFrom(badID{})})
	require.True(t, errors.Is(err, message.ErrInvalidMessageID), "%v", err)
}

// badID is an id whose string form is not this WAL's.
type badID struct{ messageID }

func (badID) Marshal() string { return "not an id" }

func (b badID) IntoProto() *commonpb.MessageID {
	return &commonpb.MessageID{Id: b.Marshal(), WALName: commonpb.WALName(WALName)}
}

func TestTermFencingAcrossServers(t *testing.T) {
	dir := t.TempDir()
	cfg := stackConfig(t, dir)
	a := startServer(t, filepath.Join(dir, "a"), cfg)
	b := startServer(t, filepath.Join(dir, "b"), cfg)
	oa, ob := a.opener(), b.opener()
	ctx := testCtx(t)
	name := pchannel("fencing")
	var acked []message.MessageID

	w1, err := oa.Open(ctx, rw(name, 1))
	require.NoError(t, err)
	acked = append(acked, appendAll(t, w1, []message.MutableMessage{msg([]byte("t1"), map[string]string{"t": "1"})})...)

	// A higher term on the other server fences the first writer.
	w2, err := ob.Open(ctx, rw(name, 2))
	require.NoError(t, err)
	_, err = w1.Append(ctx, msg([]byte("late"), map[string]string{"t": "1"}))
	requireFenced(t, err)
	requireFenced(t, w1.Truncate(ctx, acked[0]))
	acked = append(acked, appendAll(t, w2, []message.MutableMessage{msg([]byte("t2"), map[string]string{"t": "2"})})...)

	// A lower term is refused, on either server; the writer of term 2 keeps writing.
	_, err = oa.Open(ctx, rw(name, 1))
	requireFenced(t, err)
	_, err = ob.Open(ctx, rw(name, 1))
	requireFenced(t, err)
	acked = append(acked, appendAll(t, w2, []message.MutableMessage{msg([]byte("t2b"), map[string]string{"t": "2"})})...)

	// The same term opened again (later) fences the earlier open of that term.
	w3, err := oa.Open(ctx, rw(name, 2))
	require.NoError(t, err)
	_, err = w2.Append(ctx, msg([]byte("stale"), map[string]string{"t": "2"}))
	requireFenced(t, err)
	acked = append(acked, appendAll(t, w3, []message.MutableMessage{msg([]byte("t2c"), map[string]string{"t": "2"})})...)

	// Both servers read exactly what was acknowledged, in order.
	for i := 1; i < len(acked); i++ {
		require.True(t, acked[i-1].LT(acked[i]), "ids grow across terms: %s then %s", acked[i-1], acked[i])
	}
	for _, o := range []walimpls.OpenerImpls{oa, ob} {
		r, err := o.Open(ctx, ro(name, 2))
		require.NoError(t, err)
		requireIDs(t, acked, readN(t, scan(t, r, "check", options.DeliverPolicyAll()), len(acked)))
		r.Close()
	}

	// Racing opens of terms 5 and 6 on the two servers: term 6 ends up writing, term 5
	// is refused or fenced.
	var w5, w6 walimpls.WALImpls
	var err5, err6 error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w5, err5 = oa.Open(ctx, rw(name, 5)) }()
	go func() { defer wg.Done(); w6, err6 = ob.Open(ctx, rw(name, 6)) }()
	wg.Wait()
	require.NoError(t, err6)
	if err5 == nil {
		_, err = w5.Append(ctx, msg([]byte("t5"), map[string]string{"t": "5"}))
		requireFenced(t, err)
		w5.Close()
	} else {
		requireFenced(t, err5)
	}
	// Term 6 may have lost its writer to term 5's open for a moment: like Milvus, it retries
	// what is not fenced.
	var id6 message.MessageID
	for attempt := 0; ; attempt++ {
		id6, err = w6.Append(ctx, msg([]byte("t6"), map[string]string{"t": "6"}))
		if err == nil {
			break
		}
		require.False(t, errors.Is(err, walimpls.ErrFenced), "the highest term is fenced: %v", err)
		require.Less(t, attempt, 10, "term 6 cannot append: %v", err)
	}
	require.True(t, acked[len(acked)-1].LT(id6))
	w6.Close()
	w3.Close()
	w2.Close()
	w1.Close()
	a.stop()
	b.stop()
}

func TestRestartBetweenTerms(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	o := s.opener()
	ctx := testCtx(t)
	name := pchannel("restart")

	w1, err := o.Open(ctx, rw(name, 1))
	require.NoError(t, err)
	var msgs []message.MutableMessage
	for i := 0; i < 20; i++ {
		msgs = append(msgs, msg([]byte(fmt.Sprintf("before-%d", i)), map[string]string{"i": strconv.Itoa(i)}))
	}
	before := appendAll(t, w1, msgs)

	s.restart(nil)

	// The handle's session died with the old process: fenced, Milvus reopens.
	_, err = w1.Append(ctx, msg([]byte("lost"), map[string]string{"i": "x"}))
	requireFenced(t, err)
	w1.Close()

	w2, err := o.Open(ctx, rw(name, 2))
	require.NoError(t, err)
	after := appendAll(t, w2, []message.MutableMessage{msg([]byte("after"), map[string]string{"i": "20"})})
	got := readN(t, scan(t, w2, "after-restart", options.DeliverPolicyAll()), 21)
	sorted := append([]message.MessageID{}, before...)
	for i := 1; i < len(sorted); i++ {
		for j := i; j > 0 && sorted[j].LT(sorted[j-1]); j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	requireIDs(t, append(sorted, after...), got)
	for _, m := range got[:20] {
		i, _ := m.Properties().Get("i")
		require.Equal(t, "before-"+i, string(m.Payload()))
	}

	// The term survived the restart: term 1 is now stale, on a restarted server too.
	_, err = o.Open(ctx, rw(name, 1))
	requireFenced(t, err)
	w2.Close()
	s.restart(nil)
	_, err = o.Open(ctx, rw(name, 1))
	requireFenced(t, err)
	w3, err := o.Open(ctx, rw(name, 2))
	require.NoError(t, err)
	id, err := w3.Append(ctx, msg([]byte("again"), map[string]string{"i": "21"}))
	require.NoError(t, err)
	require.True(t, after[0].LT(id))
	w3.Close()
	s.stop()
}

// segmentDirs lists the segment directories of every log under a local data directory
// (`<data>/files/<logId>/<segmentId>/`).
func segmentDirs(t *testing.T, data string) map[int64]bool {
	t.Helper()
	found := map[int64]bool{}
	logs, err := os.ReadDir(filepath.Join(data, "files"))
	require.NoError(t, err)
	for _, l := range logs {
		segs, err := os.ReadDir(filepath.Join(data, "files", l.Name()))
		require.NoError(t, err)
		for _, s := range segs {
			if id, err := strconv.ParseInt(s.Name(), 10, 64); err == nil && s.IsDir() {
				found[id] = true
			}
		}
	}
	return found
}

func TestTruncateRemovesTheDataBefore(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	// Small segments, an auditor pass every second and no retention, so that truncated
	// segments are collected while the test waits.
	config := filepath.Join(dir, "woodpecker.yaml")
	require.NoError(t, os.WriteFile(config, []byte(`woodpecker:
  meta:
    type: embedded
  storage:
    type: local
    rootPath: `+data+`
  client:
    segmentRollingPolicy:
      maxSize: 4096
    auditor:
      maxInterval: 1
  logstore:
    retentionPolicy:
      ttl: 0
`), 0o644))
	s := startServer(t, data, []string{"--config", config})
	o := s.opener()
	ctx := testCtx(t)
	name := pchannel("truncate")
	w, err := o.Open(ctx, rw(name, 1))
	require.NoError(t, err)
	var ids []message.MessageID
	for i := 0; i < 40; i++ {
		id, err := w.Append(ctx, msg(bytes.Repeat([]byte{byte(i)}, 1024), map[string]string{"i": strconv.Itoa(i)}))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	// A cut inside a segment: the engine's point is the message before the cut, so a cut at
	// the first entry of a segment keeps the segment before it too.
	c := 30
	for ids[c].(messageID).entry == 0 {
		c++
	}
	cut := ids[c].(messageID)
	require.Greater(t, cut.segment, int64(2), "the log rolled into several segments")
	require.True(t, segmentDirs(t, data)[0], "segment 0 is on disk before truncation")

	require.NoError(t, w.Truncate(ctx, ids[c]))
	// Truncating at an earlier point changes nothing; an id the pchannel does not hold is
	// refused.
	require.NoError(t, w.Truncate(ctx, ids[5]))
	err = w.Truncate(ctx, NewMessageID(cut.segment+100, 0))
	var e *Error
	require.True(t, errors.As(err, &e), "%v", err)
	require.Equal(t, walpb.ErrorReason_ERROR_REASON_INVALID_ARGUMENT, e.Reason)

	// The truncation point stays readable (Milvus reads from its checkpoint after
	// truncating at it), and so does everything after it.
	requireIDs(t, ids[c:], readN(t, scan(t, w, "from-cut", options.DeliverPolicyStartFrom(ids[c])), len(ids)-c))
	requireIDs(t, ids[c+1:], readN(t, scan(t, w, "after-cut", options.DeliverPolicyStartAfter(ids[c])), len(ids)-c-1))
	requireIDs(t, ids[c:], readN(t, scan(t, w, "all", options.DeliverPolicyAll()), len(ids)-c))
	// Before it, nothing is readable any more.
	_, err = w.Read(ctx, walimpls.ReadOption{Name: "before", DeliverPolicy: options.DeliverPolicyStartFrom(ids[3])})
	require.True(t, errors.As(err, &e), "%v", err)
	require.Equal(t, walpb.ErrorReason_ERROR_REASON_TRUNCATED, e.Reason)

	// The auditor collects every segment before the cut's: their data leaves the disk.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		left := []int64{}
		for seg := range segmentDirs(t, data) {
			if seg < cut.segment {
				left = append(left, seg)
			}
		}
		if len(left) == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "segments %v before the truncation point are still on disk", left)
		time.Sleep(200 * time.Millisecond)
	}
	require.True(t, segmentDirs(t, data)[cut.segment], "the cut's segment is kept")
	requireIDs(t, ids[c:], readN(t, scan(t, w, "after-gc", options.DeliverPolicyStartFrom(ids[c])), len(ids)-c))
	w.Close()
	s.stop()
}

func TestReadOnlyHandlesDoNotWrite(t *testing.T) {
	s := startServer(t, t.TempDir(), nil)
	o := s.opener()
	ctx := testCtx(t)
	name := pchannel("readonly")
	w, err := o.Open(ctx, rw(name, 3))
	require.NoError(t, err)
	defer w.Close()
	id, err := w.Append(ctx, msg([]byte("x"), map[string]string{"k": "v"}))
	require.NoError(t, err)

	// A read-only open, even of a lower term, fences nobody.
	r, err := o.Open(ctx, ro(name, 1))
	require.NoError(t, err)
	assert.Panics(t, func() { _, _ = r.Append(ctx, msg([]byte("y"), nil)) })
	assert.Panics(t, func() { _ = r.Truncate(ctx, id) })
	requireIDs(t, []message.MessageID{id}, readN(t, scan(t, r, "ro", options.DeliverPolicyAll()), 1))
	_, err = w.Append(ctx, msg([]byte("z"), map[string]string{"k": "v"}))
	require.NoError(t, err)
	r.Close()

	// The server refuses appends on a read-only session itself, whatever the client does.
	conn, err := grpc.NewClient(s.milvusAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client := walpb.NewMilvusWalClient(conn)
	opened, err := client.Open(ctx, &walpb.OpenRequest{Pchannel: name, Term: 3, AccessMode: walpb.AccessMode_ACCESS_MODE_READ_ONLY})
	require.NoError(t, err)
	require.Equal(t, int64(3), opened.GetTerm(), "the durable term")
	stream, err := client.Append(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&walpb.AppendRequest{
		SessionId: opened.GetSessionId(),
		Messages:  []*walpb.Message{{Payload: []byte("no")}},
	}))
	resp, err := stream.Recv()
	require.NoError(t, err)
	require.Len(t, resp.GetResults(), 1)
	require.Equal(t, walpb.ErrorReason_ERROR_REASON_READ_ONLY, resp.GetResults()[0].GetError().GetReason())
	_, err = client.Truncate(ctx, &walpb.TruncateRequest{SessionId: opened.GetSessionId(), Id: id.(messageID).toProto()})
	require.True(t, strings.Contains(asError(err).Error(), "read-only"), "%v", err)
	require.NoError(t, stream.CloseSend())
	_, err = client.Close(ctx, &walpb.CloseRequest{SessionId: opened.GetSessionId()})
	require.NoError(t, err)
	_, err = client.Close(context.Background(), &walpb.CloseRequest{SessionId: opened.GetSessionId()})
	var e *Error
	require.True(t, errors.As(asError(err), &e))
	require.Equal(t, walpb.ErrorReason_ERROR_REASON_NOT_FOUND, e.Reason)
}

// A read-write handle keeps its session while it lives, appending or not: its append stream
// is attached from the open on.
func TestAnIdleHandleKeepsItsSession(t *testing.T) {
	s := startServer(t, t.TempDir(), nil, "--milvus-session-ttl-secs", "1")
	o := s.opener()
	ctx := testCtx(t)
	w, err := o.Open(ctx, rw(pchannel("idle"), 1))
	require.NoError(t, err)
	// Several session TTLs without an append.
	time.Sleep(3500 * time.Millisecond)
	_, err = w.Append(ctx, msg([]byte("still here"), map[string]string{"k": "v"}))
	require.NoError(t, err)
	w.Close()

	// A session whose client is gone expires: its handle's appends are fenced.
	conn, err := grpc.NewClient(s.milvusAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client := walpb.NewMilvusWalClient(conn)
	opened, err := client.Open(ctx, &walpb.OpenRequest{Pchannel: pchannel("abandoned"), Term: 1, AccessMode: walpb.AccessMode_ACCESS_MODE_READ_WRITE})
	require.NoError(t, err)
	time.Sleep(3500 * time.Millisecond)
	_, err = client.Close(ctx, &walpb.CloseRequest{SessionId: opened.GetSessionId()})
	var e *Error
	require.True(t, errors.As(asError(err), &e), "%v", err)
	require.Equal(t, walpb.ErrorReason_ERROR_REASON_NOT_FOUND, e.Reason)
}
