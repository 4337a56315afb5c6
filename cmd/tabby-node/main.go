// Command tabby-node is tabby's per-node agent. Today it runs the datastore: an embedded
// etcd that tabbyctl, tabby-cni and the agents of other nodes connect to.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/datastore"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type options struct {
	datastoreOnly    bool
	dataDir          string
	etcdListenClient string
	etcdListenPeer   string
	logLevel         string
}

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "tabby-node:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "tabby-node",
		Short: "tabby's per-node agent",
		Long: `tabby-node is the agent that runs on every node.

With --datastore-only (the default until the routing, policy, proxy and DNS subsystems
exist) it runs only the embedded etcd datastore, which tabbyctl and other nodes use.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.datastoreOnly, "datastore-only", true, "run only the embedded etcd datastore")
	f.StringVar(&o.dataDir, "data-dir", "/var/lib/tabby", "directory for the embedded etcd's data")
	f.StringVar(&o.etcdListenClient, "etcd-listen-client", "http://127.0.0.1:2379", "URL the embedded etcd serves clients on")
	f.StringVar(&o.etcdListenPeer, "etcd-listen-peer", "http://127.0.0.1:2380", "URL the embedded etcd listens on for peers")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

func run(ctx context.Context, o options) error {
	logger, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	slog.SetDefault(logger)
	if !o.datastoreOnly {
		return errors.New("only --datastore-only is implemented so far: the routing, policy, proxy and DNS subsystems do not exist yet")
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	etcd, err := datastore.StartEmbedded(ctx, datastore.EmbeddedConfig{
		Name:         "tabby",
		DataDir:      o.dataDir + "/etcd",
		ListenClient: o.etcdListenClient,
		ListenPeer:   o.etcdListenPeer,
	})
	if err != nil {
		return fmt.Errorf("start embedded etcd: %w", err)
	}
	defer etcd.Close()
	slog.Info("datastore ready", "endpoints", strings.Join(etcd.Endpoints(), ","), "data-dir", o.dataDir)

	<-ctx.Done()
	slog.Info("shutting down")
	return nil
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
