package main

import (
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

	"github.com/tabby-net/tabby/bgp"
)

// StatusSocketName is the agent's status socket in its data directory; tabbyctl node status
// reads it.
const StatusSocketName = "status.sock"

// nodeStatus is what GET /bgp serves: BGP's report (empty with BGP off) and readiness.
type nodeStatus struct {
	statusReport
	BGPOff   bool     `json:"bgpOff,omitempty"`
	Ready    bool     `json:"ready"`
	NotReady []string `json:"notReady,omitempty"`
}

// readinessReport is what GET /readiness serves (200 when ready, else 503).
type readinessReport struct {
	Node    string   `json:"node"`
	Ready   bool     `json:"ready"`
	Reasons []string `json:"reasons,omitempty"`
}

// serveStatus serves, on a Unix socket at path until ctx ends, GET /bgp (node status: the
// BGP peer table when status is not nil, problems and readiness, as JSON) and GET
// /readiness. Only root may connect (the socket is 0600). status is nil with BGP off.
func serveStatus(ctx context.Context, path, node, role string, status chan chan statusReport) error {
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
	// askBGP asks the BGP agent for its report; ok is false when the request ended first.
	askBGP := func(r *http.Request) (rep statusReport, ok bool) {
		reply := make(chan statusReport, 1)
		select {
		case status <- reply:
		case <-r.Context().Done():
			return rep, false
		case <-time.After(10 * time.Second):
			return statusReport{Node: node, Role: role, Err: "the BGP agent is busy"}, true
		}
		select {
		case rep = <-reply:
			return rep, true
		case <-r.Context().Done():
			return rep, false
		}
	}
	// bgpReason is BGP's reason not to be ready, "" when it has synced.
	bgpReason := func(rep statusReport) string {
		switch {
		case rep.Err != "":
			return "bgp: " + rep.Err
		case !rep.Synced:
			return "bgp: learned routes not synced yet (waiting for End-of-RIB from every peer, at most --bgp-sync-timeout)"
		}
		return ""
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bgp", func(w http.ResponseWriter, r *http.Request) {
		st := nodeStatus{statusReport: statusReport{Node: node, Role: role, Peers: []bgp.PeerStatus{}, Advertised: []string{}}, BGPOff: status == nil}
		var bgpWhy string
		if status != nil {
			rep, ok := askBGP(r)
			if !ok {
				return
			}
			st.statusReport, bgpWhy = rep, bgpReason(rep)
		}
		st.Problems = append(st.Problems, encapProblemLines()...)
		st.NotReady = notReadyReasons(bgpWhy)
		st.Ready = len(st.NotReady) == 0
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("GET /readiness", func(w http.ResponseWriter, r *http.Request) {
		var bgpWhy string
		if status != nil {
			rep, ok := askBGP(r)
			if !ok {
				return
			}
			bgpWhy = bgpReason(rep)
		}
		rr := readinessReport{Node: node, Reasons: notReadyReasons(bgpWhy)}
		rr.Ready = len(rr.Reasons) == 0
		w.Header().Set("Content-Type", "application/json")
		if !rr.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rr)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	slog.Info("status socket listening", "path", path)
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("status socket: %w", err)
	}
	os.Remove(path)
	return nil
}
