package datastore

import (
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMemberFailed(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("auto-assign: %w", rpctypes.ErrLeaderChanged), true},
		{fmt.Errorf("put: %w", status.Error(codes.Unavailable, "connection reset by peer")), true},
		{rpctypes.ErrKeyNotFound, false},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), false},
		{errors.New("compare failed"), false},
		{nil, false},
	} {
		if got := MemberFailed(tc.err); got != tc.want {
			t.Errorf("MemberFailed(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
