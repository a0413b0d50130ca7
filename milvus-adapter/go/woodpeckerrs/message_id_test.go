package woodpeckerrs

import (
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus/pkg/v2/streaming/util/message"
	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls/registry"
)

func TestRegistry(t *testing.T) {
	b := registry.MustGetBuilder(WALName)
	require.NotNil(t, b)
	assert.Equal(t, WALName, b.Name())

	id, err := message.UnmarshalMessageID(&commonpb.MessageID{
		WALName: commonpb.WALName(WALName),
		Id:      NewMessageID(1, 2).Marshal(),
	})
	require.NoError(t, err)
	assert.True(t, id.EQ(NewMessageID(1, 2)))
	assert.Equal(t, WALName, id.WALName())
	assert.Equal(t, NewMessageID(1, 2).IntoProto().GetId(), id.IntoProto().GetId())
}

func TestMessageIDOrder(t *testing.T) {
	ids := []message.MessageID{
		NewMessageID(0, 0), NewMessageID(0, 1), NewMessageID(0, 9),
		NewMessageID(1, 0), NewMessageID(1, 5), NewMessageID(7, 0),
	}
	for i, a := range ids {
		for j, b := range ids {
			assert.Equal(t, i < j, a.LT(b), "%s < %s", a, b)
			assert.Equal(t, i <= j, a.LTE(b), "%s <= %s", a, b)
			assert.Equal(t, i == j, a.EQ(b), "%s == %s", a, b)
		}
	}
}

// The string form is Milvus's Woodpecker WAL's: base64 of the protobuf {segId=1, entryId=2}.
func TestMessageIDEncoding(t *testing.T) {
	for _, c := range []struct {
		seg, entry int64
		text       string
	}{
		{0, 0, ""},
		{3, 7, "CAMQBw=="},
		{0, 300, "EKwC"},
		{1 << 40, 99999, "CICAgICAIBCfjQY="},
	} {
		id := NewMessageID(c.seg, c.entry)
		assert.Equal(t, c.text, id.Marshal(), "%s", id)
		back, err := UnmarshalMessageID(c.text)
		require.NoError(t, err)
		assert.True(t, back.EQ(id), "%s", back)
		assert.Equal(t, commonpb.WALName(WALName), id.IntoProto().GetWALName())
	}
	for _, bad := range []string{"not base64!", "CA==", "/w==", "CP////////////8B"} {
		_, err := UnmarshalMessageID(bad)
		assert.True(t, errors.Is(err, message.ErrInvalidMessageID), "%q: %v", bad, err)
	}
}
