// Command tabbyctl is tabby's calicoctl-style command line: it applies, gets and deletes
// resources in the datastore.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/internal/logsetup"
	"github.com/tabby-net/tabby/ipam"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// connection holds the global flags that say how to reach etcd.
type connection struct {
	endpoints   string
	caFile      string
	certFile    string
	keyFile     string
	dialTimeout time.Duration
}

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	conn := &connection{}
	root := &cobra.Command{
		Use:           "tabbyctl",
		Short:         "manage tabby resources",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	// The libraries log what they do (IPAM's "released address"); a command says what it
	// did itself, so only warnings and errors show unless asked for.
	logLevel := pf.String("log-level", envOr("TABBY_LOG_LEVEL", "warn"), "log level of the libraries' messages on stderr: debug, info, warn or error (env TABBY_LOG_LEVEL)")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		l, err := logsetup.New(*logLevel, os.Stderr)
		if err != nil {
			return err
		}
		slog.SetDefault(l)
		return nil
	}
	pf.StringVar(&conn.endpoints, "etcd-endpoints", envOr("TABBY_ETCD_ENDPOINTS", "127.0.0.1:2379"), "comma-separated etcd endpoints (env TABBY_ETCD_ENDPOINTS)")
	pf.StringVar(&conn.caFile, "etcd-ca-cert-file", os.Getenv("TABBY_ETCD_CA_CERT_FILE"), "CA certificate for etcd TLS (env TABBY_ETCD_CA_CERT_FILE)")
	pf.StringVar(&conn.certFile, "etcd-cert-file", os.Getenv("TABBY_ETCD_CERT_FILE"), "client certificate for etcd TLS (env TABBY_ETCD_CERT_FILE)")
	pf.StringVar(&conn.keyFile, "etcd-key-file", os.Getenv("TABBY_ETCD_KEY_FILE"), "client key for etcd TLS (env TABBY_ETCD_KEY_FILE)")
	pf.DurationVar(&conn.dialTimeout, "dial-timeout", 5*time.Second, "how long to wait for etcd to answer")

	root.AddCommand(
		newWriteCommand(conn, writeApply),
		newWriteCommand(conn, writeCreate),
		newWriteCommand(conn, writeReplace),
		newDeleteCommand(conn),
		newGetCommand(conn),
		newVersionCommand(conn),
		newIPAMCommand(conn),
		newNodeCommand(conn),
		newPolicyCommand(conn),
		newDatastoreCommand(conn),
		newEtcdCommand(conn),
	)
	return root
}

// connect opens a datastore client from the global flags.
func (c *connection) connect(ctx context.Context) (*datastore.Client, error) {
	var eps []string
	for _, e := range strings.Split(c.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	if len(eps) == 0 {
		return nil, errors.New("--etcd-endpoints is empty")
	}
	ds, err := datastore.Connect(ctx, datastore.Config{
		Endpoints:   eps,
		CAFile:      c.caFile,
		CertFile:    c.certFile,
		KeyFile:     c.keyFile,
		DialTimeout: c.dialTimeout,
	})
	if err != nil {
		return nil, err
	}
	// Deleting a pool, or changing its CIDR, is refused while addresses are allocated in it.
	ds.AddWriteCheck(ipam.PoolInUseCheck())
	// Deleting a tier is refused while policies name it, and a policy naming no tier
	// that exists is refused.
	for _, wc := range datastore.TierChecks() {
		ds.AddWriteCheck(wc)
	}
	return ds, nil
}

func newVersionCommand(conn *connection) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the client version and the datastore's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Client Version:    %s\n", version)
			ds, err := conn.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer ds.Close()
			st, err := ds.Etcd().Status(cmd.Context(), ds.Etcd().Endpoints()[0])
			if err != nil {
				return fmt.Errorf("etcd status: %w", err)
			}
			fmt.Fprintf(out, "Datastore:         etcd %s at %s\n", st.Version, strings.Join(ds.Etcd().Endpoints(), ","))
			return nil
		},
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
