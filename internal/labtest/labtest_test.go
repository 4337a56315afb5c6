package labtest

import (
	"net/netip"
	"regexp"
	"slices"
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

func TestParseRepliesAndLost(t *testing.T) {
	out := `PING 10.244.1.2 (10.244.1.2) 56(84) bytes of data.
[1796596733.503722] 64 bytes from 10.244.1.2: icmp_seq=1 ttl=62 time=0.040 ms
[1796596733.55] 64 bytes from 10.244.1.2: icmp_seq=2 ttl=62 time=0.040 ms
[1796596733.560000] 64 bytes from 10.244.1.2: icmp_seq=2 ttl=62 time=0.050 ms (DUP!)
[1796596733.700000] From 10.244.0.1 icmp_seq=3 Destination Host Unreachable
[1796596733.800000] 64 bytes from 10.244.1.2: icmp_seq=6 ttl=62 time=0.040 ms
[1796596733.850000] 64 bytes from 10.244.1.2: icmp_seq=7 ttl=62 time=0.040 ms

--- 10.244.1.2 ping statistics ---
9 packets transmitted, 4 received, +1 duplicates, +1 errors, 55% packet loss, time 400ms
`
	rs := ParseReplies(out)
	var seqs []int
	for _, r := range rs {
		seqs = append(seqs, r.Seq)
	}
	if !slices.Equal(seqs, []int{1, 2, 6, 7}) {
		t.Fatalf("replies %v, want seqs 1 2 6 7", rs)
	}
	if want := time.Unix(1796596733, 550000000); !rs[1].At.Equal(want) {
		t.Errorf("reply 2 at %v, want %v", rs[1].At, want)
	}
	// 8 and 9 were sent but nothing after them was answered: not counted.
	if lost := Lost(rs); !slices.Equal(lost, []int{3, 4, 5}) {
		t.Errorf("Lost = %v, want [3 4 5]", lost)
	}
	if lost := Lost(nil); lost != nil {
		t.Errorf("Lost(nil) = %v", lost)
	}
}
