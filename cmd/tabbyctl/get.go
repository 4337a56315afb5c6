package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
)

func newGetCommand(conn *connection) *cobra.Command {
	var namespace, output string
	var allNamespaces bool
	cmd := &cobra.Command{
		Use:   "get KIND [NAME...]",
		Short: "show resources as a table, YAML or JSON",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := api.LookupKind(args[0])
			if err != nil {
				return err
			}
			switch output {
			case "", "wide", "yaml", "json":
			default:
				return fmt.Errorf("-o %q: want yaml, json or wide", output)
			}
			ns := ""
			if kind.Namespaced && !allNamespaces {
				ns = namespace
				if ns == "" {
					ns = "default"
				}
			}
			ds, err := conn.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer ds.Close()

			showNS := kind.Namespaced && allNamespaces
			tabular := output == "" || output == "wide"
			if kind.Plural == "endpoints" && tabular {
				// The endpoints every agent derives, not only the stored resources.
				d, err := loadServiceData(cmd.Context(), ds, ns)
				if err != nil {
					return err
				}
				stored, _, err := datastore.ListAs[*api.Endpoints](cmd.Context(), ds, ns)
				if err != nil {
					return err
				}
				return printEndpoints(cmd.OutOrStdout(), d, stored, args[1:], showNS, output == "wide")
			}
			var rs []api.Resource
			if names := args[1:]; len(names) > 0 {
				for _, name := range names {
					r, err := ds.Get(cmd.Context(), kind, ns, name)
					if err != nil {
						return err
					}
					rs = append(rs, r)
				}
			} else if rs, _, err = ds.List(cmd.Context(), kind, ns); err != nil {
				return err
			}

			out := cmd.OutOrStdout()
			if !tabular {
				return printObjects(out, output, rs, len(args) == 2)
			}
			cols := columnsFor(kind, output == "wide")
			if kind.Plural == "services" && output == "wide" {
				d, err := loadServiceData(cmd.Context(), ds, ns)
				if err != nil {
					return err
				}
				// Before LABELS and AGE: the ready endpoints the agents derive.
				endpoints := column{header: "ENDPOINTS", value: func(r api.Resource) string { return d.readyEndpoints(r.(*api.Service)) }}
				cols = slices.Insert(cols, len(cols)-2, endpoints)
			}
			return printTable(out, cols, rs, showNS)
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace of namespaced kinds (default \"default\")")
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "list namespaced kinds across every namespace")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: yaml, json or wide (default: a table)")
	return cmd
}

// printObjects writes one resource as itself and several as a v1 List, the shape kubectl
// prints and tabbyctl apply reads back.
func printObjects(w io.Writer, format string, rs []api.Resource, single bool) error {
	var v any = map[string]any{"apiVersion": "v1", "kind": "List", "items": rs}
	if single {
		v = rs[0]
	}
	var data []byte
	var err error
	if format == "json" {
		data, err = json.MarshalIndent(v, "", "  ")
		data = append(data, '\n')
	} else {
		data, err = yaml.Marshal(v)
	}
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

func printTable(w io.Writer, cols []column, rs []api.Resource, showNamespace bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	if showNamespace {
		fmt.Fprint(tw, "NAMESPACE\t")
	}
	fmt.Fprint(tw, "NAME")
	for _, c := range cols {
		fmt.Fprint(tw, "\t"+c.header)
	}
	fmt.Fprintln(tw)
	for _, r := range rs {
		om := r.GetObjectMeta()
		if showNamespace {
			fmt.Fprint(tw, om.Namespace+"\t")
		}
		fmt.Fprint(tw, om.Name)
		for _, c := range cols {
			v := c.value(r)
			if v == "" {
				v = "-"
			}
			fmt.Fprint(tw, "\t"+v)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}
