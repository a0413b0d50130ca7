package woodpeckerrs

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/milvus-io/milvus/pkg/v2/log"
	"github.com/milvus-io/milvus/pkg/v2/streaming/util/message"

	"github.com/woodpecker-rs/woodpecker-rs/milvus-adapter/go/walpb"
)

const (
	// At most this many messages, and about this many bytes, go in one append request:
	// Milvus appends from many goroutines at once, and whatever is waiting is sent together.
	maxBatchMessages = 256
	maxBatchBytes    = 4 << 20
	// Appends waiting for the sender.
	queueLength = 1024
	// How often an idle handle makes sure an append stream is attached: the server closes a
	// session that has had none for its session TTL (60 s by default), and a stream that broke
	// while nothing was appended is attached again within this time.
	attachInterval = 10 * time.Second
)

// pendingAppend is one Append call waiting for its result.
type pendingAppend struct {
	msg  *walpb.Message
	size int
	done chan appendResult
}

type appendResult struct {
	id  message.MessageID
	err error
}

func (p *pendingAppend) finish(id message.MessageID, err error) {
	p.done <- appendResult{id: id, err: err}
}

// appender sends a read-write handle's appends over one append stream of its session:
// one goroutine batches what callers queued into requests; each stream has a goroutine that
// hands its results, which come in send order, to the callers. A stream that breaks fails
// its appends in flight with a retriable error (Milvus retries them), and the next batch
// opens a new stream on the same session.
type appender struct {
	client  walpb.MilvusWalClient
	session uint64
	logger  *log.MLogger

	queue   chan *pendingAppend
	ctx     context.Context
	cancel  context.CancelFunc
	stopped chan struct{}

	closeOnce sync.Once
	queuing   sync.WaitGroup
	mu        sync.Mutex
	closing   bool
	current   *appendStream
}

func newAppender(client walpb.MilvusWalClient, session uint64, logger *log.MLogger) *appender {
	ctx, cancel := context.WithCancel(context.Background())
	a := &appender{
		client:  client,
		session: session,
		logger:  logger,
		queue:   make(chan *pendingAppend, queueLength),
		ctx:     ctx,
		cancel:  cancel,
		stopped: make(chan struct{}),
	}
	go a.send()
	return a
}

// attach opens an append stream when there is none, so that the session counts as in use.
// Failures are left to the next append, which reports them.
func (a *appender) attach() {
	if _, err := a.stream(); err != nil {
		a.logger.Debug("woodpeckerrs: attaching an append stream failed", zap.Error(err))
	}
}

var errClosed = errors.New("woodpeckerrs: the wal is closed")

func (a *appender) append(ctx context.Context, msg *walpb.Message) (message.MessageID, error) {
	p := &pendingAppend{msg: msg, size: proto.Size(msg), done: make(chan appendResult, 1)}
	a.mu.Lock()
	if a.closing {
		a.mu.Unlock()
		return nil, errClosed
	}
	// Counted, so that close closes the queue only after every append that got past the
	// check above is in it.
	a.queuing.Add(1)
	a.mu.Unlock()
	select {
	case a.queue <- p:
		a.queuing.Done()
	case <-ctx.Done():
		a.queuing.Done()
		return nil, ctx.Err()
	}
	select {
	case r := <-p.done:
		return r.id, r.err
	case <-ctx.Done():
		// The message may still become durable; Milvus treats this like any failure.
		return nil, ctx.Err()
	}
}

// send is the sender goroutine.
func (a *appender) send() {
	defer close(a.stopped)
	a.attach()
	idle := time.NewTicker(attachInterval)
	defer idle.Stop()
	for {
		var first *pendingAppend
		select {
		case first = <-a.queue:
		case <-idle.C:
			a.attach()
			continue
		}
		if first == nil {
			// The queue was closed by close(): everything queued has been sent.
			a.finishStream()
			return
		}
		batch := []*pendingAppend{first}
		bytes := first.size
	fill:
		for len(batch) < maxBatchMessages && bytes < maxBatchBytes {
			select {
			case p := <-a.queue:
				if p == nil {
					// Closed: send this batch, then finish (the nil is seen again below).
					a.sendBatch(batch)
					a.finishStream()
					return
				}
				batch = append(batch, p)
				bytes += p.size
			default:
				break fill
			}
		}
		a.sendBatch(batch)
	}
}

func (a *appender) sendBatch(batch []*pendingAppend) {
	s, err := a.stream()
	if err != nil {
		for _, p := range batch {
			p.finish(nil, err)
		}
		return
	}
	req := &walpb.AppendRequest{Messages: make([]*walpb.Message, len(batch))}
	for i, p := range batch {
		req.Messages[i] = p.msg
	}
	if !s.enqueue(batch) {
		// The stream died between stream() and here; its receiver has failed what it had.
		err := unavailable("the append stream ended")
		for _, p := range batch {
			p.finish(nil, err)
		}
		a.dropStream(s)
		return
	}
	if err := s.stream.Send(req); err != nil {
		// The receiver sees the stream's end and fails everything in flight on it,
		// this batch included.
		a.dropStream(s)
	}
}

// stream returns the current append stream, opening one (attached to the session) if there
// is none.
func (a *appender) stream() (*appendStream, error) {
	a.mu.Lock()
	s := a.current
	a.mu.Unlock()
	if s != nil && !s.isDead() {
		return s, nil
	}
	stream, err := a.client.Append(a.ctx)
	if err != nil {
		return nil, sessionGone(asError(err))
	}
	if err := stream.Send(&walpb.AppendRequest{SessionId: a.session}); err != nil {
		_, recvErr := stream.Recv()
		return nil, sessionGone(asError(recvErr))
	}
	s = &appendStream{stream: stream, done: make(chan struct{})}
	go s.receive(a.logger)
	a.mu.Lock()
	a.current = s
	a.mu.Unlock()
	return s, nil
}

func (a *appender) dropStream(s *appendStream) {
	a.mu.Lock()
	if a.current == s {
		a.current = nil
	}
	a.mu.Unlock()
}

// finishStream half-closes the current stream and waits for its last results.
func (a *appender) finishStream() {
	a.mu.Lock()
	s := a.current
	a.current = nil
	a.mu.Unlock()
	if s == nil {
		return
	}
	_ = s.stream.CloseSend()
	<-s.done
}

// close waits for every queued append to be answered, then ends the stream.
func (a *appender) close() {
	a.closeOnce.Do(func() {
		a.mu.Lock()
		a.closing = true
		a.mu.Unlock()
		a.queuing.Wait()
		close(a.queue)
		<-a.stopped
		a.cancel()
	})
}

// appendStream is one append stream and the appends waiting for its results.
type appendStream struct {
	stream walpb.MilvusWal_AppendClient
	done   chan struct{}

	mu       sync.Mutex
	dead     bool
	inFlight []*pendingAppend
	// next is the sequence number of the next result.
	next uint64
}

func (s *appendStream) isDead() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dead
}

// enqueue adds a batch about to be sent; false when the stream is already dead.
func (s *appendStream) enqueue(batch []*pendingAppend) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return false
	}
	s.inFlight = append(s.inFlight, batch...)
	return true
}

// receive hands results to their callers until the stream ends, then fails what is left.
func (s *appendStream) receive(logger *log.MLogger) {
	defer close(s.done)
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			s.die(streamEnd(err), logger)
			return
		}
		s.mu.Lock()
		if resp.GetFirstSequence() != s.next || len(resp.GetResults()) > len(s.inFlight) {
			s.mu.Unlock()
			s.die(errors.Newf("woodpeckerrs: append results out of order (sequence %d, expected %d)", resp.GetFirstSequence(), s.next), logger)
			return
		}
		answered := s.inFlight[:len(resp.GetResults())]
		s.inFlight = s.inFlight[len(resp.GetResults()):]
		s.next += uint64(len(answered))
		s.mu.Unlock()
		for i, r := range resp.GetResults() {
			if id := r.GetId(); id != nil {
				answered[i].finish(fromProto(id), nil)
			} else {
				answered[i].finish(nil, sessionGone(mark(fromDetail(codes.Unknown, r.GetError()))))
			}
		}
	}
}

func (s *appendStream) die(err error, logger *log.MLogger) {
	s.mu.Lock()
	s.dead = true
	left := s.inFlight
	s.inFlight = nil
	s.mu.Unlock()
	if len(left) > 0 {
		logger.Warn("woodpeckerrs: append stream ended with appends in flight", zap.Int("appends", len(left)), zap.Error(err))
	}
	for _, p := range left {
		p.finish(nil, err)
	}
}

// streamEnd is the error for appends in flight when a stream ends.
func streamEnd(err error) error {
	if errors.Is(err, io.EOF) {
		return unavailable("the append stream ended")
	}
	return sessionGone(asError(err))
}

func unavailable(msg string) error {
	return &Error{Reason: walpb.ErrorReason_ERROR_REASON_UNAVAILABLE, Code: codes.Unavailable, Message: msg}
}
