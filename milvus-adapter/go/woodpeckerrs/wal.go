package woodpeckerrs

import (
	"context"

	"github.com/cockroachdb/errors"
	"go.uber.org/zap"

	"github.com/milvus-io/milvus/pkg/v2/proto/streamingpb"
	"github.com/milvus-io/milvus/pkg/v2/streaming/util/message"
	"github.com/milvus-io/milvus/pkg/v2/streaming/util/types"
	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls"
	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls/helper"

	"github.com/woodpecker-rs/woodpecker-rs/milvus-adapter/go/walpb"
)

var _ walimpls.WALImpls = (*walImpl)(nil)

type walImpl struct {
	*helper.WALHelper
	client  walpb.MilvusWalClient
	session uint64
	// appender is nil for read-only handles.
	appender *appender
}

func (w *walImpl) WALName() message.WALName {
	return WALName
}

// Append returns once the message is durable. Errors: walimpls.ErrFenced (with *Error)
// when a newer open took the pchannel over or the session is gone; otherwise retriable.
func (w *walImpl) Append(ctx context.Context, msg message.MutableMessage) (message.MessageID, error) {
	if w.Channel().AccessMode != types.AccessModeRW {
		panic("write on a wal that is not in read-write mode")
	}
	pb := msg.IntoMessageProto()
	return w.appender.append(ctx, &walpb.Message{
		Payload:    pb.GetPayload(),
		Properties: pb.GetProperties(),
	})
}

// Read opens a scanner; the deliver policy's ids must be this WAL's.
func (w *walImpl) Read(ctx context.Context, opt walimpls.ReadOption) (walimpls.ScannerImpls, error) {
	policy := &walpb.DeliverPolicy{}
	switch t := opt.DeliverPolicy.GetPolicy().(type) {
	case *streamingpb.DeliverPolicy_All:
		policy.Policy = &walpb.DeliverPolicy_All_{All: &walpb.DeliverPolicy_All{}}
	case *streamingpb.DeliverPolicy_StartFrom:
		id, err := unmarshalMessageID(t.StartFrom.GetId())
		if err != nil {
			return nil, err
		}
		policy.Policy = &walpb.DeliverPolicy_StartFrom{StartFrom: id.toProto()}
	case *streamingpb.DeliverPolicy_StartAfter:
		id, err := unmarshalMessageID(t.StartAfter.GetId())
		if err != nil {
			return nil, err
		}
		policy.Policy = &walpb.DeliverPolicy_StartAfter{StartAfter: id.toProto()}
	default:
		// Latest, and no policy at all (as Milvus's Woodpecker WAL).
		policy.Policy = &walpb.DeliverPolicy_Latest_{Latest: &walpb.DeliverPolicy_Latest{}}
	}
	return newScanner(ctx, w.client, &walpb.ReadRequest{
		Pchannel: w.Channel().Name,
		Name:     opt.Name,
		Policy:   policy,
	}, opt.Name)
}

// Truncate lets the server remove every message before id (id itself stays readable).
func (w *walImpl) Truncate(ctx context.Context, id message.MessageID) error {
	if w.Channel().AccessMode != types.AccessModeRW {
		panic("truncate on a wal that is not in read-write mode")
	}
	mid, ok := id.(messageID)
	if !ok {
		return errors.Wrapf(message.ErrInvalidMessageID, "woodpeckerrs: truncation at %v, an id of another WAL", id)
	}
	_, err := w.client.Truncate(ctx, &walpb.TruncateRequest{SessionId: w.session, Id: mid.toProto()})
	return sessionGone(asError(err))
}

// Close waits for the appends in flight, then closes the session on the server (its writer
// is flushed and its segment completed).
func (w *walImpl) Close() {
	if w.appender != nil {
		w.appender.close()
	}
	if _, err := w.client.Close(context.Background(), &walpb.CloseRequest{SessionId: w.session}); err != nil {
		w.Log().Warn("woodpeckerrs: closing the session failed", zap.Error(asError(err)))
	}
}
