package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
)

func newDeleteCommand(conn *connection) *cobra.Command {
	var files []string
	var namespace string
	var skipMissing bool
	cmd := &cobra.Command{
		Use:   "delete (-f FILE|DIR|- | KIND NAME...)",
		Short: "delete resources named in files or on the command line",
		Long: `Delete resources named in files or on the command line.

All deletions happen in one etcd transaction: if any resource does not exist (and
--skip-not-exists is not given), nothing is deleted.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var targets []api.Resource
			switch {
			case len(files) > 0 && len(args) > 0:
				return errors.New("give either -f or KIND NAME..., not both")
			case len(files) > 0:
				ms, err := readManifests(files, cmd.InOrStdin(), namespace)
				if err != nil {
					return err
				}
				for _, m := range ms {
					targets = append(targets, m.res)
				}
			case len(args) >= 2:
				kind, err := api.LookupKind(args[0])
				if err != nil {
					return err
				}
				ns := ""
				if kind.Namespaced {
					ns = namespace
					if ns == "" {
						ns = "default"
					}
				}
				for _, name := range args[1:] {
					r := kind.New()
					r.GetObjectMeta().Name = name
					r.GetObjectMeta().Namespace = ns
					targets = append(targets, r)
				}
			default:
				return errors.New("give -f FILE, or a kind and at least one name")
			}

			ds, err := conn.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer ds.Close()
			var ops []datastore.Op
			for _, r := range targets {
				if skipMissing {
					kind, err := api.KindOf(r)
					if err != nil {
						return err
					}
					om := r.GetObjectMeta()
					if _, err := ds.Get(cmd.Context(), kind, om.Namespace, om.Name); errors.Is(err, datastore.ErrNotFound) {
						continue
					}
				}
				// A manifest's resourceVersion is ignored: deleting by name is what users mean.
				r.GetObjectMeta().ResourceVersion = ""
				ops = append(ops, datastore.Op{Action: datastore.OpDelete, Resource: r})
			}
			if len(ops) == 0 {
				return nil
			}
			deleted, err := ds.Txn(cmd.Context(), ops)
			if err != nil {
				return fmt.Errorf("delete: nothing was deleted: %w", err)
			}
			for _, r := range deleted {
				printDone(cmd.OutOrStdout(), r, "deleted")
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file, directory or - naming the resources to delete; repeatable")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "namespace of namespaced resources (default \"default\")")
	cmd.Flags().BoolVar(&skipMissing, "skip-not-exists", false, "skip resources that do not exist instead of failing")
	return cmd
}
