package agent

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/proxy"
)

// TestHealthCheckServer serves a healthCheckNodePort on 127.0.0.1: 200 with a local
// endpoint, 503 without, and nothing once the Service is gone.
func TestHealthCheckServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	svc := &api.Service{ObjectMeta: api.ObjectMeta{Namespace: "shop", Name: "web"}}
	svc.Spec.Type, svc.Spec.ExternalTrafficPolicy, svc.Spec.HealthCheckNodePort = api.ServiceTypeLoadBalancer, api.TrafficPolicyLocal, int32(port)
	other := &api.Service{ObjectMeta: api.ObjectMeta{Namespace: "shop", Name: "cluster"}}
	other.Spec.Type, other.Spec.HealthCheckNodePort = api.ServiceTypeLoadBalancer, int32(port+1)
	eps := []proxy.Endpoint{{Node: "node1", Ready: true}, {Node: "node1", Ready: true}, {Node: "node1"}, {Node: "node2", Ready: true}}
	in := []proxy.ServiceInput{{Service: svc, Endpoints: eps}, {Service: other, Endpoints: eps}}

	h := newHealthCheckServer("127.0.0.1", slog.Default())
	defer h.Close()
	get := func() (int, string) {
		t.Helper()
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/healthz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if got := healthChecks("node1", in); len(got) != 1 {
		t.Errorf("healthChecks: %v, want only the Local Service's port", got)
	}
	h.Update(healthChecks("node1", in))
	if code, body := get(); code != 200 || body != `{"service":{"namespace":"shop","name":"web"},"localEndpoints":2}`+"\n" {
		t.Errorf("node1: %d %q", code, body)
	}
	h.Update(healthChecks("node3", in))
	if code, body := get(); code != 503 || body != `{"service":{"namespace":"shop","name":"web"},"localEndpoints":0}`+"\n" {
		t.Errorf("node3: %d %q", code, body)
	}
	h.Update(nil)
	if code, body := get(); code != 0 {
		t.Errorf("after the Service went: %d %q, want no server", code, body)
	}
}
