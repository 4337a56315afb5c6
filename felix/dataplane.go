package felix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tabby-net/tabby/internal/routekey"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DefaultResyncInterval is how often Dataplane re-reads the kernel without being asked.
// Route and link changes arrive as netlink events within milliseconds, so the periodic pass
// is a backstop: for events lost to a full socket buffer, for sysctls changed by hand (which
// raise no event), and for destinations another protocol's route held and gave up. At
// 10,000 workloads a periodic pass costs ~175 ms (most of it re-reading 20,000 sysctls),
// under 2% of a core every 10 s; Calico's 90 s route refresh leaves a sysctl changed by
// hand wrong for longer than an operator waits.
const DefaultResyncInterval = 10 * time.Second

// eventBuffer is the receive buffer of the netlink event sockets: a pass writing 10,000
// routes raises 10,000 events, more than the default buffer holds.
const eventBuffer = 8 << 20

// Config configures a Dataplane.
type Config struct {
	// NetNS is the path of the network namespace to program (e.g. /run/netns/node1); empty
	// means the agent's own.
	NetNS string
	// Table is the routing table of felix's routes; 0 means main.
	Table int
	// ResyncInterval is the period of full passes; 0 means DefaultResyncInterval.
	ResyncInterval time.Duration
	Log            *slog.Logger
	// Observe, if set, is told of every pass, as writer WriterRoutes.
	Observe ApplyObserver
}

// Status says how the last reconciliation pass went.
type Status struct {
	Passes uint64 // passes run so far
	// Dumps counts the passes that read the whole table (every pass but those of learned
	// routes alone).
	Dumps    uint64
	LastPass time.Time // end of the last pass
	LastOK   time.Time // end of the last pass without error
	Err      error     // the last pass's error, nil if it succeeded
	Stats    Stats     // what the last pass did to routes
	Sysctls  int       // sysctls the last pass wrote
	// Routes is how many routes of RouteProtocol felix's table holds, as of the last pass
	// that could read them.
	Routes int
	// Rejected are workload addresses left without a route (see DesiredRoutes).
	Rejected []Rejection
}

// Dataplane keeps the kernel's routes and sysctls equal to the latest LocalState, and its
// workload interfaces up (DesiredUp): it
// reconciles when the state changes, when netlink reports a change to a route or interface
// it cares about, and every ResyncInterval. It never flushes: a new Dataplane over routes a
// previous agent installed changes only what is wrong.
type Dataplane struct {
	log      *slog.Logger
	observe  ApplyObserver
	interval time.Duration // guarded by mu; SetResyncInterval changes it
	// newInterval wakes Run to take a new interval.
	newInterval chan struct{}
	table       int
	ns          netns.NsHandle
	h           *netlink.Handle
	routes      *RouteReconciler
	batch       *routeBatch // Run's alone: the writes of learned routes
	sysctls     sysctlReconciler
	links       linkTracker

	updated chan struct{} // holds one wake-up while a state is waiting
	mu      sync.Mutex
	state   *LocalState // nil until the first Update
	status  Status
	// learned are BGP's routes as Learn left them, beside LocalState.Learned; learnDirty
	// the destinations Learn changed since a pass last took them, and learnedC the wake-up.
	learned    map[routekey.Prefix]routekey.Addr // destination → gateway
	learnDirty map[routekey.Prefix]struct{}
	learnedC   chan struct{}

	// Run's alone: the destinations of the last full pass's local routes, which win over
	// learned ones, and those of learned routes whose slot another protocol's route holds.
	local   map[netip.Prefix]struct{}
	foreign map[netip.Prefix]struct{}

	// watched is what the last pass wanted and saw, for telling events worth a pass from the
	// echoes of felix's own writes.
	watched atomic.Pointer[watchSnapshot]
}

// NewDataplane opens the namespace and a netlink handle in it. Close releases them.
func NewDataplane(cfg Config) (*Dataplane, error) {
	d := &Dataplane{
		log:         cfg.Log,
		observe:     cfg.Observe,
		interval:    cfg.ResyncInterval,
		table:       cfg.Table,
		ns:          netns.None(),
		updated:     make(chan struct{}, 1),
		newInterval: make(chan struct{}, 1),
		learned:     map[routekey.Prefix]routekey.Addr{},
		learnDirty:  map[routekey.Prefix]struct{}{},
		learnedC:    make(chan struct{}, 1),
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.interval <= 0 {
		d.interval = DefaultResyncInterval
	}
	if d.table == 0 {
		d.table = unix.RT_TABLE_MAIN
	}
	var err error
	if cfg.NetNS == "" {
		d.h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		if d.ns, err = netns.GetFromPath(cfg.NetNS); err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", cfg.NetNS, err)
		}
		d.h, err = netlink.NewHandleAt(d.ns, unix.NETLINK_ROUTE)
	}
	if err != nil {
		d.closeNS()
		return nil, fmt.Errorf("open netlink in network namespace %q: %w", cfg.NetNS, err)
	}
	// The kernel then filters route dumps by protocol and table, so a pass reads only
	// felix's routes however many others (BGP's, say) share the table.
	if err := d.h.SetStrictCheck(true); err != nil {
		d.Close()
		return nil, fmt.Errorf("netlink strict checking: %w", err)
	}
	d.routes = NewRouteReconciler(d.h, d.table, d.log)
	if d.batch, err = newRouteBatch(d.ns, d.table); err != nil {
		d.Close()
		return nil, err
	}
	d.sysctls = sysctlReconciler{ns: d.ns}
	return d, nil
}

// Close releases the namespace and netlink handle; call it after Run has returned.
func (d *Dataplane) Close() error {
	d.h.Close()
	if d.batch != nil {
		d.batch.close()
	}
	return d.closeNS()
}

func (d *Dataplane) closeNS() error {
	if !d.ns.IsOpen() {
		return nil
	}
	if err := d.ns.Close(); err != nil {
		return fmt.Errorf("close network namespace: %w", err)
	}
	return nil
}

// Update hands the Dataplane a new desired state; Run applies the latest one, so a burst of
// updates costs one pass. Update does not block. The Dataplane keeps s and its slices: the
// caller must not change them afterwards.
func (d *Dataplane) Update(s LocalState) {
	d.mu.Lock()
	d.state = &s
	d.mu.Unlock()
	poke(d.updated)
}

// SetResyncInterval changes the period of full passes while Run runs; 0 is
// DefaultResyncInterval. Setting the period it has changes nothing (the next full pass
// is not put off).
func (d *Dataplane) SetResyncInterval(interval time.Duration) {
	if interval <= 0 {
		interval = DefaultResyncInterval
	}
	d.mu.Lock()
	changed := d.interval != interval
	d.interval = interval
	d.mu.Unlock()
	if changed {
		poke(d.newInterval)
	}
}

func (d *Dataplane) resyncInterval() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.interval
}

// Status returns the outcome of the last pass.
func (d *Dataplane) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status
}

// Run reconciles until ctx is done. It writes nothing before the first Update, so an agent
// that has not loaded its state yet cannot delete the routes a previous run installed. It
// returns an error only if it cannot subscribe to netlink events at all, and returns only
// once it has stopped using the netlink handle.
func (d *Dataplane) Run(ctx context.Context) error {
	kick := make(chan struct{}, 1)
	var watcher sync.WaitGroup
	defer watcher.Wait()
	if err := d.watchKernel(ctx, kick, &watcher); err != nil {
		return err
	}
	rs := newResync(d.resyncInterval(), time.Now())
	periodic := time.NewTimer(d.resyncInterval())
	defer periodic.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	full := true // the first pass reads every sysctl
	failures := 0
	var lastLearned time.Time // the last pass of learned routes alone
	var applied *LocalState   // the state of the last full pass
	for {
		onlyLearned := false
		var cause string // why a full pass runs, for its log line
		select {
		case <-ctx.Done():
			return nil
		case <-d.updated:
			cause = "state"
			d.mu.Lock()
			s := d.state
			d.mu.Unlock()
			if releaseOnly(applied, s) {
				// BGP synced: the held routes go with the next full pass, made due now;
				// while a full table is still being learned it waits for that as the
				// periodic one does, and learned changes follow the new state meanwhile.
				rs.dueNow(time.Now())
				periodic.Reset(0)
				cause = "BGP synced"
				continue
			}
		case <-kick:
			cause = "kernel event"
		case <-retry.C:
			cause = "retry"
		case <-periodic.C:
			cause = "periodic"
			now := time.Now()
			run, again := rs.check(now, d.learnPending() || now.Sub(lastLearned) < learnQuiet)
			if !run {
				periodic.Reset(again)
				if !d.learnPending() {
					continue
				}
				onlyLearned = true
				break
			}
			full = true
		case <-d.newInterval:
			periodic.Reset(rs.setInterval(d.resyncInterval(), time.Now()))
			continue
		case <-d.learnedC:
			onlyLearned, cause = true, "learned routes before the first pass"
		}
		d.mu.Lock()
		s := d.state
		d.mu.Unlock()
		if s == nil {
			continue
		}
		if onlyLearned && d.watched.Load() != nil {
			// Only learned routes changed: write just those, with no dump of the table.
			if err := d.syncLearned(*s); err != nil {
				failures++
				retry.Reset(min(time.Second<<min(failures-1, 6), d.resyncInterval()))
			}
			lastLearned = time.Now()
			continue
		}
		start := time.Now()
		applied = s
		if err := d.sync(*s, full, cause); err != nil {
			failures++
			retry.Reset(min(time.Second<<min(failures-1, 6), d.resyncInterval()))
		} else {
			failures = 0
		}
		if full {
			periodic.Reset(rs.ran(time.Since(start), time.Now()))
		}
		full = false
	}
}

// learnQuiet is how long after the last pass of learned routes alone the periodic full
// pass still counts them as being written.
const learnQuiet = time.Second

// fullPassShare bounds the periodic full passes to about 1/fullPassShare of the
// dataplane's time: the next is due at least fullPassShare-1 times the last one's length
// after it ended.
const fullPassShare = 5

// resync schedules the periodic full pass. It is due an interval after the end of the
// last one, or (fullPassShare-1)× that pass's length if longer: dumping and comparing a full BGP
// table takes seconds on a loaded machine, and a short --route-refresh-interval would
// otherwise spend most of the time on it. While BGP's learned routes are being written it
// waits, learnQuiet at a time, at most fullPassShare times as long again: every learned
// change would wait behind it, and the writes of those changes are what it would check.
type resync struct {
	interval time.Duration
	wait     time.Duration // from the end of the last full pass to the next
	due      time.Time
}

func newResync(interval time.Duration, now time.Time) resync {
	return resync{interval: interval, wait: interval, due: now.Add(interval)}
}

// check says whether the full pass runs at now, given whether learned routes are being
// written; if not, again is when to ask next.
func (r *resync) check(now time.Time, learning bool) (run bool, again time.Duration) {
	if now.Before(r.due) {
		return false, r.due.Sub(now)
	}
	if late := fullPassShare * r.wait; learning && now.Sub(r.due) < late {
		return false, min(learnQuiet, r.due.Add(late).Sub(now))
	}
	return true, 0
}

// ran records a full pass that took took and ended at end; it returns how long until the
// next is due.
func (r *resync) ran(took time.Duration, end time.Time) time.Duration {
	r.wait = max(r.interval, (fullPassShare-1)*took)
	r.due = end.Add(r.wait)
	return r.wait
}

// setInterval takes a new period: the next pass is due the new period after the last
// ended. It returns how long until then.
func (r *resync) setInterval(interval time.Duration, now time.Time) time.Duration {
	end := r.due.Add(-r.wait)
	r.interval, r.wait = interval, interval
	r.due = end.Add(interval)
	return max(0, r.due.Sub(now))
}

// dueNow makes the full pass due at now (its wait for learned routes counts from now).
func (r *resync) dueNow(now time.Time) { r.due = now }

// releaseOnly says whether s differs from the state of the last full pass only in no
// longer holding learned routes: BGP synced, and the gateway routes it held (a previous
// run's that no peer sent again) are to go. Learned routes are written as they change
// whatever the state, so that needs a full pass, but not one in front of them.
func releaseOnly(applied, s *LocalState) bool {
	if applied == nil || s == nil || !applied.HoldLearned || s.HoldLearned {
		return false
	}
	held := *s
	held.HoldLearned = true
	return reflect.DeepEqual(*applied, held)
}

// learnPending says whether Learn left changes no pass has taken yet.
func (d *Dataplane) learnPending() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.learnDirty) > 0
}

// sync runs one pass: workload interfaces up, sysctls (an IPv6 route needs IPv6 on its
// interface), then routes.
func (d *Dataplane) sync(s LocalState, full bool, cause string) error {
	start := time.Now()
	d.mu.Lock()
	learnedN := len(d.learned)
	d.mu.Unlock()
	byDst, rejected := desiredLocal(s, len(s.Learned)+learnedN)
	d.local = make(map[netip.Prefix]struct{}, len(byDst))
	for dst := range byDst {
		d.local[dst] = struct{}{}
	}
	learn := func(r Route) {
		if r, ok := s.learnedRoute(r); ok {
			if _, ok := byDst[r.Dst]; !ok {
				byDst[r.Dst] = r
			}
		}
	}
	for _, r := range s.Learned {
		learn(r)
	}
	// Straight from the map, not through a copy: at a full table a copy is ~9 MB per pass.
	d.mu.Lock()
	for dst, gw := range d.learned {
		learn(learnedGateway(dst, gw))
	}
	d.learnDirty = map[routekey.Prefix]struct{}{} // this pass writes every learned route
	d.mu.Unlock()
	routes := sortedRoutes(byDst)
	sysctls := DesiredSysctls(s)
	// Published before the links are read, so that a link event from now on wakes another
	// pass if this one missed it. It keeps byDst, which this pass no longer changes.
	w := newWatchSnapshot(byDst, sysctls)
	d.watched.Store(w)
	links := d.links.subset(w.ifaces)
	raised, uerr := setUp(d.h, DesiredUp(s), links)
	written, serr := d.sysctls.apply(sysctls, links, full)
	st, rerr := d.routes.apply(routes, links, s.HoldLearned)
	err := errors.Join(uerr, serr, rerr)
	d.foreign = map[netip.Prefix]struct{}{}
	for _, sk := range st.Skipped {
		if sk.Reason == heldByOther {
			d.foreign[sk.Route.Dst] = struct{}{}
		}
	}
	end := time.Now()
	if len(raised) > 0 {
		d.log.Warn("set workload interfaces up that were down", "count", len(raised), "interfaces", raised)
	}

	d.mu.Lock()
	prev := d.status
	d.status = Status{
		Passes: prev.Passes + 1, Dumps: prev.Dumps + 1, LastPass: end, LastOK: prev.LastOK,
		Err: err, Stats: st, Sysctls: written, Routes: prev.Routes, Rejected: rejected,
	}
	if err == nil {
		d.status.LastOK = end
	}
	if st.listed {
		d.status.Routes = st.Programmed
	}
	d.mu.Unlock()
	d.observe.observe(WriterRoutes, end.Sub(start), err)

	took := end.Sub(start).Round(time.Microsecond)
	switch {
	case err != nil:
		d.log.Error("dataplane pass failed", "err", err, "added", st.Added, "replaced", st.Replaced,
			"deleted", st.Deleted, "cause", cause, "took", took)
	case st.Changed() || written > 0:
		d.log.Info("dataplane updated", "added", st.Added, "replaced", st.Replaced, "deleted", st.Deleted,
			"sysctls", written, "routes", len(routes), "cause", cause, "took", took)
	default:
		d.log.Debug("dataplane in sync", "routes", len(routes), "full", full, "cause", cause, "took", took)
	}
	if !slices.Equal(st.Skipped, prev.Stats.Skipped) && len(st.Skipped) > 0 {
		d.log.Warn("routes not programmed, retrying when their interfaces change", "count", len(st.Skipped),
			"first", firstFew(st.Skipped))
	}
	if !slices.Equal(rejected, prev.Rejected) && len(rejected) > 0 {
		d.log.Warn("workload addresses without a route", "count", len(rejected), "first", firstFew(rejected))
	}
	return err
}

func firstFew[T fmt.Stringer](xs []T) string {
	var b strings.Builder
	for i, x := range xs[:min(len(xs), 5)] {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(x.String())
	}
	return b.String()
}

// watchSnapshot is what the last pass wanted, and learned routes written since.
type watchSnapshot struct {
	mu     sync.RWMutex // written by syncLearned while events are read
	routes map[netip.Prefix]Route
	ifaces map[string]bool // interfaces of desired routes and sysctls
}

func (w *watchSnapshot) route(dst netip.Prefix) (Route, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	r, ok := w.routes[dst]
	return r, ok
}

func (w *watchSnapshot) ifacesCopy() map[string]bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return maps.Clone(w.ifaces)
}

func (w *watchSnapshot) wantsIface(name string) bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.ifaces[name]
}

// set records r as wanted (deleted when want is false).
func (w *watchSnapshot) set(r Route, want bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !want {
		delete(w.routes, r.Dst)
		return
	}
	w.routes[r.Dst] = r
	if r.Interface != "" {
		w.ifaces[r.Interface] = true
	}
}

// newWatchSnapshot keeps routes, the desired routes by destination.
func newWatchSnapshot(routes map[netip.Prefix]Route, sysctls []Sysctl) *watchSnapshot {
	w := &watchSnapshot{routes: routes, ifaces: make(map[string]bool)}
	for _, r := range routes {
		if r.Interface != "" {
			w.ifaces[r.Interface] = true
		}
	}
	for _, s := range sysctls {
		if s.Interface != "" {
			w.ifaces[s.Interface] = true
		}
	}
	return w
}

// routeEventMatters reports whether a route event may have left the kernel different from
// what felix wants. Echoes of felix's own writes do not matter: an added or replaced route
// equal to a desired one, or a deleted route not desired.
func (d *Dataplane) routeEventMatters(u netlink.RouteUpdate) bool {
	if u.Table != d.table {
		return false
	}
	w := d.watched.Load()
	if w == nil {
		return false // no pass yet: the first one reads everything anyway
	}
	k := fromNetlink(u.Route, d.links.name(u.LinkIndex))
	want, wanted := w.route(k.Route.Dst)
	if u.Protocol != RouteProtocol {
		// Another protocol's route gave up a destination felix may have been kept from.
		return u.Type == unix.RTM_DELROUTE && wanted
	}
	if u.Type == unix.RTM_DELROUTE {
		return wanted
	}
	return !wanted || k.Odd || k.OtherMetric || !k.matches(want)
}

// linkEventMatters records a link event and reports whether it changed an interface the
// last pass needed (its existence, index or up state).
func (d *Dataplane) linkEventMatters(u netlink.LinkUpdate) bool {
	changed := d.links.update(u)
	w := d.watched.Load()
	return w != nil && slices.ContainsFunc(changed, w.wantsIface)
}

// watchKernel subscribes to route and link events in the namespace, loads the link
// table, and pokes kick for each event that matters. If a subscription fails later (its
// socket overflowed, say), it subscribes and loads again and pokes kick, since events may
// have been lost.
func (d *Dataplane) watchKernel(ctx context.Context, kick chan<- struct{}, wg *sync.WaitGroup) error {
	sub, err := d.subscribe(ctx)
	if err != nil {
		return err
	}
	wg.Go(func() {
		for {
			d.relay(ctx, sub, kick)
			sub.stop()
			for ctx.Err() == nil {
				if sub, err = d.subscribe(ctx); err == nil {
					break
				}
				d.log.Warn("netlink subscription failed; retrying", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			if ctx.Err() != nil {
				return
			}
			poke(kick)
		}
	})
	return nil
}

type subscription struct {
	routes chan netlink.RouteUpdate
	links  chan netlink.LinkUpdate
	cancel context.CancelFunc
}

// subscribe subscribes to route and link events in the namespace, then loads the link table.
func (d *Dataplane) subscribe(ctx context.Context) (*subscription, error) {
	ctx, cancel := context.WithCancel(ctx)
	s := &subscription{
		routes: make(chan netlink.RouteUpdate, 1024),
		links:  make(chan netlink.LinkUpdate, 256),
		cancel: cancel,
	}
	onErr := func(err error) {
		if ctx.Err() == nil {
			d.log.Warn("netlink event stream", "err", err)
		}
	}
	ns := d.ns
	err := netlink.RouteSubscribeWithOptions(s.routes, ctx.Done(), netlink.RouteSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: eventBuffer, ReceiveBufferForceSize: true,
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("subscribe to route events: %w", err)
	}
	err = netlink.LinkSubscribeWithOptions(s.links, ctx.Done(), netlink.LinkSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: eventBuffer, ReceiveBufferForceSize: true,
	})
	if err != nil {
		s.links = nil
		s.stop()
		return nil, fmt.Errorf("subscribe to link events: %w", err)
	}
	// Dumped after subscribing, so that every change the dump misses arrives as an event
	// queued behind it.
	links, err := listLinks(d.h)
	if err != nil {
		s.stop()
		return nil, err
	}
	d.links.load(links)
	return s, nil
}

// stop closes the subscription's sockets and drains its channels, so that netlink's
// reader goroutines, which block on a full channel, can see the close and exit.
func (s *subscription) stop() {
	s.cancel()
	go func() {
		for range s.routes {
		}
	}()
	if s.links != nil {
		go func() {
			for range s.links {
			}
		}()
	}
}

// relay pokes kick for every event that matters, until ctx is done or a stream ends.
func (d *Dataplane) relay(ctx context.Context, s *subscription, kick chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-s.routes:
			if !ok {
				return
			}
			if d.routeEventMatters(u) {
				poke(kick)
			}
		case u, ok := <-s.links:
			if !ok {
				return
			}
			if d.linkEventMatters(u) {
				poke(kick)
			}
		}
	}
}

// poke wakes whoever waits on c without blocking: one pending wake-up is enough.
func poke(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
