package agent

import (
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tabby-net/tabby/proxy"
)

// healthCheck is what one healthCheckNodePort answers: the Service and its ready
// endpoints on this node (kube-proxy's body, without serviceProxyHealthy).
type healthCheck struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints int `json:"localEndpoints"`
}

// healthChecks returns the healthCheckNodePorts of the Services of in (LoadBalancer,
// externalTrafficPolicy Local, the port allocated), each with its ready endpoints on node.
func healthChecks(node string, in []proxy.ServiceInput) map[uint16]healthCheck {
	out := map[uint16]healthCheck{}
	for _, s := range in {
		svc := s.Service
		hc := svc.Spec.HealthCheckNodePort
		if !svc.NeedsHealthCheckNodePort() || hc <= 0 || hc > 65535 {
			continue
		}
		c := healthCheck{LocalEndpoints: localReadyEndpoints(node, s.Endpoints)}
		c.Service.Namespace, c.Service.Name = svc.Namespace, svc.Name
		out[uint16(hc)] = c
	}
	return out
}

// healthCheckServer serves kube-proxy's healthCheckNodePorts on every address of the
// node: 200 and {"service": {...}, "localEndpoints": N} when N > 0, else 503, so that an
// external load balancer sends traffic of an externalTrafficPolicy Local Service only to
// nodes with a local endpoint.
type healthCheckServer struct {
	addr string // host to listen on; "" is every address
	log  *slog.Logger

	mu    sync.Mutex
	ports map[uint16]*healthCheckPort
}

type healthCheckPort struct {
	srv   *http.Server
	state atomic.Pointer[healthCheck]
}

func newHealthCheckServer(addr string, log *slog.Logger) *healthCheckServer {
	return &healthCheckServer{addr: addr, log: log, ports: map[uint16]*healthCheckPort{}}
}

// Update serves exactly the ports of want: it opens new ones, closes those gone and
// changes what the others answer. A port that cannot be opened (held by another program)
// is logged and tried again on the next Update.
func (h *healthCheckServer) Update(want map[uint16]healthCheck) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for port, p := range h.ports {
		if _, ok := want[port]; !ok {
			p.srv.Close()
			delete(h.ports, port)
		}
	}
	for _, port := range slices.Sorted(maps.Keys(want)) {
		hc := want[port]
		if p, ok := h.ports[port]; ok {
			p.state.Store(&hc)
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(h.addr, strconv.Itoa(int(port))))
		if err != nil {
			h.log.Warn("cannot serve a healthCheckNodePort", "port", port, "service", hc.Service.Namespace+"/"+hc.Service.Name, "err", err)
			continue
		}
		p := &healthCheckPort{}
		p.state.Store(&hc)
		p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
		h.ports[port] = p
		go func() {
			if err := p.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				h.log.Warn("healthCheckNodePort server stopped", "port", port, "err", err)
			}
		}()
	}
}

// Close stops every port.
func (h *healthCheckServer) Close() { h.Update(nil) }

func (p *healthCheckPort) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	hc := p.state.Load()
	body, _ := json.Marshal(hc)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if hc.LocalEndpoints == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	w.Write(append(body, '\n'))
}
