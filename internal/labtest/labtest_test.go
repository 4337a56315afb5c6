package labtest

import (
	"net/netip"
	"regexp"
	"testing"
	"time"
)

func TestUniqueName(t *testing.T) {
	// tabby-lab's rule for lab names: 1-16 lowercase letters and digits, a letter first.
	valid := regexp.MustCompile(`^[a-z][a-z0-9]{0,15}$`)
	seen := map[string]bool{}
	for range 100 {
		n := uniqueName()
		if !valid.MatchString(n) || seen[n] {
			t.Fatalf("name %q (seen before: %v)", n, seen[n])
		}
		seen[n] = true
	}
}

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	took := Poll(t, "three calls", time.Minute, func() string {
		if calls++; calls < 3 {
			return "not yet"
		}
		return ""
	})
	if calls != 3 || took < 2*pollInterval {
		t.Errorf("%d calls in %v", calls, took)
	}
}

func TestSteadyChecksThroughout(t *testing.T) {
	calls := 0
	Steady(t, "always fine", 5*pollInterval, pollInterval, func() string { calls++; return "" })
	if calls < 2 {
		t.Errorf("%d calls in 5 intervals", calls)
	}
}

func TestBlockOf(t *testing.T) {
	if got := BlockOf(netip.MustParseAddr("10.244.0.70")); got != "10.244.0.64/26" {
		t.Errorf("BlockOf(10.244.0.70) = %s", got)
	}
}
