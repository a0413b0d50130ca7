package woodpeckerrs

import (
	stderrors "errors"
	"testing"

	"github.com/cockroachdb/errors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls"

	"github.com/woodpecker-rs/woodpecker-rs/milvus-adapter/go/walpb"
)

func withDetail(t *testing.T, code codes.Code, reason walpb.ErrorReason) error {
	st, err := status.New(code, "m").WithDetails(&walpb.ErrorDetail{Reason: reason, Message: "m", Term: 4})
	require.NoError(t, err)
	return st.Err()
}

func TestFencingErrorsAreErrFenced(t *testing.T) {
	for _, reason := range []walpb.ErrorReason{walpb.ErrorReason_ERROR_REASON_FENCED, walpb.ErrorReason_ERROR_REASON_STALE_TERM} {
		err := asError(withDetail(t, codes.FailedPrecondition, reason))
		assert.True(t, errors.Is(err, walimpls.ErrFenced), "cockroachdb errors.Is: %v", err)
		assert.True(t, stderrors.Is(err, walimpls.ErrFenced), "errors.Is: %v", err)
		var e *Error
		require.True(t, errors.As(err, &e))
		assert.Equal(t, int64(4), e.Term)
	}
	// A gone session is fenced for appends and truncations, not for opens or reads.
	notFound := asError(withDetail(t, codes.NotFound, walpb.ErrorReason_ERROR_REASON_NOT_FOUND))
	assert.False(t, errors.Is(notFound, walimpls.ErrFenced))
	assert.True(t, errors.Is(sessionGone(notFound), walimpls.ErrFenced))
	assert.True(t, stderrors.Is(sessionGone(notFound), walimpls.ErrFenced))

	for _, reason := range []walpb.ErrorReason{walpb.ErrorReason_ERROR_REASON_UNAVAILABLE, walpb.ErrorReason_ERROR_REASON_INVALID_ARGUMENT} {
		err := sessionGone(asError(withDetail(t, codes.Unavailable, reason)))
		assert.False(t, errors.Is(err, walimpls.ErrFenced), "%v", err)
	}
	// A transport error without details.
	plain := asError(status.Error(codes.Unavailable, "connection refused"))
	assert.False(t, errors.Is(plain, walimpls.ErrFenced))
	assert.Contains(t, plain.Error(), "connection refused")
	assert.Nil(t, asError(nil))
}
