package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/ipam"
)

// exportKind and exportVersion name the document datastore export writes.
const (
	exportKind    = "DatastoreExport"
	exportVersion = api.VersionTabby
)

// exportFile is what datastore export writes and import reads: every resource, then
// every IPAM record.
type exportFile struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Resources  []json.RawMessage `json:"resources"`
	IPAM       []ipam.Record     `json:"ipam"`
}

// maxImportBytes caps what import reads: an export of a large cluster (tens of thousands
// of endpoints) is tens of MiB.
const maxImportBytes = 256 << 20

// importBatch is how many resources one import transaction creates, within an external
// etcd's default --max-txn-ops (128).
const importBatch = 100

func newDatastoreCommand(conn *connection) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "datastore",
		Short: "export the datastore, or import an export into an empty one",
	}
	cmd.AddCommand(newDatastoreExportCommand(conn), newDatastoreImportCommand(conn))
	return cmd
}

func newDatastoreExportCommand(conn *connection) *cobra.Command {
	return &cobra.Command{
		Use:   "export > cluster.yaml",
		Short: "write every resource and the IPAM state as one YAML document",
		Long: `export writes, read at one etcd revision, every resource (as tabbyctl get -o yaml
shows it, without uid, creationTimestamp and resourceVersion, which belong to one
datastore) and every IPAM record (blocks, affinities, handles, config) as one YAML
document of kind DatastoreExport. Service cluster IP and node port claims are not
written: import claims them again from the Services. Records under a lease (live agents,
endpoint health) are left out.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ds, err := conn.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer ds.Close()
			return exportDatastore(cmd.Context(), ds, cmd.OutOrStdout())
		},
	}
}

func exportDatastore(ctx context.Context, ds *datastore.Client, w io.Writer) error {
	d, err := ds.Dump(ctx, ipam.Prefix)
	if err != nil {
		return err
	}
	f := exportFile{APIVersion: exportVersion, Kind: exportKind, Resources: []json.RawMessage{}, IPAM: ipam.RecordsOf(d.Raw[ipam.Prefix])}
	slices.SortStableFunc(d.Resources, func(a, b api.Resource) int { return cmp.Compare(importRank(a), importRank(b)) })
	for _, r := range d.Resources {
		m := r.GetObjectMeta()
		m.UID, m.CreationTimestamp, m.ResourceVersion = "", nil, ""
		data, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("export %s %q: %w", r.GetTypeMeta().Kind, qualifiedName(m.Namespace, m.Name), err)
		}
		f.Resources = append(f.Resources, data)
	}
	if f.IPAM == nil {
		f.IPAM = []ipam.Record{}
	}
	out, err := yaml.Marshal(f)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	_, err = w.Write(out)
	return err
}

// importRank orders resources so that what others are checked against is written
// first: the BGPConfiguration (a Service's cluster IP must lie in its service CIDRs),
// then IPPools, then Nodes, then Tiers (a policy's tier must exist), then the rest.
func importRank(r api.Resource) int {
	switch r.(type) {
	case *api.BGPConfiguration:
		return 0
	case *api.IPPool:
		return 1
	case *api.Node:
		return 2
	case *api.Tier:
		return 3
	}
	return 4
}

func newDatastoreImportCommand(conn *connection) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "import -f cluster.yaml",
		Short: "restore an export into an empty datastore",
		Long: `import reads a DatastoreExport (tabbyctl datastore export) and writes its
resources and IPAM records into a datastore that holds nothing under /tabby/ (it refuses
any other). The whole file is decoded and validated first: a malformed one is an error
naming the resource or record and the field, and nothing is written. Resources are then
created in transactions of 100, the BGPConfiguration, IPPools, Nodes and Tiers first, and the IPAM
records after them; Services claim their cluster IPs and node ports again. Should a
write fail midway, the datastore holds part of the export: empty it and import again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("give the export to import with -f FILE (or -f - for standard input)")
			}
			data, err := readLimited(file, cmd.InOrStdin(), maxImportBytes)
			if errors.Is(err, errManifestTooLarge) {
				return fmt.Errorf("%s: larger than %d MiB, tabbyctl's limit for an import; nothing was written", file, maxImportBytes>>20)
			}
			if err != nil {
				return err
			}
			rs, records, err := decodeExport(data, file)
			if err != nil {
				return fmt.Errorf("%w; nothing was written", err)
			}
			ds, err := conn.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer ds.Close()
			if err := importDatastore(cmd.Context(), ds, rs, records); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Imported %d resources and %d IPAM records.\n", len(rs), len(records))
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "the export to import (- for standard input)")
	return cmd
}

// decodeExport decodes and validates an export; errors name the file, the resource
// (resources[i], its kind and name) or IPAM record (ipam[i], its key) and the field.
func decodeExport(data []byte, source string) ([]api.Resource, []ipam.Record, error) {
	var f exportFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", source, err)
	}
	if f.APIVersion != exportVersion || f.Kind != exportKind {
		return nil, nil, fmt.Errorf("%s: apiVersion %q, kind %q: want %s %s (written by tabbyctl datastore export)", source, f.APIVersion, f.Kind, exportVersion, exportKind)
	}
	var rs []api.Resource
	for i, raw := range f.Resources {
		where := fmt.Sprintf("%s: resources[%d]", source, i)
		got, err := api.Decode(raw, where)
		if err != nil {
			return nil, nil, err
		}
		if len(got) != 1 {
			return nil, nil, fmt.Errorf("%s: %d resources, want one", where, len(got))
		}
		r := got[0]
		if err := api.Validate(r); err != nil {
			om := r.GetObjectMeta()
			return nil, nil, fmt.Errorf("%s (%s %q): %w", where, r.GetTypeMeta().Kind, qualifiedName(om.Namespace, om.Name), err)
		}
		rs = append(rs, r)
	}
	if err := ipam.ValidateRecords(f.IPAM); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", source, err)
	}
	return rs, f.IPAM, nil
}

// importDatastore writes rs and records into ds, which must be empty.
func importDatastore(ctx context.Context, ds *datastore.Client, rs []api.Resource, records []ipam.Record) error {
	n, first, err := ds.Keys(ctx, "/tabby/")
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("the datastore is not empty (%d keys under /tabby/, such as %s): import only restores into an empty one; nothing was written", n, first)
	}
	slices.SortStableFunc(rs, func(a, b api.Resource) int { return cmp.Compare(importRank(a), importRank(b)) })
	for start := 0; start < len(rs); start += importBatch {
		batch := rs[start:min(start+importBatch, len(rs))]
		ops := make([]datastore.Op, len(batch))
		for i, r := range batch {
			ops[i] = datastore.Op{Action: datastore.OpCreate, Resource: r}
		}
		if _, err := ds.Txn(ctx, ops); err != nil {
			return fmt.Errorf("import resources %d to %d: %w (the %d before them were written: empty the datastore and import again)", start, start+len(batch)-1, err, start)
		}
	}
	if err := ipam.New(ds, nil).ImportRecords(ctx, records); err != nil {
		return fmt.Errorf("%w (every resource was written: empty the datastore and import again)", err)
	}
	return nil
}
