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
)

// StatusSocketName is the agent's status socket in its data directory; tabbyctl node status
// reads it.
const StatusSocketName = "status.sock"

// serveStatus serves GET /bgp (the BGP peer table as JSON) on a Unix socket at path until
// ctx ends. Only root may connect (the socket is 0600).
func serveStatus(ctx context.Context, path string, status chan chan statusReport) error {
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
		reply := make(chan statusReport, 1)
		select {
		case status <- reply:
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Second):
			http.Error(w, "the BGP agent is busy", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		rep := <-reply
		rep.Problems = append(rep.Problems, encapProblemLines()...)
		_ = json.NewEncoder(w).Encode(rep)
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
