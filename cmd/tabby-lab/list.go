package main

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/internal/labstate"
)

// labNetnsRE parses the namespaces a lab makes: tby-<lab>-router, -node<k>, -h-..., -w-...
var labNetnsRE = regexp.MustCompile(`^` + nsPrefix + `([a-z][a-z0-9]*)-(router|node[0-9]+|h-.+|w-.+)$`)

func newListCommand(g *globals) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "list the labs on this machine, with those left over by a crash",
		Long: `list shows every lab that has a state directory or namespaces. A lab without state
("no state") is what a killed session or a crashed up leaves; tabby-lab down --name NAME
removes it. With -q it prints only the names, for scripts:

  for l in $(tabby-lab list -q); do tabby-lab down --name $l; done`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			labs, err := listLabs(g.stateRoot)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if quiet {
				for _, l := range labs {
					fmt.Fprintln(out, l.name)
				}
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tNAMESPACES\tNODES\tWORKLOADS\tETCD")
			for _, l := range labs {
				state, nodes, workloads, etcd := "no state", "-", "-", "-"
				if l.st != nil {
					state = "up"
					if !l.st.Ready {
						state = "incomplete"
					}
					nodes, workloads = fmt.Sprint(len(l.st.Nodes)), fmt.Sprint(len(l.st.Workloads))
					etcd = procWord(&labstate.ProcessStatus{PID: pidOf(l.st.Etcd.Process), Alive: alive(l.st.Etcd.Process)})
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", l.name, state, l.namespaces, nodes, workloads, etcd)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the labs' names")
	return cmd
}

// labNamespaces lists a lab's namespaces: those named as a lab names them. Other tools
// may use the tby- prefix too; a namespace of another shape is never the lab's.
func labNamespaces(lab string) ([]string, error) {
	names, err := listNetns(labPrefix(lab))
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(names, func(ns string) bool {
		m := labNetnsRE.FindStringSubmatch(ns)
		return m == nil || m[1] != lab
	}), nil
}

type labEntry struct {
	name       string
	st         *labstate.State // nil without a readable state file
	namespaces int
}

// listLabs finds labs by their state directories under root and by their namespaces.
func listLabs(root string) ([]labEntry, error) {
	byName := map[string]*labEntry{}
	get := func(name string) *labEntry {
		if byName[name] == nil {
			byName[name] = &labEntry{name: name}
		}
		return byName[name]
	}
	names, err := listNetns(nsPrefix)
	if err != nil {
		return nil, err
	}
	for _, ns := range names {
		if m := labNetnsRE.FindStringSubmatch(ns); m != nil && validateLabName(m[1]) == nil {
			get(m[1]).namespaces++
		}
	}
	entries, err := os.ReadDir(root)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("list labs: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || validateLabName(e.Name()) != nil {
			continue
		}
		st, err := labstate.Load(root + "/" + e.Name())
		if err == nil {
			get(e.Name()).st = st
		}
	}
	var labs []labEntry
	for _, l := range byName {
		labs = append(labs, *l)
	}
	slices.SortFunc(labs, func(a, b labEntry) int { return strings.Compare(a.name, b.name) })
	return labs, nil
}

func pidOf(p *labstate.Process) int {
	if p == nil {
		return 0
	}
	return p.PID
}
