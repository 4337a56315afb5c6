package agent

import (
	"slices"
	"sync"
)

// Readiness is the registry subsystems report into: each names why it is not ready (or
// nothing once it is) and the problems that stand (such as a pool the kernel cannot
// serve). The agent is ready when no subsystem gives a reason and no problem stands, as
// calico-node's readiness probe.
type Readiness struct {
	mu       sync.Mutex
	order    []string
	reasons  map[string][]string
	problems map[string][]string
	checks   map[string]func() []string
}

// NewReadiness returns an empty registry: ready until a subsystem says otherwise.
func NewReadiness() *Readiness {
	return &Readiness{reasons: map[string][]string{}, problems: map[string][]string{}, checks: map[string]func() []string{}}
}

func (r *Readiness) add(name string) {
	if !slices.Contains(r.order, name) {
		r.order = append(r.order, name)
	}
}

// Set replaces name's reasons not to be ready; none: ready.
func (r *Readiness) Set(name string, reasons ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.add(name)
	r.reasons[name] = slices.Clone(reasons)
}

// SetProblems replaces name's problems. A problem also keeps the agent from being ready.
func (r *Readiness) SetProblems(name string, problems ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.add(name)
	r.problems[name] = slices.Clone(problems)
}

// Check registers a function asked for name's reasons at every readiness question, for a
// subsystem whose state lives elsewhere (felix's last sync).
func (r *Readiness) Check(name string, check func() []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.add(name)
	r.checks[name] = check
}

// Problems returns every standing problem, in registration order.
func (r *Readiness) Problems() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, n := range r.order {
		out = append(out, r.problems[n]...)
	}
	return out
}

// NotReady returns every reason not to be ready (problems last), with extra reasons the
// caller found; none: ready.
func (r *Readiness) NotReady(extra ...string) []string {
	r.mu.Lock()
	order := slices.Clone(r.order)
	var out []string
	checks := make([]func() []string, len(order))
	for i, n := range order {
		out = append(out, r.reasons[n]...)
		checks[i] = r.checks[n]
	}
	r.mu.Unlock()
	for _, c := range checks {
		if c != nil {
			out = append(out, c()...)
		}
	}
	for _, e := range extra {
		if e != "" {
			out = append(out, e)
		}
	}
	return append(out, r.Problems()...)
}

// handoff carries the latest value of one subsystem's output to another: only the newest
// counts, so a slow reader never blocks its writer.
type handoff[T any] struct {
	mu  sync.Mutex
	v   T
	set bool
	c   chan struct{}
}

func newHandoff[T any]() *handoff[T] { return &handoff[T]{c: make(chan struct{}, 1)} }

func (h *handoff[T]) put(v T) {
	h.mu.Lock()
	h.v, h.set = v, true
	h.mu.Unlock()
	select {
	case h.c <- struct{}{}:
	default:
	}
}

// get returns the latest value, and false if none was put yet (or h is nil).
func (h *handoff[T]) get() (T, bool) {
	var zero T
	if h == nil {
		return zero, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.v, h.set
}

// changed signals a put; a nil handoff never signals.
func (h *handoff[T]) changed() <-chan struct{} {
	if h == nil {
		return nil
	}
	return h.c
}
