package datastore

import (
	"context"
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

// TestUnknown: a write cut by a failed member or by its caller's deadline may have been
// applied; a refusal was not.
func TestUnknown(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("create: %w", rpctypes.ErrLeaderChanged), true},
		{fmt.Errorf("create: %w", status.Error(codes.Unavailable, "connection reset by peer")), true},
		{fmt.Errorf("create: %w", context.DeadlineExceeded), true},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), true},
		{status.Error(codes.Canceled, "context canceled"), true},
		{fmt.Errorf("create workloadendpoints/x: %w", ErrAlreadyExists), false},
		{fmt.Errorf("update: %w", ErrConflict), false},
		{fmt.Errorf("create: %w", ErrNodeNotRegistered), false},
		{errors.New("spec.node: required"), false},
		{nil, false},
	} {
		if got := Unknown(tc.err); got != tc.want {
			t.Errorf("Unknown(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
