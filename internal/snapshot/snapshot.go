// Package snapshot owns the agent's in-memory copy of the datastore: one watch per
// resource kind and one over IPAM's block affinities, merged into immutable Views that
// every subsystem reads. A re-list after compaction or a lost connection happens once, in
// the watch, for every reader.
package snapshot

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"path"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
)

// Source is where resources come from: datastore.Client.
type Source interface {
	Watch(ctx context.Context, kind *api.Kind, ns string, fromRevision int64) <-chan datastore.Event
}

// AffinitySource is where block affinities come from: ipam.Client. Each value on the
// channel is the whole set of confirmed affinities, block to node.
type AffinitySource interface {
	WatchAllAffinities(ctx context.Context) <-chan map[netip.Prefix]string
}

// View is the datastore as the snapshot last saw it. It is never changed once published:
// readers may keep it and read it from any goroutine, and must not modify what it holds.
type View struct {
	// Synced is set once every watch has delivered its starting state.
	Synced bool
	// Generation counts the views published; a reader can tell a new one from one it has.
	Generation uint64
	// Affinities maps every block with a confirmed affinity to its node.
	Affinities map[netip.Prefix]string

	resources map[*api.Kind]map[string]api.Resource // by "<namespace>/<name>"
}

// Resources returns the resources of kind, keyed by "<namespace>/<name>" ("/<name>" for
// cluster-wide kinds). The map is the view's: read it, do not change it.
func (v *View) Resources(kind *api.Kind) map[string]api.Resource { return v.resources[kind] }

// Count is how many resources of kind the view holds.
func (v *View) Count(kind *api.Kind) int { return len(v.resources[kind]) }

// List returns the view's resources of the kind whose Go type is T, in key order (so
// desired state derived from it is the same for the same datastore).
func List[T api.Resource](v *View) []T {
	kind, err := api.KindForType[T]()
	if err != nil {
		panic(err) // a programming error: T is not a resource type
	}
	m := v.resources[kind]
	out := make([]T, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k].(T))
	}
	return out
}

// Get returns the resource of type T named ns/name ("" ns for cluster-wide kinds).
func Get[T api.Resource](v *View, ns, name string) (T, bool) {
	kind, err := api.KindForType[T]()
	if err != nil {
		panic(err)
	}
	r, ok := v.resources[kind][ns+"/"+name]
	if !ok {
		var zero T
		return zero, false
	}
	return r.(T), true
}

// AffineBlocks returns the blocks whose confirmed affinity is node's, sorted.
func (v *View) AffineBlocks(node string) []netip.Prefix {
	var out []netip.Prefix
	for b, n := range v.Affinities {
		if n == node {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), a.Bits()-b.Bits())
	})
	return out
}

// Snapshot merges one watch per kind and the affinity watch into Views.
type Snapshot struct {
	kinds []*api.Kind
	src   Source
	aff   AffinitySource
	log   *slog.Logger

	mu      sync.Mutex
	view    *View
	subs    []*subscriber
	broken  map[*api.Kind]error // kinds whose watch last reported an error
	resyncs atomic.Int64
}

// New returns a snapshot of kinds (and, when aff is not nil, of block affinities). Run
// starts the watches.
func New(src Source, aff AffinitySource, kinds []*api.Kind, log *slog.Logger) *Snapshot {
	if log == nil {
		log = slog.Default()
	}
	empty := &View{resources: map[*api.Kind]map[string]api.Resource{}, Affinities: map[netip.Prefix]string{}}
	for _, k := range kinds {
		empty.resources[k] = map[string]api.Resource{}
	}
	return &Snapshot{kinds: slices.Clone(kinds), src: src, aff: aff, log: log, view: empty, broken: map[*api.Kind]error{}}
}

// Kinds are the kinds the snapshot watches, one watch each.
func (s *Snapshot) Kinds() []*api.Kind { return slices.Clone(s.kinds) }

// View returns the latest view.
func (s *Snapshot) View() *View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view
}

// Synced says whether every watch has delivered its starting state.
func (s *Snapshot) Synced() bool { return s.View().Synced }

// Resyncs counts the re-lists after the first (compaction, a lost connection), all kinds.
func (s *Snapshot) Resyncs() int64 { return s.resyncs.Load() }

// WatchErrors returns, per kind, the error its watch last reported and has not recovered
// from yet (the watch retries by itself).
func (s *Snapshot) WatchErrors() map[string]error {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]error, len(s.broken))
	for k, err := range s.broken {
		out[k.Plural] = err
	}
	return out
}

// Subscribe returns a channel that receives a value whenever a new view is published
// (changes arriving together are coalesced into one notification). A view published
// before Subscribe is signalled at once, so a subscriber never waits for a change that
// already happened.
func (s *Snapshot) Subscribe() <-chan struct{} {
	sub := &subscriber{c: make(chan struct{}, 1), name: "a subscriber"}
	if pc, _, _, ok := runtime.Caller(1); ok {
		if f := runtime.FuncForPC(pc); f != nil {
			sub.name = path.Base(f.Name()) // agent.(*proxySubsystem).Run
		}
	}
	s.mu.Lock()
	s.subs = append(s.subs, sub)
	if s.view.Generation > 0 {
		sub.notify(time.Now())
	}
	s.mu.Unlock()
	return sub.c
}

// A subscriber is a Subscribe channel, the function that subscribed, and when the
// notification now in the channel was sent.
type subscriber struct {
	c       chan struct{}
	name    string
	pending time.Time
}

// notify puts a notification in the channel unless one is pending already (it then
// keeps its time).
func (sub *subscriber) notify(now time.Time) {
	select {
	case sub.c <- struct{}{}:
		sub.pending = now
	default:
	}
}

// Stalled names the subscribers that have left a notification untaken for longer than
// d, and for how long: a subsystem stuck in one pass (a deadlock, a call that never
// returns) while views wait for it, as kube-proxy's health check fails when changes
// wait longer than it allows. A subscriber with nothing pending is never stalled, however
// long its pass.
func (s *Snapshot) Stalled(d time.Duration) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	now := time.Now()
	for _, sub := range s.subs {
		if len(sub.c) > 0 && now.Sub(sub.pending) > d {
			out = append(out, fmt.Sprintf("%s has not taken a change published %s ago", sub.name, now.Sub(sub.pending).Round(time.Second)))
		}
	}
	return out
}

type kindEvent struct {
	kind *api.Kind
	ev   datastore.Event
}

// Run watches until ctx ends.
func (s *Snapshot) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan kindEvent, 1024)
	for _, k := range s.kinds {
		ch := s.src.Watch(ctx, k, "", 0)
		go func() {
			for ev := range ch {
				select {
				case events <- kindEvent{k, ev}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	var affC <-chan map[netip.Prefix]string
	affRead := s.aff == nil
	if s.aff != nil {
		affC = s.aff.WatchAllAffinities(ctx)
	}
	plurals := make([]string, len(s.kinds))
	for i, k := range s.kinds {
		plurals[i] = k.Plural
	}
	s.log.Info("snapshot watching: one datastore watch per kind", "kinds", strings.Join(plurals, ","), "affinities", s.aff != nil)

	state := map[*api.Kind]map[string]api.Resource{}
	for _, k := range s.kinds {
		state[k] = map[string]api.Resource{}
	}
	affinities := map[netip.Prefix]string{}
	synced := map[*api.Kind]bool{}
	dirty := map[*api.Kind]bool{}
	affDirty := false
	apply := func(ke kindEvent) {
		switch ke.ev.Type {
		case datastore.Added, datastore.Modified:
			m := ke.ev.Resource.GetObjectMeta()
			state[ke.kind][m.Namespace+"/"+m.Name] = ke.ev.Resource
			dirty[ke.kind] = true
		case datastore.Deleted:
			m := ke.ev.Resource.GetObjectMeta()
			delete(state[ke.kind], m.Namespace+"/"+m.Name)
			dirty[ke.kind] = true
		case datastore.Synced:
			if synced[ke.kind] {
				s.resyncs.Add(1)
				s.log.Info("datastore watch resynced", "kind", ke.kind.Plural, "revision", ke.ev.Revision)
			}
			synced[ke.kind] = true
			dirty[ke.kind] = true
			s.mu.Lock()
			delete(s.broken, ke.kind)
			s.mu.Unlock()
		case datastore.Error:
			s.mu.Lock()
			s.broken[ke.kind] = ke.ev.Err
			s.mu.Unlock()
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ke := <-events:
			apply(ke)
		case a, ok := <-affC:
			if !ok {
				return ctx.Err()
			}
			affinities, affRead, affDirty = a, true, true
		}
		// Take whatever else has arrived before publishing once.
	drain:
		for {
			select {
			case ke := <-events:
				apply(ke)
			default:
				break drain
			}
		}
		if len(dirty) == 0 && !affDirty {
			continue
		}
		s.publish(state, dirty, affinities, affDirty, len(synced) == len(s.kinds) && affRead)
		clear(dirty)
		affDirty = false
	}
}

// publish makes a new view from the previous one, copying only the kinds that changed.
func (s *Snapshot) publish(state map[*api.Kind]map[string]api.Resource, dirty map[*api.Kind]bool,
	affinities map[netip.Prefix]string, affDirty, synced bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.view
	next := &View{Synced: synced, Generation: prev.Generation + 1, Affinities: prev.Affinities,
		resources: maps.Clone(prev.resources)}
	for k := range dirty {
		next.resources[k] = maps.Clone(state[k])
	}
	if affDirty {
		next.Affinities = affinities // the watch sends a fresh map each time
	}
	s.view = next
	now := time.Now()
	for _, sub := range s.subs {
		sub.notify(now)
	}
}

// Differs says whether any of kinds (or, with affinities set, the block affinities)
// changed between prev and v; a nil prev differs. Views share what did not change, so this
// costs a pointer comparison per kind: a subsystem skips work a change cannot affect.
func (v *View) Differs(prev *View, affinities bool, kinds ...*api.Kind) bool {
	if prev == nil || prev.Synced != v.Synced {
		return true
	}
	if affinities && reflect.ValueOf(v.Affinities).UnsafePointer() != reflect.ValueOf(prev.Affinities).UnsafePointer() {
		return true
	}
	for _, k := range kinds {
		if reflect.ValueOf(v.resources[k]).UnsafePointer() != reflect.ValueOf(prev.resources[k]).UnsafePointer() {
			return true
		}
	}
	return false
}

// NewView builds a synced view holding rs and affinities, for tests of code that derives
// desired state from a view.
func NewView(affinities map[netip.Prefix]string, rs ...api.Resource) (*View, error) {
	v := &View{Synced: true, Generation: 1, Affinities: affinities, resources: map[*api.Kind]map[string]api.Resource{}}
	if v.Affinities == nil {
		v.Affinities = map[netip.Prefix]string{}
	}
	for _, r := range rs {
		k, err := api.KindOf(r)
		if err != nil {
			return nil, err
		}
		if v.resources[k] == nil {
			v.resources[k] = map[string]api.Resource{}
		}
		m := r.GetObjectMeta()
		v.resources[k][m.Namespace+"/"+m.Name] = r
	}
	return v, nil
}

// With returns the view that follows v when rs are written (added, or replacing those of
// the same name): as the snapshot publishes them, kinds rs do not touch share v's maps, so
// Differs tells them unchanged. For tests of code that skips work by Differs.
func (v *View) With(rs ...api.Resource) (*View, error) {
	next := &View{Synced: v.Synced, Generation: v.Generation + 1, Affinities: v.Affinities, resources: maps.Clone(v.resources)}
	copied := map[*api.Kind]bool{}
	for _, r := range rs {
		k, err := api.KindOf(r)
		if err != nil {
			return nil, err
		}
		if !copied[k] {
			next.resources[k], copied[k] = maps.Clone(v.resources[k]), true
			if next.resources[k] == nil {
				next.resources[k] = map[string]api.Resource{}
			}
		}
		m := r.GetObjectMeta()
		next.resources[k][m.Namespace+"/"+m.Name] = r
	}
	return next, nil
}
