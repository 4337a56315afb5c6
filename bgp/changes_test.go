package bgp

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// Changes reports each destination whose learned route changed since the last call, once,
// as it is now: learned routes with their next hop, withdrawn ones without; nothing when
// nothing changed.
func TestSpeakerChanges(t *testing.T) {
	a := startSpeaker(t, "127.0.0.1", 64512, Options{})
	b := startSpeaker(t, "127.0.0.2", 64512, Options{})
	ctx := t.Context()
	if err := a.SetPeers(ctx, []Peer{a.peer(b, PeerMesh)}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetPeers(ctx, []Peer{b.peer(a, PeerMesh)}); err != nil {
		t.Fatal(err)
	}
	// drain collects b's changes until they describe want (sorted "dst via nh" or "dst gone").
	drain := func(what string, want ...string) {
		t.Helper()
		seen := map[string]string{}
		waitFor(t, what, 20*time.Second, func() (bool, string) {
			for _, r := range b.Changes() {
				seen[r.Dst.String()] = "gone"
				if r.NextHop.IsValid() {
					seen[r.Dst.String()] = "via " + r.NextHop.String()
				}
			}
			var got []string
			for dst, s := range seen {
				got = append(got, dst+" "+s)
			}
			slices.Sort(got)
			return slices.Equal(got, want), strings.Join(got, ", ")
		})
	}
	if err := a.SetAdvertisements(ctx, plain("10.65.0.0/26", "10.65.0.64/26", "10.65.0.128/26")); err != nil {
		t.Fatal(err)
	}
	drain("three learned", "10.65.0.0/26 via 127.0.0.1", "10.65.0.128/26 via 127.0.0.1", "10.65.0.64/26 via 127.0.0.1")
	if got := b.LearnedCount(); got != 3 {
		t.Errorf("LearnedCount = %d, want 3", got)
	}
	if err := a.SetAdvertisements(ctx, plain("10.65.0.0/26")); err != nil {
		t.Fatal(err)
	}
	drain("two withdrawn", "10.65.0.128/26 gone", "10.65.0.64/26 gone")
	if got := b.Changes(); got != nil {
		t.Errorf("Changes with nothing new = %v, want none", got)
	}
	if got := b.LearnedCount(); got != 1 {
		t.Errorf("LearnedCount = %d, want 1", got)
	}
}
