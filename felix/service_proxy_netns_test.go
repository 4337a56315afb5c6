package felix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/testenv"
	"github.com/tabby-net/tabby/internal/teststats"
	"github.com/tabby-net/tabby/proxy"
)

// proxyLab is a client namespace, the node: the ServiceProxy programs nftables there and
// connections from it take the OUTPUT path. A veth joins it to a backend namespace whose
// addresses 10.200.0.2-.4 run a TCP server on 8080 and a UDP echo on 5353; each answers
// with the address it was reached on. Another veth joins it to a workload namespace,
// 10.201.0.2, routed through the node (the PREROUTING and FORWARD path), whose TCP server
// on 8080 answers with its peer's address.
type proxyLab struct {
	client, backend, workload *testNS
}

func newProxyLab(t *testing.T) *proxyLab {
	t.Helper()
	l := &proxyLab{client: newTestNS(t), backend: newTestNS(t), workload: newTestNS(t)}
	link := func(dev string, other *testNS) {
		peer := "p" + randomHex(10)
		l.client.ip(t, "link", "add", dev, "type", "veth", "peer", "name", peer)
		l.client.ip(t, "link", "set", peer, "netns", other.name)
		other.ip(t, "link", "set", peer, "name", "veth0")
		l.client.ip(t, "link", "set", dev, "up")
		other.ip(t, "link", "set", "veth0", "up")
	}
	link("veth0", l.backend)
	link("veth1", l.workload)
	l.client.ip(t, "addr", "add", "10.200.0.1/24", "dev", "veth0")
	l.client.ip(t, "addr", "add", "10.201.0.1/24", "dev", "veth1")
	for _, a := range []string{"10.200.0.2/24", "10.200.0.3/24", "10.200.0.4/24"} {
		l.backend.ip(t, "addr", "add", a, "dev", "veth0")
	}
	l.workload.ip(t, "addr", "add", "10.201.0.2/24", "dev", "veth0")
	l.workload.ip(t, "route", "add", "default", "via", "10.201.0.1")
	l.backend.ip(t, "route", "add", "default", "via", "10.200.0.1")
	l.client.setSysctl(t, "net/ipv4/ip_forward", "1")
	// The service CIDR leads to the backends' link, as a node's default route would.
	l.client.ip(t, "route", "add", "10.96.0.0/12", "via", "10.200.0.2")
	// IPv6 beside it: the client fd00:200::1, the backends ::2 and ::3.
	l.client.ip(t, "addr", "add", "fd00:200::1/64", "dev", "veth0", "nodad")
	for _, a := range []string{"fd00:200::2/64", "fd00:200::3/64"} {
		l.backend.ip(t, "addr", "add", a, "dev", "veth0", "nodad")
	}
	l.client.ip(t, "-6", "route", "add", "fd00:96::/112", "via", "fd00:200::2")
	for _, a := range []string{"10.200.0.2", "10.200.0.3", "10.200.0.4", "fd00:200::2", "fd00:200::3"} {
		l.serve(t, l.backend, a, false)
	}
	l.serve(t, l.workload, "10.201.0.2", true)
	return l
}

// serve runs the TCP and UDP servers of addr in ns until the test ends. They answer
// with addr, or with the peer's address when peer is set.
func (l *proxyLab) serve(t *testing.T, ns *testNS, addr string, peer bool) {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	err := inNamedNetNS(ns.name, func() error {
		var err error
		if ln, err = net.Listen("tcp", net.JoinHostPort(addr, "8080")); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", net.JoinHostPort(addr, "5353"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if peer {
				fmt.Fprint(c, c.RemoteAddr().(*net.TCPAddr).IP)
			} else {
				fmt.Fprint(c, addr)
			}
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(addr), from)
		}
	}()
}

// dial connects from the client namespace to addr over network and returns what the
// server answered.
func (l *proxyLab) dial(network, addr string) (string, error) {
	return dialFrom(l.client, network, addr)
}

// dialFrom connects from ns to addr over network and returns what the server answered.
func dialFrom(ns *testNS, network, addr string) (string, error) {
	var got string
	err := inNamedNetNS(ns.name, func() error {
		c, err := net.DialTimeout(network, addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if strings.HasPrefix(network, "udp") {
			if _, err := c.Write([]byte("?")); err != nil {
				return err
			}
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			got = string(buf[:n])
			return err
		}
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	return got, err
}

// spread makes n TCP connections to addr and counts the answers.
func (l *proxyLab) spread(t *testing.T, addr string, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		got, err := l.dial("tcp", addr)
		if err != nil {
			t.Fatalf("connect %s: %v", addr, err)
		}
		counts[got]++
	}
	return counts
}

// serviceWriter is what the netns tests drive of either proxy mode's writer.
type serviceWriter interface {
	Apply(context.Context, *proxy.LBState) error
	ApplyCached(context.Context, *proxy.LBState) error
	Remove(context.Context) error
}

// proxyMode is one proxy mode (and iptables backend) under test.
type proxyMode struct {
	name   string
	writer string // as an ApplyObserver is told it
	new    func(t *testing.T, cfg ServiceProxyConfig) serviceWriter
	// observe sets the writer's ApplyObserver.
	observe func(w serviceWriter, o ApplyObserver)
	// leftover lists what the node holds of the mode's Service rules (chains and
	// tables), "" for nothing; drift breaks them out of band: it empties the lookup of
	// every frontend and adds a stray chain named "stray".
	leftover func(t *testing.T, l *proxyLab, v6 bool) string
	drift    func(t *testing.T, l *proxyLab)
}

// proxyModes are the nftables mode and the iptables mode on each backend.
func proxyModes() []proxyMode {
	modes := []proxyMode{{
		name: "nftables", writer: WriterNFTables,
		new: func(t *testing.T, cfg ServiceProxyConfig) serviceWriter {
			testenv.RequireTools(t, testenv.Tool{Cmd: "nft", Package: "nftables"})
			sp, err := NewServiceProxy(cfg)
			if err != nil {
				t.Fatal(err)
			}
			return sp
		},
		observe: func(w serviceWriter, o ApplyObserver) { w.(*ServiceProxy).Observe = o },
		leftover: func(t *testing.T, l *proxyLab, v6 bool) string {
			fam := "ip"
			if v6 {
				fam = "ip6"
			}
			out, err := l.nft(t, "list", "table", fam, "tabby")
			if err != nil {
				return ""
			}
			return out
		},
		drift: func(t *testing.T, l *proxyLab) {
			if out, err := l.nft(t, "flush", "map", "ip", "tabby", proxy.MapServiceIPs); err != nil {
				t.Fatalf("flush map: %v: %s", err, out)
			}
			if out, err := l.nft(t, "add", "chain", "ip", "tabby", "stray"); err != nil {
				t.Fatalf("add chain: %v: %s", err, out)
			}
		},
	}}
	for _, b := range []Backend{BackendNFT, BackendLegacy} {
		modes = append(modes, proxyMode{
			name: "iptables-" + b.Name, writer: WriterIPTablesProxy,
			new: func(t *testing.T, cfg ServiceProxyConfig) serviceWriter {
				testenv.RequireTools(t, testenv.Tool{Cmd: b.Restore, Package: "iptables"})
				return NewServiceProxyIPTables(cfg, b, Runner{NetNS: cfg.NetNS})
			},
			observe: func(w serviceWriter, o ApplyObserver) { w.(*ServiceProxyIPTables).Observe = o },
			leftover: func(t *testing.T, l *proxyLab, v6 bool) string {
				save := b.Save
				if v6 {
					save = b.Save6
				}
				var left []string
				for line := range strings.SplitSeq(run(t, "ip", "netns", "exec", l.client.name, save), "\n") {
					if strings.Contains(line, proxy.IPTablesChainPrefix) {
						left = append(left, line)
					}
				}
				return strings.Join(left, "\n")
			},
			drift: func(t *testing.T, l *proxyLab) {
				ipt := strings.TrimSuffix(b.Save, "-save")
				run(t, "ip", "netns", "exec", l.client.name, ipt, "-t", "nat", "-F", proxy.IPTChainServices)
				run(t, "ip", "netns", "exec", l.client.name, ipt, "-t", "nat", "-N", proxy.IPTablesChainPrefix+"stray")
			},
		})
	}
	return modes
}

// forEachMode runs test as a subtest per proxy mode.
func forEachMode(t *testing.T, test func(t *testing.T, m proxyMode)) {
	for _, m := range proxyModes() {
		t.Run(m.name, func(t *testing.T) { test(t, m) })
	}
}

// TestServiceProxyNetnsIPv6 checks the ip6 table with traffic from the node: a ClusterIP
// reaches both IPv6 backends, and a Service without endpoints refuses at once.
func TestServiceProxyNetnsIPv6(t *testing.T) { forEachMode(t, testServiceProxyNetnsIPv6) }

func testServiceProxyNetnsIPv6(t *testing.T, m proxyMode) {
	l := newProxyLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sp := m.new(t, ServiceProxyConfig{NetNS: l.client.name, IPv6: true})
	defer sp.Remove(context.Background())
	st := &proxy.LBState{Ports: []proxy.PortLB{
		lbPort("shop", "web", "TCP", "fd00:96::10", 80, 8080, "fd00:200::2", "fd00:200::3"),
		lbPort("shop", "web6empty", "TCP", "fd00:96::11", 80, 8080),
	}}
	if err := sp.ApplyCached(ctx, st); err != nil {
		t.Fatal(err)
	}
	if counts := l.spread(t, "[fd00:96::10]:80", 40); len(counts) != 2 {
		t.Errorf("40 connections to the IPv6 ClusterIP reached %v, want both backends", counts)
	}
	start := time.Now()
	if _, err := l.dial("tcp6", "[fd00:96::11]:80"); !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
		t.Errorf("IPv6 TCP to a Service without endpoints: %v after %v; want refused at once", err, time.Since(start))
	}
	if err := sp.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if out := m.leftover(t, l, true); out != "" {
		t.Errorf("IPv6 Service rules still there after Remove:\n%s", out)
	}
}

func (l *proxyLab) nft(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", l.client.name, "nft"}, args...)...).CombinedOutput()
	return string(out), err
}

// lbPort is a Service port of vip on port, with backends on backendPort.
func lbPort(ns, name string, proto string, vip string, port uint16, backendPort uint16, backends ...string) proxy.PortLB {
	p := proxy.PortLB{Key: proxy.PortKey{Namespace: ns, Name: name, Port: "p", Protocol: "TCP"}, Protocol: "TCP", Port: port,
		Frontends: []netip.Addr{netip.MustParseAddr(vip)}}
	if proto == "UDP" {
		p.Key.Protocol, p.Protocol = "UDP", "UDP"
	}
	for _, b := range backends {
		p.Backends = append(p.Backends, proxy.Backend{Addr: netip.MustParseAddr(b), Port: backendPort})
	}
	return p
}

func TestServiceProxyNetns(t *testing.T) { forEachMode(t, testServiceProxyNetns) }

func testServiceProxyNetns(t *testing.T, m proxyMode) {
	l := newProxyLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var observed []string
	sp := m.new(t, ServiceProxyConfig{NetNS: l.client.name})
	m.observe(sp, func(w string, _ time.Duration, err error) { observed = append(observed, fmt.Sprint(w, " ", err)) })
	if m.name == "nftables" {
		// A table left by another layout, with a map of the same name and another type:
		// the first full pass cannot rewrite it and replaces it.
		if out, err := l.nft(t, "add", "table", "ip", "tabby"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if out, err := l.nft(t, "add", "map", "ip", "tabby", proxy.MapServiceEndpoints, "{ type ipv4_addr : verdict ; }"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	t.Cleanup(func() { sp.Remove(context.Background()) })
	backends := []string{"10.200.0.2", "10.200.0.3", "10.200.0.4"}
	st := &proxy.LBState{Ports: []proxy.PortLB{
		lbPort("shop", "web", "TCP", "10.96.0.10", 80, 8080, backends...),
		lbPort("shop", "dns", "UDP", "10.96.0.53", 53, 5353, backends[0]),
		lbPort("shop", "empty", "TCP", "10.96.0.11", 80, 8080),
		lbPort("shop", "emptyudp", "UDP", "10.96.0.12", 53, 5353),
		lbPort("shop", "self", "TCP", "10.96.0.20", 80, 8080, "10.201.0.2"),
	}}
	if err := sp.ApplyCached(ctx, st); err != nil {
		t.Fatal(err)
	}
	if err := sp.Apply(ctx, st); err != nil { // a full pass over an intact table: idempotent
		t.Fatal(err)
	}

	t.Run("ClusterIP spreads over its endpoints", func(t *testing.T) {
		const n = 300
		counts := l.spread(t, "10.96.0.10:80", n)
		// Chi-square with 2 degrees of freedom: 13.816 is the p = 0.001 critical value.
		if x := teststats.ChiSquare(counts, backends, n); x > 13.816 || len(counts) != 3 {
			t.Errorf("%d connections spread %v: chi-square %.1f > 13.816 (p < 0.001)", n, counts, x)
		} else {
			t.Logf("%d connections spread %v (chi-square %.2f)", n, counts, x)
		}
		if got, err := l.dial("udp4", "10.96.0.53:53"); err != nil || got != backends[0] {
			t.Errorf("UDP through the ClusterIP: %q, %v; want %q", got, err, backends[0])
		}
	})

	t.Run("no endpoints refuses at once", func(t *testing.T) {
		start := time.Now()
		_, err := l.dial("tcp4", "10.96.0.11:80")
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
			t.Errorf("TCP to a Service without endpoints: %v after %v; want connection refused at once", err, time.Since(start))
		}
		// From the node itself the reject happens in OUTPUT, on the sender's own
		// packet: the kernel fails the send with EPERM (and queues the ICMP port
		// unreachable, which a later read would see as ECONNREFUSED).
		start = time.Now()
		_, err = l.dial("udp4", "10.96.0.12:53")
		if !(errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPERM)) || time.Since(start) > time.Second {
			t.Errorf("UDP to a Service without endpoints: %v after %v; want refused at once", err, time.Since(start))
		}
	})

	t.Run("from a workload (PREROUTING, FORWARD)", func(t *testing.T) {
		counts := map[string]int{}
		for range 30 {
			got, err := dialFrom(l.workload, "tcp4", "10.96.0.10:80")
			if err != nil {
				t.Fatalf("workload to the ClusterIP: %v", err)
			}
			counts[got]++
		}
		if len(counts) != 3 {
			t.Errorf("30 connections from a workload reached %v, want all 3 backends", counts)
		}
		start := time.Now()
		if _, err := dialFrom(l.workload, "tcp4", "10.96.0.11:80"); !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
			t.Errorf("TCP from a workload to a Service without endpoints: %v after %v; want refused at once", err, time.Since(start))
		}
		// The ICMP port unreachable reaches the workload: its read fails at once.
		start = time.Now()
		if _, err := dialFrom(l.workload, "udp4", "10.96.0.12:53"); !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
			t.Errorf("UDP from a workload to a Service without endpoints: %v after %v; want port unreachable at once", err, time.Since(start))
		}
	})

	t.Run("hairpin: a workload reaching itself through its Service is masqueraded", func(t *testing.T) {
		got, err := dialFrom(l.workload, "tcp4", "10.96.0.20:80")
		if err != nil || got != "10.201.0.1" {
			t.Errorf("workload through its own Service: peer %q, %v; want the node's 10.201.0.1", got, err)
		}
	})

	t.Run("ClientIP affinity sticks", func(t *testing.T) {
		sticky := lbPort("shop", "sticky", "TCP", "10.96.0.30", 80, 8080, backends...)
		sticky.Affinity = time.Minute
		st.Ports = append(st.Ports, sticky)
		if err := sp.ApplyCached(ctx, st); err != nil {
			t.Fatal(err)
		}
		if counts := l.spread(t, "10.96.0.30:80", 30); len(counts) != 1 {
			t.Errorf("30 connections with ClientIP affinity reached %v, want one backend", counts)
		}
		st.Ports = st.Ports[:len(st.Ports)-1]
	})

	t.Run("a removed backend gets no new connections", func(t *testing.T) {
		st.Ports[0] = lbPort("shop", "web", "TCP", "10.96.0.10", 80, 8080, backends[:2]...)
		if err := sp.ApplyCached(ctx, st); err != nil {
			t.Fatal(err)
		}
		counts := l.spread(t, "10.96.0.10:80", 60)
		if counts[backends[2]] != 0 || len(counts) != 2 {
			t.Errorf("after removing %s: %v", backends[2], counts)
		}
	})

	t.Run("a full pass repairs drift", func(t *testing.T) {
		m.drift(t, l)
		if err := sp.Apply(ctx, st); err != nil {
			t.Fatal(err)
		}
		if got, err := l.dial("tcp4", "10.96.0.10:80"); err != nil || (got != backends[0] && got != backends[1]) {
			t.Errorf("after the full pass: %q, %v", got, err)
		}
		if out := m.leftover(t, l, false); strings.Contains(out, "stray") {
			t.Errorf("stray chain left:\n%s", out)
		}
	})

	t.Run("deleting every Service", func(t *testing.T) {
		if err := sp.ApplyCached(ctx, &proxy.LBState{}); err != nil {
			t.Fatal(err)
		}
		out := m.leftover(t, l, false)
		if strings.Contains(out, "chain service-") || strings.Contains(out, "chain endpoint-") || strings.Contains(out, proxy.IPTablesChainPrefix+"svc-") || strings.Contains(out, proxy.IPTablesChainPrefix+"sep-") {
			t.Errorf("Service chains left:\n%s", out)
		}
	})

	if err := sp.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if out := m.leftover(t, l, false); out != "" {
		t.Errorf("Service rules still there after Remove:\n%s", out)
	}
	if err := sp.Remove(ctx); err != nil {
		t.Errorf("Remove of removed rules: %v", err)
	}
	if len(observed) == 0 || !strings.HasPrefix(observed[0], m.writer+" <nil>") {
		t.Errorf("observed %v", observed)
	}
}

// TestServiceProxyNetnsNodePort reaches NodePorts of the node (the client namespace) from
// an outside namespace, 10.202.0.2 behind veth2 (10.202.0.1), to the workload 10.201.0.2
// (the pod CIDR 10.201.0.0/24), whose server answers with its peer's address.
func TestServiceProxyNetnsNodePort(t *testing.T) { forEachMode(t, testServiceProxyNetnsNodePort) }

func testServiceProxyNetnsNodePort(t *testing.T, m proxyMode) {
	l := newProxyLab(t)
	outside := newTestNS(t)
	peer := "p" + randomHex(10)
	l.client.ip(t, "link", "add", "veth2", "type", "veth", "peer", "name", peer)
	l.client.ip(t, "link", "set", peer, "netns", outside.name)
	outside.ip(t, "link", "set", peer, "name", "veth0")
	l.client.ip(t, "link", "set", "veth2", "up")
	outside.ip(t, "link", "set", "veth0", "up")
	l.client.ip(t, "addr", "add", "10.202.0.1/24", "dev", "veth2")
	outside.ip(t, "addr", "add", "10.202.0.2/24", "dev", "veth0")
	outside.ip(t, "route", "add", "default", "via", "10.202.0.1")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sp := m.new(t, ServiceProxyConfig{NetNS: l.client.name, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.201.0.0/24")}})
	defer sp.Remove(context.Background())
	cluster := lbPort("shop", "cluster", "TCP", "10.96.0.30", 80, 8080, "10.201.0.2")
	cluster.NodePort, cluster.NodePortFamilies = 30080, [2]bool{true, false}
	local := lbPort("shop", "local", "TCP", "10.96.0.31", 80, 8080)
	local.Key.External, local.Frontends = true, nil
	local.Backends = []proxy.Backend{{Addr: netip.MustParseAddr("10.201.0.2"), Port: 8080}}
	local.LocalBackends = local.Backends
	local.NodePort, local.NodePortFamilies, local.ExternalLocal = 30081, [2]bool{true, false}, true
	remote := local
	remote.Key.Name, remote.NodePort, remote.LocalBackends = "remote", 30082, nil
	empty := lbPort("shop", "empty", "TCP", "10.96.0.33", 80, 8080)
	empty.NodePort, empty.NodePortFamilies = 30083, [2]bool{true, false}
	if err := sp.Apply(ctx, &proxy.LBState{Ports: []proxy.PortLB{cluster, local, remote, empty}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, addr, want string }{
		{"Cluster: masqueraded, the backend sees the node", "10.202.0.1:30080", "10.201.0.1"},
		{"Cluster on another address of the node", "10.200.0.1:30080", "10.201.0.1"},
		{"a ClusterIP from outside the pod CIDRs is masqueraded", "10.96.0.30:80", "10.201.0.1"},
		{"Local: the backend sees the client", "10.202.0.1:30081", "10.202.0.2"},
	} {
		if got, err := dialFrom(outside, "tcp4", c.addr); err != nil || got != c.want {
			t.Errorf("%s: %s from outside answered %q, %v; want %q", c.name, c.addr, got, err, c.want)
		}
	}
	if got, err := dialFrom(outside, "tcp4", "10.202.0.1:30082"); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Local without a local endpoint: %q, %v; want dropped (a timeout)", got, err)
	}
	// A NodePort without endpoints refuses at once, from outside and from the node.
	for _, ns := range []*testNS{outside, l.client} {
		start := time.Now()
		if _, err := dialFrom(ns, "tcp4", "10.202.0.1:30083"); !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
			t.Errorf("NodePort without endpoints from %s: %v after %v; want refused at once", ns.name, err, time.Since(start))
		}
	}
	// The node itself reaches a Local NodePort without a local endpoint through every
	// endpoint, masqueraded; a pod reaches it with its own source.
	if got, err := l.dial("tcp4", "10.202.0.1:30082"); err != nil || got != "10.201.0.1" {
		t.Errorf("Local without a local endpoint, from the node: %q, %v; want the node's 10.201.0.1", got, err)
	}
	if got, err := dialFrom(l.workload, "tcp4", "10.200.0.1:30081"); err != nil || got != "10.201.0.1" {
		t.Errorf("Local, from the pod itself (hairpin): %q, %v; want the node's 10.201.0.1", got, err)
	}
	// A NodePort is not served on the loopback addresses.
	if _, err := l.dial("tcp4", "127.0.0.1:30080"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("127.0.0.1:30080: %v; want refused (no NodePort on loopback)", err)
	}
}
