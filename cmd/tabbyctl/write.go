package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
)

// writeVerb is one of the commands that write manifests: apply, create or replace.
type writeVerb struct {
	name, short, past string
	op                datastore.Action
}

var (
	writeApply   = writeVerb{"apply", "create or update resources from files", "applied", datastore.OpApply}
	writeCreate  = writeVerb{"create", "create resources from files; fails if any exists", "created", datastore.OpCreate}
	writeReplace = writeVerb{"replace", "replace existing resources from files; fails if any is missing", "replaced", datastore.OpUpdate}
)

// manifest is one decoded resource and where it came from, so errors can point at it.
type manifest struct {
	res    api.Resource
	source string
	doc    int // 1-based position of the resource in its source
}

func (m manifest) String() string {
	om := m.res.GetObjectMeta()
	return fmt.Sprintf("%s: document %d (%s %q)", m.source, m.doc, m.res.GetTypeMeta().Kind, qualifiedName(om.Namespace, om.Name))
}

func newWriteCommand(conn *connection, verb writeVerb) *cobra.Command {
	var files []string
	var namespace string
	cmd := &cobra.Command{
		Use:   verb.name + " -f FILE|DIR|-",
		Short: verb.short,
		Long: verb.short + `.

Every document of every file is decoded and validated before anything is written; the
writes then happen in one etcd transaction, so either all of them take effect or none.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ms, err := readManifests(files, cmd.InOrStdin(), namespace)
			if err != nil {
				return err
			}
			ds, err := conn.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer ds.Close()
			if verb.op == datastore.OpUpdate {
				if err := fillResourceVersions(cmd, ds, ms); err != nil {
					return err
				}
			}
			ops := make([]datastore.Op, len(ms))
			for i, m := range ms {
				ops[i] = datastore.Op{Action: verb.op, Resource: m.res}
			}
			if _, err := ds.Txn(cmd.Context(), ops); err != nil {
				return fmt.Errorf("%s: nothing was written: %w", verb.name, err)
			}
			for _, m := range ms {
				printDone(cmd.OutOrStdout(), m.res, verb.past)
			}
			return nil
		},
	}
	addFileFlags(cmd, &files, &namespace)
	return cmd
}

// fillResourceVersions makes replace compare-and-swap against the version read now when a
// manifest carries none, and reports every missing resource.
func fillResourceVersions(cmd *cobra.Command, ds *datastore.Client, ms []manifest) error {
	var errs []error
	for _, m := range ms {
		om := m.res.GetObjectMeta()
		if om.ResourceVersion != "" {
			continue
		}
		kind, err := api.KindOf(m.res)
		if err != nil {
			return err
		}
		cur, err := ds.Get(cmd.Context(), kind, om.Namespace, om.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m, err))
			continue
		}
		om.ResourceVersion = cur.GetObjectMeta().ResourceVersion
	}
	if len(errs) > 0 {
		return fmt.Errorf("replace: nothing was written:\n%w", errors.Join(errs...))
	}
	return nil
}

func addFileFlags(cmd *cobra.Command, files *[]string, namespace *string) {
	cmd.Flags().StringArrayVarP(files, "filename", "f", nil, "file, directory (its *.yaml, *.yml, *.json) or - for standard input; repeatable")
	cmd.Flags().StringVarP(namespace, "namespace", "n", "", "namespace for namespaced resources that name none (default \"default\")")
	_ = cmd.MarkFlagRequired("filename")
}

// readManifests decodes and validates every document of every file and returns them all,
// or an error listing every problem found.
func readManifests(paths []string, stdin io.Reader, namespace string) ([]manifest, error) {
	var sources []string
	for _, p := range paths {
		if p == "-" {
			sources = append(sources, p)
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			sources = append(sources, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		var inDir []string
		for _, e := range entries {
			switch strings.ToLower(filepath.Ext(e.Name())) {
			case ".yaml", ".yml", ".json":
				if !e.IsDir() {
					inDir = append(inDir, filepath.Join(p, e.Name()))
				}
			}
		}
		if len(inDir) == 0 {
			return nil, fmt.Errorf("%s: no *.yaml, *.yml or *.json files", p)
		}
		sort.Strings(inDir)
		sources = append(sources, inDir...)
	}

	var ms []manifest
	var errs []error
	total := 0
	for _, src := range sources {
		name := src
		if src == "-" {
			name = "<stdin>"
		}
		data, err := readLimited(src, stdin, maxManifestBytes-total)
		if errors.Is(err, errManifestTooLarge) {
			return nil, fmt.Errorf("nothing was written: %s: the manifests come to more than %d MiB, tabbyctl's limit (one transaction carries at most %d MiB of keys and values): split them and apply each part",
				name, maxManifestBytes>>20, datastore.MaxRequestBytes>>20)
		}
		if err != nil {
			return nil, err
		}
		total += len(data)
		rs, err := api.Decode(data, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(rs) == 0 {
			errs = append(errs, fmt.Errorf("%s: no resources", name))
		}
		for i, r := range rs {
			m := manifest{res: r, source: name, doc: i + 1}
			if _, ok := r.(*api.EndpointHealth); ok {
				errs = append(errs, fmt.Errorf("%s: EndpointHealth records are written by the agent of the endpoint's node, not by hand", m))
				continue
			}
			if err := setNamespace(r, namespace); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", m, err))
				continue
			}
			if err := api.Validate(r); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", m, err))
				continue
			}
			ms = append(ms, m)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("nothing was written:\n%w", errors.Join(errs...))
	}
	return ms, nil
}

// maxManifestBytes caps what one command reads, before decoding: what one transaction
// can write (datastore.MaxRequestBytes) is less, and decoding takes up to twenty times
// the input's size in memory (190 MB for 10 MiB of small resources).
const maxManifestBytes = datastore.MaxRequestBytes

var errManifestTooLarge = errors.New("manifest too large")

// readLimited reads a file (or standard input for "-") of at most limit bytes; a larger
// one is errManifestTooLarge, found without reading it all.
func readLimited(src string, stdin io.Reader, limit int) ([]byte, error) {
	r := stdin
	if src != "-" {
		f, err := os.Open(src)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > int64(limit) {
			return nil, errManifestTooLarge
		}
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err == nil && len(data) > limit {
		return nil, errManifestTooLarge
	}
	return data, err
}

// setNamespace gives a namespaced resource the --namespace flag's namespace (or "default")
// when its manifest names none, and refuses a manifest that contradicts the flag.
func setNamespace(r api.Resource, flag string) error {
	kind, err := api.KindOf(r)
	if err != nil {
		return err
	}
	om := r.GetObjectMeta()
	if !kind.Namespaced {
		return nil
	}
	switch {
	case om.Namespace == "" && flag != "":
		om.Namespace = flag
	case om.Namespace == "":
		om.Namespace = "default"
	case flag != "" && om.Namespace != flag:
		return fmt.Errorf("metadata.namespace %q does not match --namespace %q", om.Namespace, flag)
	}
	return nil
}

func printDone(w io.Writer, r api.Resource, past string) {
	om := r.GetObjectMeta()
	kind, _ := api.KindOf(r)
	fmt.Fprintf(w, "%s %s %s\n", kind.Singular, qualifiedName(om.Namespace, om.Name), past)
}

func qualifiedName(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}
