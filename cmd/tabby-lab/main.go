package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/internal/labstate"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tabby-lab:", err)
		os.Exit(1)
	}
}

// globals are the flags every command takes.
type globals struct {
	name      string
	stateRoot string
	dataRoot  string
	verbose   bool
}

func (g *globals) stateDir() string { return filepath.Join(g.stateRoot, g.name) }
func (g *globals) dataDir() string  { return filepath.Join(g.dataRoot, g.name) }

// load reads the lab's state; a lab that does not exist is an error saying so.
func (g *globals) load() (*labstate.State, error) {
	if err := validateLabName(g.name); err != nil {
		return nil, err
	}
	st, err := labstate.Load(g.stateDir())
	if errors.Is(err, labstate.ErrNoLab) {
		left, _ := labNamespaces(g.name)
		if len(left) > 0 {
			return nil, fmt.Errorf("lab %q has no state (%s) but %d namespaces remain (%s): an up that crashed? Remove it with: tabby-lab down --name %s",
				g.name, filepath.Join(g.stateDir(), labstate.File), len(left), strings.Join(left, ", "), g.name)
		}
		return nil, fmt.Errorf("lab %q does not exist (no %s); start it with: tabby-lab up --name %s",
			g.name, filepath.Join(g.stateDir(), labstate.File), g.name)
	}
	return st, err
}

// lock validates the name, checks for root and takes the lab's lock.
func (g *globals) lock() (*labLock, error) {
	if err := validateLabName(g.name); err != nil {
		return nil, err
	}
	if err := needRoot(); err != nil {
		return nil, err
	}
	return lockLab(g.stateRoot, g.name)
}

// lockAndLoad takes the lab's lock and loads its state, for the commands that change an
// existing lab; the caller unlocks.
func (g *globals) lockAndLoad() (*labLock, *labstate.State, error) {
	lk, err := g.lock()
	if err != nil {
		return nil, nil, err
	}
	st, err := g.load()
	if err != nil {
		lk.unlock(false)
		return nil, nil, err
	}
	return lk, st, nil
}

// needRoot checks what changing a lab needs: root, and iproute2's ip.
func needRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("tabby-lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("tabby-lab needs the ip command (Debian package iproute2)")
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func envBool(key string) bool {
	v := os.Getenv(key)
	return v != "" && v != "0" && v != "false"
}

func newRootCommand() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "tabby-lab",
		Short: "build a multi-node tabby lab of network namespaces on this machine",
		Long: `tabby-lab builds a tabby cluster on one machine: nodes are network namespaces joined by
bridges inside a router namespace (one bridge per underlay subnet), each node runs its own
tabby-node agent against one etcd, and workloads are further namespaces attached through the
tabby-cni plugin with libcni, as a container runtime does. Nothing is created in the machine's
own network namespace, and several labs (--name) coexist.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(*cobra.Command, []string) {
			level := slog.LevelWarn
			if g.verbose {
				level = slog.LevelDebug
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.name, "name", "lab", "the lab to act on (1-16 lowercase letters and digits)")
	pf.StringVar(&g.stateRoot, "state-dir", envOr("TABBY_LAB_STATE_DIR", "/run/tabby-lab"), "where labs keep their state, logs and lock files (env TABBY_LAB_STATE_DIR)")
	pf.StringVar(&g.dataRoot, "data-dir", envOr("TABBY_LAB_DATA_DIR", "/var/tmp/tabby-lab"), "where labs keep etcd's and the agents' data (env TABBY_LAB_DATA_DIR)")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "log each step")

	root.AddCommand(
		newUpCommand(g),
		newDownCommand(g),
		newStatusCommand(g),
		newListCommand(g),
		newExecCommand(g),
		newCtlCommand(g),
		newWorkloadCommand(g),
		newHostCommand(g),
		newEtcdCommand(g),
		newAgentCommand(g),
		newCNICommand(),
	)
	return root
}
