// Command tabby-node is tabby's per-node agent. It turns its flags into an agent.Config
// and runs the agent (internal/agent); without --etcd-endpoints it also runs the embedded
// etcd that tabbyctl, tabby-cni and other nodes' agents connect to.
//
// Listeners are plain TCP: since Go 1.24 net.ListenConfig opens MPTCP sockets, on which
// Linux refuses TCP MD5 keys (ENOPROTOOPT), so GoBGP could not key its listener and a
// BGP peer with a password that connects to the node (a mesh node with the higher
// address waits for the other) would never get its session.
//
//go:debug multipathtcp=0
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/datastore/embedded"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/internal/agent"
	"github.com/tabby-net/tabby/internal/logsetup"
	"github.com/tabby-net/tabby/internal/nodestatus"
	"github.com/tabby-net/tabby/ipam"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// options are the flags that are not the agent's own Config.
type options struct {
	datastoreOnly    bool
	etcdEndpoints    string
	etcdCAFile       string
	etcdCertFile     string
	etcdKeyFile      string
	dataDir          string
	etcdListenClient string
	etcdListenPeer   string
	etcdServer       embedded.Config // the embedded etcd's member and TLS flags
	logLevel         string
	bgpGRPC          bool
	dnsAddresses     string
	dnsUpstreams     string
	failsafeIn       string
	failsafeOut      string
	agent            agent.Config
}

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tabby-node:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	var o options
	a := &o.agent
	cmd := &cobra.Command{
		Use:   "tabby-node",
		Short: "tabby's per-node agent",
		Long: `tabby-node is the agent that runs on every node.

It registers the node (its address autodetected as Calico does), and keeps a route to
every local workload and a blackhole route for every IPAM block the node owns. Without
--etcd-endpoints it also runs an embedded etcd; with --datastore-only it runs only that,
as on a control host.

Every flag can also be set by an environment variable: TABBY_ and the flag's name in
upper case, dashes as underscores (--etcd-endpoints: TABBY_ETCD_ENDPOINTS). A flag on
the command line wins over its variable.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := setFromEnv(cmd.Flags(), os.LookupEnv); err != nil {
				return err
			}
			if a.NodeName == "" {
				a.NodeName, _ = os.Hostname()
			}
			if !o.bgpGRPC {
				a.BGP.GRPCAddress = ""
			}
			if a.StatusSocket == "" {
				a.StatusSocket = filepath.Join(o.dataDir, nodestatus.SocketName)
			}
			if a.WireGuard.KeyFile == "" {
				a.WireGuard.KeyFile = filepath.Join(o.dataDir, "wireguard.key")
			}
			switch a.SnapshotCache {
			case "":
				a.SnapshotCache = filepath.Join(o.dataDir, "snapshot-cache.json")
			case "none":
				a.SnapshotCache = ""
			}
			a.Version = version
			a.DNS.Enabled = a.DNS.Enabled && a.Role == agent.RoleNode
			if a.Role != agent.RoleNode {
				a.ProxyMode = agent.ProxyNone
			}
			for _, s := range splitList(o.dnsAddresses) {
				addr, err := netip.ParseAddr(s)
				if err != nil {
					return fmt.Errorf("--dns-addresses %q: %w", s, err)
				}
				a.DNS.Addresses = append(a.DNS.Addresses, addr)
			}
			for _, fs := range []struct {
				flag, value string
				ports       *[]felix.FailsafePort
			}{
				{"failsafe-inbound-host-ports", o.failsafeIn, &a.Policy.FailsafeInbound},
				{"failsafe-outbound-host-ports", o.failsafeOut, &a.Policy.FailsafeOutbound},
			} {
				ports, err := felix.ParseFailsafePorts(fs.value)
				if err != nil {
					return fmt.Errorf("--%s: %w", fs.flag, err)
				}
				*fs.ports = ports
			}
			if o.dnsUpstreams == "none" {
				a.DNS.NoForward = true
			} else {
				a.DNS.Upstreams = splitList(o.dnsUpstreams)
			}
			if a.DefaultPools.Off {
				for _, name := range []string{"default-ipv4-pool-cidr", "default-ipv4-pool-ipip", "default-ipv4-pool-vxlan", "default-ipv6-pool-cidr", "default-ipv6-pool-vxlan"} {
					if cmd.Flags().Changed(name) {
						return fmt.Errorf("--no-default-pools and --%s: the pool would not be created; give one or the other", name)
					}
				}
			}
			if !o.datastoreOnly && o.etcdEndpoints != "" {
				for _, name := range embeddedEtcdFlags {
					if cmd.Flags().Changed(name) {
						return fmt.Errorf("--%s and --etcd-endpoints: with endpoints no embedded etcd runs (--datastore-only runs one)", name)
					}
				}
			}
			if !o.datastoreOnly {
				if err := a.Validate(); err != nil {
					return err
				}
			}
			cmd.Flags().VisitAll(func(f *pflag.Flag) { a.Flags = append(a.Flags, "--"+f.Name+"="+f.Value.String()) })
			// Given on the command line or in the environment (setFromEnv sets them),
			// these win over a FelixConfiguration.
			a.ExplicitFlags = map[string]bool{}
			cmd.Flags().Visit(func(f *pflag.Flag) { a.ExplicitFlags[f.Name] = true })
			return run(cmd.Context(), o)
		},
	}
	cmd.AddCommand(newCleanupCommand())
	f := cmd.Flags()
	f.DurationVar(&a.Policy.Refresh, "policy-refresh-interval", felix.DefaultPolicyRefresh, "period of full iptables and ipset passes (repairs chains changed from outside)")
	f.StringVar(&a.Policy.EndpointToHostAction, "default-endpoint-to-host-action", "ACCEPT", "traffic from a workload to its own host, once its egress policy allowed it: ACCEPT, DROP or RETURN (on to the host's INPUT rules)")
	f.StringVar(&a.Policy.IptablesBackend, "iptables-backend", "auto", "iptables flavour policy writes: auto (detected as Calico does), legacy or nft")
	f.StringVar(&a.Policy.ChainInsertMode, "chain-insert-mode", "insert", "where the hooks into the kernel's chains (FORWARD, INPUT, OUTPUT, ...) go: insert (at the top) or append (at the bottom, after other programs' rules)")
	f.IntVar(&a.IPIPMTU, "ipip-mtu", 0, "MTU of tunl0; 0 is the underlay's MTU less 20 (workloads get the smallest MTU of the tunnels their node uses)")
	f.IntVar(&a.VXLANMTU, "vxlan-mtu", 0, "MTU of vxlan.tabby; 0 is the underlay's MTU less 50")
	f.StringVar(&o.failsafeIn, "failsafe-inbound-host-ports", felix.FormatFailsafePorts(felix.DefaultFailsafeInbound), "ports to the host that host endpoint policy never closes: protocol:port,... or none")
	f.StringVar(&o.failsafeOut, "failsafe-outbound-host-ports", felix.FormatFailsafePorts(felix.DefaultFailsafeOutbound), "ports from the host that host endpoint policy never closes: protocol:port,... or none")
	f.BoolVar(&a.Policy.AutoHostEndpoints, "auto-host-endpoints", false, "keep this node's automatic host endpoint <node>-auto-hep (every interface, the node's labels, allow-all profile); off deletes it")
	f.BoolVar(&o.datastoreOnly, "datastore-only", false, "run only the embedded etcd datastore")
	f.StringVar(&a.NodeName, "node-name", "", "this node's name (default: the host name)")
	f.StringVar(&o.etcdEndpoints, "etcd-endpoints", "", "comma-separated etcd endpoints; empty runs an embedded etcd")
	f.StringVar(&o.etcdCAFile, "etcd-ca-cert-file", "", "CA certificate for etcd TLS")
	f.StringVar(&o.etcdCertFile, "etcd-cert-file", "", "client certificate for etcd TLS")
	f.StringVar(&o.etcdKeyFile, "etcd-key-file", "", "client key for etcd TLS")
	f.StringVar(&o.dataDir, "data-dir", "/var/lib/tabby", "directory for the embedded etcd's data")
	f.StringVar(&o.etcdListenClient, "etcd-listen-client", "http://127.0.0.1:2379", "URL the embedded etcd serves clients on")
	f.StringVar(&o.etcdListenPeer, "etcd-listen-peer", "http://127.0.0.1:2380", "URL the embedded etcd listens on for peers")
	es := &o.etcdServer
	f.StringVar(&es.ClientTLS.CertFile, "etcd-server-cert-file", "", "certificate the embedded etcd serves clients with (needs an https --etcd-listen-client)")
	f.StringVar(&es.ClientTLS.KeyFile, "etcd-server-key-file", "", "key of --etcd-server-cert-file")
	f.StringVar(&es.ClientTLS.CAFile, "etcd-client-ca-file", "", "CA whose client certificates the embedded etcd accepts; no others are served")
	f.StringVar(&es.PeerTLS.CertFile, "etcd-peer-cert-file", "", "certificate the embedded etcd serves and dials its peers with (needs an https --etcd-listen-peer)")
	f.StringVar(&es.PeerTLS.KeyFile, "etcd-peer-key-file", "", "key of --etcd-peer-cert-file")
	f.StringVar(&es.PeerTLS.CAFile, "etcd-peer-ca-file", "", "CA of the peers' certificates")
	f.StringVar(&es.Name, "etcd-name", "tabby", "the embedded etcd's member name")
	f.StringVar(&es.InitialCluster, "etcd-initial-cluster", "", "every member the cluster starts with, NAME=PEER-URL comma-separated (default: this member alone)")
	f.StringVar(&es.ClusterState, "etcd-initial-cluster-state", "new", "new (start a cluster) or existing (join one that has added this member)")
	f.StringVar(&a.IPv4, "ip", "autodetect", "this node's IPv4 address with its prefix length (10.0.0.5/24), autodetect or none")
	f.StringVar(&a.IPv4Method, "ip-autodetection-method", "first-found", "how --ip=autodetect finds the address: first-found, interface=REGEX, skip-interface=REGEX, can-reach=IP or cidr=CIDR")
	f.StringVar(&a.IPv6, "ip6", "none", "this node's IPv6 address with its prefix length, autodetect or none")
	f.StringVar(&a.IPv6Method, "ip6-autodetection-method", "first-found", "how --ip6=autodetect finds the address (as --ip-autodetection-method)")
	f.DurationVar(&a.RouteRefresh, "route-refresh-interval", felix.DefaultResyncInterval, "period of full route and sysctl passes")
	f.DurationVar(&a.IPAMGCInterval, "ipam-gc-interval", time.Minute, "period of IPAM garbage collection passes (one agent in the cluster runs them)")
	f.BoolVar(&a.DefaultPools.Off, "no-default-pools", false, "create no IP pool on first boot")
	f.StringVar(&a.DefaultPools.IPv4CIDR, "default-ipv4-pool-cidr", "192.168.0.0/16", "CIDR of the IPv4 pool "+agent.DefaultIPv4PoolName+" that the first agent creates when the cluster has no IPv4 pool")
	f.StringVar(&a.DefaultPools.IPv4IPIP, "default-ipv4-pool-ipip", "", "ipipMode of that pool: Always, CrossSubnet or Never (default Always, or Never when --default-ipv4-pool-vxlan is not Never)")
	f.StringVar(&a.DefaultPools.IPv4VXLAN, "default-ipv4-pool-vxlan", "Never", "vxlanMode of that pool: Always, CrossSubnet or Never")
	f.StringVar(&a.DefaultPools.IPv6CIDR, "default-ipv6-pool-cidr", "", "CIDR of the IPv6 pool "+agent.DefaultIPv6PoolName+" that the first agent creates when the cluster has no IPv6 pool (default: none)")
	f.StringVar(&a.DefaultPools.IPv6VXLAN, "default-ipv6-pool-vxlan", "Never", "vxlanMode of that pool (VXLAN over the IPv6 underlay): Always, CrossSubnet or Never")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&a.Role, "role", agent.RoleNode, "node (workloads and BGP) or route-reflector (BGP only: no workloads, no routes, no iptables)")
	f.StringVar(&a.StatusSocket, "status-socket", "", "Unix socket serving node status to tabbyctl (default <data-dir>/status.sock)")
	f.StringVar(&a.SnapshotCache, "snapshot-cache", "", "file keeping the last synced datastore snapshot, to start from when etcd does not answer at start; none keeps none (default <data-dir>/snapshot-cache.json)")
	f.StringVar(&a.HealthListen, "health-listen", "127.0.0.1:9099", "address serving GET /liveness and GET /readiness (empty turns it off)")
	f.StringVar(&a.MetricsListen, "metrics-listen", "127.0.0.1:9091", "address serving Prometheus metrics on /metrics (empty turns it off)")
	f.StringVar(&a.PprofListen, "pprof-listen", "", "address serving Go's runtime profiles on /debug/pprof/ for go tool pprof (empty, the default, turns it off)")
	f.BoolVar(&a.DNS.Enabled, "dns", true, "serve cluster DNS on this node (role node only)")
	f.StringVar(&o.dnsAddresses, "dns-addresses", "10.96.0.10,169.254.20.10", "addresses (IPv4 or IPv6) the DNS server takes on lo and serves on port 53: the cluster DNS address and the node-local one")
	f.StringVar(&a.DNS.Zone, "dns-zone", "cluster.local", "the cluster domain")
	f.DurationVar(&a.DNS.TTL, "dns-ttl", 5*time.Second, "TTL of the cluster zone's answers")
	f.StringVar(&o.dnsUpstreams, "dns-upstream", "", "comma-separated upstream servers (ip or ip:port) for every other name, or none (refused) (default: the nameservers of /etc/resolv.conf)")
	f.IntVar(&a.DNS.CacheSize, "dns-cache-size", 10000, "entries of the cache of upstream answers")
	f.StringVar(&a.ProxyMode, "proxy-mode", agent.ProxyNFTables, "how Services are load-balanced on this node: nftables (the table ip tabby), iptables (tby-k- chains, on the iptables backend policy uses; slow above 1k Services on nft) or none (role node only)")
	f.BoolVar(&a.WireGuard.Enabled, "wireguard", false, "encrypt traffic between workloads of different nodes with WireGuard (wireguard.tabby; nodes without it still talk in the clear)")
	f.IntVar(&a.WireGuard.Port, "wireguard-port", 51820, "UDP port of wireguard.tabby")
	f.StringVar(&a.WireGuard.KeyFile, "wireguard-key-file", "", "the node's WireGuard private key, made on first start (default <data-dir>/wireguard.key)")
	f.BoolVar(&a.BGP.Enabled, "bgp", true, "run the BGP speaker")
	f.StringVar(&a.BGP.RouterID, "bgp-router-id", "", "BGP router ID (default: the node's IPv4 address)")
	f.StringVar(&a.BGP.PasswordDir, "bgp-password-dir", "/etc/tabby/bgp-secrets", "directory of BGPPeer passwords: secretKeyRef {name, key} is read from <dir>/<name>/<key>")
	f.BoolVar(&o.bgpGRPC, "bgp-grpc", false, "serve GoBGP's gRPC API for the gobgp CLI (on --bgp-grpc-address)")
	f.StringVar(&a.BGP.GRPCAddress, "bgp-grpc-address", "127.0.0.1:50051", "address of GoBGP's gRPC API when --bgp-grpc is set")
	f.DurationVar(&a.BGP.HoldTime, "bgp-hold-time", 90*time.Second, "BGP hold time of every session")
	f.DurationVar(&a.BGP.KeepaliveTime, "bgp-keepalive-time", 30*time.Second, "BGP keepalive interval of every session")
	f.DurationVar(&a.BGP.ConnectRetry, "bgp-connect-retry", 5*time.Second, "BGP connect retry interval")
	f.BoolVar(&a.BGP.NoGR, "bgp-no-graceful-restart", false, "turn BGP graceful restart off: peers drop this node's routes as soon as its sessions close")
	f.DurationVar(&a.BGP.SyncTimeout, "bgp-sync-timeout", 30*time.Second, "after a restart, how long felix keeps the previous run's learned routes while waiting for End-of-RIB from every peer")
	noteEnv(f)
	return cmd
}

// embeddedEtcdFlags configure the embedded etcd only.
var embeddedEtcdFlags = []string{"etcd-listen-client", "etcd-listen-peer", "etcd-server-cert-file", "etcd-server-key-file",
	"etcd-client-ca-file", "etcd-peer-cert-file", "etcd-peer-key-file", "etcd-peer-ca-file", "etcd-name",
	"etcd-initial-cluster", "etcd-initial-cluster-state"}

func run(ctx context.Context, o options) error {
	// The recent lines are kept for tabbyctl node diags.
	o.agent.Logs = agent.NewLogRing(agent.DefaultLogLines)
	// A FelixConfiguration's logSeverityScreen changes the level.
	logger, level, err := logsetup.NewVar(o.logLevel, io.MultiWriter(os.Stderr, o.agent.Logs))
	if err != nil {
		return err
	}
	o.agent.LogLevel = level
	slog.SetDefault(logger)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	endpoints := splitList(o.etcdEndpoints)
	if o.datastoreOnly || len(endpoints) == 0 {
		etcd, err := startDatastore(ctx, o)
		if err != nil {
			return err
		}
		defer etcd.Close()
		if o.datastoreOnly {
			select {
			case <-ctx.Done():
				slog.Info("shutting down")
				return nil
			case err := <-etcd.Err():
				return fmt.Errorf("embedded etcd: %w", err)
			case <-etcd.Stopped():
				return errors.New("embedded etcd stopped serving: was this member removed from the cluster (tabbyctl etcd member list)?")
			}
		}
		endpoints = etcd.Endpoints()
	}
	metrics := agent.NewMetrics(version)
	// Dial, not Connect: the agent starts from its snapshot cache when etcd does not answer.
	ds, err := datastore.Dial(datastore.Config{
		Endpoints: endpoints,
		CAFile:    o.etcdCAFile,
		CertFile:  o.etcdCertFile,
		KeyFile:   o.etcdKeyFile,
		Observe:   metrics.ObserveDatastore,
	})
	if err != nil {
		return err
	}
	defer ds.Close()
	// The agent writes pools only on first boot (creates, which the guard never refuses);
	// it is registered all the same, so every pool write of the agent's is guarded as
	// tabbyctl's is.
	ds.AddWriteCheck(ipam.PoolInUseCheck())
	return agent.Run(ctx, o.agent, ds, metrics)
}

func startDatastore(ctx context.Context, o options) (*embedded.Etcd, error) {
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	cfg := o.etcdServer
	cfg.DataDir, cfg.ListenClient, cfg.ListenPeer = o.dataDir+"/etcd", o.etcdListenClient, o.etcdListenPeer
	etcd, err := embedded.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	slog.Info("datastore ready", "endpoints", strings.Join(etcd.Endpoints(), ","), "data-dir", o.dataDir)
	return etcd, nil
}

func splitList(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
