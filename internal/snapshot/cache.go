package snapshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tabby-net/tabby/api"
)

// The cache file: the agent's last synced view on local disk, so an agent that starts
// while etcd does not answer can run from it. One JSON document:
//
//	{"format": "tabby-snapshot-cache", "version": 1, "sha256": "<hex of payload>",
//	 "payload": {"node": "node1", "written": "<RFC 3339>",
//	             "kinds": {"<plural>": [<resource as stored in etcd, with resourceVersion>, ...]},
//	             "affinities": {"<block>": "<node>"}}}
//
// A file of another format or version, whose checksum does not match, that is for another
// node, or that holds other kinds than the snapshot watches is refused whole.
const (
	cacheFormat = "tabby-snapshot-cache"
	// CacheVersion is the cache file's format version. A change of what a view holds
	// (its resources' JSON included) that an older reader would misread needs a new one.
	CacheVersion = 1
)

type cacheFile struct {
	Format  string          `json:"format"`
	Version int             `json:"version"`
	SHA256  string          `json:"sha256"`
	Payload json.RawMessage `json:"payload"`
}

type cachePayload struct {
	Node       string                       `json:"node"`
	Written    time.Time                    `json:"written"`
	Kinds      map[string][]json.RawMessage `json:"kinds"`
	Affinities map[string]string            `json:"affinities"`
}

// WriteCache writes v to path as node's cache, atomically (a temporary file in the same
// directory, synced, then renamed over path; mode 0600): a reader sees the old file or
// the new one, never part of either. written is recorded as the view's time.
//
// The payload is assembled from each resource's JSON, which is all that costs: encoding
// it again as one document would go over every byte twice more.
func WriteCache(path, node string, v *View, written time.Time) error {
	var p bytes.Buffer
	head, err := json.Marshal(struct {
		Node    string    `json:"node"`
		Written time.Time `json:"written"`
	}{node, written.UTC()})
	if err != nil {
		return fmt.Errorf("snapshot cache %s: %w", path, err)
	}
	p.Write(head[:len(head)-1]) // without its closing brace
	p.WriteString(`,"kinds":{`)
	kinds := slices.SortedFunc(maps.Keys(v.resources), func(a, b *api.Kind) int { return strings.Compare(a.Plural, b.Plural) })
	for i, k := range kinds {
		if i > 0 {
			p.WriteByte(',')
		}
		fmt.Fprintf(&p, "%q:[", k.Plural)
		rs := v.resources[k]
		for j, key := range slices.Sorted(maps.Keys(rs)) {
			b, err := json.Marshal(rs[key])
			if err != nil {
				return fmt.Errorf("snapshot cache %s: encode %s %s: %w", path, k.Plural, key, err)
			}
			if j > 0 {
				p.WriteByte(',')
			}
			p.Write(b)
		}
		p.WriteByte(']')
	}
	aff := make(map[string]string, len(v.Affinities))
	for b, n := range v.Affinities {
		aff[b.String()] = n
	}
	affJSON, err := json.Marshal(aff)
	if err != nil {
		return fmt.Errorf("snapshot cache %s: %w", path, err)
	}
	p.WriteString(`},"affinities":`)
	p.Write(affJSON)
	p.WriteByte('}')
	sum := sha256.Sum256(p.Bytes())
	var f bytes.Buffer
	fmt.Fprintf(&f, `{"format":%q,"version":%d,"sha256":%q,"payload":`, cacheFormat, CacheVersion, hex.EncodeToString(sum[:]))
	f.Write(p.Bytes())
	f.WriteString("}\n")
	return writeAtomic(path, f.Bytes())
}

func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("snapshot cache: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*") // mode 0600
	if err != nil {
		return fmt.Errorf("snapshot cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // gone after the rename; left over only on failure
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("snapshot cache %s: %w", path, err)
	}
	// The rename itself reaches the disk with the directory.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// ReadCache reads node's cache at path back into a synced view of kinds whose CachedAt
// is when it was written. A missing file is an error that is fs.ErrNotExist; any other
// error says what is wrong with the file, which is then not to be used at all.
func ReadCache(path, node string, kinds []*api.Kind) (*View, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("snapshot cache: %w", err)
	}
	v, err := decodeCache(data, node, kinds)
	if err != nil {
		return nil, fmt.Errorf("snapshot cache %s: %w", path, err)
	}
	return v, nil
}

func decodeCache(data []byte, node string, kinds []*api.Kind) (*View, error) {
	var f cacheFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("not a snapshot cache (corrupt?): %w", err)
	}
	if f.Format != cacheFormat {
		return nil, fmt.Errorf("format %q: want %q", f.Format, cacheFormat)
	}
	if f.Version != CacheVersion {
		return nil, fmt.Errorf("version %d: this agent reads version %d (written by another tabby version)", f.Version, CacheVersion)
	}
	sum := sha256.Sum256(f.Payload)
	if hex.EncodeToString(sum[:]) != f.SHA256 {
		return nil, errors.New("checksum mismatch: the file is corrupt")
	}
	var p cachePayload
	dec := json.NewDecoder(bytes.NewReader(f.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	if p.Node != node {
		return nil, fmt.Errorf("written by node %q, this is %q", p.Node, node)
	}
	if p.Written.IsZero() {
		return nil, errors.New("no time of writing")
	}
	var want []string
	for _, k := range kinds {
		want = append(want, k.Plural)
	}
	slices.Sort(want)
	if have := slices.Sorted(maps.Keys(p.Kinds)); !slices.Equal(have, want) {
		return nil, fmt.Errorf("holds kinds %s, this agent watches %s", strings.Join(have, ","), strings.Join(want, ","))
	}
	v := &View{Synced: true, Generation: 1, CachedAt: p.Written, resources: map[*api.Kind]map[string]api.Resource{}, Affinities: map[netip.Prefix]string{}}
	for _, k := range kinds {
		m := make(map[string]api.Resource, len(p.Kinds[k.Plural]))
		for i, raw := range p.Kinds[k.Plural] {
			r := k.New()
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(r); err != nil {
				return nil, fmt.Errorf("%s item %d: %w", k.Plural, i, err)
			}
			meta := r.GetObjectMeta()
			if meta.Name == "" {
				return nil, fmt.Errorf("%s item %d: no name", k.Plural, i)
			}
			m[meta.Namespace+"/"+meta.Name] = r
		}
		v.resources[k] = m
	}
	for b, n := range p.Affinities {
		block, err := netip.ParsePrefix(b)
		if err != nil {
			return nil, fmt.Errorf("affinity of %q: %w", b, err)
		}
		v.Affinities[block] = n
	}
	return v, nil
}

// Seed makes v (from ReadCache) the view until the watches have delivered the whole live
// state, which then replaces it in one view: subsystems run from the cache meanwhile, and
// see only the differences when the datastore answers. Call it before Run.
func (s *Snapshot) Seed(v *View) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.kinds {
		if v.resources[k] == nil {
			v.resources[k] = map[string]api.Resource{}
		}
	}
	s.view = v
}

// KeepCache writes each live synced view to node's cache at path until ctx ends: at most
// once per debounce (a burst of changes is one write, debounce after its first), and once
// more at the end if a view is still unwritten. A failed write is logged and made again
// with the next view; it stops nothing.
func (s *Snapshot) KeepCache(ctx context.Context, path, node string, debounce time.Duration) error {
	sub := s.Subscribe()
	var written uint64 // generation of the view last written
	var due <-chan time.Time
	write := func() {
		v := s.View()
		if !v.Synced || !v.CachedAt.IsZero() || v.Generation == written {
			return
		}
		if err := WriteCache(path, node, v, time.Now()); err != nil {
			s.log.Warn("snapshot cache not written; the previous one stays", "err", err)
			return
		}
		written = v.Generation
		s.log.Debug("snapshot cache written", "path", path, "generation", v.Generation)
	}
	for {
		select {
		case <-ctx.Done():
			if due != nil {
				write()
			}
			return nil
		case <-sub:
			if v := s.View(); due == nil && v.Synced && v.CachedAt.IsZero() && v.Generation != written {
				due = time.After(debounce)
			}
		case <-due:
			due = nil
			write()
		}
	}
}
