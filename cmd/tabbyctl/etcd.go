package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// newEtcdCommand is tabbyctl etcd member list|add|remove: growing and shrinking the etcd
// cluster that tabby-node's embedded etcd members form (or any etcd cluster).
func newEtcdCommand(conn *connection) *cobra.Command {
	etcd := &cobra.Command{Use: "etcd", Short: "the etcd cluster's members"}
	member := &cobra.Command{Use: "member", Short: "list, add or remove etcd members"}
	list := &cobra.Command{
		Use:   "list",
		Short: "list the members: name, ID, started or not, peer and client URLs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withMembers(cmd, conn, func(_ *clientv3.Client, members []*etcdserverpb.Member) error {
				return printMembers(cmd.OutOrStdout(), members)
			})
		},
	}
	var peerURL string
	add := &cobra.Command{
		Use:   "add NAME --peer-url URL",
		Short: "add a member, then start it with the settings printed (state existing)",
		Long: `add tells the cluster of a new member and prints the tabby-node settings to start it
with, as lines for /etc/tabby/tabby-node.env: its name, the initial cluster that now
includes it, and the state existing. Add one member at a time and start it before the
next add: etcd refuses an add or a remove ("unhealthy cluster") while a started member has
not been connected to the others for 5 s.`,
		Example: `  tabbyctl etcd member add ctl2 --peer-url https://10.0.0.3:2380`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if peerURL == "" {
				return fmt.Errorf("etcd member add %s: --peer-url required (the URL its --etcd-listen-peer will serve)", name)
			}
			ds, err := conn.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer ds.Close()
			resp, err := ds.Etcd().MemberAdd(cmd.Context(), []string{peerURL})
			if err != nil {
				return reconfigError("add "+name, err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "# member %s added (ID %x); start its tabby-node with:\n", name, resp.Member.ID)
			fmt.Fprintf(out, "TABBY_ETCD_NAME=%s\nTABBY_ETCD_INITIAL_CLUSTER=%s\nTABBY_ETCD_INITIAL_CLUSTER_STATE=existing\n",
				name, initialCluster(resp.Members, resp.Member.ID, name))
			return nil
		},
	}
	add.Flags().StringVar(&peerURL, "peer-url", "", "the new member's peer URL (its --etcd-listen-peer)")
	remove := &cobra.Command{
		Use:   "remove NAME|ID",
		Short: "remove a member (its tabby-node --datastore-only then exits; empty its data directory before it joins again)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withMembers(cmd, conn, func(etcd *clientv3.Client, members []*etcdserverpb.Member) error {
				var names []string
				for _, m := range members {
					if m.Name == args[0] || strconv.FormatUint(m.ID, 16) == args[0] {
						if _, err := etcd.MemberRemove(cmd.Context(), m.ID); err != nil {
							return reconfigError("remove "+args[0], err)
						}
						fmt.Fprintf(cmd.OutOrStdout(), "member %s (ID %x) removed\n", orNone(m.Name), m.ID)
						return nil
					}
					names = append(names, fmt.Sprintf("%s (%x)", orNone(m.Name), m.ID))
				}
				return fmt.Errorf("etcd member remove %s: no such member (members: %s)", args[0], strings.Join(names, ", "))
			})
		},
	}
	member.AddCommand(list, add, remove)
	etcd.AddCommand(member)
	return etcd
}

// withMembers connects to etcd and runs f with the client and the cluster's members.
func withMembers(cmd *cobra.Command, conn *connection, f func(*clientv3.Client, []*etcdserverpb.Member) error) error {
	ds, err := conn.connect(cmd.Context())
	if err != nil {
		return err
	}
	defer ds.Close()
	resp, err := ds.Etcd().MemberList(cmd.Context())
	if err != nil {
		return fmt.Errorf("etcd member list: %w", err)
	}
	return f(ds.Etcd(), resp.Members)
}

// printMembers writes the members as a table.
func printMembers(w io.Writer, members []*etcdserverpb.Member) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tSTATUS\tPEER URLS\tCLIENT URLS")
	for _, m := range members {
		status := "started"
		if m.Name == "" { // added, not yet started
			status = "unstarted"
		}
		fmt.Fprintf(tw, "%s\t%x\t%s\t%s\t%s\n", orNone(m.Name), m.ID, status, strings.Join(m.PeerURLs, ","), orNone(strings.Join(m.ClientURLs, ",")))
	}
	return tw.Flush()
}

// reconfigError explains etcd's refusal of a membership change while a member is new or
// down.
func reconfigError(what string, err error) error {
	if strings.Contains(err.Error(), "unhealthy cluster") {
		return fmt.Errorf("etcd member %s: %w: a member started recently, or one is down; retry in a few seconds (tabbyctl etcd member list)", what, err)
	}
	return fmt.Errorf("etcd member %s: %w", what, err)
}

// initialCluster is --etcd-initial-cluster for the member id, named name, just added:
// every member's name and peer URLs.
func initialCluster(members []*etcdserverpb.Member, id uint64, name string) string {
	var parts []string
	for _, m := range members {
		n := m.Name
		if m.ID == id {
			n = name
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	return strings.Join(parts, ",")
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
