package felix

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestParseAutodetectMethodErrors(t *testing.T) {
	tests := []struct {
		in      string
		version int
		want    string
	}{
		{"interfaec=eth0", 4, `unknown method "interfaec"; want first-found, interface=REGEX, skip-interface=REGEX, can-reach=IP, cidr=CIDR or none`},
		{"", 4, "empty; want first-found"},
		{"=eth0", 4, "empty; want first-found"},
		{"kubernetes-internal-ip", 4, `unknown method "kubernetes-internal-ip"`},
		{"first-found=eth0", 4, "first-found takes no value"},
		{"none=1", 6, "none takes no value"},
		{"interface=", 4, "interface= needs at least one regular expression"},
		{"interface= , ", 4, "interface= needs at least one regular expression"},
		{"skip-interface=eth[", 4, `skip-interface=eth[: bad regular expression "eth["`},
		{"can-reach=example.com", 4, `can-reach=example.com: "example.com" is not an IP address`},
		{"can-reach=2001:db8::1", 4, "can-reach=2001:db8::1: not an IPv4 address"},
		{"can-reach=192.0.2.1", 6, "can-reach=192.0.2.1: not an IPv6 address"},
		{"cidr=", 4, "cidr= needs at least one CIDR"},
		{"cidr=10.0.0.0/8,10.1", 4, `cidr=10.0.0.0/8,10.1: "10.1" is not a CIDR`},
		{"cidr=10.0.0.1/8", 4, "cidr=10.0.0.1/8: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"},
		{"cidr=fd00::/64", 4, "cidr=fd00::/64: fd00::/64 is not an IPv4 CIDR"},
		{"first-found", 5, "IP version 5: want 4 or 6"},
	}
	for _, tt := range tests {
		_, err := ParseAutodetectMethod(tt.in, tt.version)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("ParseAutodetectMethod(%q, %d) error = %v, want prefix %q", tt.in, tt.version, err, tt.want)
		}
	}
}

// The message the agent prints is the flag, the value and this package's error.
func TestParseAutodetectMethodFlagMessage(t *testing.T) {
	v := "interfaec=eth0"
	_, err := ParseAutodetectMethod(v, 4)
	got := fmt.Errorf("--ip-autodetection-method %q: %w", v, err).Error()
	want := `--ip-autodetection-method "interfaec=eth0": unknown method "interfaec"; want first-found, interface=REGEX, skip-interface=REGEX, can-reach=IP, cidr=CIDR or none`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestParseAutodetectMethod(t *testing.T) {
	for _, s := range []string{"first-found", "none", "interface=eth0", "interface=eth.*, ens[0-9]+", "skip-interface=eth1",
		"can-reach=192.0.2.1", "cidr=10.0.0.0/8, 192.168.0.0/16"} {
		m, err := ParseAutodetectMethod(s, 4)
		if err != nil {
			t.Errorf("ParseAutodetectMethod(%q): %v", s, err)
			continue
		}
		if m.String() != s || m.Enabled() != (s != "none") {
			t.Errorf("ParseAutodetectMethod(%q) = %q, enabled %v", s, m, m.Enabled())
		}
	}
	if (AutodetectMethod{}).Enabled() {
		t.Error("the zero AutodetectMethod is enabled; want it to mean none")
	}
}

// A host shaped like a Kubernetes node with a container runtime and tabby's own veths.
var testHost = []hostInterface{
	{Name: "lo", Index: 1, Up: true, Addrs: prefixes("127.0.0.1/8", "::1/128")},
	{Name: "docker0", Index: 2, Up: true, Addrs: prefixes("172.17.0.1/16")},
	{Name: "eth0", Index: 3, Up: true, Addrs: prefixes("fe80::1/64", "10.0.0.5/24", "2001:db8::5/64")},
	{Name: "eth1", Index: 4, Up: false, Addrs: prefixes("10.1.0.5/24")},
	{Name: "eth2", Index: 5, Up: true, Addrs: prefixes("192.168.7.5/24", "10.2.0.5/16")},
	{Name: "eth0.100", Index: 6, Up: true, Addrs: prefixes("10.100.0.5/24")},
	{Name: "tabby0123456789a", Index: 7, Up: true, Addrs: prefixes("10.65.0.1/32")},
}

func TestSelectAddress(t *testing.T) {
	reach := func(dst netip.Addr) (netip.Addr, error) {
		switch dst.String() {
		case "192.168.7.1":
			return netip.MustParseAddr("192.168.7.5"), nil
		case "2001:db8::1":
			return netip.MustParseAddr("2001:db8::5"), nil
		case "203.0.113.1":
			return netip.MustParseAddr("203.0.113.9"), nil
		}
		return netip.Addr{}, errors.New("network is unreachable")
	}
	tests := []struct {
		method  string
		version int
		host    []hostInterface
		want    string // "prefix on iface" or "error: prefix of the message"
	}{
		{"first-found", 4, testHost, "10.0.0.5/24 on eth0"},
		{"first-found", 6, testHost, "2001:db8::5/64 on eth0"},
		{"first-found", 4, testHost[:2], "error: first-found: no global IPv4 address: no interface to look at"},
		{"first-found", 4, append([]hostInterface{testHost[3]}, testHost[6]), "error: first-found: no global IPv4 address on an up interface (eth1 is down)"},
		// A restarted agent passes over its own VXLAN devices, whose VTEP addresses come first.
		{"first-found", 6, append([]hostInterface{{Name: "vxlan-v6.tabby", Index: 2, Up: true, Addrs: prefixes("fd00:10:244::/128")},
			{Name: "vxlan.tabby", Index: 3, Up: true, Addrs: prefixes("10.244.0.0/32")}}, testHost[2]), "2001:db8::5/64 on eth0"},
		{"first-found", 4, append([]hostInterface{{Name: "vxlan.tabby", Index: 3, Up: true, Addrs: prefixes("10.244.0.0/32")}}, testHost[2]), "10.0.0.5/24 on eth0"},
		{"interface=eth2", 4, testHost, "192.168.7.5/24 on eth2"},
		{"interface=eth0", 4, testHost, "10.0.0.5/24 on eth0"}, // the whole name: not eth0.100
		{"interface=eth0\\..*", 4, testHost, "10.100.0.5/24 on eth0.100"},
		{"interface=eth", 4, testHost, "error: interface=eth: no interface has a matching name"},
		{"interface=docker0", 4, testHost, "172.17.0.1/16 on docker0"}, // the defaults do not apply
		{"interface=eth1,eth2", 4, testHost, "192.168.7.5/24 on eth2"},
		{"interface=eth1", 4, testHost, "error: interface=eth1: no global IPv4 address on an up interface (eth1 is down)"},
		{"interface=wlan.*", 4, testHost, "error: interface=wlan.*: no interface has a matching name"},
		{"interface=eth2", 6, testHost, "error: interface=eth2: no global IPv6 address on an up interface (eth2 has none)"},
		{"skip-interface=eth0", 4, testHost, "192.168.7.5/24 on eth2"},
		{"skip-interface=eth0,eth2", 4, testHost, "10.100.0.5/24 on eth0.100"},
		{"cidr=10.2.0.0/16", 4, testHost, "10.2.0.5/16 on eth2"},
		{"cidr=10.0.0.0/8", 4, testHost, "10.0.0.5/24 on eth0"},
		{"cidr=10.65.0.0/16", 4, testHost, "10.65.0.1/32 on tabby0123456789a"},
		{"cidr=10.1.0.0/16", 4, testHost, "error: cidr=10.1.0.0/16: no global IPv4 address inside 10.1.0.0/16 on an up interface"},
		{"can-reach=192.168.7.1", 4, testHost, "192.168.7.5/24 on eth2"},
		{"can-reach=2001:db8::1", 6, testHost, "2001:db8::5/64 on eth0"},
		{"can-reach=198.51.100.1", 4, testHost, "error: can-reach=198.51.100.1: network is unreachable"},
		{"can-reach=203.0.113.1", 4, testHost, "error: can-reach=203.0.113.1: the kernel reaches 203.0.113.1 from 203.0.113.9, which no interface carries"},
	}
	for _, tt := range tests {
		m, err := ParseAutodetectMethod(tt.method, tt.version)
		if err != nil {
			t.Fatal(err)
		}
		a, err := m.selectAddress(tt.host, reach)
		got := fmt.Sprintf("%s on %s", a.Prefix, a.Interface)
		if err != nil {
			got = "error: " + err.Error()
		}
		if !strings.HasPrefix(got, tt.want) {
			t.Errorf("%s (IPv%d):\n got %s\nwant %s", tt.method, tt.version, got, tt.want)
		}
	}
}
