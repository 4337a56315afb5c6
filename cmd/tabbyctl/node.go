package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/internal/nodestatus"
)

func newNodeCommand(conn *connection) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "show this node's BGP status, list or delete nodes",
	}
	cmd.AddCommand(newNodeStatusCommand(), newNodeReadinessCommand(), newNodeListCommand(conn), newNodeDeleteCommand(conn), newNodeDiagsCommand())
	return cmd
}

func newNodeStatusCommand() *cobra.Command {
	var socket, output string
	cmd := &cobra.Command{
		Use:   "status [--socket PATH] [-o json]",
		Short: "print this node's BGP peer table, from the local agent's status socket",
		Long: `status asks the tabby-node agent on this host, through its Unix socket
(<data-dir>/status.sock, by default ` + nodestatus.DefaultSocket + `), for its BGP peers: address,
type (node-to-node mesh, route reflector, global, node specific), state, since when, info
(why a session is not up), and prefixes received and advertised.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := nodestatus.NewClient(socket).Status(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			if output != "" {
				return fmt.Errorf("-o %q: want json or nothing", output)
			}
			printStatus(cmd.OutOrStdout(), st, time.Now())
			if st.Err != "" {
				return fmt.Errorf("agent: %s", st.Err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", envOr("TABBY_STATUS_SOCKET", nodestatus.DefaultSocket), "the agent's status socket (env TABBY_STATUS_SOCKET)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json (default: a table)")
	return cmd
}

func newNodeReadinessCommand() *cobra.Command {
	var socket, output string
	cmd := &cobra.Command{
		Use:   "readiness [--socket PATH] [-o json]",
		Short: "say whether this node's agent is ready; exit non-zero when it is not",
		Long: `readiness asks the tabby-node agent on this host (GET /readiness on its status
socket) whether it is ready, as calico-node's readiness probe does: every subsystem (routes,
policy, encapsulation, BGP when on) has synced at least once and no encapsulation problem
(such as an IPIP pool on a kernel without ipip) stands. It prints "ready", or "not ready"
and each reason, and exits 1 when not ready.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "json" {
				return fmt.Errorf("-o %q: want json or nothing", output)
			}
			rr, err := nodestatus.NewClient(socket).Readiness(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rr); err != nil {
					return err
				}
			} else if rr.Ready {
				fmt.Fprintf(w, "tabby-node %s is ready\n", rr.Node)
			} else {
				fmt.Fprintf(w, "tabby-node %s is not ready:\n", rr.Node)
				for _, r := range rr.Reasons {
					fmt.Fprintf(w, "  %s\n", r)
				}
			}
			if !rr.Ready {
				cmd.SilenceUsage = true
				return errNotReady
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", envOr("TABBY_STATUS_SOCKET", nodestatus.DefaultSocket), "the agent's status socket (env TABBY_STATUS_SOCKET)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json (default: text)")
	return cmd
}

var errNotReady = errors.New("not ready")

func printStatus(w io.Writer, st *nodestatus.Status, now time.Time) {
	if st.BGPOff {
		fmt.Fprintf(w, "tabby-node %s (%s) is running, BGP off\n", st.Node, st.Role)
		printSettings(w, st)
		printReadiness(w, st)
		return
	}
	fmt.Fprintf(w, "tabby-node %s (%s) is running: AS %d, address %s", st.Node, st.Role, st.ASN, st.Address)
	if st.Address6 != "" {
		fmt.Fprintf(w, " and %s", st.Address6)
	}
	fmt.Fprintf(w, ", router ID %s", st.RouterID)
	if st.ClusterID != "" {
		fmt.Fprintf(w, ", route reflector cluster %s", st.ClusterID)
	}
	fmt.Fprintln(w)
	// Each family has sessions of its own, as calicoctl prints them: IPv4, then IPv6.
	for _, fam := range []struct {
		name string
		v4   bool
	}{{"IPv4", true}, {"IPv6", false}} {
		var peers []nodestatus.Peer
		for _, p := range st.Peers {
			if a, err := netip.ParseAddr(p.Address); err == nil && a.Is4() == fam.v4 {
				peers = append(peers, p)
			}
		}
		if len(peers) == 0 && !fam.v4 {
			continue
		}
		fmt.Fprintf(w, "\n%s BGP status\n", fam.name)
		printPeers(w, peers, now)
	}
	fmt.Fprintf(w, "\nAdvertised: %s\nLearned routes: %d (synced: %v)\n", strings.Join(st.Advertised, ", "), st.Learned, st.Synced)
	printSettings(w, st)
	printReadiness(w, st)
}

// printSettings prints the FelixConfiguration settings that are not the flags' defaults,
// each with where it came from: "ipipMTU: 1400 from flag --ipip-mtu (FelixConfiguration
// default says 1380)".
func printSettings(w io.Writer, st *nodestatus.Status) {
	for _, s := range st.Settings {
		if s.Source != "default" {
			fmt.Fprintf(w, "Setting: %s\n", s)
		}
	}
}

// printPeers prints a table of peers.
func printPeers(w io.Writer, peers []nodestatus.Peer, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER ADDRESS\tPEER TYPE\tAS\tSTATE\tSINCE\tRECEIVED\tADVERTISED\tINFO")
	for _, p := range peers {
		since := "-"
		if !p.Since.IsZero() {
			since = p.Since.Local().Format("15:04:05") + " (" + now.Sub(p.Since).Round(time.Second).String() + ")"
		}
		info := p.Info
		if info == "" {
			info = p.Source
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\t%s\n", p.Address, p.Type, p.ASN, p.State, since, p.Received, p.Advertised, info)
	}
	tw.Flush()
}

// printReadiness prints the problems and whether the agent is ready (reasons that are
// problems already are not repeated).
func printReadiness(w io.Writer, st *nodestatus.Status) {
	for _, p := range st.Problems {
		fmt.Fprintf(w, "Problem: %s\n", p)
	}
	if st.Ready {
		fmt.Fprintln(w, "Readiness: ready")
		return
	}
	fmt.Fprintln(w, "Readiness: not ready")
	for _, r := range st.NotReady {
		if !slices.Contains(st.Problems, r) {
			fmt.Fprintf(w, "Not ready: %s\n", r)
		}
	}
}

func newNodeListCommand(conn *connection) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "list every node with its AS number, address, role and whether its agent is alive",
		Long: `list prints every node with its AS number, addresses and role, and in AGENT
whether its tabby-node is alive: "alive" (since when it runs, and its version) while the
agent keeps its etcd lease, "down" once the lease expired (the agent stopped, or has not
reached etcd for the lease's 15 s).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ds, err := conn.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer ds.Close()
			nodes, _, err := datastore.ListAs[*api.Node](cmd.Context(), ds, "")
			if err != nil {
				return err
			}
			agents, err := ds.AgentRecords(cmd.Context())
			if err != nil {
				return err
			}
			asn := api.DefaultASNumber
			if def, err := datastore.GetAs[*api.BGPConfiguration](cmd.Context(), ds, "", api.DefaultBGPConfigurationName); err == nil && def.Spec.ASNumber != nil {
				asn = *def.Spec.ASNumber
			}
			printNodes(cmd.OutOrStdout(), nodes, agents, asn, time.Now())
			return nil
		},
	}
}

func printNodes(w io.Writer, nodes []*api.Node, agents map[string]datastore.AgentRecord, asn api.ASNumber, now time.Time) {
	slices.SortFunc(nodes, func(a, b *api.Node) int { return cmp.Compare(a.Name, b.Name) })
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tASN\tIPV4\tIPV6\tROLE\tAGENT")
	for _, n := range nodes {
		a, v4, v6, role := fmt.Sprintf("%d (cluster)", asn), "-", "-", "node"
		if b := n.Spec.BGP; b != nil {
			if b.ASNumber != nil {
				a = fmt.Sprint(uint32(*b.ASNumber))
			}
			v4, v6 = cmp.Or(b.IPv4Address, "-"), cmp.Or(b.IPv6Address, "-")
			if b.RouteReflectorClusterID != "" {
				role = "route reflector (cluster " + b.RouteReflectorClusterID + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, a, v4, v6, role, agentState(agents, n.Name, now))
	}
	tw.Flush()
}

// agentState is a node's AGENT column: "alive since 15:04:05 (2h3m0s), v1.2" or "down".
func agentState(agents map[string]datastore.AgentRecord, node string, now time.Time) string {
	r, ok := agents[node]
	if !ok {
		return "down"
	}
	s := "alive since " + r.Started.Local().Format("15:04:05") + " (" + now.Sub(r.Started).Round(time.Second).String() + ")"
	if r.Version != "" {
		s += ", " + r.Version
	}
	return s
}
