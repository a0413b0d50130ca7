package woodpeckerrs

import (
	"context"
	"io"

	"github.com/cockroachdb/errors"
	"google.golang.org/grpc/metadata"

	"github.com/milvus-io/milvus/pkg/v2/streaming/util/message"
	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls"
	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls/helper"

	"github.com/woodpecker-rs/woodpecker-rs/milvus-adapter/go/walpb"
)

var _ walimpls.ScannerImpls = (*scannerImpl)(nil)

// scannerImpl reads one read stream of the server into a channel, in id order, waiting at
// the tail, until it is closed (which cancels the stream: the server closes its reader).
type scannerImpl struct {
	*helper.ScannerHelper
	stream walpb.MilvusWal_ReadClient
	ch     chan message.ImmutableMessage
}

// newScanner starts the read; errors the server reports at once (an unknown pchannel, a
// truncated start position) are returned here.
func newScanner(ctx context.Context, client walpb.MilvusWalClient, req *walpb.ReadRequest, name string) (*scannerImpl, error) {
	s := &scannerImpl{
		ScannerHelper: helper.NewScannerHelper(name),
		ch:            make(chan message.ImmutableMessage, 1),
	}
	stream, err := client.Read(s.Context(), req)
	if err == nil {
		// The server answers with its headers once the read is open, or with nothing but the
		// error, which gRPC hands to the first Recv.
		var md metadata.MD
		if md, err = stream.Header(); err == nil && md == nil {
			if _, err = stream.Recv(); err == nil || errors.Is(err, io.EOF) {
				err = errors.New("woodpeckerrs: the read stream ended before it started")
			}
		}
	}
	if err != nil {
		s.Finish(nil)
		_ = s.ScannerHelper.Close()
		return nil, asError(err)
	}
	s.stream = stream
	go s.run()
	return s, nil
}

func (s *scannerImpl) Chan() <-chan message.ImmutableMessage {
	return s.ch
}

func (s *scannerImpl) run() {
	defer close(s.ch)
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			if s.Context().Err() != nil {
				// Closed by its owner.
				s.Finish(nil)
				return
			}
			s.Finish(errors.Wrap(asError(err), "woodpeckerrs: read failed"))
			return
		}
		for _, m := range resp.GetMessages() {
			msg := message.NewImmutableMesasge(fromProto(m.GetId()), m.GetPayload(), m.GetProperties())
			select {
			case s.ch <- msg:
			case <-s.Context().Done():
				s.Finish(nil)
				return
			}
		}
	}
}
