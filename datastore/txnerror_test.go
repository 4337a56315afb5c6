package datastore

import (
	"errors"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestTxnError: an external etcd's refusals of a transaction's size (a smaller
// --max-request-bytes, the client's message limit, --max-txn-ops) are ErrTooLarge naming
// the limit; other errors keep their own.
func TestTxnError(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
		too  bool
	}{
		{rpctypes.ErrRequestTooLarge, "txn of 5000 ops: too large for one etcd request: etcd refused it (etcdserver: request is too large): it accepts smaller requests than tabby's 10.0 MiB (--max-request-bytes)", true},
		{status.Error(codes.ResourceExhausted, "trying to send message larger than max"), "etcd refused it (rpc error: code = ResourceExhausted", true},
		{rpctypes.ErrTooManyOps, "txn of 5000 ops: too large for one etcd request: etcd allows fewer operations in one transaction (--max-txn-ops", true},
		{errors.New("boom"), "txn of 5000 ops: boom", false},
	} {
		err := txnError("txn of 5000 ops", c.err)
		if errors.Is(err, ErrTooLarge) != c.too || !strings.Contains(err.Error(), c.want) {
			t.Errorf("txnError(%v) = %v, want %q (ErrTooLarge %v)", c.err, err, c.want, c.too)
		}
	}
}
