package woodpeckerrs

import (
	"encoding/base64"
	"fmt"

	"github.com/cockroachdb/errors"
	"google.golang.org/protobuf/proto"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus/pkg/v2/streaming/util/message"

	"github.com/woodpecker-rs/woodpecker-rs/milvus-adapter/go/walpb"
)

var _ message.MessageID = messageID{}

// messageID is the position of a message in its pchannel: (segment, entry), ordered by
// segment, then entry.
//
// Its string form (Marshal) is the one Milvus's Woodpecker WAL gives its ids: the standard
// base64, with padding, of the protobuf {segId = 1, entryId = 2} (walpb.MessageId has those
// field numbers), so (0, 0) is "" and (3, 7) is "CAMQBw==". It is stored in etcd
// checkpoints and inside other messages, so it never changes.
type messageID struct {
	segment int64
	entry   int64
}

// NewMessageID is the id of entry `entry` of segment `segment`.
func NewMessageID(segment, entry int64) message.MessageID {
	return messageID{segment: segment, entry: entry}
}

func fromProto(id *walpb.MessageId) messageID {
	return messageID{segment: id.GetSegmentId(), entry: id.GetEntryId()}
}

func (id messageID) toProto() *walpb.MessageId {
	return &walpb.MessageId{SegmentId: id.segment, EntryId: id.entry}
}

// UnmarshalMessageID parses Marshal's output; bad input wraps message.ErrInvalidMessageID.
func UnmarshalMessageID(data string) (message.MessageID, error) {
	id, err := unmarshalMessageID(data)
	if err != nil {
		return nil, err
	}
	return id, nil
}

func unmarshalMessageID(data string) (messageID, error) {
	raw, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		return messageID{}, errors.Wrapf(message.ErrInvalidMessageID, "woodpeckerrs message id %q is not base64: %s", data, err)
	}
	var pb walpb.MessageId
	if err := proto.Unmarshal(raw, &pb); err != nil {
		return messageID{}, errors.Wrapf(message.ErrInvalidMessageID, "woodpeckerrs message id %q does not decode: %s", data, err)
	}
	if pb.GetSegmentId() < 0 || pb.GetEntryId() < 0 {
		return messageID{}, errors.Wrapf(message.ErrInvalidMessageID, "woodpeckerrs message id %q is negative", data)
	}
	return fromProto(&pb), nil
}

func (id messageID) WALName() message.WALName {
	return WALName
}

func (id messageID) LT(other message.MessageID) bool {
	o := other.(messageID)
	if id.segment != o.segment {
		return id.segment < o.segment
	}
	return id.entry < o.entry
}

func (id messageID) LTE(other message.MessageID) bool {
	return !other.(messageID).LT(id)
}

func (id messageID) EQ(other message.MessageID) bool {
	o := other.(messageID)
	return id.segment == o.segment && id.entry == o.entry
}

func (id messageID) Marshal() string {
	// Two varint fields in field order: the encoding is deterministic.
	raw, err := proto.Marshal(id.toProto())
	if err != nil {
		panic(fmt.Sprintf("woodpeckerrs: marshalling message id %s: %s", id, err))
	}
	return base64.StdEncoding.EncodeToString(raw)
}

func (id messageID) IntoProto() *commonpb.MessageID {
	return &commonpb.MessageID{
		Id:      id.Marshal(),
		WALName: commonpb.WALName(id.WALName()),
	}
}

func (id messageID) String() string {
	return fmt.Sprintf("%d/%d", id.segment, id.entry)
}
