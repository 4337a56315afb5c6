package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/internal/labstate"
)

func newExecCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exec TARGET -- CMD [ARG...]",
		Short: "run a command inside the router, a node, a host or a workload",
		Long: `exec runs a command in a lab namespace with "ip netns exec", passing standard input,
output and error through and exiting with the command's status. TARGET is "router", a node
(node1), a host, or a workload (NAMESPACE/NAME). In the router and in nodes,
TABBY_ETCD_ENDPOINTS is set to the lab's etcd; in nodes, TABBY_STATUS_SOCKET to the
agent's status socket (so tabbyctl node status works there).`,
		Example: `  tabby-lab exec node2 -- ip route
  tabby-lab exec default/web1 -- ping -c1 10.244.1.5
  tabby-lab exec router -- tcpdump -ni node1`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := g.load()
			if err != nil {
				return err
			}
			ns, env, err := resolveTarget(st, args[0])
			if err != nil {
				return err
			}
			argv := args[1:]
			if argv[0] == "--" { // kept by pflag once it has stopped at TARGET
				argv = argv[1:]
			}
			if len(argv) == 0 {
				return errors.New("exec: no command given after TARGET")
			}
			return execIn(ns, env, argv)
		},
	}
	// Everything after TARGET belongs to the command, with or without "--".
	cmd.Flags().SetInterspersed(false)
	return cmd
}

func newCtlCommand(g *globals) *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "ctl [--node NODE] TABBYCTL-ARG...",
		Short: "run tabbyctl against the lab's etcd, inside the router or a node",
		Long: `ctl runs the lab's tabbyctl with --etcd-endpoints (through TABBY_ETCD_ENDPOINTS) set to
the lab's etcd, inside the router namespace, or inside a node's namespace with --node (where
it also reaches that node's agent: tabby-lab ctl --node node1 node status). Its exit status is tabbyctl's. Flags for tabbyctl follow
its subcommand.`,
		Example: `  tabby-lab ctl get nodes -o wide
  tabby-lab ctl --node node1 get workloadendpoints -A
  tabby-lab ctl apply -f examples/ippool.yaml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := g.load()
			if err != nil {
				return err
			}
			target := routerName
			if node != "" {
				if st.Node(node) == nil {
					return unknownNode(st, node)
				}
				target = node
			}
			ns, env, err := resolveTarget(st, target)
			if err != nil {
				return err
			}
			return execIn(ns, env, append([]string{st.Binaries.Tabbyctl}, args...))
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "run inside this node's namespace (default: the router's)")
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// resolveTarget maps an exec target to its namespace and the environment to run with.
func resolveTarget(st *labstate.State, target string) (ns string, env []string, err error) {
	env = os.Environ()
	etcdEnv := st.Etcd.ClientEnv()
	switch {
	case target == routerName:
		return st.Router.Netns, append(env, etcdEnv...), nil
	case strings.Contains(target, "/"):
		namespace, name, err := parseWorkloadName(target)
		if err != nil {
			return "", nil, err
		}
		w := st.Workload(namespace, name)
		if w == nil {
			return "", nil, unknownWorkload(st, target)
		}
		return w.Netns, env, nil
	case st.Node(target) != nil:
		// The agent serves node status under its --data-dir, which the lab sets per node.
		n := st.Node(target)
		return n.Netns, append(append(env, etcdEnv...), "TABBY_STATUS_SOCKET="+filepath.Join(n.DataDir, "status.sock")), nil
	case st.Host(target) != nil:
		return st.Host(target).Netns, env, nil
	}
	var names []string
	for _, n := range st.Nodes {
		names = append(names, n.Name)
	}
	for _, h := range st.Hosts {
		names = append(names, h.Name)
	}
	return "", nil, fmt.Errorf("lab %s has no %q: targets are %s, %s or a workload NAMESPACE/NAME",
		st.Name, target, routerName, strings.Join(names, ", "))
}

func unknownNode(st *labstate.State, node string) error {
	var names []string
	for _, n := range st.Nodes {
		names = append(names, n.Name)
	}
	return fmt.Errorf("lab %s has no node %q (its nodes: %s)", st.Name, node, strings.Join(names, ", "))
}

func unknownWorkload(st *labstate.State, name string) error {
	var names []string
	for _, w := range st.Workloads {
		names = append(names, w.FullName())
	}
	have := "none"
	if len(names) > 0 {
		have = strings.Join(names, ", ")
	}
	return fmt.Errorf("lab %s has no workload %q (its workloads: %s)", st.Name, name, have)
}

// execIn replaces tabby-lab with "ip netns exec ns argv...": standard input, output and
// error, signals and the exit status are the command's own.
func execIn(ns string, env, argv []string) error {
	if err := needRoot(); err != nil {
		return err
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return err
	}
	full := append([]string{"ip", "netns", "exec", ns}, argv...)
	return fmt.Errorf("exec ip netns exec %s: %w", ns, syscall.Exec(ip, full, env))
}
