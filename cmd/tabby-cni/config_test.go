package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/ipam"
)

// codeOf is the CNI error code err turns into.
func codeOf(err error) uint { return cniError(err).Code }

func TestParseConfig(t *testing.T) {
	c, err := parseConfig([]byte(`{"cniVersion": "1.1.0", "name": "tabby-net", "type": "tabby-cni",
		"etcd_endpoints": "http://172.31.1.1:2379, 10.0.0.1:2379", "nodename": "node1", "mtu": 1400,
		"log_file": "/tmp/cni.log", "log_level": "debug",
		"ipam": {"type": "tabby-ipam", "assign_ipv6": "true", "ipv4_pools": ["pool-a"], "ipv6_pools": ["fd00::/48"]},
		"dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
		"args": {"cni": {"labels": [{"key": "app", "value": "web"}, {"key": "tier", "value": "front"}]},
			"tabby": {"labels": [{"key": "tier", "value": "back"}]}, "other": {"ignored": true}},
		"runtimeConfig": {}, "capabilities": {}}`), "host-a")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.endpoints, " "); got != "http://172.31.1.1:2379 10.0.0.1:2379" {
		t.Errorf("endpoints %q", got)
	}
	if c.NodeName != "node1" || c.MTU != 1400 || c.level != slog.LevelDebug || c.LogFile != "/tmp/cni.log" {
		t.Errorf("conf %+v", c)
	}
	if !c.IPAM.v4() || !c.IPAM.v6() || c.IPAM.IPv4Pools[0] != "pool-a" || c.IPAM.IPv6Pools[0] != "fd00::/48" {
		t.Errorf("ipam %+v", c.IPAM)
	}
	if want := map[string]string{"app": "web", "tier": "back"}; !maps.Equal(c.labels, want) {
		t.Errorf("labels %v, want %v (args.tabby wins)", c.labels, want)
	}
	if c.DNS.Nameservers[0] != "10.96.0.10" || c.DNS.Search[0] != "svc.cluster.local" {
		t.Errorf("dns %+v", c.DNS)
	}

	// Defaults: the host name, IPv4 only, info, no endpoints (the datastore's default).
	c, err = parseConfig([]byte(`{"cniVersion": "0.4.0", "name": "n", "type": "tabby-cni"}`), "host-a")
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "host-a" || !c.IPAM.v4() || c.IPAM.v6() || c.level != slog.LevelInfo || len(c.endpoints) != 0 || len(c.labels) != 0 {
		t.Errorf("defaults: %+v", c)
	}
	// Calico's booleans are strings; JSON booleans work too.
	c, err = parseConfig([]byte(`{"name": "n", "ipam": {"assign_ipv4": false, "assign_ipv6": true}}`), "h")
	if err != nil || c.IPAM.v4() || !c.IPAM.v6() {
		t.Errorf("boolean flags: %+v %v", c, err)
	}
}

// The cluster's DNS goes into the result unless the configuration names servers itself.
func TestClusterDNS(t *testing.T) {
	c, err := parseConfig([]byte(`{"name": "n", "cluster_dns": ["169.254.20.10"]}`), "h")
	if err != nil {
		t.Fatal(err)
	}
	d := c.dnsFor("shop")
	if fmt.Sprint(d.Nameservers, d.Search, d.Options) != "[169.254.20.10] [shop.svc.cluster.local svc.cluster.local cluster.local] [ndots:5]" {
		t.Errorf("dns = %+v", d)
	}
	c, err = parseConfig([]byte(`{"name": "n", "cluster_dns": ["169.254.20.10"], "cluster_domain": "corp.example", "dns": {"nameservers": ["192.0.2.53"]}}`), "h")
	if err != nil {
		t.Fatal(err)
	}
	if d := c.dnsFor("shop"); fmt.Sprint(d.Nameservers, d.Search) != "[192.0.2.53] []" {
		t.Errorf("dns with the configuration's own servers = %+v", d)
	}
	if c, _ := parseConfig([]byte(`{"name": "n"}`), "h"); len(c.dnsFor("shop").Nameservers) != 0 {
		t.Errorf("no cluster_dns: dns %+v", c.dnsFor("shop"))
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, c := range []struct {
		conf string
		code uint
		want string
	}{
		{`{"name": "n",`, types.ErrDecodingFailure, "network configuration"},
		{`{"name": "n", "mtu": "big"}`, types.ErrDecodingFailure, "mtu"},
		{`{"name": "n", "datastore_type": "kubernetes"}`, types.ErrUnsupportedField, `unsupported field datastore_type (value "kubernetes")`},
		{`{"name": "n", "ipam": {"type": "tabby-ipam", "subnet": "usePodCidr"}}`, types.ErrUnsupportedField, `ipam.subnet (value "usePodCidr")`},
		{`{"name": "n", "args": {"cni": {"ips": ["10.0.0.5"]}}}`, types.ErrUnsupportedField, `args.cni.ips (value ["10.0.0.5"])`},
		{`{"name": "n", "args": {"tabby": {"label": []}}}`, types.ErrUnsupportedField, "args.tabby.label"},
		{`{"name": "n", "etcd_endpoints": "172.31.1.1"}`, types.ErrInvalidNetworkConfig, `etcd_endpoints: "172.31.1.1" is not host:port`},
		{`{"name": "n", "etcd_cert_file": "/c.pem"}`, types.ErrInvalidNetworkConfig, "etcd_cert_file and etcd_key_file"},
		{`{"name": "n", "log_level": "loud"}`, types.ErrInvalidNetworkConfig, `log_level "loud"`},
		{`{"name": "n", "mtu": 50}`, types.ErrInvalidNetworkConfig, "mtu 50: want 68 to 65535"},
		{`{"name": "n", "mtu": 1000, "ipam": {"assign_ipv6": "true"}}`, types.ErrInvalidNetworkConfig, "mtu 1000: want 1280"},
		{`{"name": "n", "ipam": {"type": "host-local"}}`, types.ErrInvalidNetworkConfig, `ipam.type "host-local"`},
		{`{"name": "n", "ipam": {"assign_ipv4": "false"}}`, types.ErrInvalidNetworkConfig, "both false"},
		{`{"name": "n", "ipam": {"assign_ipv4": "yes"}}`, types.ErrDecodingFailure, "want true or false"},
		{`{"name": "n", "ipam": {"ipv6_pools": ["p6"]}}`, types.ErrInvalidNetworkConfig, "set assign_ipv6 to true"},
		{`{"name": "n", "ipam": {"ipv4_pools": [""]}}`, types.ErrInvalidNetworkConfig, "empty pool name"},
		{`{"name": "n", "args": {"cni": {"labels": [{"value": "x"}]}}}`, types.ErrInvalidNetworkConfig, "args.cni.labels[0]: no key"},
		{`{"name": "n", "cluster_dns": ["10.96.0.300"]}`, types.ErrInvalidNetworkConfig, `cluster_dns: "10.96.0.300" is not an IP address`},
	} {
		_, err := parseConfig([]byte(c.conf), "h")
		if err == nil {
			t.Errorf("%s: no error", c.conf)
			continue
		}
		if got := codeOf(err); got != c.code || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got code %d: %v\nwant code %d containing %q", c.conf, got, err, c.code, c.want)
		}
	}
	if _, err := parseConfig([]byte(`{"name": "n"}`), ""); err == nil || !strings.Contains(err.Error(), "nodename") {
		t.Errorf("no nodename and no host name: %v", err)
	}
}

func TestCNIError(t *testing.T) {
	for _, c := range []struct {
		err  error
		code uint
	}{
		{errors.New("netlink: boom"), codeFailed},
		{errorf(codeConflict, "taken"), codeConflict},
		{fmtWrap(errorf(types.ErrUnknownContainer, "gone")), types.ErrUnknownContainer},
		{fmtWrap(errNoFree), codeNoAddress},
		{fmtWrap(errDeadline), types.ErrTryAgainLater},
		{fmtWrap(errConflict), types.ErrTryAgainLater},
		{types.NewError(types.ErrIncompatibleCNIVersion, "old", ""), types.ErrIncompatibleCNIVersion},
	} {
		if e := cniError(c.err); e.Code != c.code || e.Msg != c.err.Error() {
			t.Errorf("cniError(%v) = %+v, want code %d", c.err, e, c.code)
		}
	}
	if cniError(nil) != nil {
		t.Error("cniError(nil) is not nil")
	}
}

func fmtWrap(err error) error { return fmt.Errorf("step: %w", err) }

var (
	errNoFree   = fmt.Errorf("auto-assign: %w in IPPool x", ipam.ErrNoFreeAddresses)
	errDeadline = fmt.Errorf("etcd: %w", context.DeadlineExceeded)
	errConflict = fmt.Errorf("txn: %w", datastore.ErrConflict)
)
