package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tabby-net/tabby/internal/nodestatus"
)

// statusServer answers node status and readiness: on the Unix socket tabbyctl reads
// (GET /bgp, GET /readiness, GET /diags) and on the health port (GET /liveness, GET
// /readiness).
type statusServer struct {
	node, role string
	ready      *Readiness
	bgp        *bgpSubsystem // nil with BGP off
	felix      *felixConfigSubsystem
	diags      *diagCollector // nil: GET /diags is 404
	// stalled names the subsystems stuck in a pass while changes wait (nil: none can
	// be): liveness fails while there are any.
	stalled func() []string
}

// livenessStall is how long a subsystem may leave a change untaken before liveness
// fails: far beyond a full pass over 100k routes or 10k Services on a loaded machine,
// so that only a subsystem that is stuck gets its agent restarted.
const livenessStall = 5 * time.Minute

func (s *statusServer) status(ctx context.Context) (nodestatus.Status, bool) {
	st := nodestatus.Status{Node: s.node, Role: s.role, Peers: []nodestatus.Peer{}, Advertised: []string{}, BGPOff: s.bgp == nil}
	if s.bgp != nil {
		rep, ok := s.bgp.Report(ctx)
		if !ok {
			return st, false
		}
		st = rep
	}
	st.Problems = append(st.Problems, s.ready.Problems()...)
	if s.felix != nil {
		st.Settings = s.felix.Settings()
	}
	st.NotReady = s.ready.NotReady()
	st.Ready = len(st.NotReady) == 0
	return st, true
}

func (s *statusServer) readiness() nodestatus.Readiness {
	rr := nodestatus.Readiness{Node: s.node, Reasons: s.ready.NotReady()}
	rr.Ready = len(rr.Reasons) == 0
	return rr
}

func (s *statusServer) serveReadiness(w http.ResponseWriter, _ *http.Request) {
	rr := s.readiness()
	w.Header().Set("Content-Type", "application/json")
	if !rr.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(rr)
}

// serveSocket serves GET /bgp and GET /readiness on a Unix socket at path until ctx ends.
// Only root may connect (the socket is 0600).
func (s *statusServer) serveSocket(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("status socket: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("status socket: remove stale %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("status socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("status socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bgp", func(w http.ResponseWriter, r *http.Request) {
		st, ok := s.status(r.Context())
		if !ok {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("GET /readiness", s.serveReadiness)
	if s.diags != nil {
		mux.HandleFunc("GET /diags", s.serveDiags)
	}
	slog.Info("status socket listening", "path", path)
	err = serveHTTP(ctx, l, mux)
	os.Remove(path)
	return err
}

// serveDiags answers GET /diags with the diagnostics archive (tar.gz), built whole
// before it is sent so that a failure is a 500, not a cut archive.
func (s *statusServer) serveDiags(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	if err := s.diags.write(r.Context(), &buf); err != nil {
		http.Error(w, "diagnostics: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set(nodestatus.NodeHeader, s.node)
	_, _ = w.Write(buf.Bytes())
}

// serveHealth serves GET /liveness and GET /readiness on addr (felix's health port), for
// systemd, Kubernetes probes and load balancers, as text: readiness is 200 "ready", or
// 503 with a reason per line. Liveness is 200 "live" while the agent runs and no
// subsystem is stalled (s.stalled), else 503 naming each.
func (s *statusServer) serveHealth(ctx context.Context, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--health-listen %s: %w", addr, err)
	}
	slog.Info("health endpoint listening", "addr", l.Addr().String())
	return serveHTTP(ctx, l, s.healthMux())
}

// healthMux is serveHealth's handler.
func (s *statusServer) healthMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /liveness", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		var stalled []string
		if s.stalled != nil {
			stalled = s.stalled()
		}
		if len(stalled) == 0 {
			fmt.Fprintln(w, "live")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "stalled:")
		for _, r := range stalled {
			fmt.Fprintln(w, r)
		}
	})
	mux.HandleFunc("GET /readiness", func(w http.ResponseWriter, _ *http.Request) {
		rr := s.readiness()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if rr.Ready {
			fmt.Fprintln(w, "ready")
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready:")
		for _, r := range rr.Reasons {
			fmt.Fprintln(w, r)
		}
	})
	return mux
}

// serveHTTP serves h on l until ctx ends.
func serveHTTP(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
