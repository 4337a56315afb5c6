package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/internal/labstate"
)

func newEtcdCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "stop or start the lab's etcd: a datastore outage",
		Long: `etcd stop stops the lab's etcd (SIGTERM, then SIGKILL after 10 s) and leaves its data
and everything else of the lab in place: the agents, the CNI and tabbyctl then find the
datastore unreachable, as in an outage of the whole etcd cluster. etcd start runs it
again with the command line it was first started with, on the same data, and returns once
it serves. With --member NAME (etcd1, etcd2, ... of up --etcd-members) only that member
stops or starts: the cluster goes on while a majority runs.`,
	}
	var member string
	// locked runs f with the lab's state, holding its lock.
	locked := func(f func(cmd *cobra.Command, st *labstate.State) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			lk, st, err := g.lockAndLoad()
			if err != nil {
				return err
			}
			defer lk.unlock(false)
			return f(cmd, st)
		}
	}
	stop := &cobra.Command{
		Use:   "stop",
		Short: "stop the lab's etcd (a stopped one stays stopped)",
		Args:  cobra.NoArgs,
		RunE: locked(func(cmd *cobra.Command, st *labstate.State) error {
			return stopEtcd(st, member, cmd.ErrOrStderr())
		}),
	}
	start := &cobra.Command{
		Use:   "start",
		Short: "start the lab's etcd again and wait until it serves",
		Args:  cobra.NoArgs,
		RunE: locked(func(cmd *cobra.Command, st *labstate.State) error {
			return startEtcd(cmd.Context(), st, member)
		}),
	}
	cmd.PersistentFlags().StringVar(&member, "member", "", "only this member of the lab's etcd (default: every member)")
	cmd.AddCommand(stop, start)
	return cmd
}

// etcdMembers are the indexes of the members that member names: all of them when it is
// empty.
func etcdMembers(st *labstate.State, member string) ([]int, error) {
	var idx []int
	var names []string
	for i, m := range st.Etcd.Members {
		if member == "" || m.Name == member {
			idx = append(idx, i)
		}
		names = append(names, m.Name)
	}
	switch {
	case len(st.Etcd.Members) == 0:
		return nil, fmt.Errorf("lab %s records no etcd members (made by an older tabby-lab?): tabby-lab up --name %s", st.Name, st.Name)
	case len(idx) == 0:
		return nil, fmt.Errorf("lab %s has no etcd member %q (its members: %s)", st.Name, member, strings.Join(names, ", "))
	}
	return idx, nil
}

// stopEtcd stops the lab's etcd members (or the one named); one that is not running is
// left as it is.
func stopEtcd(st *labstate.State, member string, stderr io.Writer) error {
	idx, err := etcdMembers(st, member)
	if err != nil {
		return err
	}
	var pids []int
	for _, i := range idx {
		m := st.Etcd.Members[i]
		if !alive(m.Process) {
			fmt.Fprintf(stderr, "tabby-lab: etcd member %s (pid %d) of lab %s is not running\n", m.Name, pidOf(m.Process), st.Name)
			continue
		}
		pids = append(pids, m.Process.PID)
	}
	if err := stopAll(pids); err != nil {
		return fmt.Errorf("stop etcd of lab %s: %w", st.Name, err)
	}
	return nil
}

// startEtcd starts the lab's stopped etcd members (or the one named) again as up started
// them, on the same data, and waits until etcd serves.
func startEtcd(ctx context.Context, st *labstate.State, member string) error {
	idx, err := etcdMembers(st, member)
	if err != nil {
		return err
	}
	var procs []*started
	for _, i := range idx {
		m := st.Etcd.Members[i]
		if alive(m.Process) {
			if member != "" || len(idx) == 1 {
				return fmt.Errorf("etcd member %s (pid %d) of lab %s is running already", m.Name, m.Process.PID, st.Name)
			}
			continue
		}
		p, err := startEtcdMember(st, i)
		if err != nil {
			return fmt.Errorf("start etcd of lab %s: %w", st.Name, err)
		}
		procs = append(procs, p)
	}
	if len(procs) == 0 {
		return fmt.Errorf("every etcd member of lab %s is running already", st.Name)
	}
	if err := st.Save(); err != nil {
		return err
	}
	for _, p := range procs {
		if err := waitEtcd(ctx, st, p, etcdWait); err != nil {
			return fmt.Errorf("start etcd of lab %s: %w", st.Name, err)
		}
	}
	return nil
}
