package main

import (
	"slices"
	"sync"
)

// readiness holds the checks behind GET /readiness, as calico-node's readiness probe: the
// agent is ready when every subsystem has synced at least once and there is no
// encapsulation problem. Each check returns "" when its subsystem is fine, else why not.
var readiness struct {
	mu     sync.Mutex
	names  []string
	checks map[string]func() string
}

// addReadinessCheck registers (or replaces) the check of a subsystem.
func addReadinessCheck(name string, check func() string) {
	readiness.mu.Lock()
	defer readiness.mu.Unlock()
	if readiness.checks == nil {
		readiness.checks = map[string]func() string{}
	}
	if _, ok := readiness.checks[name]; !ok {
		readiness.names = append(readiness.names, name)
	}
	readiness.checks[name] = check
}

// syncedOnce is a readiness check that passes once done has been called.
type syncedOnce struct {
	mu   sync.Mutex
	done bool
	why  string
}

func (s *syncedOnce) set() { s.mu.Lock(); s.done = true; s.mu.Unlock() }
func (s *syncedOnce) check() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return ""
	}
	return s.why
}

// notReadyReasons runs every check and adds the encapsulation problems; extra are
// further reasons the caller found (BGP's, asked of its agent). None: ready.
func notReadyReasons(extra ...string) []string {
	readiness.mu.Lock()
	names := slices.Clone(readiness.names)
	checks := make([]func() string, len(names))
	for i, n := range names {
		checks[i] = readiness.checks[n]
	}
	readiness.mu.Unlock()
	var reasons []string
	for _, c := range checks {
		if r := c(); r != "" {
			reasons = append(reasons, r)
		}
	}
	for _, r := range extra {
		if r != "" {
			reasons = append(reasons, r)
		}
	}
	return append(reasons, encapProblemLines()...)
}
