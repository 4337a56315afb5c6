package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/internal/healthprobe"
	"github.com/tabby-net/tabby/internal/snapshot"
)

// healthFixture: shop/web (tcp check on port 80 → named port http) over three
// workloads, two on node1 (one of which lacks the named port) and one on node2; shop/db
// without a check.
func healthFixture() []api.Resource {
	web := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore}}
	web.Namespace, web.Name, web.Spec.ClusterIP = "shop", "web", "10.96.0.7"
	web.Annotations = map[string]string{api.AnnotationHealthCheck: "http:/healthz", api.AnnotationHealthCheckInterval: "1s"}
	web.Spec.Selector = map[string]string{"app": "web"}
	web.Spec.Ports = []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: api.IntOrString{StrVal: "http"}}}
	db := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore}}
	db.Namespace, db.Name, db.Spec.ClusterIP = "shop", "db", "10.96.0.8"
	db.Spec.Selector = map[string]string{"app": "web"}
	db.Spec.Ports = []api.ServicePort{{Name: "sql", Protocol: "TCP", Port: 5432}}
	rs := []api.Resource{web, db}
	for _, w := range []struct {
		name, node, addr string
		port             uint16
	}{{"w1", "node1", "10.244.0.1/32", 8080}, {"w2", "node1", "10.244.0.2/32", 0}, {"w3", "node2", "10.244.1.1/32", 8080}} {
		e := wep("shop", w.name, w.node, "tabby"+w.name, w.addr)
		e.Labels = map[string]string{"app": "web"}
		if w.port != 0 {
			e.Spec.Ports = []api.WorkloadEndpointPort{{Name: "http", Protocol: "TCP", Port: w.port}}
		}
		rs = append(rs, e)
	}
	return rs
}

func healthRecord(workload, node string, passing bool) *api.EndpointHealth {
	h := &api.EndpointHealth{TypeMeta: api.TypeMeta{Kind: "EndpointHealth", APIVersion: api.VersionTabby},
		Spec: api.EndpointHealthSpec{Service: "web", Workload: workload, Node: node, Check: "http:/healthz", Passing: passing}}
	if !passing {
		h.Spec.Reason = "HTTP 503"
	}
	h.Namespace, h.Name = "shop", api.EndpointHealthName("web", workload)
	return h
}

// TestHealthTargets: a node probes only its own endpoints of checked Services that
// resolve the first port, and a target starts in the state of its own record.
func TestHealthTargets(t *testing.T) {
	rs := append(healthFixture(), healthRecord("w1", "node1", false), healthRecord("w3", "node2", false))
	v := mustView(t, nil, rs...)
	check := api.HealthCheck{Path: "/healthz", Interval: time.Second, Threshold: 2}
	got := healthTargets("node1", serviceInputs(v), ownRecords(v, "node1"))
	if len(got) != 1 || got[0].Key != "shop/web.w1" || got[0].Addr != netip.MustParseAddrPort("10.244.0.1:8080") || got[0].Check != check ||
		got[0].Seed == nil || got[0].Seed.State != healthprobe.Failing || got[0].Seed.Reason != "HTTP 503" {
		t.Errorf("node1's targets: %+v, want shop/web.w1 at 10.244.0.1:8080, seeded failing", got)
	}
	got = healthTargets("node2", serviceInputs(v), ownRecords(v, "node2"))
	if len(got) != 1 || got[0].Key != "shop/web.w3" || got[0].Seed == nil {
		t.Errorf("node2's targets: %+v, want shop/web.w3 seeded", got)
	}
	if got := healthTargets("node3", serviceInputs(v), nil); len(got) != 0 {
		t.Errorf("node3's targets: %+v, want none", got)
	}
}

// TestServiceInputsHealth: an endpoint whose own node's record fails is neither ready
// nor serving (the proxy and DNS drop it); passing, absent or others' records, and a
// Service without a check, leave it ready.
func TestServiceInputsHealth(t *testing.T) {
	rs := append(healthFixture(), healthRecord("w1", "node1", true), healthRecord("w2", "node1", false), healthRecord("w3", "node1", false))
	ready := map[string][]string{}
	for _, in := range serviceInputs(mustView(t, nil, rs...)) {
		for _, ep := range in.Endpoints {
			if ep.Ready && ep.Serving {
				ready[in.Service.Name] = append(ready[in.Service.Name], ep.Workload)
			}
		}
	}
	if !slices.Equal(ready["web"], []string{"shop/w1", "shop/w3"}) || len(ready["db"]) != 3 {
		t.Errorf("ready endpoints %v, want web without w2 (w3's record is not its node's), db all", ready)
	}
	for _, s := range dnsData(serviceInputs(mustView(t, nil, rs...))).Services {
		if s.Name == "web" && (len(s.Endpoints) != 3 || s.Endpoints[1].Ready) {
			t.Errorf("DNS data of web: %+v, want w2 not ready (a headless Service's answers leave it out)", s.Endpoints)
		}
	}
}

// TestRecordChanges: records are put when new, changed or under another lease, and
// deleted when no longer wanted; the records of a prober's probed targets.
func TestRecordChanges(t *testing.T) {
	p := healthprobe.New()
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	check := api.HealthCheck{Interval: time.Second, Threshold: 1}
	p.Set(now, []healthprobe.Target{
		{Key: "shop/web.w1", Addr: netip.MustParseAddrPort("10.244.0.1:8080"), Check: check},
		{Key: "shop/web.w2", Addr: netip.MustParseAddrPort("10.244.0.2:8080"), Check: check},
		{Key: "shop/web.w4", Addr: netip.MustParseAddrPort("10.244.0.4:8080"), Check: check},
	})
	p.Due(now.Add(time.Second))
	p.Result(now, "shop/web.w1", nil)
	p.Result(now, "shop/web.w2", errString("connection refused"))
	want := desiredRecords("node1", p)
	if len(want) != 2 || !want["shop/web.w1"].Spec.Passing || want["shop/web.w2"].Spec.Passing ||
		want["shop/web.w2"].Spec.Reason != "connection refused" || want["shop/web.w2"].Spec.Check != "tcp 10.244.0.2:8080" {
		t.Fatalf("desired records %+v", want)
	}
	for _, r := range want {
		if err := api.Validate(r); err != nil {
			t.Errorf("%s: %v", r.Name, err)
		}
	}
	const lease = clientv3.LeaseID(7)
	written := map[string]writtenRecord{
		"shop/web.w1": {spec: want["shop/web.w1"].Spec, lease: lease},
		"shop/web.w3": {spec: want["shop/web.w1"].Spec, lease: lease},
	}
	puts, deletes := recordChanges(want, written, lease)
	if len(puts) != 1 || puts[0].Name != "web.w2" || !slices.Equal(deletes, []string{"shop/web.w3"}) {
		t.Errorf("changes: puts %v, deletes %v; want web.w2 put, shop/web.w3 deleted", puts, deletes)
	}
	if puts, _ := recordChanges(want, written, lease+1); len(puts) != 2 {
		t.Errorf("under a new lease: %d puts, want both records again", len(puts))
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// BenchmarkServiceInputs derives the endpoints of 1,000 Services (5 WorkloadEndpoints
// each, 10 Services per namespace) from a view that also holds a health record per
// endpoint, one in five failing: "plain" Services have no check (the baseline),
// "checked" ones have, so the cost of applying the records shows beside it. The two
// alternate in every iteration (the machine's load drifts); it reports each one's time
// per derivation and their ratio.
func BenchmarkServiceInputs(b *testing.B) {
	views := map[bool]*snapshot.View{}
	for _, checked := range []bool{false, true} {
		var rs []api.Resource
		for i := range 1000 {
			ns, name := fmt.Sprintf("ns%d", i/10), fmt.Sprintf("s%d", i)
			s := &api.Service{TypeMeta: api.TypeMeta{Kind: "Service", APIVersion: api.VersionCore}}
			s.Namespace, s.Name, s.Spec.ClusterIP = ns, name, fmt.Sprintf("10.100.%d.%d", i>>8, i&255)
			s.Spec.Selector = map[string]string{"app": name}
			s.Spec.Ports = []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, TargetPort: api.IntOrString{IntVal: 8080}}}
			if checked {
				s.Annotations = map[string]string{api.AnnotationHealthCheck: "tcp"}
			}
			rs = append(rs, s)
			for j := range 5 {
				w := wep(ns, fmt.Sprintf("%s-%d", name, j), "node1", "tabby0", fmt.Sprintf("10.%d.%d.%d/32", i>>8, i&255, j))
				w.Labels = map[string]string{"app": name}
				h := healthRecord(w.Name, "node1", j != 0)
				h.Namespace, h.Name, h.Spec.Service = ns, api.EndpointHealthName(name, w.Name), name
				rs = append(rs, w, h)
			}
		}
		v, err := snapshot.NewView(nil, rs...)
		if err != nil {
			b.Fatal(err)
		}
		views[checked] = v
	}
	var took [2]time.Duration
	for b.Loop() {
		for i, checked := range []bool{false, true} {
			start := time.Now()
			serviceInputs(views[checked])
			took[i] += time.Since(start)
		}
	}
	b.ReportMetric(float64(took[0].Nanoseconds())/float64(b.N), "plain-ns/op")
	b.ReportMetric(float64(took[1].Nanoseconds())/float64(b.N), "checked-ns/op")
	b.ReportMetric(float64(took[1])/float64(took[0]), "checked/plain")
}

// TestServiceIndexHealthChange: a view that changes only health records re-applies them
// to the endpoints the index carried over: a failing record takes its endpoint out, a
// passing one brings it back.
func TestServiceIndexHealthChange(t *testing.T) {
	x := &serviceIndex{}
	ready := func(v *snapshot.View) []string {
		var out []string
		for _, in := range x.inputs(v) {
			if in.Service.Name != "web" {
				continue
			}
			for _, ep := range in.Endpoints {
				if ep.Ready {
					out = append(out, ep.Workload)
				}
			}
		}
		return out
	}
	v := mustView(t, nil, healthFixture()...)
	steps := []struct {
		record *api.EndpointHealth
		want   []string
	}{
		{nil, []string{"shop/w1", "shop/w2", "shop/w3"}},
		{healthRecord("w1", "node1", false), []string{"shop/w2", "shop/w3"}},
		{healthRecord("w1", "node1", true), []string{"shop/w1", "shop/w2", "shop/w3"}},
	}
	for i, st := range steps {
		if st.record != nil {
			var err error
			if v, err = v.With(st.record); err != nil {
				t.Fatal(err)
			}
		}
		if got := ready(v); !slices.Equal(got, st.want) {
			t.Errorf("step %d: ready %v, want %v", i, got, st.want)
		}
	}
}
