package main

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/tabby-net/tabby/internal/labstate"
)

// The lab's names and addresses: pure functions, so they are tested without root.

const (
	nsPrefix       = labstate.NsPrefix
	maxLabName     = 16
	maxNodes       = 100
	maxSubnets     = 50  // node subnets created by up
	maxSubnetIndex = 254 // a host may use any subnet 1..254
	nodeHostBase   = 9   // node k has host part 9+k: node1 .10
	hostHostBase   = 200 // hosts have host parts 200..254
	maxHostName    = 12  // so that the router port "h-<name>" fits IFNAMSIZ
	etcdClientPort = 2379
	etcdPeerPort   = 2380
	etcdPeerURL    = "http://127.0.0.1:2380" // a lone member's: on loopback, no peer reaches it
	maxEtcdMembers = 7                       // addresses .1 to .7 of subnet 1; nodes start at .10
	nodeIfName     = "eth0"
	workloadIfName = "eth0"
	routerName     = "router"
)

var (
	labNameRE   = regexp.MustCompile(`^[a-z][a-z0-9]*$`)
	nodeNameRE  = regexp.MustCompile(`^node([1-9][0-9]*)$`)
	dnsLabelRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubRE    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelNameRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelValRE  = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
)

// validateLabName accepts 1-16 lowercase letters and digits starting with a letter. No
// hyphen, so "tby-<lab>-" is never a prefix of another lab's namespaces.
func validateLabName(name string) error {
	if len(name) == 0 || len(name) > maxLabName || !labNameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: want 1-%d lowercase letters and digits, starting with a letter (it prefixes the lab's namespaces as %q)",
			name, maxLabName, nsPrefix+"<name>-")
	}
	return nil
}

// labPrefix is the prefix of every namespace of the lab.
func labPrefix(lab string) string { return labstate.NetnsPrefix(lab) }

func routerNetns(lab string) string       { return labPrefix(lab) + routerName }
func nodeNetns(lab, node string) string   { return labPrefix(lab) + node }
func hostNetns(lab, host string) string   { return labPrefix(lab) + "h-" + host }
func nodeName(k int) string               { return "node" + strconv.Itoa(k) }
func bridgeName(subnet int) string        { return "br" + strconv.Itoa(subnet) }
func hostRouterPort(host string) string   { return "h-" + host }
func netnsPath(ns string) string          { return netnsDir + "/" + ns }
func nodeSubnet(k, subnets int) int       { return (k-1)%subnets + 1 }
func subnetGateway(subnet int) netip.Addr { return subnetAddr(subnet, 1) }

func subnetCIDR(subnet int) netip.Prefix {
	return netip.PrefixFrom(subnetAddr(subnet, 0), 24)
}

func subnetAddr(subnet, host int) netip.Addr {
	return netip.AddrFrom4([4]byte{172, 31, byte(subnet), byte(host)})
}

// subnetAddr6 is subnetAddr's IPv6 twin in a dual-stack lab: fd00:172:31:<subnet>::<host>,
// the subnet and host written with the same digits as in the IPv4 address (172.31.1.10 is
// fd00:172:31:1::10), in a /64 per subnet.
func subnetAddr6(subnet, host int) netip.Addr {
	digits := func(n int) uint16 { // n's decimal digits read as hex
		v, _ := strconv.ParseUint(strconv.Itoa(n), 16, 16)
		return uint16(v)
	}
	var a [16]byte
	for i, g := range []uint16{0xfd00, 0x172, 0x31, digits(subnet), 0, 0, 0, digits(host)} {
		a[2*i], a[2*i+1] = byte(g>>8), byte(g)
	}
	return netip.AddrFrom16(a)
}

// dualStack gives a planned lab its IPv6 underlay: a /64 per subnet with the router at
// ::1, and each node the IPv6 address with its IPv4 address's host part.
func dualStack(st *labstate.State) {
	st.IPv6 = true
	for i := range st.Subnets {
		setSubnet6(&st.Subnets[i])
	}
	for i := range st.Nodes {
		setAddress6(&st.Nodes[i].Attachment)
	}
}

// setSubnet6 gives a subnet its IPv6 prefix and the router's address on it.
func setSubnet6(s *labstate.Subnet) {
	s.CIDR6, s.Gateway6 = netip.PrefixFrom(subnetAddr6(s.Index, 0), 64), subnetAddr6(s.Index, 1)
}

// setAddress6 gives an attachment its IPv6 address and gateway from its IPv4 address.
func setAddress6(a *labstate.Attachment) {
	host := int(a.Address.Addr().As4()[3])
	a.Address6, a.Gateway6 = netip.PrefixFrom(subnetAddr6(a.Subnet, host), 64), subnetAddr6(a.Subnet, 1)
}

func nodeAddress(k, subnet int) netip.Prefix {
	return netip.PrefixFrom(subnetAddr(subnet, nodeHostBase+k), 24)
}

// workloadNetns names a workload's namespace: tby-<lab>-w-<namespace>.<name>. Kubernetes
// namespaces have no dot, so the name is unambiguous; one too long for a file name is
// shortened to a hash.
func workloadNetns(lab, namespace, name string) string {
	s := labPrefix(lab) + "w-" + namespace + "." + name
	if len(s) > 200 {
		sum := sha1.Sum([]byte(namespace + "/" + name))
		s = labPrefix(lab) + "w-" + hex.EncodeToString(sum[:])[:20]
	}
	return s
}

// parseWorkloadName splits NAMESPACE/NAME and checks both as Kubernetes does: the namespace
// is a DNS-1123 label, the name a DNS-1123 subdomain.
func parseWorkloadName(s string) (namespace, name string, err error) {
	namespace, name, ok := strings.Cut(s, "/")
	if !ok {
		return "", "", fmt.Errorf("workload %q: want NAMESPACE/NAME", s)
	}
	if len(namespace) > 63 || !dnsLabelRE.MatchString(namespace) {
		return "", "", fmt.Errorf("workload %q: namespace %q is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)", s, namespace)
	}
	if len(name) > 253 || !dnsSubRE.MatchString(name) {
		return "", "", fmt.Errorf("workload %q: name %q is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253)", s, name)
	}
	return namespace, name, nil
}

// validateLabels checks Kubernetes label syntax: an optional DNS-subdomain prefix and a
// name of at most 63 characters; values of at most 63, possibly empty.
func validateLabels(labels map[string]string) error {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		name := k
		if prefix, n, ok := strings.Cut(k, "/"); ok {
			if len(prefix) > 253 || !dnsSubRE.MatchString(prefix) {
				return fmt.Errorf("label %q: prefix %q is not a DNS-1123 subdomain", k, prefix)
			}
			name = n
		}
		if len(name) > 63 || !labelNameRE.MatchString(name) {
			return fmt.Errorf("label %q: want at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", k)
		}
		if v := labels[k]; len(v) > 63 || !labelValRE.MatchString(v) {
			return fmt.Errorf("label %s=%q: a value is at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", k, v)
		}
	}
	return nil
}

// validateHostName checks a host's name: a DNS label short enough for its router port's
// interface name, and no name of the lab's own (router, node<k>).
func validateHostName(name string) error {
	if len(name) > maxHostName || !dnsLabelRE.MatchString(name) {
		return fmt.Errorf("host name %q: want a DNS label of at most %d characters (lowercase letters, digits and '-')", name, maxHostName)
	}
	if name == routerName || nodeNameRE.MatchString(name) {
		return fmt.Errorf("host name %q: %q and node<N> are the names of the lab's router and nodes", name, routerName)
	}
	return nil
}

// plan lays out a new lab: its router, subnets and nodes, with no process started yet.
func plan(lab string, nodes, subnets int, stateDir, dataDir string) (*labstate.State, error) {
	if err := validateLabName(lab); err != nil {
		return nil, err
	}
	if nodes < 1 || nodes > maxNodes {
		return nil, fmt.Errorf("--nodes %d: want 1 to %d", nodes, maxNodes)
	}
	if subnets < 1 || subnets > maxSubnets {
		return nil, fmt.Errorf("--subnets %d: want 1 to %d", subnets, maxSubnets)
	}
	st := &labstate.State{
		Name:     lab,
		StateDir: stateDir,
		DataDir:  dataDir,
		Router:   labstate.Router{Netns: routerNetns(lab)},
		Etcd:     labstate.Etcd{Netns: routerNetns(lab)},
	}
	if err := planEtcd(st, 1, false); err != nil {
		return nil, err
	}
	for i := 1; i <= subnets; i++ {
		st.Subnets = append(st.Subnets, newSubnet(i))
	}
	for k := 1; k <= nodes; k++ {
		s := nodeSubnet(k, subnets)
		name := nodeName(k)
		st.Nodes = append(st.Nodes, labstate.Node{
			Name: name,
			Attachment: labstate.Attachment{
				Netns:      nodeNetns(lab, name),
				Interface:  nodeIfName,
				RouterPort: name,
				Subnet:     s,
				Address:    nodeAddress(k, s),
				Gateway:    subnetGateway(s),
			},
		})
	}
	return st, nil
}

func newSubnet(i int) labstate.Subnet {
	return labstate.Subnet{Index: i, CIDR: subnetCIDR(i), Bridge: bridgeName(i), Gateway: subnetGateway(i)}
}

// planHost lays out a new host on subnet: the lowest free address from .200 up.
func planHost(st *labstate.State, name string, subnet int) (labstate.Host, error) {
	if err := validateHostName(name); err != nil {
		return labstate.Host{}, err
	}
	if subnet < 1 || subnet > maxSubnetIndex {
		return labstate.Host{}, fmt.Errorf("--subnet %d: want 1 to %d", subnet, maxSubnetIndex)
	}
	if st.Host(name) != nil {
		return labstate.Host{}, fmt.Errorf("host %q already exists in lab %q", name, st.Name)
	}
	used := map[netip.Addr]bool{}
	for _, h := range st.Hosts {
		used[h.Address.Addr()] = true
	}
	for j := hostHostBase; j <= 254; j++ {
		a := subnetAddr(subnet, j)
		if used[a] {
			continue
		}
		h := labstate.Host{Name: name, Attachment: labstate.Attachment{
			Netns:      hostNetns(st.Name, name),
			Interface:  nodeIfName,
			RouterPort: hostRouterPort(name),
			Subnet:     subnet,
			Address:    netip.PrefixFrom(a, 24),
			Gateway:    subnetGateway(subnet),
		}}
		if st.IPv6 {
			setAddress6(&h.Attachment)
		}
		return h, nil
	}
	return labstate.Host{}, fmt.Errorf("subnet %d has no free host address left (.%d to .254)", subnet, hostHostBase)
}

// planEtcd lays out the lab's etcd: members etcd1..etcdN in the router namespace, member k
// on subnet 1's address .k (the router's own address is .1), serving clients on 2379 and
// peers on 2380 of that address. A lone member keeps its peer port on loopback. With
// useTLS every URL is https and the PEM files are in the state directory's pki/.
func planEtcd(st *labstate.State, members int, useTLS bool) error {
	if members < 1 || members > maxEtcdMembers {
		return fmt.Errorf("--etcd-members %d: want 1 to %d (odd: etcd needs a majority of its members)", members, maxEtcdMembers)
	}
	scheme := "http"
	st.Etcd.TLS = nil
	if useTLS {
		scheme = "https"
		dir := filepath.Join(st.StateDir, "pki")
		st.Etcd.TLS = &labstate.EtcdTLS{
			CAFile:   filepath.Join(dir, "ca.pem"),
			CertFile: filepath.Join(dir, "client.pem"), KeyFile: filepath.Join(dir, "client-key.pem"),
			ServerCertFile: filepath.Join(dir, "server.pem"), ServerKeyFile: filepath.Join(dir, "server-key.pem"),
		}
	}
	st.Etcd.Members = nil
	var endpoints []string
	for k := 1; k <= members; k++ {
		a := subnetAddr(1, k)
		m := labstate.EtcdMember{
			Name:      "etcd" + strconv.Itoa(k),
			Address:   a,
			ClientURL: scheme + "://" + netip.AddrPortFrom(a, etcdClientPort).String(),
			PeerURL:   scheme + "://" + netip.AddrPortFrom(a, etcdPeerPort).String(),
		}
		if members == 1 {
			m.PeerURL = etcdPeerURL
		}
		m.DataDir = filepath.Join(st.DataDir, m.Name)
		st.Etcd.Members = append(st.Etcd.Members, m)
		endpoints = append(endpoints, m.ClientURL)
	}
	st.Etcd.Endpoint = strings.Join(endpoints, ",")
	return nil
}

// etcdInitialCluster is --etcd-initial-cluster for the lab's members.
func etcdInitialCluster(st *labstate.State) string {
	var parts []string
	for _, m := range st.Etcd.Members {
		parts = append(parts, m.Name+"="+m.PeerURL)
	}
	return strings.Join(parts, ",")
}

// etcdMemberArgv is the command line of member i of the lab's etcd.
func etcdMemberArgv(st *labstate.State, i int) []string {
	m := st.Etcd.Members[i]
	argv := []string{st.Binaries.TabbyNode, "--datastore-only",
		"--data-dir", m.DataDir,
		"--etcd-name", m.Name,
		"--etcd-listen-client", m.ClientURL, "--etcd-listen-peer", m.PeerURL,
		"--log-level", "info"}
	if len(st.Etcd.Members) > 1 {
		argv = append(argv, "--etcd-initial-cluster", etcdInitialCluster(st))
	}
	if t := st.Etcd.TLS; t != nil {
		argv = append(argv, "--etcd-server-cert-file", t.ServerCertFile, "--etcd-server-key-file", t.ServerKeyFile,
			"--etcd-client-ca-file", t.CAFile)
		if len(st.Etcd.Members) > 1 {
			argv = append(argv, "--etcd-peer-cert-file", t.ServerCertFile, "--etcd-peer-key-file", t.ServerKeyFile,
				"--etcd-peer-ca-file", t.CAFile)
		}
	}
	return argv
}
