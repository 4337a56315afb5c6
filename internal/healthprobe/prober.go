// Package healthprobe owns the probing of health-checked endpoints (tabby.io/health-check):
// a Prober that says which endpoint to probe when and turns probe results into passing
// or failing by the check's threshold, pure (time comes in as arguments, so tests drive
// it without a clock), and a Checker that runs one TCP or HTTP probe through a dial
// function (the test seam). The agent runs both, and records the results in etcd.
package healthprobe

import (
	"cmp"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/tabby-net/tabby/api"
)

// Target is one endpoint to probe.
type Target struct {
	// Key names the endpoint (the agent uses its record's "<namespace>/<name>").
	Key   string
	Addr  netip.AddrPort
	Check api.HealthCheck
	// Seed is the state a target new to the Prober starts in (its record from the
	// agent's previous run); nil starts it Unknown.
	Seed *Status
}

// State is a target's health.
type State int

// States. Unknown (not probed yet) counts as healthy: only a check that failed
// Threshold times in a row takes an endpoint out.
const (
	Unknown State = iota
	Passing
	Failing
)

var stateNames = [...]string{Unknown: "unknown", Passing: "passing", Failing: "failing"}

func (s State) String() string { return stateNames[s] }

// Status is a target's state, since when, and why its last probe failed.
type Status struct {
	State  State
	Since  time.Time
	Reason string // the last failure; "" once passing
}

// Prober keeps the targets, their schedule and their states. It is not safe for
// concurrent use: one goroutine drives it.
type Prober struct {
	targets map[string]*entry
}

type entry struct {
	t             Target
	status        Status
	fails, passes int // probes in a row
	next          time.Time
	running       bool
}

// New returns a Prober without targets.
func New() *Prober { return &Prober{targets: map[string]*entry{}} }

// Set makes targets the endpoints to probe, at now. A new target is first probed within
// its interval (at an offset a hash of its key picks, so that many targets do not probe
// at once) and starts in its Seed's state or Unknown; a target whose address or check
// changed keeps its state but counts its probes in a row afresh; a target not listed
// is forgotten (a probe of it that is running reports nothing).
func (p *Prober) Set(now time.Time, targets []Target) {
	keep := make(map[string]bool, len(targets))
	for _, t := range targets {
		keep[t.Key] = true
		e := p.targets[t.Key]
		if e == nil {
			e = &entry{t: t, next: now.Add(offset(t.Key, t.Check.Interval))}
			if t.Seed != nil {
				e.status = *t.Seed
			}
			p.targets[t.Key] = e
			continue
		}
		if e.t.Addr != t.Addr || e.t.Check != t.Check {
			e.fails, e.passes = 0, 0
			if soon := now.Add(t.Check.Interval); soon.Before(e.next) {
				e.next = soon
			}
		}
		e.t = t
	}
	maps.DeleteFunc(p.targets, func(k string, _ *entry) bool { return !keep[k] })
}

// offset spreads first probes over the interval by a hash of the key.
func offset(key string, interval time.Duration) time.Duration {
	if interval <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	return time.Duration(h.Sum64() % uint64(interval))
}

// Due returns the targets whose probe is due at now and not running, in key order, and
// marks them running; the next probe of each is due one interval after now.
func (p *Prober) Due(now time.Time) []Target {
	var out []Target
	for _, e := range p.targets {
		if e.running || e.next.After(now) {
			continue
		}
		e.running = true
		e.next = now.Add(e.t.Check.Interval)
		out = append(out, e.t)
	}
	slices.SortFunc(out, func(a, b Target) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// Next is when the next probe is due (the zero time without targets). A target whose
// probe is running is due once it reports.
func (p *Prober) Next() time.Time {
	var next time.Time
	for _, e := range p.targets {
		if !e.running && (next.IsZero() || e.next.Before(next)) {
			next = e.next
		}
	}
	return next
}

// Result records the outcome of a probe of key (err nil: it passed) at now, and says
// whether the target's state changed. The first result of an Unknown target that
// passes makes it Passing; Threshold failures in a row make any target Failing, and
// Threshold passes in a row bring a Failing one back. A result for a target Set has
// since dropped is ignored.
func (p *Prober) Result(now time.Time, key string, err error) (Status, bool) {
	e := p.targets[key]
	if e == nil {
		return Status{}, false
	}
	e.running = false
	if e.next.Before(now) {
		e.next = now // a probe that took longer than its interval: the next one now
	}
	if err == nil {
		e.passes++
		e.fails = 0
		if e.status.State == Unknown || e.status.State == Failing && e.passes >= e.t.Check.Threshold {
			e.status = Status{State: Passing, Since: now}
			return e.status, true
		}
		return e.status, false
	}
	e.fails++
	e.passes = 0
	if e.status.State != Failing {
		if e.fails < e.t.Check.Threshold {
			return e.status, false
		}
		e.status = Status{State: Failing, Since: now, Reason: err.Error()}
		return e.status, true
	}
	e.status.Reason = err.Error()
	return e.status, false
}

// Status returns the state of key (false when it is not a target).
func (p *Prober) Status(key string) (Status, bool) {
	e := p.targets[key]
	if e == nil {
		return Status{}, false
	}
	return e.status, true
}

// Targets are the targets, in key order.
func (p *Prober) Targets() []Target {
	out := make([]Target, 0, len(p.targets))
	for _, k := range slices.Sorted(maps.Keys(p.targets)) {
		out = append(out, p.targets[k].t)
	}
	return out
}
