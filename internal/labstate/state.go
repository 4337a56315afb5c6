// Package labstate owns the record of a tabby-lab lab: state.json, which tabby-lab writes
// and every command reads, and the JSON that tabby-lab status -o json prints. tabby-lab and
// the tests' harness (internal/labtest) share these types, so there is one description of
// a lab.
package labstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// File is the name of a lab's state file in its state directory.
const File = "state.json"

// DefaultPoolCIDR is the CIDR of the IPv4 pool a lab's first agent creates
// (default-ipv4-ippool) unless the lab is up with --no-default-pools.
const DefaultPoolCIDR = "10.244.0.0/16"

// DefaultPool6CIDR is the CIDR of the IPv6 pool the first agent of a lab up with --ipv6
// creates (unless NoDefaultPools): a ULA prefix that mirrors DefaultPoolCIDR.
const DefaultPool6CIDR = "fd00:10:244::/64"

// NsPrefix starts the name of every lab's network namespaces.
const NsPrefix = "tby-"

// NetnsPrefix is the prefix of every network namespace of the lab named lab.
func NetnsPrefix(lab string) string { return NsPrefix + lab + "-" }

// State is what state.json records about a lab.
type State struct {
	Name     string    `json:"name"`
	StateDir string    `json:"stateDir"` // this lab's directory: state.json, logs, CNI cache
	DataDir  string    `json:"dataDir"`  // this lab's data: etcd's and the agents'
	Created  time.Time `json:"created"`
	// Ready is set once the topology and the datastore are up; a state without it is
	// the trace of an up that did not finish.
	Ready    bool     `json:"ready"`
	Binaries Binaries `json:"binaries"`
	// NoDefaultPools says the agents create no IP pool on first boot (up
	// --no-default-pools); otherwise the first creates default-ipv4-ippool with
	// DefaultPoolCIDR.
	NoDefaultPools bool `json:"noDefaultPools,omitempty"`
	// IPv6 says the underlay is dual stack (up --ipv6): every subnet has an IPv6 prefix,
	// the router forwards IPv6, nodes and hosts have IPv6 addresses, the agents run with
	// --ip6 and the lab's CNI configuration assigns IPv6 addresses too.
	IPv6      bool       `json:"ipv6,omitempty"`
	Router    Router     `json:"router"`
	Etcd      Etcd       `json:"etcd"`
	Subnets   []Subnet   `json:"subnets"`
	Nodes     []Node     `json:"nodes"`
	Hosts     []Host     `json:"hosts,omitempty"`
	Workloads []Workload `json:"workloads,omitempty"`
}

// Binaries are the programs the lab runs, resolved to absolute paths by up.
type Binaries struct {
	TabbyNode string `json:"tabbyNode"`
	Tabbyctl  string `json:"tabbyctl"`
	Agent     string `json:"agent,omitempty"` // empty when the lab runs no agents
	CNIDir    string `json:"cniDir"`          // CNI_PATH: where tabby-cni is
}

// Router is the fabric namespace: the subnets' bridges, and the etcd.
type Router struct {
	Netns string `json:"netns"`
}

// Etcd is the lab's datastore: one etcd member, or a cluster of them, in the router
// namespace.
type Etcd struct {
	// Endpoint is every member's client URL, comma-separated: what --etcd-endpoints and
	// the CNI config's etcd_endpoints take.
	Endpoint string `json:"endpoint"`
	Netns    string `json:"netns"`
	// Process is the first member's (Members[0].Process).
	Process *Process     `json:"process,omitempty"`
	Members []EtcdMember `json:"members,omitempty"`
	// TLS, when set, is what the lab's clients use: etcd serves https only, and only to
	// clients with a certificate of the lab's CA.
	TLS *EtcdTLS `json:"tls,omitempty"`
}

// EtcdMember is one member of the lab's etcd: a tabby-node --datastore-only.
type EtcdMember struct {
	Name string `json:"name"`
	// Address is the member's own address on subnet 1's bridge in the router namespace,
	// where it serves clients and peers.
	Address   netip.Addr `json:"address"`
	ClientURL string     `json:"clientURL"`
	PeerURL   string     `json:"peerURL"`
	DataDir   string     `json:"dataDir,omitempty"`
	Process   *Process   `json:"process,omitempty"`
}

// EtcdTLS are the PEM files of a lab whose etcd serves TLS (tabby-lab up --etcd-tls).
type EtcdTLS struct {
	// CAFile signs every certificate below.
	CAFile string `json:"caFile"`
	// CertFile and KeyFile are the client certificate of the agents, the CNI and tabbyctl.
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// ServerCertFile and ServerKeyFile are the members', for clients and peers.
	ServerCertFile string `json:"serverCertFile"`
	ServerKeyFile  string `json:"serverKeyFile"`
}

// ClientArgs are the flags of tabby-node and tabbyctl that reach the lab's etcd.
func (e *Etcd) ClientArgs() []string {
	args := []string{"--etcd-endpoints", e.Endpoint}
	if e.TLS != nil {
		args = append(args, "--etcd-ca-cert-file", e.TLS.CAFile, "--etcd-cert-file", e.TLS.CertFile, "--etcd-key-file", e.TLS.KeyFile)
	}
	return args
}

// ClientEnv is ClientArgs as environment variables (TABBY_ETCD_ENDPOINTS, ...).
func (e *Etcd) ClientEnv() []string {
	env := []string{"TABBY_ETCD_ENDPOINTS=" + e.Endpoint}
	if e.TLS != nil {
		env = append(env, "TABBY_ETCD_CA_CERT_FILE="+e.TLS.CAFile, "TABBY_ETCD_CERT_FILE="+e.TLS.CertFile, "TABBY_ETCD_KEY_FILE="+e.TLS.KeyFile)
	}
	return env
}

// CNIConfig is what a tabby-cni network configuration needs to reach the lab's etcd.
func (e *Etcd) CNIConfig() map[string]any {
	conf := map[string]any{"etcd_endpoints": e.Endpoint}
	if e.TLS != nil {
		conf["etcd_ca_cert_file"], conf["etcd_cert_file"], conf["etcd_key_file"] = e.TLS.CAFile, e.TLS.CertFile, e.TLS.KeyFile
	}
	return conf
}

// Process is a detached process the lab started.
type Process struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"` // /proc/<pid>/stat field 22: tells a reused pid apart
	Log       string `json:"log"`
	// Argv is the command line it was started with (run in its namespace), so that it
	// can be started again the same way (tabby-lab etcd start).
	Argv []string `json:"argv,omitempty"`
}

// Subnet is one underlay L2 segment: a bridge in the router namespace.
type Subnet struct {
	Index   int          `json:"index"`
	CIDR    netip.Prefix `json:"cidr"`
	Bridge  string       `json:"bridge"`
	Gateway netip.Addr   `json:"gateway"` // the router's address on it
	// CIDR6 and Gateway6 are the subnet's IPv6 prefix and the router's IPv6 address on
	// it; invalid unless the lab is dual stack.
	CIDR6    netip.Prefix `json:"cidr6,omitzero"`
	Gateway6 netip.Addr   `json:"gateway6,omitzero"`
}

// Attachment is how a node or host namespace hangs off the router: its interface, the
// veth peer in the router namespace (a port of its subnet's bridge) and its address.
type Attachment struct {
	Netns      string       `json:"netns"`
	Interface  string       `json:"interface"`
	RouterPort string       `json:"routerPort"`
	Subnet     int          `json:"subnet"`
	Address    netip.Prefix `json:"address"`
	Gateway    netip.Addr   `json:"gateway"`
	// Address6 and Gateway6 are the IPv6 address and default gateway of a dual-stack lab.
	Address6 netip.Prefix `json:"address6,omitzero"`
	Gateway6 netip.Addr   `json:"gateway6,omitzero"`
}

// Node is a lab node: a namespace running a tabby-node agent.
type Node struct {
	Name string `json:"name"`
	Attachment
	DataDir string   `json:"dataDir,omitempty"`
	Agent   *Process `json:"agent,omitempty"`
}

// Host is an extra namespace on the underlay (an external router, an "internet" host).
type Host struct {
	Name string `json:"name"`
	Attachment
}

// Workload is a namespace attached to a node through CNI.
type Workload struct {
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	Node        string            `json:"node"`
	Netns       string            `json:"netns"`
	ContainerID string            `json:"containerID"`
	PodUID      string            `json:"podUID"`
	IfName      string            `json:"ifName"`
	IPs         []netip.Prefix    `json:"ips"`
	Labels      map[string]string `json:"labels,omitempty"`
	// ClusterDNS is the CNI configuration's cluster_dns (workload add --cluster-dns);
	// empty: the lab's node-local DNS address.
	ClusterDNS []string `json:"clusterDNS,omitempty"`
}

// FullName is NAMESPACE/NAME.
func (w *Workload) FullName() string { return w.Namespace + "/" + w.Name }

// Node finds a node by name; nil if the lab has none.
func (st *State) Node(name string) *Node {
	for i := range st.Nodes {
		if st.Nodes[i].Name == name {
			return &st.Nodes[i]
		}
	}
	return nil
}

// Host finds a host by name; nil if the lab has none.
func (st *State) Host(name string) *Host {
	for i := range st.Hosts {
		if st.Hosts[i].Name == name {
			return &st.Hosts[i]
		}
	}
	return nil
}

// Workload finds a workload by namespace and name; nil if the lab has none.
func (st *State) Workload(namespace, name string) *Workload {
	for i := range st.Workloads {
		if st.Workloads[i].Namespace == namespace && st.Workloads[i].Name == name {
			return &st.Workloads[i]
		}
	}
	return nil
}

// Subnet finds a subnet by index; nil if the lab has none.
func (st *State) Subnet(i int) *Subnet {
	for k := range st.Subnets {
		if st.Subnets[k].Index == i {
			return &st.Subnets[k]
		}
	}
	return nil
}

// Namespaces lists every namespace the state names, workloads first and the router last:
// the order to remove them in.
func (st *State) Namespaces() []string {
	var ns []string
	for _, w := range st.Workloads {
		ns = append(ns, w.Netns)
	}
	for _, h := range st.Hosts {
		ns = append(ns, h.Netns)
	}
	for _, n := range st.Nodes {
		ns = append(ns, n.Netns)
	}
	return append(ns, st.Router.Netns)
}

// Processes lists the processes the state records.
func (st *State) Processes() []*Process {
	var ps []*Process
	if st.Etcd.Process != nil {
		ps = append(ps, st.Etcd.Process)
	}
	for _, m := range st.Etcd.Members[min(1, len(st.Etcd.Members)):] { // the first is Process
		if m.Process != nil {
			ps = append(ps, m.Process)
		}
	}
	for _, n := range st.Nodes {
		if n.Agent != nil {
			ps = append(ps, n.Agent)
		}
	}
	return ps
}

// ErrNoLab says a lab has no state file.
var ErrNoLab = errors.New("no such lab")

// Load reads a lab's state.json.
func Load(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, File))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoLab
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("read lab state %s: %w", filepath.Join(dir, File), err)
	}
	return &st, nil
}

// Save writes state.json atomically, so a reader never sees half of it.
func (st *State) Save() error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	tmp, err := os.CreateTemp(st.StateDir, File+".*")
	if err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write lab state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(st.StateDir, File)); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return nil
}
