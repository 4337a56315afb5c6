package healthprobe

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
)

var (
	t0    = time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	check = api.HealthCheck{Interval: time.Second, Threshold: 2}
	down  = errors.New("connection refused")
)

func target(key string) Target {
	return Target{Key: key, Addr: netip.MustParseAddrPort("10.65.0.2:8080"), Check: check}
}

type change struct {
	at    time.Duration // after t0
	state State
}

// run drives p as the agent does, with no clock but the times Next gives, until end:
// each due probe passes when up says the server answers at that time, and reports at
// once. It returns every change of key's state and the times key was probed.
func run(p *Prober, key string, end time.Duration, up func(at time.Duration) bool) (changes []change, probes []time.Duration) {
	for {
		next := p.Next()
		if next.IsZero() || next.Sub(t0) > end {
			return
		}
		for _, t := range p.Due(next) {
			at := next.Sub(t0)
			var err error
			if !up(at) {
				err = down
			}
			st, changed := p.Result(next, t.Key, err)
			if t.Key != key {
				continue
			}
			probes = append(probes, at)
			if changed {
				changes = append(changes, change{at, st.State})
			}
		}
	}
}

// TestProberKilledServer: a server killed at any moment is Failing within interval ×
// threshold of its death (and not before threshold probes saw it down); restarted, it
// is Passing within interval × threshold again. Until the first probe it is Unknown,
// which counts as healthy, and the first pass makes it Passing.
func TestProberKilledServer(t *testing.T) {
	for _, kill := range []time.Duration{3 * time.Second, 3100 * time.Millisecond, 3500 * time.Millisecond, 3999 * time.Millisecond, 4 * time.Second, 7250 * time.Millisecond} {
		for _, threshold := range []int{1, 2, 3} {
			t.Run(fmt.Sprintf("kill at %v, threshold %d", kill, threshold), func(t *testing.T) {
				p := New()
				tg := target("shop/web.w1")
				tg.Check.Threshold = threshold
				p.Set(t0, []Target{tg})
				if st, _ := p.Status(tg.Key); st.State != Unknown {
					t.Fatalf("before any probe: %v", st.State)
				}
				restart := kill + 10*time.Second
				changes, probes := run(p, tg.Key, restart+10*time.Second, func(at time.Duration) bool { return at < kill || at >= restart })
				if probes[0] >= time.Second {
					t.Errorf("first probe at %v, want within the interval", probes[0])
				}
				for i := 1; i < len(probes); i++ {
					if d := probes[i] - probes[i-1]; d != time.Second {
						t.Errorf("probes %v and %v apart: want one interval", probes[i-1], probes[i])
					}
				}
				if len(changes) != 3 || changes[0].state != Passing || changes[1].state != Failing || changes[2].state != Passing {
					t.Fatalf("changes %v, want passing, failing, passing", changes)
				}
				window := time.Duration(threshold) * time.Second
				if f := changes[1].at; f < kill+window-time.Second || f > kill+window {
					t.Errorf("killed at %v: failing at %v, want within (%v, %v]", kill, f, kill+window-time.Second, kill+window)
				}
				if r := changes[2].at; r < restart || r > restart+window {
					t.Errorf("restarted at %v: passing at %v, want within [%v, %v]", restart, r, restart, restart+window)
				}
			})
		}
	}
}

// TestProberFlap: fewer failures in a row than the threshold change nothing, and
// neither does a single pass between failures of a Failing target.
func TestProberFlap(t *testing.T) {
	p := New()
	tg := target("shop/web.w1")
	tg.Check.Threshold = 3
	p.Set(t0, []Target{tg})
	outcomes := []bool{true, false, false, true, false, false, true, false, false, false, true, false, true, true, true}
	i := 0
	changes, _ := run(p, tg.Key, 30*time.Second, func(time.Duration) bool {
		ok := i >= len(outcomes) || outcomes[i]
		i++
		return ok
	})
	// passing at probe 0, failing at probe 9 (three in a row), passing at probe 14.
	if len(changes) != 3 || changes[0].state != Passing || changes[1].state != Failing || changes[2].state != Passing {
		t.Fatalf("changes %v, want passing, failing, passing", changes)
	}
	if d := changes[1].at - changes[0].at; d != 9*time.Second {
		t.Errorf("failing %v after the first probe, want 9s (the 10th probe, the third failure in a row)", d)
	}
	if d := changes[2].at - changes[0].at; d != 14*time.Second {
		t.Errorf("passing again %v after the first probe, want 14s (the third pass in a row)", d)
	}
}

// TestProberSeedAndSet: a target seeded Failing (its record from the agent's last run)
// stays out until threshold passes; a changed check keeps the state; a dropped target's
// late result is ignored; first probes of many targets spread over the interval.
func TestProberSeedAndSet(t *testing.T) {
	p := New()
	tg := target("shop/web.w1")
	tg.Seed = &Status{State: Failing, Since: t0.Add(-time.Minute), Reason: "earlier"}
	p.Set(t0, []Target{tg})
	changes, probes := run(p, tg.Key, 5*time.Second, func(time.Duration) bool { return true })
	if len(changes) != 1 || changes[0].state != Passing || changes[0].at != probes[1] {
		t.Errorf("seeded failing: changes %v (probes %v), want passing at the second pass", changes, probes)
	}

	tg.Seed = nil
	tg.Check.Interval = 3 * time.Second
	now := t0.Add(6 * time.Second)
	p.Set(now, []Target{tg})
	if st, _ := p.Status(tg.Key); st.State != Passing {
		t.Errorf("after a change of the check: %v, want it kept", st.State)
	}
	due := p.Due(p.Next())
	p.Set(now, nil)
	if _, changed := p.Result(now, due[0].Key, down); changed || len(p.Targets()) != 0 || !p.Next().IsZero() {
		t.Errorf("dropped target: result changed %v, targets %v", changed, p.Targets())
	}

	var many []Target
	for i := range 100 {
		many = append(many, target(fmt.Sprintf("shop/web.w%d", i)))
	}
	p.Set(t0, many)
	halves := [2]int{}
	for _, tg := range many {
		e := p.targets[tg.Key]
		if d := e.next.Sub(t0); d < 0 || d >= time.Second {
			t.Fatalf("%s first due %v after Set, want within the interval", tg.Key, d)
		} else {
			halves[d*2/time.Second]++
		}
	}
	if halves[0] < 25 || halves[1] < 25 {
		t.Errorf("first probes of 100 targets: %v in each half of the interval, want them spread", halves)
	}
}
