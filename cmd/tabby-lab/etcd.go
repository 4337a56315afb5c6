package main

import (
	"context"
	"fmt"
	"io"

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
it serves.`,
	}
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
			return stopEtcd(st, cmd.ErrOrStderr())
		}),
	}
	start := &cobra.Command{
		Use:   "start",
		Short: "start the lab's etcd again and wait until it serves",
		Args:  cobra.NoArgs,
		RunE: locked(func(cmd *cobra.Command, st *labstate.State) error {
			return startEtcd(cmd.Context(), st)
		}),
	}
	cmd.AddCommand(stop, start)
	return cmd
}

// stopEtcd stops the etcd the lab records; one that is not running is left as it is.
func stopEtcd(st *labstate.State, stderr io.Writer) error {
	p := st.Etcd.Process
	if p == nil {
		return fmt.Errorf("lab %s records no etcd process", st.Name)
	}
	if !alive(p) {
		fmt.Fprintf(stderr, "tabby-lab: etcd (pid %d) of lab %s is not running\n", p.PID, st.Name)
		return nil
	}
	if err := stopAll([]int{p.PID}); err != nil {
		return fmt.Errorf("stop etcd of lab %s: %w", st.Name, err)
	}
	return nil
}

// startEtcd starts the lab's etcd again with its recorded command line, in its namespace
// and appending to its log, and waits until it serves.
func startEtcd(ctx context.Context, st *labstate.State) error {
	p := st.Etcd.Process
	switch {
	case p == nil || len(p.Argv) == 0:
		return fmt.Errorf("lab %s records no etcd command line to start again (made by an older tabby-lab?): tabby-lab up --name %s", st.Name, st.Name)
	case alive(p):
		return fmt.Errorf("etcd (pid %d) of lab %s is running already", p.PID, st.Name)
	}
	etcd, err := startDetached(st.Etcd.Netns, p.Argv, p.Log)
	if err != nil {
		return fmt.Errorf("start etcd of lab %s: %w", st.Name, err)
	}
	st.Etcd.Process = etcd.Process
	if err := st.Save(); err != nil {
		return err
	}
	if err := waitEtcd(ctx, st, etcd, etcdWait); err != nil {
		return fmt.Errorf("start etcd of lab %s: %w", st.Name, err)
	}
	return nil
}
