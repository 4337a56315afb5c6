package felix

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tabby-net/tabby/internal/routekey"
	"golang.org/x/sys/unix"
)

// Learn hands the Dataplane changes to BGP's learned routes: routes (each of type
// RouteGateway; felix keeps only their destination and gateway, and any other route
// withdraws its destination) replace those of their destinations, and the destinations in
// withdrawn lose theirs. They join LocalState.Learned. Run writes only the destinations
// that changed, without reading the table back, unless a full pass is due anyway; the
// periodic full pass still compares every route with the kernel's. Learn does not block and
// keeps no reference to its arguments.
func (d *Dataplane) Learn(routes []Route, withdrawn []netip.Prefix) {
	if len(routes) == 0 && len(withdrawn) == 0 {
		return
	}
	d.mu.Lock()
	for _, r := range routes {
		dst := routekey.PrefixOf(r.Dst)
		if r.Type == RouteGateway && r.Gateway.IsValid() {
			d.learned[dst] = routekey.AddrOf(r.Gateway)
		} else {
			delete(d.learned, dst)
		}
		d.learnDirty[dst] = struct{}{}
	}
	for _, dst := range withdrawn {
		k := routekey.PrefixOf(dst)
		delete(d.learned, k)
		d.learnDirty[k] = struct{}{}
	}
	if len(d.learned) == 0 {
		d.learned = map[routekey.Prefix]routekey.Addr{} // a map keeps a full table's buckets for good
	}
	d.mu.Unlock()
	poke(d.learnedC)
}

// learnedGateway is the learned route to dst via gw.
func learnedGateway(dst routekey.Prefix, gw routekey.Addr) Route {
	return Route{Dst: dst.Prefix(), Type: RouteGateway, Gateway: gw.Addr()}
}

// learnedChange is one destination Learn changed: its learned route now, if any.
type learnedChange struct {
	dst   netip.Prefix
	route Route
	ok    bool
}

// takeLearned returns the destinations Learn changed since the last pass took them.
func (d *Dataplane) takeLearned() []learnedChange {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]learnedChange, 0, len(d.learnDirty))
	for dst := range d.learnDirty {
		gw, ok := d.learned[dst]
		c := learnedChange{dst: dst.Prefix(), ok: ok}
		if ok {
			c.route = learnedGateway(dst, gw)
		}
		out = append(out, c)
	}
	d.learnDirty = map[routekey.Prefix]struct{}{}
	return out
}

// syncLearned writes the learned routes that changed since the last pass against what
// the passes since the last full one wanted: an added destination is added (exclusively,
// so another protocol's route keeps its slot), a changed one replaced, a withdrawn one
// deleted, except that with s.HoldLearned it stays until BGP has synced (the full pass then
// deletes it). Local routes win as in DesiredRoutes. The kernel's echo of each write is
// then no news to routeEventMatters; anything else that differs, the next full pass finds.
func (d *Dataplane) syncLearned(s LocalState) error {
	changes := d.takeLearned()
	if len(changes) == 0 {
		return nil
	}
	start := time.Now()
	w := d.watched.Load()
	var st Stats
	var errs errorList
	var links linkTable
	// The writes go to the kernel in batches (routeBatch); their outcomes are read after.
	type write struct {
		op      int
		verb    string
		dst     netip.Prefix
		route   Route // for a delete, the route deleted
		deleted bool
	}
	var writes []write
	for _, c := range changes {
		if _, ok := d.local[c.dst]; ok {
			continue
		}
		want, ok := c.route, c.ok
		if ok {
			want, ok = s.learnedRoute(want)
		}
		old, had := w.route(c.dst)
		switch {
		case ok && had && old == want:
			continue
		case !ok && !had:
			continue
		case !ok:
			if s.HoldLearned && old.Type == RouteGateway {
				continue
			}
			w.set(old, false)
			if _, foreign := d.foreign[c.dst]; foreign {
				delete(d.foreign, c.dst)
				continue // never written: the slot is another protocol's
			}
			writes = append(writes, write{op: d.batch.del(c.dst), verb: "delete", dst: c.dst, route: old, deleted: true})
			continue
		}
		w.set(want, true)
		oif := 0
		if want.Interface != "" {
			if links.byName == nil {
				links = d.links.subset(w.ifacesCopy())
			}
			l, ok := links.byName[want.Interface]
			if !ok || !l.up {
				st.Skipped = append(st.Skipped, SkippedRoute{want, "interface does not exist or is down"})
				continue
			}
			oif = l.index
		}
		_, foreign := d.foreign[c.dst]
		replace := had && !foreign
		verb := "add"
		if replace {
			verb = "replace"
		}
		writes = append(writes, write{op: d.batch.add(want, oif, replace), verb: verb, dst: c.dst, route: want})
	}
	ops, ferr := d.batch.flush()
	if ferr != nil {
		errs.add(ferr)
	}
	for _, wr := range writes {
		err := ops[wr.op].err
		switch {
		case wr.deleted && err == nil:
			st.Deleted++
			d.log.Debug("route deleted", "route", wr.route)
		case wr.deleted && errors.Is(err, unix.ESRCH): // gone already
		case wr.deleted:
			errs.add(fmt.Errorf("delete route %s: %w", wr.route, err))
		case err == nil:
			delete(d.foreign, wr.dst)
			if wr.verb == "add" {
				st.Added++
			} else {
				st.Replaced++
			}
			d.log.Debug("route "+wr.verb, "route", wr.route)
		case wr.verb == "replace" && errors.Is(err, unix.EINVAL) && wr.route.OnLink && wr.dst.Addr().Is6():
			// The kernel refuses to replace an IPv6 route by one whose gateway lies in
			// the routed block (a tunnel's VTEP): replaceRoute deletes and adds it.
			if links.byName == nil {
				links = d.links.subset(w.ifacesCopy())
			}
			nr := d.routes.toNetlink(wr.route, links)
			if err := replaceRoute(d.h, &nr); err != nil {
				errs.add(fmt.Errorf("replace route %s: %w", wr.route, err))
				continue
			}
			delete(d.foreign, wr.dst)
			st.Replaced++
		case errors.Is(err, unix.EEXIST):
			d.foreign[wr.dst] = struct{}{}
			st.Skipped = append(st.Skipped, SkippedRoute{wr.route, heldByOther})
		case errors.Is(err, unix.ENETUNREACH), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENETDOWN):
			// The next full pass (or a link event) retries it.
			st.Skipped = append(st.Skipped, SkippedRoute{wr.route, "gateway or interface not reachable now"})
		default:
			errs.add(fmt.Errorf("%s route %s: %w", wr.verb, wr.route, err))
		}
	}
	err := errs.err()
	end := time.Now()
	d.mu.Lock()
	prev := d.status
	d.status.Passes++
	d.status.LastPass = end
	d.status.Err = err
	if err == nil {
		d.status.LastOK = end
	}
	d.status.Stats = Stats{Added: st.Added, Replaced: st.Replaced, Deleted: st.Deleted, Skipped: slices.Concat(prev.Stats.Skipped, st.Skipped)}
	d.status.Routes = prev.Routes + st.Added - st.Deleted
	d.mu.Unlock()
	d.observe.observe(WriterRoutes, end.Sub(start), err)
	took := end.Sub(start).Round(time.Microsecond)
	if err != nil {
		d.log.Error("learned routes pass failed", "err", err, "added", st.Added, "replaced", st.Replaced, "deleted", st.Deleted, "took", took)
	} else if st.Changed() {
		d.log.Debug("learned routes updated", "changes", len(changes), "added", st.Added, "replaced", st.Replaced,
			"deleted", st.Deleted, "took", took)
	}
	if len(st.Skipped) > 0 {
		d.log.Warn("learned routes not programmed, retried by the next full pass", "count", len(st.Skipped), "first", firstFew(st.Skipped))
	}
	return err
}
