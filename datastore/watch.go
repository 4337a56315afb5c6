package datastore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/api"
)

// ErrCompacted is etcd's error for a revision whose history compaction removed.
var ErrCompacted = rpctypes.ErrCompacted

// EventType says what an Event reports.
type EventType int

// Event types. Added, Modified and Deleted are changes; Synced and Error are about the
// watch itself.
const (
	Added EventType = iota + 1
	Modified
	Deleted
	// Synced: the events so far leave the subscriber's state equal to the store at the
	// event's Revision. Sent once the watcher has its starting state and after every
	// relist, so a consumer can wait for it before acting on a partial picture.
	Synced
	// Error: the watcher lost etcd (Err says why) and is retrying; what follows is still
	// exactly the changes. The channel closes after an Error only when the watch cannot
	// go on: the client was closed, or the requested start revision is compacted.
	Error
)

var eventTypeNames = [...]string{Added: "Added", Modified: "Modified", Deleted: "Deleted", Synced: "Synced", Error: "Error"}

func (t EventType) String() string {
	if t > 0 && int(t) < len(eventTypeNames) {
		return eventTypeNames[t]
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is one change a watch delivers. Resources are shared with the watcher's own
// state: treat them as read-only.
type Event struct {
	Type EventType
	// Resource is the new value (Added, Modified) or the last value (Deleted).
	Resource api.Resource
	// Old is the value the subscriber had before (Modified, Deleted).
	Old api.Resource
	// Revision is the store revision of the change; events a relist synthesises carry
	// the list's revision.
	Revision int64
	Err      error // Error only
}

// listTimeout bounds one (re)list, so a dead etcd shows up as Error events rather than
// a silent wait.
const listTimeout = 30 * time.Second

// Watch streams every change to kind's resources in namespace ns ("" = all) after
// fromRevision, in revision order, each exactly once. The channel closes when ctx ends.
//
// With fromRevision 0 the watcher lists first: an Added event per resource, then Synced.
// With fromRevision > 0 the subscriber holds the state at that revision (from List);
// the watcher reads that state itself, sends Synced, and watches on. If fromRevision is
// already compacted, it sends one Error wrapping ErrCompacted and closes: list again, or
// use WatchFrom.
//
// Should etcd's history be compacted past the watcher's position, or the stream break,
// the watcher relists and sends synthetic events for exactly the difference between the
// subscriber's state and the list, then Synced, and watches on from the list's revision.
func (c *Client) Watch(ctx context.Context, kind *api.Kind, ns string, fromRevision int64) <-chan Event {
	w, err := c.newWatcher(kind, ns)
	if err != nil {
		return failed(err)
	}
	start := w.resync
	if fromRevision > 0 {
		start = func(ctx context.Context) error { return w.loadAt(ctx, fromRevision) }
	}
	go w.run(ctx, start)
	return w.out
}

// WatchFrom is Watch for a subscriber that holds known, the resources of kind in ns at
// revision (as List returned them). It needs no history at revision: if that is
// compacted, the first relist sends the difference from known.
func (c *Client) WatchFrom(ctx context.Context, kind *api.Kind, ns string, known []api.Resource, revision int64) <-chan Event {
	w, err := c.newWatcher(kind, ns)
	if err != nil {
		return failed(err)
	}
	for _, r := range known {
		m := r.GetObjectMeta()
		w.state[ResourcePrefix+kind.Key(m.Namespace, m.Name)] = r
	}
	go w.run(ctx, func(ctx context.Context) error {
		w.rev = revision
		w.send(ctx, Event{Type: Synced, Revision: revision})
		return ctx.Err()
	})
	return w.out
}

// failed is a watch that could not start: one Error, then closed.
func failed(err error) <-chan Event {
	ch := make(chan Event, 1)
	ch <- Event{Type: Error, Err: err}
	close(ch)
	return ch
}

// watcher keeps the subscriber's view of the watched prefix, so that after losing the
// event stream it can tell the subscriber exactly what changed.
type watcher struct {
	c      *Client
	kind   *api.Kind
	prefix string
	out    chan Event
	log    *slog.Logger
	state  map[string]api.Resource // storage key → value the subscriber has (its ResourceVersion is the mod revision)
	rev    int64                   // the subscriber's state is the store at this revision
}

func (c *Client) newWatcher(kind *api.Kind, ns string) (*watcher, error) {
	prefix, err := listPrefix(kind, ns)
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	return &watcher{
		c: c, kind: kind, prefix: prefix,
		out:   make(chan Event),
		log:   c.log.With("component", "datastore-watch", "kind", kind.Plural, "namespace", ns),
		state: map[string]api.Resource{},
	}, nil
}

// fatal marks an error after which the watcher cannot go on.
type fatal struct{ error }

func (f fatal) Unwrap() error { return f.error }

func (w *watcher) run(ctx context.Context, start func(context.Context) error) {
	defer close(w.out)
	var bo backoff
	sync := start
	for {
		if sync != nil {
			if err := sync(ctx); err != nil {
				if !w.retry(ctx, &bo, err) {
					return
				}
				continue
			}
			sync = nil
			bo.reset()
		}
		err := w.stream(ctx, &bo)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrCompacted) {
			w.log.Info("watch history compacted; relisting", "err", err)
			sync = w.resync
			continue
		}
		if !w.retry(ctx, &bo, err) {
			return
		}
	}
}

// retry tells the subscriber and the log about err and waits out the backoff; false
// means the watcher must end.
func (w *watcher) retry(ctx context.Context, bo *backoff, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if w.c.etcd.Ctx().Err() != nil {
		err = fatal{fmt.Errorf("etcd client closed: %w", err)}
	}
	var f fatal
	if errors.As(err, &f) {
		w.log.Warn("watch ended", "err", err)
		w.send(ctx, Event{Type: Error, Err: f.error, Revision: w.rev})
		return false
	}
	w.log.Warn("watch interrupted; retrying", "err", err, "revision", w.rev)
	return w.send(ctx, Event{Type: Error, Err: err, Revision: w.rev}) && bo.wait(ctx)
}

// stream follows etcd's events after w.rev until the stream ends, returning why.
func (w *watcher) stream(ctx context.Context, bo *backoff) error {
	// WithRequireLeader: a member cut off from its cluster ends the stream instead of
	// going quiet.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.c.etcd.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(w.rev+1), clientv3.WithProgressNotify())
	for resp := range wch {
		if resp.CompactRevision != 0 {
			return fmt.Errorf("watch from revision %d: %w (compacted up to %d)", w.rev+1, ErrCompacted, resp.CompactRevision)
		}
		if err := resp.Err(); err != nil {
			return err
		}
		bo.reset()
		if resp.IsProgressNotify() {
			// Every event up to the header's revision has been delivered: resuming
			// from there avoids relisting for compactions of other keys' history.
			w.rev = max(w.rev, resp.Header.Revision)
			continue
		}
		for _, ev := range resp.Events {
			if !w.apply(ctx, ev) {
				return ctx.Err()
			}
		}
	}
	return errors.New("watch stream closed")
}

// apply updates the state with one etcd event and sends the subscriber's event; false
// when ctx ended first. A value that does not decode counts as absent.
func (w *watcher) apply(ctx context.Context, ev *clientv3.Event) bool {
	key := string(ev.Kv.Key)
	rev := ev.Kv.ModRevision
	w.rev = rev
	old := w.state[key]
	var r api.Resource
	if ev.Type == clientv3.EventTypePut {
		var err error
		if r, err = decode(w.kind, ev.Kv); err != nil {
			w.log.Error("stored value does not decode; treating it as absent", "err", err)
		}
	}
	switch {
	case r != nil && old == nil:
		w.state[key] = r
		return w.send(ctx, Event{Type: Added, Resource: r, Revision: rev})
	case r != nil:
		w.state[key] = r
		return w.send(ctx, Event{Type: Modified, Resource: r, Old: old, Revision: rev})
	case old != nil:
		delete(w.state, key)
		return w.send(ctx, Event{Type: Deleted, Resource: old, Old: old, Revision: rev})
	}
	return true
}

// resync lists the prefix and sends the difference from the subscriber's state:
// deletions first, then additions and modifications in key order, then Synced.
func (w *watcher) resync(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	kvs, rev, err := w.c.listKVs(lctx, w.prefix, 0)
	if err != nil {
		return fmt.Errorf("list %s: %w", w.prefix, err)
	}
	fresh := make(map[string]api.Resource, len(kvs))
	keys := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		r, err := decode(w.kind, kv)
		if err != nil {
			w.log.Error("stored value does not decode; treating it as absent", "err", err)
			continue
		}
		fresh[string(kv.Key)] = r
		keys = append(keys, string(kv.Key))
	}
	for _, key := range slices.Sorted(maps.Keys(w.state)) {
		if old := w.state[key]; fresh[key] == nil && !w.send(ctx, Event{Type: Deleted, Resource: old, Old: old, Revision: rev}) {
			return ctx.Err()
		}
	}
	for _, key := range keys {
		r, old := fresh[key], w.state[key]
		switch {
		case old == nil:
			if !w.send(ctx, Event{Type: Added, Resource: r, Revision: rev}) {
				return ctx.Err()
			}
		case old.GetObjectMeta().ResourceVersion != r.GetObjectMeta().ResourceVersion:
			if !w.send(ctx, Event{Type: Modified, Resource: r, Old: old, Revision: rev}) {
				return ctx.Err()
			}
		default:
			fresh[key] = old
		}
	}
	w.state, w.rev = fresh, rev
	w.send(ctx, Event{Type: Synced, Revision: rev})
	return ctx.Err()
}

// loadAt takes the store's state at rev as the subscriber's, for Watch from a revision.
func (w *watcher) loadAt(ctx context.Context, rev int64) error {
	lctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	kvs, _, err := w.c.listKVs(lctx, w.prefix, rev)
	if errors.Is(err, rpctypes.ErrCompacted) || errors.Is(err, rpctypes.ErrFutureRev) {
		return fatal{fmt.Errorf("watch %s from revision %d: %w", w.prefix, rev, err)}
	}
	if err != nil {
		return fmt.Errorf("list %s at revision %d: %w", w.prefix, rev, err)
	}
	for _, kv := range kvs {
		r, err := decode(w.kind, kv)
		if err != nil {
			w.log.Error("stored value does not decode; treating it as absent", "err", err)
			continue
		}
		w.state[string(kv.Key)] = r
	}
	w.rev = rev
	w.send(ctx, Event{Type: Synced, Revision: rev})
	return ctx.Err()
}

func (w *watcher) send(ctx context.Context, e Event) bool {
	select {
	case w.out <- e:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff spaces out retries against an unavailable etcd: 100ms doubling to 10s, jittered.
type backoff struct{ next time.Duration }

func (b *backoff) reset() { b.next = 0 }

// wait sleeps for the next interval; false if ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	b.next = min(max(2*b.next, 100*time.Millisecond), 10*time.Second)
	t := time.NewTimer(b.next/2 + rand.N(b.next/2))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
