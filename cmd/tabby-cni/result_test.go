package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"
)

func TestBuildResult(t *testing.T) {
	a := &attachment{NetNS: "/run/netns/w1", IfName: "eth0", HostVeth: "tabby1510469397", Addrs: []netip.Addr{addr4, addr6}}
	dns := types.DNS{Nameservers: []string{"10.96.0.10"}, Search: []string{"svc.cluster.local"}}
	r := buildResult(a, linkInfo{MAC: "02:00:00:00:00:01", MTU: 1450}, dns)
	for _, v := range supportedVersions {
		conv, err := r.GetAsVersion(v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		var buf bytes.Buffer
		if err := conv.PrintTo(&buf); err != nil {
			t.Fatal(err)
		}
		checkResultJSON(t, v, buf.Bytes(), a, dns)
	}
	if got, err := resultAddrs(r, "eth0"); err != nil || !slices.Equal(got, a.Addrs) {
		t.Errorf("resultAddrs = %v, %v", got, err)
	}
	if _, err := resultAddrs(r, "eth1"); err == nil {
		t.Error("resultAddrs of an interface the result does not have")
	}
}

// checkResultJSON validates an ADD result as the spec shapes it for version v: decoded
// through the spec's types and, field by field, as JSON, against the attachment and the
// configuration's DNS settings.
func checkResultJSON(t *testing.T, v string, raw []byte, a *attachment, dns types.DNS) {
	t.Helper()
	parsed, err := cniversion.NewResult(v, raw)
	if err != nil {
		t.Fatalf("%s: the spec's types do not read the result: %v\n%s", v, err, raw)
	}
	r, err := types100.NewResultFromResult(parsed)
	if err != nil {
		t.Fatalf("%s: convert: %v", v, err)
	}
	if len(r.Interfaces) != 2 || r.Interfaces[0].Name != a.HostVeth || r.Interfaces[0].Sandbox != "" || r.Interfaces[0].Mac != "ee:ee:ee:ee:ee:ee" ||
		r.Interfaces[1].Name != a.IfName || r.Interfaces[1].Sandbox != a.NetNS || r.Interfaces[1].Mac == "" {
		t.Errorf("%s: interfaces %v", v, r.Interfaces)
	}
	var addrs []netip.Addr
	for _, ip := range r.IPs {
		if ip.Interface == nil || *ip.Interface != 1 {
			t.Errorf("%s: %s is not on interface 1", v, ip)
		}
		p := ipNetPrefix(&ip.Address)
		if !p.IsSingleIP() {
			t.Errorf("%s: address %s is not a /32 or /128", v, p)
		}
		gw, _ := netip.AddrFromSlice(ip.Gateway)
		if want := map[bool]netip.Addr{true: gatewayV4, false: gatewayV6}[p.Addr().Is4()]; gw.Unmap() != want {
			t.Errorf("%s: gateway of %s is %s, want %s", v, p, gw, want)
		}
		addrs = append(addrs, p.Addr())
	}
	if !slices.Equal(addrs, a.Addrs) {
		t.Errorf("%s: addresses %v, want %v", v, addrs, a.Addrs)
	}
	var defaults, want []string
	for _, rt := range r.Routes {
		if ones, _ := rt.Dst.Mask.Size(); ones == 0 {
			defaults = append(defaults, rt.Dst.String()+" via "+rt.GW.String())
		}
	}
	for _, cr := range containerRoutes(a.Addrs) {
		if cr.GW.IsValid() {
			want = append(want, cr.String())
		}
	}
	if !slices.Equal(defaults, want) {
		t.Errorf("%s: default routes %v, want %v", v, defaults, want)
	}
	if !slices.Equal(r.DNS.Nameservers, dns.Nameservers) || !slices.Equal(r.DNS.Search, dns.Search) {
		t.Errorf("%s: dns %+v, want %+v", v, r.DNS, dns)
	}

	// The raw JSON: the configuration's version echoed, and the fields each version has.
	var m struct {
		CNIVersion string `json:"cniVersion"`
		IPs        []map[string]any
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m.CNIVersion != v {
		t.Errorf("result cniVersion %q, want the configuration's %q", m.CNIVersion, v)
	}
	_, hasVersion := m.IPs[0]["version"]
	if newer, _ := cniversion.GreaterThanOrEqualTo(v, "1.0.0"); newer == hasVersion {
		t.Errorf("%s: ips[].version present = %v (it exists before 1.0.0 only)", v, hasVersion)
	}
}
