package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/internal/labstate"
)

const (
	cniVersion     = "1.1.0"
	labClusterDNS  = "169.254.20.10"
	cniNetworkName = "tabby-net"
	cniPluginType  = "tabby-cni"
	cniTimeout     = 2 * time.Minute
)

func newWorkloadCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "workload",
		Short: "attach workloads to nodes through libcni and the tabby-cni plugin, or detach them",
	}
	var (
		labels     map[string]string
		clusterDNS []string
	)
	add := &cobra.Command{
		Use:   "add NODE NAMESPACE/NAME",
		Short: "create a workload namespace and attach it to NODE with CNI ADD",
		Long: `add creates the workload's namespace (tby-<lab>-w-<namespace>.<name>) and runs CNI ADD for
it from inside the node's namespace through libcni, exactly as a container runtime does: the
plugin (tabby-cni, from the lab's CNI directory) creates the node's end of the veth there.
The labels reach the plugin as args.cni.labels in its network configuration, and
--cluster-dns as its cluster_dns (the workload's resolv.conf nameservers). A failed ADD is
followed by a DEL and leaves nothing behind.`,
		Example: `  tabby-lab workload add node1 default/web1 --labels app=web,tier=front
  tabby-lab workload add node1 default/v6 --cluster-dns fd00:96::a`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			namespace, name, err := parseWorkloadName(args[1])
			if err != nil {
				return err
			}
			if err := validateLabels(labels); err != nil {
				return err
			}
			for _, a := range clusterDNS {
				if _, err := netip.ParseAddr(a); err != nil {
					return fmt.Errorf("--cluster-dns %q: %w", a, err)
				}
			}
			lk, st, err := g.lockAndLoad()
			if err != nil {
				return err
			}
			defer lk.unlock(false)
			w, err := addWorkload(cmd.Context(), st, args[0], namespace, name, labels, clusterDNS)
			if err != nil {
				return fmt.Errorf("workload add %s: %w", args[1], err)
			}
			ips := make([]string, len(w.IPs))
			for i, ip := range w.IPs {
				ips[i] = ip.String()
			}
			fmt.Fprintf(cmd.OutOrStdout(), "workload %s on %s: namespace %s, IPs %s\n", w.FullName(), w.Node, w.Netns, orDash(strings.Join(ips, ",")))
			return nil
		},
	}
	add.Flags().StringToStringVar(&labels, "labels", nil, "the workload's labels, k=v,...")
	add.Flags().StringSliceVar(&clusterDNS, "cluster-dns", nil, "the workload's DNS servers (the CNI configuration's cluster_dns; default "+labClusterDNS+", the node-local DNS address)")
	del := &cobra.Command{
		Use:   "del NAMESPACE/NAME",
		Short: "detach a workload with CNI DEL and remove its namespace",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			namespace, name, err := parseWorkloadName(args[0])
			if err != nil {
				return err
			}
			lk, st, err := g.lockAndLoad()
			if err != nil {
				return err
			}
			defer lk.unlock(false)
			if err := delWorkload(cmd.Context(), st, namespace, name); err != nil {
				return fmt.Errorf("workload del %s: %w", args[0], err)
			}
			return nil
		},
	}
	cmd.AddCommand(add, del)
	return cmd
}

func addWorkload(ctx context.Context, st *labstate.State, nodeName, namespace, name string, labels map[string]string, clusterDNS []string) (*labstate.Workload, error) {
	node := st.Node(nodeName)
	if node == nil {
		return nil, unknownNode(st, nodeName)
	}
	if w := st.Workload(namespace, name); w != nil {
		return nil, fmt.Errorf("lab %s already has workload %s (on %s)", st.Name, w.FullName(), w.Node)
	}
	plugin := filepath.Join(st.Binaries.CNIDir, cniPluginType)
	if _, err := os.Stat(plugin); err != nil {
		return nil, fmt.Errorf("no CNI plugin %s: build it (make build) or start the lab with --cni-bin-dir", plugin)
	}
	w := &labstate.Workload{
		Namespace:   namespace,
		Name:        name,
		Node:        node.Name,
		Netns:       workloadNetns(st.Name, namespace, name),
		ContainerID: randomHex(32),
		PodUID:      newUUID(),
		IfName:      workloadIfName,
		Labels:      labels,
		ClusterDNS:  clusterDNS,
	}
	// A namespace of that name that the state does not know is left from a crashed add.
	if netnsExists(w.Netns) {
		if err := removeNetns(w.Netns); err != nil {
			return nil, fmt.Errorf("remove leftover namespace: %w", err)
		}
	}
	if err := createNetns(ctx, w.Netns); err != nil {
		return nil, err
	}
	if err := setupWorkloadNetns(w.Netns); err != nil {
		return nil, errors.Join(err, deleteNetns(w.Netns))
	}
	res, err := runCNI(ctx, st, node, w, "ADD")
	if err != nil {
		// As a runtime does: DEL after a failed ADD, so the plugin frees what it took.
		if derr := func() error { _, err := runCNI(ctx, st, node, w, "DEL"); return err }(); derr != nil {
			err = errors.Join(err, fmt.Errorf("and the DEL after it: %w", derr))
		}
		return nil, errors.Join(err, deleteNetns(w.Netns))
	}
	w.IPs = res.IPs
	if err := writeResolvConf(w.Netns, res.DNS); err != nil {
		return nil, err
	}
	st.Workloads = append(st.Workloads, *w)
	return w, st.Save()
}

// setupWorkloadNetns sets the workload's loopback up, as a runtime's loopback plugin does.
func setupWorkloadNetns(ns string) error {
	h, err := openNetns(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	return h.linkUp("lo")
}

func delWorkload(ctx context.Context, st *labstate.State, namespace, name string) error {
	w := st.Workload(namespace, name)
	if w == nil {
		return unknownWorkload(st, namespace+"/"+name)
	}
	node := st.Node(w.Node)
	if node == nil {
		return fmt.Errorf("state names node %s for it, which the lab does not have", w.Node)
	}
	// As the kubelet does: stop what runs in the sandbox, tear its network down, remove it.
	byNS, err := pidsIn([]string{w.Netns})
	if err != nil {
		return err
	}
	if err := stopAll(byNS[w.Netns]); err != nil {
		return err
	}
	if _, err := runCNI(ctx, st, node, w, "DEL"); err != nil {
		return err
	}
	if err := deleteNetns(w.Netns); err != nil {
		return err
	}
	st.Workloads = slices.DeleteFunc(st.Workloads, func(x labstate.Workload) bool { return x.Namespace == namespace && x.Name == name })
	return st.Save()
}

// cniConfList is the network configuration list for a workload on node. Labels are passed
// as CNI's conventional args.cni.labels; clusterDNS (none: labClusterDNS) as cluster_dns.
func cniConfList(st *labstate.State, node string, labels map[string]string, clusterDNS []string) ([]byte, error) {
	plugin := st.Etcd.CNIConfig()
	plugin["type"] = cniPluginType
	plugin["nodename"] = node
	plugin["log_level"] = "debug"
	plugin["log_file"] = filepath.Join(st.StateDir, "cni.log")
	// The node-local DNS address every agent serves (tabby-node --dns-addresses).
	plugin["cluster_dns"] = []string{labClusterDNS}
	if len(clusterDNS) > 0 {
		plugin["cluster_dns"] = clusterDNS
	}
	if st.IPv6 {
		plugin["ipam"] = map[string]any{"assign_ipv4": "true", "assign_ipv6": "true"}
	}
	if len(labels) > 0 {
		keys := make([]string, 0, len(labels))
		for k := range labels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		list := make([]map[string]string, 0, len(keys))
		for _, k := range keys {
			list = append(list, map[string]string{"key": k, "value": labels[k]})
		}
		plugin["args"] = map[string]any{"cni": map[string]any{"labels": list}}
	}
	return json.Marshal(map[string]any{
		"cniVersion": cniVersion,
		"name":       cniNetworkName,
		"plugins":    []any{plugin},
	})
}

// cniRequest is what tabby-lab hands to itself ("__cni"), re-executed in a node's namespace.
type cniRequest struct {
	Command     string          `json:"command"` // ADD or DEL
	PluginDir   string          `json:"pluginDir"`
	CacheDir    string          `json:"cacheDir"`
	ConfList    json.RawMessage `json:"confList"`
	ContainerID string          `json:"containerID"`
	NetNS       string          `json:"netns"`
	IfName      string          `json:"ifName"`
	Args        [][2]string     `json:"args"`
}

// cniResponse is what "__cni" answers to an ADD.
type cniResponse struct {
	IPs    []netip.Prefix  `json:"ips"`
	DNS    types.DNS       `json:"dns"`
	Result json.RawMessage `json:"result"`
}

// runCNI runs CNI ADD or DEL for a workload through libcni, from inside the node's
// namespace: tabby-lab re-executes itself there with "ip netns exec".
func runCNI(ctx context.Context, st *labstate.State, node *labstate.Node, w *labstate.Workload, command string) (*cniResponse, error) {
	conf, err := cniConfList(st, node.Name, w.Labels, w.ClusterDNS)
	if err != nil {
		return nil, err
	}
	req, err := json.Marshal(cniRequest{
		Command:     command,
		PluginDir:   st.Binaries.CNIDir,
		CacheDir:    filepath.Join(st.StateDir, "cni-cache"),
		ConfList:    conf,
		ContainerID: w.ContainerID,
		NetNS:       netnsPath(w.Netns),
		IfName:      w.IfName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", w.Namespace},
			{"K8S_POD_NAME", w.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", w.ContainerID},
			{"K8S_POD_UID", w.PodUID},
		},
	})
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find tabby-lab itself: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, cniTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", node.Netns, self, "__cni")
	cmd.Stdin = bytes.NewReader(req)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(stderr.String()), "tabby-lab: "))
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("CNI %s on %s: %s", command, node.Name, msg)
	}
	if command != "ADD" {
		return nil, nil
	}
	var resp cniResponse
	if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil {
		return nil, fmt.Errorf("CNI ADD on %s: read the result: %w", node.Name, err)
	}
	return &resp, nil
}

// newCNICommand is the hidden "__cni" that runs libcni inside a node's namespace.
func newCNICommand() *cobra.Command {
	return &cobra.Command{
		Use:    "__cni",
		Short:  "internal: run a CNI request (JSON on standard input) through libcni",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serveCNI(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
}

func serveCNI(ctx context.Context, in io.Reader, out io.Writer) error {
	var req cniRequest
	if err := json.NewDecoder(in).Decode(&req); err != nil {
		return fmt.Errorf("read CNI request: %w", err)
	}
	list, err := libcni.NetworkConfFromBytes(req.ConfList)
	if err != nil {
		return fmt.Errorf("network configuration: %w", err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{req.PluginDir}, req.CacheDir, nil)
	rt := &libcni.RuntimeConf{ContainerID: req.ContainerID, NetNS: req.NetNS, IfName: req.IfName, Args: req.Args}
	ctx, cancel := context.WithTimeout(ctx, cniTimeout)
	defer cancel()
	switch req.Command {
	case "ADD":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		cur, err := types100.GetResult(res)
		if err != nil {
			return fmt.Errorf("CNI result: %w", err)
		}
		raw, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		resp := cniResponse{Result: raw, IPs: []netip.Prefix{}, DNS: cur.DNS}
		for _, ip := range cur.IPs {
			a, ok := netip.AddrFromSlice(ip.Address.IP)
			if !ok {
				return fmt.Errorf("CNI result: bad address %v", ip.Address)
			}
			bits, _ := ip.Address.Mask.Size()
			resp.IPs = append(resp.IPs, netip.PrefixFrom(a.Unmap(), bits))
		}
		return json.NewEncoder(out).Encode(resp)
	case "DEL":
		return cni.DelNetworkList(ctx, list, rt)
	default:
		return fmt.Errorf("CNI request: unknown command %q", req.Command)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newUUID is a random (version 4) UUID, as a pod's UID is.
func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
