package main

import (
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/internal/labstate"
)

// agentStartCheck is how long agent start watches a started agent for an early exit.
const agentStartCheck = 500 * time.Millisecond

func newAgentCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "kill or start a node's agent: a crash, a restart",
		Long: `agent kill NODE kills the node's tabby-node with SIGKILL (a crash: nothing of it gets a
chance to clean up, as after an OOM kill) and returns once it is gone; what it programmed
stays in the node's kernel. agent start NODE runs it again with the command line up
started it with (same flags, same data directory), and returns once it runs: it does
not wait for the agent to be ready, which it may not be (etcd stopped).`,
	}
	// locked runs f with the lab's state and the node named, holding the lab's lock.
	locked := func(f func(cmd *cobra.Command, st *labstate.State, n *labstate.Node) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			lk, st, err := g.lockAndLoad()
			if err != nil {
				return err
			}
			defer lk.unlock(false)
			n := st.Node(args[0])
			switch {
			case n == nil:
				return fmt.Errorf("lab %s has no node %s", st.Name, args[0])
			case n.Agent == nil || len(n.Agent.Argv) == 0:
				return fmt.Errorf("node %s of lab %s runs no agent (up --no-agents?)", n.Name, st.Name)
			}
			return f(cmd, st, n)
		}
	}
	kill := &cobra.Command{
		Use:   "kill NODE",
		Short: "kill the node's agent with SIGKILL and wait until it is gone",
		Args:  cobra.ExactArgs(1),
		RunE: locked(func(cmd *cobra.Command, st *labstate.State, n *labstate.Node) error {
			if !alive(n.Agent) {
				return fmt.Errorf("the agent of %s (pid %d) is not running", n.Name, n.Agent.PID)
			}
			signalAll([]int{n.Agent.PID}, syscall.SIGKILL)
			if left := waitGone([]int{n.Agent.PID}, killGrace); len(left) > 0 {
				return fmt.Errorf("the agent of %s (pid %d) still runs after SIGKILL", n.Name, n.Agent.PID)
			}
			return nil
		}),
	}
	start := &cobra.Command{
		Use:   "start NODE",
		Short: "start the node's agent again with its command line",
		Args:  cobra.ExactArgs(1),
		RunE: locked(func(cmd *cobra.Command, st *labstate.State, n *labstate.Node) error {
			if alive(n.Agent) {
				return fmt.Errorf("the agent of %s (pid %d) is running already", n.Name, n.Agent.PID)
			}
			p, err := startDetached(n.Netns, n.Agent.Argv, filepath.Join(st.StateDir, n.Name+".log"))
			if err != nil {
				return fmt.Errorf("node %s: agent: %w", n.Name, err)
			}
			n.Agent = p.Process
			if err := st.Save(); err != nil {
				return err
			}
			select {
			case <-p.done:
				return fmt.Errorf("the agent of %s exited at once (%v); its log:\n%s", n.Name, p.err, logTail(p.Log, 20))
			case <-time.After(agentStartCheck):
			}
			return nil
		}),
	}
	cmd.AddCommand(kill, start)
	return cmd
}
