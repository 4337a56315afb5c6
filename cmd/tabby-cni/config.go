package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// netConf is tabby-cni's network configuration: the spec's fields, and tabby's own.
type netConf struct {
	types.PluginConf // cniVersion, name, type, dns, prevResult, cni.dev/valid-attachments

	EtcdEndpoints  string `json:"etcd_endpoints"`
	EtcdCACertFile string `json:"etcd_ca_cert_file"`
	EtcdCertFile   string `json:"etcd_cert_file"`
	EtcdKeyFile    string `json:"etcd_key_file"`
	NodeName       string `json:"nodename"`
	MTU            int    `json:"mtu"`
	LogFile        string `json:"log_file"`
	LogLevel       string `json:"log_level"`
	// ClusterDNS are the node-local DNS server's addresses; set, and dns names no
	// nameservers, the result's dns is the cluster's: these servers, the search path
	// <namespace>.svc.<domain> svc.<domain> <domain> and ndots:5, as the kubelet writes.
	ClusterDNS    []string `json:"cluster_dns"`
	ClusterDomain string   `json:"cluster_domain"` // default cluster.local

	// IPAM shadows PluginConf's: tabby-cni allocates from tabby's IPAM itself.
	IPAM ipamConf `json:"ipam"`
	// Args is the runtime's args; only labels are read from it.
	Args *argsConf `json:"args"`

	// Derived by parseConfig.
	endpoints []string
	level     slog.Level
	labels    map[string]string
	// nodeFromHostname: nodename is not set, so NodeName is the host name.
	nodeFromHostname bool
}

// ipamConf selects what ADD allocates. As in Calico, IPv4 is on and IPv6 off unless
// assign_ipv4/assign_ipv6 say otherwise; pools are names or CIDRs, in order of
// preference, and empty lists mean every enabled pool that selects the node.
type ipamConf struct {
	Type       string   `json:"type"`
	IPv4Pools  []string `json:"ipv4_pools"`
	IPv6Pools  []string `json:"ipv6_pools"`
	AssignIPv4 *flag    `json:"assign_ipv4"`
	AssignIPv6 *flag    `json:"assign_ipv6"`
}

// flag is a boolean written as JSON true/false or, as Calico's configuration has it,
// the strings "true"/"false".
type flag bool

func (f *flag) UnmarshalJSON(b []byte) error {
	switch string(bytes.TrimSpace(b)) {
	case "true", `"true"`:
		*f = true
	case "false", `"false"`:
		*f = false
	default:
		return fmt.Errorf("want true or false, got %s", b)
	}
	return nil
}

// v4 and v6 say whether ADD allocates an address of each family.
func (c *ipamConf) v4() bool { return c.AssignIPv4 == nil || bool(*c.AssignIPv4) }
func (c *ipamConf) v6() bool { return c.AssignIPv6 != nil && bool(*c.AssignIPv6) }

// argsConf is the configuration's "args": the CNI convention's args.cni and tabby's own
// args.tabby, each of which may carry labels for the workload endpoint. Other consumers'
// sections are left to them.
type argsConf struct {
	CNI   *labelArgs `json:"cni"`
	Tabby *labelArgs `json:"tabby"`
}

type labelArgs struct {
	Labels []label `json:"labels"`
}

type label struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// ipamTypeTabby is the only IPAM type tabby-cni accepts (and the one it assumes when
// ipam.type is left out): it never delegates to an IPAM plugin.
const ipamTypeTabby = "tabby-ipam"

// Fields of the configuration, by section; anything else is refused by name.
var (
	specFields = []string{"cniVersion", "name", "type", "capabilities", "ipam", "dns", "prevResult",
		"runtimeConfig", "args", "cni.dev/valid-attachments", "cni.dev/attachments"}
	ownFields = []string{"etcd_endpoints", "etcd_ca_cert_file", "etcd_cert_file", "etcd_key_file",
		"nodename", "mtu", "log_file", "log_level", "cluster_dns", "cluster_domain"}
	ipamFields  = []string{"type", "ipv4_pools", "ipv6_pools", "assign_ipv4", "assign_ipv6"}
	labelFields = []string{"labels"}
)

// parseConfig decodes and checks the network configuration from standard input. A field
// tabby-cni does not know is error 2 naming it and its value, a value that does not decode
// is 6, and an invalid one is 7. hostname is nodename's default.
func parseConfig(stdin []byte, hostname string) (*netConf, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &raw); err != nil {
		return nil, errorf(types.ErrDecodingFailure, "network configuration: %v", err)
	}
	if err := knownFields("", raw, append(slices.Clone(specFields), ownFields...)); err != nil {
		return nil, err
	}
	if err := checkSections(raw); err != nil {
		return nil, err
	}
	c := &netConf{}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, errorf(types.ErrDecodingFailure, "network configuration: %v", err)
	}
	if err := c.check(hostname); err != nil {
		return nil, withCode(types.ErrInvalidNetworkConfig, fmt.Errorf("network configuration %q: %w", c.Name, err))
	}
	return c, nil
}

// checkSections refuses unknown fields inside ipam, args.cni and args.tabby.
func checkSections(raw map[string]json.RawMessage) error {
	sections := map[string]json.RawMessage{"ipam": raw["ipam"]}
	known := map[string][]string{"ipam": ipamFields}
	if a, ok := raw["args"]; ok {
		var args map[string]json.RawMessage
		if err := json.Unmarshal(a, &args); err != nil {
			return errorf(types.ErrDecodingFailure, "network configuration: args: %v", err)
		}
		for _, ns := range []string{"cni", "tabby"} {
			sections["args."+ns], known["args."+ns] = args[ns], labelFields
		}
	}
	for _, name := range slices.Sorted(maps.Keys(sections)) {
		v := sections[name]
		if v == nil || string(bytes.TrimSpace(v)) == "null" {
			continue
		}
		var section map[string]json.RawMessage
		if err := json.Unmarshal(v, &section); err != nil {
			return errorf(types.ErrDecodingFailure, "network configuration: %s: %v", name, err)
		}
		if err := knownFields(name+".", section, known[name]); err != nil {
			return err
		}
	}
	return nil
}

// knownFields returns error 2 for the first field (in name order) not in known.
func knownFields(prefix string, m map[string]json.RawMessage, known []string) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(known, k) {
			return errorf(types.ErrUnsupportedField, "unsupported field %s%s (value %s) in the network configuration: tabby-cni knows %s",
				prefix, k, compact(m[k]), strings.Join(known, ", "))
		}
	}
	return nil
}

func compact(v json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, v) != nil {
		return string(v)
	}
	return b.String()
}

// check validates the decoded configuration and fills in the derived fields.
func (c *netConf) check(hostname string) error {
	for _, ep := range strings.Split(c.EtcdEndpoints, ",") {
		if ep = strings.TrimSpace(ep); ep == "" {
			continue
		}
		hostPort := strings.TrimPrefix(strings.TrimPrefix(ep, "https://"), "http://")
		if host, port, err := net.SplitHostPort(hostPort); err != nil || host == "" || port == "" {
			return fmt.Errorf("etcd_endpoints: %q is not host:port or http(s)://host:port", ep)
		}
		c.endpoints = append(c.endpoints, ep)
	}
	if (c.EtcdCertFile == "") != (c.EtcdKeyFile == "") {
		return fmt.Errorf("etcd_cert_file and etcd_key_file: give both or neither")
	}
	for _, a := range c.ClusterDNS {
		if _, err := netip.ParseAddr(a); err != nil {
			return fmt.Errorf("cluster_dns: %q is not an IP address", a)
		}
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = "cluster.local"
	}
	if c.NodeName == "" {
		c.NodeName, c.nodeFromHostname = hostname, true
	}
	if c.NodeName == "" {
		return fmt.Errorf("nodename: not set, and the host name is unknown")
	}
	switch strings.ToLower(c.LogLevel) {
	case "", "info":
		c.level = slog.LevelInfo
	case "debug":
		c.level = slog.LevelDebug
	case "warn", "warning":
		c.level = slog.LevelWarn
	case "error":
		c.level = slog.LevelError
	default:
		return fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	if err := c.IPAM.check(); err != nil {
		return err
	}
	minMTU := 68
	if c.IPAM.v6() {
		minMTU = 1280
	}
	if c.MTU != 0 && (c.MTU < minMTU || c.MTU > 65535) {
		return fmt.Errorf("mtu %d: want %d to 65535 (or leave it out for the kernel's 1500)", c.MTU, minMTU)
	}
	var err error
	c.labels, err = c.Args.merged()
	return err
}

func (c *ipamConf) check() error {
	switch {
	case c.Type != "" && c.Type != ipamTypeTabby:
		return fmt.Errorf("ipam.type %q: tabby-cni allocates from tabby's IPAM itself; leave ipam.type out or set it to %q", c.Type, ipamTypeTabby)
	case !c.v4() && !c.v6():
		return fmt.Errorf("ipam: assign_ipv4 and assign_ipv6 are both false, so a workload would get no address")
	case !c.v4() && len(c.IPv4Pools) > 0:
		return fmt.Errorf("ipam.ipv4_pools is set but assign_ipv4 is false")
	case !c.v6() && len(c.IPv6Pools) > 0:
		return fmt.Errorf("ipam.ipv6_pools is set but assign_ipv6 is not true: set assign_ipv6 to true for IPv6 addresses")
	}
	for _, p := range append(slices.Clone(c.IPv4Pools), c.IPv6Pools...) {
		if strings.TrimSpace(p) == "" {
			return fmt.Errorf("ipam: an empty pool name in ipv4_pools or ipv6_pools")
		}
	}
	return nil
}

// merged returns the labels of args.cni and args.tabby; args.tabby wins on a key both
// set. Label syntax is checked with the endpoint (workloadID.validate).
func (a *argsConf) merged() (map[string]string, error) {
	out := map[string]string{}
	if a == nil {
		return out, nil
	}
	for _, s := range []struct {
		name string
		args *labelArgs
	}{{"args.cni.labels", a.CNI}, {"args.tabby.labels", a.Tabby}} {
		if s.args == nil {
			continue
		}
		for i, l := range s.args.Labels {
			if l.Key == "" {
				return nil, fmt.Errorf("%s[%d]: no key", s.name, i)
			}
			out[l.Key] = l.Value
		}
	}
	return out, nil
}

// dnsFor is the result's dns for a workload in namespace: the configuration's dns when it
// names servers, else the cluster's (cluster_dns), else nothing.
func (c *netConf) dnsFor(namespace string) types.DNS {
	if len(c.DNS.Nameservers) > 0 || len(c.ClusterDNS) == 0 {
		return c.DNS
	}
	d := c.ClusterDomain
	return types.DNS{Nameservers: slices.Clone(c.ClusterDNS),
		Search: []string{namespace + ".svc." + d, "svc." + d, d}, Options: []string{"ndots:5"}}
}
