package felix

import "testing"

// Autodetection against a real kernel: a namespace with veths named like a host's NICs,
// one of them a virtual device name first-found must pass over.
func TestDetectNodeAddressKernel(t *testing.T) {
	ns := newTestNS(t)
	for _, l := range []struct{ name, v4, v6 string }{
		{"veth0", "10.9.9.9/24", ""}, // lowest index, excluded by name
		{"eth0", "10.0.0.5/24", "2001:db8::5/64"},
		{"eth1", "192.168.7.5/24", ""},
	} {
		ns.veth(t, l.name)
		ns.ip(t, "addr", "add", l.v4, "dev", l.name)
		if l.v6 != "" {
			ns.ip(t, "addr", "add", l.v6, "dev", l.name, "nodad")
		}
	}
	ns.ip(t, "route", "add", "default", "via", "10.0.0.1")
	ns.ip(t, "-6", "route", "add", "default", "via", "2001:db8::1")

	tests := []struct {
		method  string
		version int
		want    string
	}{
		{"first-found", 4, "10.0.0.5/24 on eth0"},
		{"first-found", 6, "2001:db8::5/64 on eth0"},
		{"interface=eth1", 4, "192.168.7.5/24 on eth1"},
		{"interface=veth.*", 4, "10.9.9.9/24 on veth0"},
		{"skip-interface=eth0", 4, "192.168.7.5/24 on eth1"},
		{"cidr=192.168.0.0/16", 4, "192.168.7.5/24 on eth1"},
		{"can-reach=192.168.7.200", 4, "192.168.7.5/24 on eth1"},
		{"can-reach=203.0.113.1", 4, "10.0.0.5/24 on eth0"}, // by the default route
		{"can-reach=2001:db8:ffff::1", 6, "2001:db8::5/64 on eth0"},
		{"interface=eth1", 6, "error: interface=eth1: no global IPv6 address on an up interface (eth1 has none)"},
		{"none", 6, "invalid Prefix on "},
	}
	for _, tt := range tests {
		m, err := ParseAutodetectMethod(tt.method, tt.version)
		if err != nil {
			t.Fatal(err)
		}
		a, err := DetectNodeAddress(ns.h, m)
		got := a.Prefix.String() + " on " + a.Interface
		if err != nil {
			got = "error: " + err.Error()
		}
		if got != tt.want {
			t.Errorf("%s (IPv%d): got %s, want %s", tt.method, tt.version, got, tt.want)
		}
	}
}
