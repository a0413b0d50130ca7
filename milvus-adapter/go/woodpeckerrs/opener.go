package woodpeckerrs

import (
	"context"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/milvus-io/milvus/pkg/v2/log"
	"github.com/milvus-io/milvus/pkg/v2/streaming/util/types"
	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls"
	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls/helper"

	"github.com/woodpecker-rs/woodpecker-rs/milvus-adapter/go/walpb"
)

var _ walimpls.OpenerImpls = (*openerImpl)(nil)

type openerImpl struct {
	conn   *grpc.ClientConn
	client walpb.MilvusWalClient
	cfg    Config
}

// Open opens the pchannel on the server. Read-write: the server records the term, fences
// every older open and refuses a term below the pchannel's (walimpls.ErrFenced); the
// handle then keeps one append stream to the server. Read-only: nobody is fenced.
func (o *openerImpl) Open(ctx context.Context, opt *walimpls.OpenOption) (walimpls.WALImpls, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	mode := walpb.AccessMode_ACCESS_MODE_READ_WRITE
	if opt.Channel.AccessMode == types.AccessModeRO {
		mode = walpb.AccessMode_ACCESS_MODE_READ_ONLY
	}
	resp, err := o.client.Open(ctx, &walpb.OpenRequest{
		Pchannel:   opt.Channel.Name,
		Term:       opt.Channel.Term,
		AccessMode: mode,
	})
	if err != nil {
		return nil, asError(err)
	}
	w := &walImpl{
		WALHelper: helper.NewWALHelper(opt),
		client:    o.client,
		session:   resp.GetSessionId(),
	}
	if mode == walpb.AccessMode_ACCESS_MODE_READ_WRITE {
		w.appender = newAppender(o.client, resp.GetSessionId(), w.Log())
	}
	log.Ctx(ctx).Info("woodpeckerrs wal opened",
		zap.String("channel", opt.Channel.String()),
		zap.Uint64("session", resp.GetSessionId()),
		zap.Int64("durableTerm", resp.GetTerm()))
	return w, nil
}

// Close releases the connection.
func (o *openerImpl) Close() {
	if err := o.conn.Close(); err != nil {
		log.Warn("woodpeckerrs: closing the connection failed", zap.Error(err))
	}
}
