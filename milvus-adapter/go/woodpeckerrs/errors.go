package woodpeckerrs

import (
	"context"
	"fmt"

	"github.com/cockroachdb/errors"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/milvus-io/milvus/pkg/v2/streaming/walimpls"

	"github.com/woodpecker-rs/woodpecker-rs/milvus-adapter/go/walpb"
)

// Error is a failure the server reported: its reason says what to do, its gRPC code and
// message say what happened.
type Error struct {
	// Reason is what the caller must do (walpb.ErrorReason_ERROR_REASON_UNSPECIFIED when
	// the failure came from the transport rather than the service).
	Reason walpb.ErrorReason
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the server's description.
	Message string
	// Term is the pchannel's term in force, for fencing errors.
	Term int64
	// EngineCode is the woodpecker-rs error code behind it, when there is one.
	EngineCode int32
	// gone: the session this call named no longer exists (see sessionGone).
	gone bool
}

func (e *Error) Error() string {
	if e.Reason == walpb.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return fmt.Sprintf("woodpeckerrs: %s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("woodpeckerrs: %s", e.Message)
}

// Fenced reports whether the WAL handle can never write again (walimpls.ErrFenced).
func (e *Error) Fenced() bool {
	return e.gone || e.Reason == walpb.ErrorReason_ERROR_REASON_FENCED || e.Reason == walpb.ErrorReason_ERROR_REASON_STALE_TERM
}

// Is makes the standard library's errors.Is(err, walimpls.ErrFenced) hold for fencing
// errors (cockroachdb's errors.Is, which Milvus uses, sees the mark added by mark).
func (e *Error) Is(target error) bool {
	return target == walimpls.ErrFenced && e.Fenced()
}

func fromDetail(code codes.Code, d *walpb.ErrorDetail) *Error {
	return &Error{
		Reason:     d.GetReason(),
		Code:       code,
		Message:    d.GetMessage(),
		Term:       d.GetTerm(),
		EngineCode: d.GetCode(),
	}
}

// asError turns a call's error into an *Error (nil stays nil; context errors pass through).
func asError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Canceled:
		return errors.Wrap(context.Canceled, st.Message())
	case codes.DeadlineExceeded:
		return errors.Wrap(context.DeadlineExceeded, st.Message())
	}
	for _, d := range st.Details() {
		if detail, ok := d.(*walpb.ErrorDetail); ok {
			return mark(fromDetail(st.Code(), detail))
		}
	}
	return &Error{Code: st.Code(), Message: st.Message()}
}

// mark makes a fencing error satisfy errors.Is(err, walimpls.ErrFenced), with the standard
// library's errors.Is and with cockroachdb's, which Milvus uses.
func mark(e *Error) error {
	if e.Fenced() {
		return errors.Mark(e, walimpls.ErrFenced)
	}
	return e
}

// sessionGone is the error of an append or truncation whose session the server no longer
// has (closed, expired, or the server restarted): the handle can never write again, which
// is what Milvus's ErrFenced means ("close it and open a new one").
func sessionGone(err error) error {
	var e *Error
	if errors.As(err, &e) && e.Reason == walpb.ErrorReason_ERROR_REASON_NOT_FOUND {
		gone := *e
		gone.gone = true
		return mark(&gone)
	}
	return err
}
