// Package api owns tabby's resource types: their Go shapes (Calico v3 and the Kubernetes
// kinds tabby accepts), the kind registry, defaults, validation and strict decoding.
package api

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"
)

// API versions tabby accepts.
const (
	VersionCalico     = "projectcalico.org/v3"
	VersionCore       = "v1"
	VersionNetworking = "networking.k8s.io/v1"
)

// TypeMeta is the apiVersion/kind pair at the top of every resource.
type TypeMeta struct {
	Kind       string `json:"kind,omitempty"`
	APIVersion string `json:"apiVersion,omitempty"`
}

// GetTypeMeta lets every resource expose its TypeMeta through the Resource interface.
func (t *TypeMeta) GetTypeMeta() *TypeMeta { return t }

// ObjectMeta is the subset of Kubernetes object metadata tabby stores. ResourceVersion is
// the etcd mod revision of the resource's key, set by the datastore on read.
type ObjectMeta struct {
	Name              string            `json:"name,omitempty"`
	Namespace         string            `json:"namespace,omitempty"`
	UID               string            `json:"uid,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	CreationTimestamp *time.Time        `json:"creationTimestamp,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
}

// GetObjectMeta lets every resource expose its ObjectMeta through the Resource interface.
func (m *ObjectMeta) GetObjectMeta() *ObjectMeta { return m }

// Resource is any tabby resource: a struct embedding TypeMeta and ObjectMeta (as
// `json:"metadata"`) with a spec.
type Resource interface {
	GetTypeMeta() *TypeMeta
	GetObjectMeta() *ObjectMeta
}

// Kind describes one resource kind: how it is named on the command line and in storage.
type Kind struct {
	Name       string   // "IPPool", as written in manifests
	APIVersion string   // "projectcalico.org/v3"
	Plural     string   // "ippools": the storage path element and the canonical CLI name
	Singular   string   // "ippool"
	Aliases    []string // short names calicoctl/kubectl accept: "ipp", "pool", ...
	Namespaced bool
	New        func() Resource // a zero resource with TypeMeta filled in
}

// Key returns the resource's storage key below the datastore's resource prefix:
// "<plural>/[<namespace>/]<name>".
func (k *Kind) Key(namespace, name string) string {
	if k.Namespaced {
		return k.Plural + "/" + namespace + "/" + name
	}
	return k.Plural + "/" + name
}

var (
	kindsByType = map[string]*Kind{} // apiVersion + "/" + Name
	kindsByName = map[string]*Kind{} // every lower-case CLI name
	kindList    []*Kind
)

// register adds a kind to the registry; called from init in each type's file.
func register(k *Kind) {
	typeKey := k.APIVersion + "/" + k.Name
	if _, dup := kindsByType[typeKey]; dup {
		panic("api: kind registered twice: " + typeKey)
	}
	kindsByType[typeKey] = k
	for _, n := range append([]string{k.Plural, k.Singular}, k.Aliases...) {
		n = strings.ToLower(n)
		// A kind may list a name twice (kubectl's "endpoints" is both plural and singular).
		if other, dup := kindsByName[n]; dup && other != k {
			panic(fmt.Sprintf("api: name %q used by %s and %s", n, other.Plural, k.Plural))
		}
		kindsByName[n] = k
	}
	kindList = append(kindList, k)
	sort.Slice(kindList, func(i, j int) bool { return kindList[i].Plural < kindList[j].Plural })
}

// Kinds lists every registered kind, ordered by plural name.
func Kinds() []*Kind { return kindList }

// LookupKind finds a kind by any of the names a user may type (plural, singular, alias,
// or the kind name itself), case-insensitively.
func LookupKind(name string) (*Kind, error) {
	if k, ok := kindsByName[strings.ToLower(name)]; ok {
		return k, nil
	}
	for _, k := range kindList {
		if strings.EqualFold(k.Name, name) {
			return k, nil
		}
	}
	return nil, fmt.Errorf("unknown resource kind %q", name)
}

// KindFor finds the kind of a manifest from its apiVersion and kind fields.
func KindFor(apiVersion, kind string) (*Kind, error) {
	if k, ok := kindsByType[apiVersion+"/"+kind]; ok {
		return k, nil
	}
	var versions []string
	for _, k := range kindList {
		if k.Name == kind {
			versions = append(versions, k.APIVersion)
		}
	}
	if len(versions) > 0 {
		return nil, fmt.Errorf("kind %s: apiVersion %q not supported (use %s)", kind, apiVersion, strings.Join(versions, " or "))
	}
	return nil, fmt.Errorf("kind %q (apiVersion %q) is not a resource tabby implements", kind, apiVersion)
}

// KindForType finds the registered kind whose resources have Go type T
// (KindForType[*IPPool]()).
func KindForType[T Resource]() (*Kind, error) {
	t := reflect.TypeFor[T]()
	for _, k := range kindList {
		if reflect.TypeOf(k.New()) == t {
			return k, nil
		}
	}
	return nil, fmt.Errorf("no resource kind has Go type %s", t)
}

// KindOf returns the registered kind of r, from its TypeMeta.
func KindOf(r Resource) (*Kind, error) {
	tm := r.GetTypeMeta()
	return KindFor(tm.APIVersion, tm.Kind)
}
