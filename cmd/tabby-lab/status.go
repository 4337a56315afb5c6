package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/internal/labstate"
)

func newStatusCommand(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "describe the lab: etcd, subnets, nodes and their agents, hosts, workloads",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "json" {
				return fmt.Errorf("-o %q: want json, or nothing for text", output)
			}
			st, err := g.load()
			if err != nil {
				return err
			}
			s := collectStatus(st)
			if output == "json" {
				data, err := json.MarshalIndent(s, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", data)
				return err
			}
			return printStatus(cmd.OutOrStdout(), s)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json (default: text)")
	return cmd
}

func processStatus(p *labstate.Process) labstate.ProcessStatus {
	if p == nil {
		return labstate.ProcessStatus{}
	}
	s := labstate.ProcessStatus{PID: p.PID, Alive: alive(p), Log: p.Log}
	if !s.Alive {
		s.LogTail = logTail(p.Log, 10)
	}
	return s
}

func collectStatus(st *labstate.State) *labstate.Status {
	s := &labstate.Status{
		Name: st.Name, Ready: st.Ready, StateDir: st.StateDir, DataDir: st.DataDir,
		Etcd:      labstate.EtcdStatus{Endpoint: st.Etcd.Endpoint, Netns: st.Etcd.Netns, Process: processStatus(st.Etcd.Process)},
		Router:    labstate.RouterStatus{Netns: st.Router.Netns},
		Subnets:   st.Subnets,
		Hosts:     st.Hosts,
		Nodes:     []labstate.NodeStatus{},
		Workloads: []labstate.WorkloadStatus{},
		Problems:  []string{},
	}
	if s.Hosts == nil {
		s.Hosts = []labstate.Host{}
	}
	for _, sub := range st.Subnets {
		s.Router.Addresses = append(s.Router.Addresses, netip.PrefixFrom(sub.Gateway, sub.CIDR.Bits()))
		if sub.CIDR6.IsValid() {
			s.Router.Addresses = append(s.Router.Addresses, netip.PrefixFrom(sub.Gateway6, sub.CIDR6.Bits()))
		}
	}
	if !st.Ready {
		s.Problems = append(s.Problems, "the lab's up did not finish: remove it with tabby-lab down")
	}
	if st.Etcd.Process == nil {
		s.Problems = append(s.Problems, "etcd was not started")
	} else if !s.Etcd.Process.Alive {
		s.Problems = append(s.Problems, fmt.Sprintf("etcd (pid %d) is not running", st.Etcd.Process.PID))
	}
	s.Etcd.TLS = st.Etcd.TLS != nil
	s.Etcd.Members = []labstate.EtcdMemberStatus{}
	for i, m := range st.Etcd.Members {
		ms := labstate.EtcdMemberStatus{Name: m.Name, ClientURL: m.ClientURL, PeerURL: m.PeerURL, Process: processStatus(m.Process)}
		s.Etcd.Members = append(s.Etcd.Members, ms)
		if i > 0 && m.Process != nil && !ms.Process.Alive { // the first is etcd's Process above
			s.Problems = append(s.Problems, fmt.Sprintf("etcd member %s (pid %d) is not running", m.Name, m.Process.PID))
		}
	}
	for _, n := range st.Nodes {
		ns := labstate.NodeStatus{Node: n}
		if n.Agent != nil {
			p := processStatus(n.Agent)
			ns.Agent = &p
			if !p.Alive {
				s.Problems = append(s.Problems, fmt.Sprintf("the agent of %s (pid %d) is not running", n.Name, p.PID))
			}
		} else if st.Binaries.Agent != "" && st.Ready {
			s.Problems = append(s.Problems, fmt.Sprintf("the agent of %s was not started", n.Name))
		}
		s.Nodes = append(s.Nodes, ns)
	}
	for _, w := range st.Workloads {
		s.Workloads = append(s.Workloads, labstate.WorkloadStatus{
			FullName: w.FullName(), Namespace: w.Namespace, Pod: w.Name, Node: w.Node, Netns: w.Netns,
			ContainerID: w.ContainerID, IfName: w.IfName, IPs: w.IPs, Labels: w.Labels,
		})
	}
	for _, ns := range st.Namespaces() {
		if !netnsExists(ns) {
			s.Problems = append(s.Problems, "namespace "+ns+" is missing")
		}
	}
	return s
}

func printStatus(w io.Writer, s *labstate.Status) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	state := "up"
	if !s.Ready {
		state = "incomplete"
	}
	fmt.Fprintf(tw, "lab %s: %s (state %s, data %s)\n", s.Name, state, s.StateDir, s.DataDir)
	tls := ""
	if s.Etcd.TLS {
		tls = " (TLS with client certificates)"
	}
	if len(s.Etcd.Members) > 1 {
		fmt.Fprintf(tw, "etcd: %d members in %s%s\n", len(s.Etcd.Members), s.Etcd.Netns, tls)
		for _, m := range s.Etcd.Members {
			fmt.Fprintf(tw, "  %s: %s, %s, log %s\n", m.Name, m.ClientURL, procWord(&m.Process), m.Process.Log)
		}
	} else {
		fmt.Fprintf(tw, "etcd: %s in %s%s, %s, log %s\n", s.Etcd.Endpoint, s.Etcd.Netns, tls, procWord(&s.Etcd.Process), s.Etcd.Process.Log)
	}

	fmt.Fprintf(tw, "\nSUBNET\tCIDR\tBRIDGE (in %s)\tGATEWAY\n", s.Router.Netns)
	for _, sub := range s.Subnets {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", sub.Index, both(sub.CIDR, sub.CIDR6), sub.Bridge, both(sub.Gateway, sub.Gateway6))
	}

	fmt.Fprintf(tw, "\nNODE\tNETNS\tADDRESS\tSUBNET\tAGENT\tLOG\n")
	for _, n := range s.Nodes {
		agent, log := "none", "-"
		if n.Agent != nil {
			agent, log = procWord(n.Agent), n.Agent.Log
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", n.Name, n.Netns, both(n.Address, n.Address6), n.Subnet, agent, log)
	}
	if len(s.Hosts) > 0 {
		fmt.Fprintf(tw, "\nHOST\tNETNS\tADDRESS\tSUBNET\n")
		for _, h := range s.Hosts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", h.Name, h.Netns, both(h.Address, h.Address6), h.Subnet)
		}
	}
	if len(s.Workloads) > 0 {
		fmt.Fprintf(tw, "\nWORKLOAD\tNODE\tNETNS\tIPS\tLABELS\n")
		for _, wl := range s.Workloads {
			ips := make([]string, len(wl.IPs))
			for i, ip := range wl.IPs {
				ips[i] = ip.String()
			}
			var labels []string
			for k, v := range wl.Labels {
				labels = append(labels, k+"="+v)
			}
			slices.Sort(labels)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", wl.FullName, wl.Node, wl.Netns, orDash(strings.Join(ips, ",")), orDash(strings.Join(labels, ",")))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.Problems) > 0 {
		fmt.Fprintf(w, "\nPROBLEMS\n")
		for _, p := range s.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	dead := func(name string, p *labstate.ProcessStatus) {
		if p != nil && p.PID != 0 && !p.Alive {
			fmt.Fprintf(w, "\n%s exited; last lines of %s:\n%s\n", name, p.Log, indent(p.LogTail))
		}
	}
	dead("etcd", &s.Etcd.Process)
	for _, n := range s.Nodes {
		dead("agent of "+n.Name, n.Agent)
	}
	return nil
}

func procWord(p *labstate.ProcessStatus) string {
	switch {
	case p.PID == 0:
		return "not started"
	case p.Alive:
		return fmt.Sprintf("pid %d running", p.PID)
	default:
		return fmt.Sprintf("pid %d exited", p.PID)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// both prints an IPv4 value and, in a dual-stack lab, its IPv6 twin after a comma.
func both[T interface {
	IsValid() bool
	String() string
}](v4, v6 T) string {
	if !v6.IsValid() {
		return v4.String()
	}
	return v4.String() + "," + v6.String()
}
