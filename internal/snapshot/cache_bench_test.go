package snapshot

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tabby-net/tabby/api"
)

// benchView is a view of n workload endpoints, as a node of a busy cluster sees them.
func benchView(b *testing.B, n int) (*View, []*api.Kind) {
	b.Helper()
	rs := make([]api.Resource, 0, n)
	for i := range n {
		w := &api.WorkloadEndpoint{TypeMeta: api.TypeMeta{Kind: "WorkloadEndpoint", APIVersion: api.VersionCalico}}
		w.Name, w.Namespace, w.ResourceVersion = fmt.Sprintf("node%d-k8s-pod%d-eth0", i%100, i), "default", fmt.Sprint(i+1)
		w.Labels = map[string]string{"app": fmt.Sprintf("app%d", i%50), "projectcalico.org/namespace": "default"}
		w.Spec = api.WorkloadEndpointSpec{Orchestrator: "k8s", Workload: fmt.Sprintf("pod%d", i), Node: fmt.Sprintf("node%d", i%100),
			ContainerID: fmt.Sprintf("%064x", i), Pod: fmt.Sprintf("pod%d", i), Endpoint: "eth0",
			IPNetworks: []string{fmt.Sprintf("10.244.%d.%d/32", i/256%256, i%256)}, Profiles: []string{"kns.default"},
			InterfaceName: fmt.Sprintf("tabby%010x", i)}
		rs = append(rs, w)
	}
	v, err := NewView(nil, rs...)
	if err != nil {
		b.Fatal(err)
	}
	return v, []*api.Kind{kind(b, "workloadendpoints")}
}

// BenchmarkCache: what the cache costs per write and per read at 1k and 10k workload
// endpoints, beside the baseline of encoding the same resources with encoding/json alone
// (what any copy of them costs). It reports the file's size.
func BenchmarkCache(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		v, kinds := benchView(b, n)
		path := filepath.Join(b.TempDir(), "cache")
		b.Run(fmt.Sprintf("json-baseline-%d", n), func(b *testing.B) {
			for b.Loop() {
				for _, r := range v.Resources(kinds[0]) {
					if _, err := json.Marshal(r); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run(fmt.Sprintf("write-%d", n), func(b *testing.B) {
			for b.Loop() {
				if err := WriteCache(path, "n1", v, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
			if fi, err := os.Stat(path); err == nil {
				b.ReportMetric(float64(fi.Size())/1e6, "MB")
			}
		})
		b.Run(fmt.Sprintf("read-%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := ReadCache(path, "n1", kinds); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
