package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tabby-net/tabby/internal/labstate"
	"github.com/tabby-net/tabby/internal/pki"
)

// etcdWait bounds how long up waits for the lab's etcd to serve.
const etcdWait = 60 * time.Second

type upOptions struct {
	nodes, subnets int
	binDir         string
	cniBinDir      string
	agentBinary    string
	noAgents       bool
	noDefaultPools bool
	ipv6           bool
	wait           time.Duration
	etcdMembers    int
	etcdTLS        bool
}

func newUpCommand(g *globals) *cobra.Command {
	var o upOptions
	cmd := &cobra.Command{
		Use:   "up",
		Short: "create a lab: router, subnets, nodes, etcd and one agent per node",
		Long: `up creates a lab and returns once its etcd serves and every agent has registered its
Node. A lab of the same name that is there already, whole or left over from a crash, is
removed first. If an agent dies or does not register in time, up prints its log, leaves the
lab up for inspection and exits non-zero.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return up(cmd.Context(), g, o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.nodes, "nodes", 3, "number of nodes (node1..nodeN)")
	f.IntVar(&o.subnets, "subnets", 1, "number of underlay subnets; nodes are spread over them round-robin")
	f.StringVar(&o.binDir, "bin-dir", os.Getenv("TABBY_LAB_BIN_DIR"), "where tabby-node and tabbyctl are (env TABBY_LAB_BIN_DIR; default: tabby-lab's own directory)")
	f.StringVar(&o.cniBinDir, "cni-bin-dir", os.Getenv("TABBY_LAB_CNI_BIN_DIR"), "CNI plugin directory, where tabby-cni is (env TABBY_LAB_CNI_BIN_DIR; default: --bin-dir)")
	f.StringVar(&o.agentBinary, "agent-binary", os.Getenv("TABBY_LAB_AGENT"), "program run as each node's agent (env TABBY_LAB_AGENT; default: tabby-node in --bin-dir)")
	f.BoolVar(&o.noAgents, "no-agents", envBool("TABBY_LAB_NO_AGENTS"), "run no agents: the topology and etcd only (env TABBY_LAB_NO_AGENTS=1)")
	f.BoolVar(&o.noDefaultPools, "no-default-pools", false, "the agents create no IP pool on first boot (default: the first creates "+labstate.DefaultPoolCIDR+", no encapsulation)")
	f.BoolVar(&o.ipv6, "ipv6", false, "dual-stack underlay: a ULA /64 per subnet (fd00:172:31:<subnet>::/64), agents run with --ip6, workloads get IPv6 addresses too (default pools: also "+labstate.DefaultPool6CIDR+")")
	f.DurationVar(&o.wait, "wait", 60*time.Second, "how long to wait for the agents to register their Nodes")
	f.IntVar(&o.etcdMembers, "etcd-members", 1, fmt.Sprintf("members of the lab's etcd cluster (1 to %d), each a tabby-node --datastore-only in the router namespace on its own address", maxEtcdMembers))
	f.BoolVar(&o.etcdTLS, "etcd-tls", false, "etcd serves only https, to clients with a certificate of a CA the lab makes; the agents, the CNI and tabbyctl get one")
	return cmd
}

func up(ctx context.Context, g *globals, o upOptions, stdout, stderr io.Writer) error {
	st, err := plan(g.name, o.nodes, o.subnets, g.stateDir(), g.dataDir())
	if err != nil {
		return err
	}
	if err := planEtcd(st, o.etcdMembers, o.etcdTLS); err != nil {
		return err
	}
	bins, err := resolveBinaries(o)
	if err != nil {
		return err
	}
	lk, err := g.lock()
	if err != nil {
		return err
	}
	gone := false // the lab was removed after a failure: so goes its lock file
	defer func() { lk.unlock(gone) }()
	// SIGINT and SIGTERM stop what up is doing; it then removes what it made.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	begin := time.Now()
	found, err := teardown(g.name, g.stateDir(), g.dataDir())
	if err != nil {
		return fmt.Errorf("remove the lab %s that is there already: %w", g.name, err)
	}
	if found {
		fmt.Fprintf(stderr, "tabby-lab: removed the lab %s that was there already\n", g.name)
	}

	st.Binaries = bins
	st.NoDefaultPools = o.noDefaultPools
	if o.ipv6 {
		dualStack(st)
	}
	st.Created = time.Now().UTC().Truncate(time.Second)
	if err := build(ctx, st); err != nil {
		return fmt.Errorf("up lab %s: %w", g.name, undo(g, err, &gone))
	}
	failed, err := startAgents(ctx, st, o.wait)
	if err != nil { // interrupted, or an agent could not be started at all
		return fmt.Errorf("up lab %s: %w", g.name, undo(g, err, &gone))
	}
	fmt.Fprintf(stderr, "tabby-lab: lab %s is up (%s, %s) in %.1fs\n", g.name,
		plural(len(st.Nodes), "node"), plural(len(st.Subnets), "subnet"), time.Since(begin).Seconds())
	if err := printStatus(stdout, collectStatus(st)); err != nil {
		return err
	}
	if len(failed) > 0 {
		fmt.Fprintln(stderr)
		for _, f := range failed {
			fmt.Fprintf(stderr, "tabby-lab: %s: %s\n", f.node.Name, f.why)
			if alive(f.node.Agent) { // status showed the log of those that exited
				fmt.Fprintf(stderr, "last lines of %s:\n%s\n", f.node.Agent.Log, indent(logTail(f.node.Agent.Log, 20)))
			}
		}
		return fmt.Errorf("%d of %d agents are not running; the lab stays up for inspection (tabby-lab status --name %s) until tabby-lab down --name %s",
			len(failed), len(st.Nodes), g.name, g.name)
	}
	return nil
}

// undo removes what a failed up made and adds any trouble doing so to err.
func undo(g *globals, err error, gone *bool) error {
	if _, terr := teardown(g.name, g.stateDir(), g.dataDir()); terr != nil {
		return errors.Join(err, fmt.Errorf("removing what was made: %w", terr))
	}
	*gone = true
	return err
}

// resolveBinaries finds tabby-node and tabbyctl (next to tabby-lab unless --bin-dir says
// otherwise), the agent program and the CNI plugin directory.
func resolveBinaries(o upOptions) (labstate.Binaries, error) {
	dir := o.binDir
	if dir == "" {
		self, err := os.Executable()
		if err != nil {
			return labstate.Binaries{}, fmt.Errorf("find tabby-lab's own directory: %w (use --bin-dir)", err)
		}
		if self, err = filepath.EvalSymlinks(self); err != nil {
			return labstate.Binaries{}, fmt.Errorf("find tabby-lab's own directory: %w (use --bin-dir)", err)
		}
		dir = filepath.Dir(self)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return labstate.Binaries{}, fmt.Errorf("--bin-dir: %w", err)
	}
	find := func(name string) (string, error) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("%s is not an executable in %s: build it (make build) or point --bin-dir (TABBY_LAB_BIN_DIR) at it", name, dir)
		}
		return p, nil
	}
	var b labstate.Binaries
	if b.TabbyNode, err = find("tabby-node"); err != nil {
		return b, err
	}
	if b.Tabbyctl, err = find("tabbyctl"); err != nil {
		return b, err
	}
	if !o.noAgents {
		b.Agent = b.TabbyNode
		if o.agentBinary != "" {
			if b.Agent, err = exec.LookPath(o.agentBinary); err != nil {
				return b, fmt.Errorf("--agent-binary: %w", err)
			}
			if b.Agent, err = filepath.Abs(b.Agent); err != nil {
				return b, fmt.Errorf("--agent-binary: %w", err)
			}
		}
	}
	b.CNIDir = dir
	if o.cniBinDir != "" {
		if b.CNIDir, err = filepath.Abs(o.cniBinDir); err != nil {
			return b, fmt.Errorf("--cni-bin-dir: %w", err)
		}
	}
	return b, nil
}

// build makes the lab's topology and starts its etcd. On error the caller tears down.
func build(ctx context.Context, st *labstate.State) error {
	if err := os.MkdirAll(st.StateDir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if err := os.MkdirAll(st.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// Saved before anything exists, so even a crash now leaves a trace; discovery by
	// namespace prefix covers the rest.
	if err := st.Save(); err != nil {
		return err
	}

	if err := createNetns(ctx, st.Router.Netns); err != nil {
		return err
	}
	rh, err := openNetns(st.Router.Netns)
	if err != nil {
		return err
	}
	defer rh.Close()
	if err := rh.linkUp("lo"); err != nil {
		return err
	}
	if err := setSysctl(st.Router.Netns, "net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if st.IPv6 {
		if err := setSysctl(st.Router.Netns, "net/ipv6/conf/all/forwarding", "1"); err != nil {
			return err
		}
	}
	for _, s := range st.Subnets {
		if err := addBridge(rh, s); err != nil {
			return err
		}
	}
	slog.Debug("router ready", "netns", st.Router.Netns, "subnets", len(st.Subnets))
	for _, n := range st.Nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := attach(ctx, rh, n.Attachment); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		// kubeadm requires forwarding on a node; the agent would set it anyway.
		if err := setSysctl(n.Netns, "net/ipv4/ip_forward", "1"); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		slog.Debug("node ready", "node", n.Name, "netns", n.Netns, "address", n.Address)
	}
	if err := st.Save(); err != nil {
		return err
	}

	if err := makeEtcdCerts(st); err != nil {
		return err
	}
	for _, m := range st.Etcd.Members[1:] { // the first member has the router's address
		if err := addEtcdAddress(rh, m.Address); err != nil {
			return err
		}
	}
	procs := make([]*started, len(st.Etcd.Members))
	for i := range st.Etcd.Members {
		if procs[i], err = startEtcdMember(st, i); err != nil {
			return err
		}
	}
	if err := st.Save(); err != nil {
		return err
	}
	for _, p := range procs {
		if err := waitEtcd(ctx, st, p, etcdWait); err != nil {
			return err
		}
	}
	st.Ready = true
	return st.Save()
}

// startEtcdMember starts member i of the lab's etcd in the router namespace and records
// its process (the first member's is also st.Etcd.Process); the caller saves the state.
func startEtcdMember(st *labstate.State, i int) (*started, error) {
	m := &st.Etcd.Members[i]
	p, err := startDetached(st.Etcd.Netns, etcdMemberArgv(st, i), filepath.Join(st.StateDir, m.Name+".log"))
	if err != nil {
		return nil, fmt.Errorf("etcd member %s: %w", m.Name, err)
	}
	m.Process = p.Process
	if i == 0 {
		st.Etcd.Process = p.Process
	}
	return p, nil
}

// addEtcdAddress gives an etcd member its own address on subnet 1's bridge.
func addEtcdAddress(rh *nsHandle, a netip.Addr) error {
	br, err := rh.LinkByName(bridgeName(1))
	if err != nil {
		return fmt.Errorf("router: bridge %s: %w", bridgeName(1), err)
	}
	if err := rh.AddrAdd(br, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(a, subnetCIDR(1).Bits()))}); err != nil {
		return fmt.Errorf("router: etcd address %s on %s: %w", a, bridgeName(1), err)
	}
	return nil
}

// makeEtcdCerts makes the lab's CA, the members' certificate (for every member's
// address, as server and peer) and the clients' certificate, when the lab's etcd serves TLS.
func makeEtcdCerts(st *labstate.State) error {
	t := st.Etcd.TLS
	if t == nil {
		return nil
	}
	dir := filepath.Dir(t.CAFile)
	ca, err := pki.NewCA(dir, "tabby-lab "+st.Name+" etcd CA")
	if err != nil {
		return err
	}
	hosts := []string{"127.0.0.1"}
	for _, m := range st.Etcd.Members {
		hosts = append(hosts, m.Address.String())
	}
	if _, err := ca.Issue(dir, "server", "etcd", pki.Server, hosts...); err != nil {
		return err
	}
	_, err = ca.Issue(dir, "client", "tabby-lab", pki.Client)
	return err
}

// addBridge creates a subnet's bridge in the router namespace with the router's address.
func addBridge(rh *nsHandle, s labstate.Subnet) error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: s.Bridge, HardwareAddr: bridgeMAC(s.Index)}}
	if err := rh.LinkAdd(br); err != nil {
		return fmt.Errorf("router: add bridge %s: %w", s.Bridge, err)
	}
	addrs := []netip.Prefix{netip.PrefixFrom(s.Gateway, s.CIDR.Bits())}
	if s.CIDR6.IsValid() {
		addrs = append(addrs, netip.PrefixFrom(s.Gateway6, s.CIDR6.Bits()))
	}
	for _, addr := range addrs {
		if err := rh.AddrAdd(br, underlayAddr(addr)); err != nil {
			return fmt.Errorf("router: address %s on %s: %w", addr, s.Bridge, err)
		}
	}
	return rh.linkUp(s.Bridge)
}

// bridgeMAC is the fixed, locally administered MAC of subnet index's bridge. A bridge
// without one takes its lowest port's MAC, so a host added later could change the
// router's MAC under the nodes' ARP caches and drop their traffic to etcd for seconds.
func bridgeMAC(index int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x74, 0x62, 0x00, byte(index >> 8), byte(index)}
}

// attach creates a node's or host's namespace and joins it to its subnet's bridge: a veth
// with its router end as a bridge port, its address and its default route via the router.
func attach(ctx context.Context, rh *nsHandle, a labstate.Attachment) error {
	if err := createNetns(ctx, a.Netns); err != nil {
		return err
	}
	h, err := openNetns(a.Netns)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := h.linkUp("lo"); err != nil {
		return err
	}
	br, err := rh.LinkByName(bridgeName(a.Subnet))
	if err != nil {
		return fmt.Errorf("router: bridge %s: %w", bridgeName(a.Subnet), err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: a.RouterPort},
		PeerName:      a.Interface,
		PeerNamespace: netlink.NsFd(int(h.ns)),
	}
	if err := rh.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s (router) - %s (%s): %w", a.RouterPort, a.Interface, a.Netns, err)
	}
	port, err := rh.LinkByName(a.RouterPort)
	if err != nil {
		return fmt.Errorf("router: %s: %w", a.RouterPort, err)
	}
	if err := rh.LinkSetMaster(port, br); err != nil {
		return fmt.Errorf("router: add %s to %s: %w", a.RouterPort, br.Attrs().Name, err)
	}
	if err := rh.LinkSetUp(port); err != nil {
		return fmt.Errorf("router: set %s up: %w", a.RouterPort, err)
	}
	eth, err := h.LinkByName(a.Interface)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", a.Netns, a.Interface, err)
	}
	for _, addr := range []netip.Prefix{a.Address, a.Address6} {
		if !addr.IsValid() {
			continue
		}
		if err := h.AddrAdd(eth, underlayAddr(addr)); err != nil {
			return fmt.Errorf("%s: address %s: %w", a.Netns, addr, err)
		}
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("%s: set %s up: %w", a.Netns, a.Interface, err)
	}
	for _, gw := range []netip.Addr{a.Gateway, a.Gateway6} {
		if !gw.IsValid() {
			continue
		}
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if gw.Is6() {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		def := &netlink.Route{LinkIndex: eth.Attrs().Index, Dst: ipNet(dst), Gw: gw.AsSlice()}
		if err := h.RouteAdd(def); err != nil {
			return fmt.Errorf("%s: default route via %s: %w", a.Netns, gw, err)
		}
	}
	return nil
}

// underlayAddr is an underlay address to add: an IPv6 one without duplicate address
// detection, so that it is usable at once rather than tentative for a second or two.
func underlayAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// waitEtcd polls until the lab's etcd answers tabbyctl, the etcd exits, or wait passes.
func waitEtcd(ctx context.Context, st *labstate.State, etcd *started, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		_, err := tabbyctlIn(ctx, st, st.Router.Netns, "--dial-timeout", "1s", "version")
		if err == nil {
			return nil
		}
		if etcd.exited() {
			return fmt.Errorf("etcd (tabby-node --datastore-only in %s) exited: %v; last lines of %s:\n%s",
				st.Router.Netns, etcd.err, etcd.Log, indent(logTail(etcd.Log, 20)))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd did not serve on %s within %s: %v; last lines of %s:\n%s",
				st.Etcd.Endpoint, wait, err, etcd.Log, indent(logTail(etcd.Log, 20)))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tabbyctlIn runs the lab's tabbyctl inside a namespace against the lab's etcd and returns
// its standard output.
func tabbyctlIn(ctx context.Context, st *labstate.State, ns string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	argv := append(append([]string{"netns", "exec", ns, st.Binaries.Tabbyctl}, st.Etcd.ClientArgs()...), args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("tabbyctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// registeredNodes lists the Node resources in the lab's etcd.
func registeredNodes(ctx context.Context, st *labstate.State) (map[string]bool, error) {
	out, err := tabbyctlIn(ctx, st, st.Router.Netns, "--dial-timeout", "2s", "get", "nodes", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("tabbyctl get nodes -o json: %w", err)
	}
	names := map[string]bool{}
	for _, it := range list.Items {
		names[it.Metadata.Name] = true
	}
	return names, nil
}

type agentFailure struct {
	node *labstate.Node
	why  string
}

// startAgents starts every node's agent and waits until each has registered its Node in
// etcd. It returns the agents that died or did not register in time.
func startAgents(ctx context.Context, st *labstate.State, wait time.Duration) ([]agentFailure, error) {
	if st.Binaries.Agent == "" {
		return nil, nil
	}
	procs := map[string]*started{}
	for i := range st.Nodes {
		n := &st.Nodes[i]
		n.DataDir = filepath.Join(st.DataDir, n.Name)
		if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("node %s: data dir: %w", n.Name, err)
		}
		p, err := startDetached(n.Netns, agentArgv(st, n), filepath.Join(st.StateDir, n.Name+".log"))
		if err != nil {
			return nil, fmt.Errorf("node %s: agent: %w", n.Name, err)
		}
		n.Agent = p.Process
		procs[n.Name] = p
	}
	if err := st.Save(); err != nil {
		return nil, err
	}

	deadline := time.Now().Add(wait)
	pending := map[string]bool{}
	for _, n := range st.Nodes {
		pending[n.Name] = true
	}
	var failed []agentFailure
	var lastErr error
	for len(pending) > 0 {
		registered, err := registeredNodes(ctx, st)
		if err != nil {
			lastErr = err
		}
		for i := range st.Nodes {
			n := &st.Nodes[i]
			p := procs[n.Name]
			switch {
			case !pending[n.Name]:
			case registered[n.Name] && !p.exited():
				delete(pending, n.Name)
			case p.exited():
				delete(pending, n.Name)
				failed = append(failed, agentFailure{n, fmt.Sprintf("agent (pid %d) exited: %v", p.PID, p.err)})
			}
		}
		if len(pending) == 0 {
			break
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Now().After(deadline) {
			for i := range st.Nodes {
				if n := &st.Nodes[i]; pending[n.Name] {
					why := fmt.Sprintf("agent (pid %d) runs but has not registered Node %s in etcd within %s", n.Agent.PID, n.Name, wait)
					if lastErr != nil {
						why += fmt.Sprintf(" (last datastore error: %v)", lastErr)
					}
					failed = append(failed, agentFailure{n, why})
				}
			}
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return failed, nil
}

// agentArgv is the command line of a node's agent.
func agentArgv(st *labstate.State, n *labstate.Node) []string {
	argv := append([]string{st.Binaries.Agent, "--node-name", n.Name}, st.Etcd.ClientArgs()...)
	argv = append(argv,
		"--data-dir", n.DataDir,
		"--log-level", "debug",
		// A lab is a world of its own: its DNS forwards nowhere unless a test gives an
		// upstream in the lab (a later --dns-upstream of the agent's own wins).
		"--dns-upstream", "none",
	)
	if n.Address6.IsValid() {
		argv = append(argv, "--ip6", n.Address6.String())
	}
	if st.NoDefaultPools {
		return append(argv, "--no-default-pools")
	}
	// The lab's pods get 10.244.0.0/16 (the host's own 192.168.0.0/16 may be in use),
	// unencapsulated: a one-subnet lab routes it natively, and this kernel may lack ipip.
	argv = append(argv, "--default-ipv4-pool-cidr", labstate.DefaultPoolCIDR, "--default-ipv4-pool-ipip", "Never")
	if st.IPv6 {
		argv = append(argv, "--default-ipv6-pool-cidr", labstate.DefaultPool6CIDR)
	}
	return argv
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
