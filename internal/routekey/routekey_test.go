package routekey

import (
	"net/netip"
	"testing"
	"unsafe"
)

// Every prefix and address comes back as it went in, and keys compare as their values do.
func TestRoundTrip(t *testing.T) {
	for _, s := range []string{"10.65.0.0/26", "0.0.0.0/0", "100.64.1.2/32", "fd00::/64", "::/0", "2001:db8::1/128", "::ffff:10.0.0.0/104"} {
		p := netip.MustParsePrefix(s)
		if got := PrefixOf(p).Prefix(); got != p {
			t.Errorf("prefix %s came back as %s", p, got)
		}
		if got := AddrOf(p.Addr()).Addr(); got != p.Addr() {
			t.Errorf("address %s came back as %s", p.Addr(), got)
		}
	}
	if PrefixOf(netip.Prefix{}) != (Prefix{}) || (Prefix{}).Prefix().IsValid() || (Addr{}).Addr().IsValid() {
		t.Error("the invalid prefix or address is not the zero key")
	}
	if PrefixOf(netip.MustParsePrefix("10.0.0.0/8")) == PrefixOf(netip.MustParsePrefix("::ffff:10.0.0.0/8")) {
		t.Error("an IPv4 prefix and an IPv6 one of the same bytes have the same key")
	}
	if PrefixOf(netip.MustParsePrefix("10.0.0.0/8")) == PrefixOf(netip.MustParsePrefix("10.0.0.0/9")) {
		t.Error("two lengths of one address have the same key")
	}
	if s := unsafe.Sizeof(Prefix{}); s != 18 {
		t.Errorf("a Prefix is %d bytes, want 18", s)
	}
}
