package felix

import (
	"net"
	"reflect"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func linkEvent(typ uint16, name string, index int, up bool) netlink.LinkUpdate {
	u := netlink.LinkUpdate{Link: &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, Index: index}}}
	if up {
		u.Attrs().Flags = net.FlagUp
	}
	u.Header.Type = typ
	return u
}

func TestLinkTracker(t *testing.T) {
	var lt linkTracker
	dump := newLinkTable(2)
	dump.set(&netlink.LinkAttrs{Name: "eth0", Index: 2, Flags: net.FlagUp})
	dump.set(&netlink.LinkAttrs{Name: "tabbya", Index: 5, Flags: net.FlagUp})
	lt.load(dump)

	steps := []struct {
		event   netlink.LinkUpdate
		changed []string
	}{
		// Replayed events older than the dump: harmless, the last one wins.
		{linkEvent(unix.RTM_NEWLINK, "tabbya", 5, false), []string{"tabbya"}},
		{linkEvent(unix.RTM_NEWLINK, "tabbya", 5, true), []string{"tabbya"}},
		{linkEvent(unix.RTM_NEWLINK, "tabbya", 5, true), nil}, // carrier, statistics: no change
		// The veth is recreated under the same name with a new index.
		{linkEvent(unix.RTM_DELLINK, "tabbya", 5, false), []string{"tabbya"}},
		{linkEvent(unix.RTM_NEWLINK, "tabbya", 9, false), []string{"tabbya"}},
		// Renamed: both names change.
		{linkEvent(unix.RTM_NEWLINK, "tabbyb", 9, false), []string{"tabbyb", "tabbya"}},
		// A delete of something never seen.
		{linkEvent(unix.RTM_DELLINK, "tabbyz", 77, false), nil},
	}
	for i, s := range steps {
		if got := lt.update(s.event); !reflect.DeepEqual(got, s.changed) {
			t.Errorf("step %d (%s): changed %v, want %v", i, s.event.Attrs().Name, got, s.changed)
		}
	}

	got := lt.subset(map[string]bool{"tabbya": true, "tabbyb": true, "eth0": true, "gone": true})
	want := linkTable{
		byName:  map[string]linkState{"eth0": {2, true}, "tabbyb": {9, false}},
		byIndex: map[int]string{2: "eth0", 9: "tabbyb"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("subset = %+v, want %+v", got, want)
	}
	if got := lt.name(9).byIndex[9]; got != "tabbyb" {
		t.Errorf("name(9) = %q, want tabbyb", got)
	}
	if got := lt.name(5).byIndex; len(got) != 0 {
		t.Errorf("name(5) = %v, want nothing", got)
	}
}

func TestDesiredUp(t *testing.T) {
	s := LocalState{Workloads: []Workload{
		{Name: "ns/b", Interface: "tabbyb"}, {Name: "ns/a", Interface: "tabbya"},
		{Name: "ns/a2", Interface: "tabbya"}, {Name: "ns/none"},
	}}
	if got, want := DesiredUp(s), []string{"tabbya", "tabbyb"}; !reflect.DeepEqual(got, want) {
		t.Errorf("DesiredUp = %v, want %v", got, want)
	}
}
