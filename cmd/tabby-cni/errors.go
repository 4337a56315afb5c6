package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/ipam"
)

// Error codes of tabby-cni's own (the spec leaves 100 and up to plugins). The spec's
// well-known codes (types.Err*) are used where they fit.
const (
	// codeFailed: the kernel or the datastore refused an operation.
	codeFailed uint = 100
	// codeNoAddress: IPAM has no free address for the workload.
	codeNoAddress uint = 101
	// codeCheck: CHECK found the attachment differs from what ADD made.
	codeCheck uint = 102
	// codeConflict: the container interface or the endpoint name belongs to another
	// workload.
	codeConflict uint = 103
)

// Codes STATUS answers with (from the spec).
const (
	codeUnavailable         uint = 50 // cannot service ADD
	codeUnavailableDegraded uint = 51 // and existing workloads may lose connectivity
)

// codedError carries the CNI error code that an error turns into at the edge.
type codedError struct {
	code uint
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// withCode gives err a CNI error code; nil stays nil.
func withCode(code uint, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code: code, err: err}
}

// errorf is fmt.Errorf with a CNI error code.
func errorf(code uint, format string, args ...any) error {
	return withCode(code, fmt.Errorf(format, args...))
}

// cniError turns an error into the JSON error the runtime reads: the code given with
// withCode (the outermost), else one derived from what went wrong: a timeout or a lost
// race with another datastore writer is worth retrying (11), running out of addresses
// is 101, anything else 100. The message is the whole error chain, which names what
// failed and why.
func cniError(err error) *types.Error {
	if err == nil {
		return nil
	}
	code := codeFailed
	var ce *codedError
	var te *types.Error
	switch {
	case errors.As(err, &ce):
		code = ce.code
	case errors.As(err, &te):
		return te
	case errors.Is(err, ipam.ErrNoFreeAddresses):
		code = codeNoAddress
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, datastore.ErrConflict):
		code = types.ErrTryAgainLater
	}
	return types.NewError(code, err.Error(), "")
}
