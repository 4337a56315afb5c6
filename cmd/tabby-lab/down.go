package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/internal/labstate"
)

func newDownCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "remove the lab: its processes, namespaces, links, state and data",
		Long: `down removes everything the lab made, found both from its state file and by its
namespaces' prefix (tby-<name>-), so a lab whose up crashed or whose state file is gone is
removed too. Every process in a lab namespace is stopped (SIGTERM, then SIGKILL after 10s).
A lab that does not exist is not an error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lk, err := g.lock()
			if err != nil {
				return err
			}
			found, err := teardown(g.name, g.stateDir(), g.dataDir())
			lk.unlock(err == nil)
			if err != nil {
				return fmt.Errorf("down lab %s: %w", g.name, err)
			}
			if found {
				fmt.Fprintf(cmd.ErrOrStderr(), "tabby-lab: lab %s removed\n", g.name)
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "tabby-lab: lab %s: nothing to remove\n", g.name)
			}
			return nil
		},
	}
}

// teardown removes every trace of a lab: the processes in its namespaces and those its
// state records, its namespaces (and with them their links), its state and its data. It
// says whether there was anything to remove.
func teardown(lab, stateDir, dataDir string) (found bool, err error) {
	st, err := labstate.Load(stateDir)
	switch {
	case errors.Is(err, labstate.ErrNoLab):
		st = nil
	case err != nil:
		// Discovery still finds the namespaces and their processes.
		slog.Warn("ignoring an unreadable state file", "lab", lab, "err", err)
		st, found = nil, true
	default:
		found = true
	}
	namespaces, err := labNamespaces(lab)
	if err != nil {
		return found, err
	}
	found = found || len(namespaces) > 0

	// Processes: whatever runs in the lab's namespaces, and what the state records if it
	// still runs (one that has not entered its namespace yet, say).
	// The router's (etcd) go last: agents stop faster while their datastore still answers.
	byNS, err := pidsIn(namespaces)
	if err != nil {
		return found, err
	}
	var pids, routerPIDs []int
	for ns, p := range byNS {
		if ns == labPrefix(lab)+routerName {
			routerPIDs = append(routerPIDs, p...)
		} else {
			pids = append(pids, p...)
		}
	}
	if st != nil {
		for _, p := range st.Processes() {
			if alive(p) && !slices.Contains(pids, p.PID) && !slices.Contains(routerPIDs, p.PID) {
				pids = append(pids, p.PID)
			}
		}
	}
	var errs []error
	for _, wave := range [][]int{pids, routerPIDs} {
		slices.Sort(wave)
		slog.Debug("stopping processes", "lab", lab, "pids", wave)
		if err := stopAll(wave); err != nil {
			errs = append(errs, err)
		}
	}

	// Namespaces: workloads, then hosts and nodes, the router last. A namespace's links
	// go with it; the peers of the router's veths are in the namespaces themselves.
	slices.SortStableFunc(namespaces, func(a, b string) int { return nsRank(lab, a) - nsRank(lab, b) })
	for _, ns := range namespaces {
		slog.Debug("removing namespace", "netns", ns)
		if err := deleteNetns(ns); err != nil {
			errs = append(errs, err)
		}
	}
	if left, err := labNamespaces(lab); err != nil {
		errs = append(errs, err)
	} else if len(left) > 0 {
		errs = append(errs, fmt.Errorf("namespaces still there: %s", strings.Join(left, ", ")))
	}

	// Files: state (logs, CNI cache) and data. A state file's data dir is trusted only if
	// it is this lab's (its last element is the lab's name).
	dirs := []string{stateDir, dataDir}
	if st != nil && st.DataDir != "" && filepath.Base(st.DataDir) == lab {
		dirs = append(dirs, st.DataDir)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		found = true
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", d, err))
		}
		os.Remove(filepath.Dir(d)) // the root of every lab's data, if this was the last
	}
	return found, errors.Join(errs...)
}

// nsRank orders a lab's namespaces for removal.
func nsRank(lab, ns string) int {
	switch rest := strings.TrimPrefix(ns, labPrefix(lab)); {
	case strings.HasPrefix(rest, "w-"):
		return 0
	case strings.HasPrefix(rest, "h-"):
		return 1
	case rest == routerName:
		return 3
	default:
		return 2
	}
}
