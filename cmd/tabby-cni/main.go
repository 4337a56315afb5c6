// Command tabby-cni is tabby's CNI plugin (spec 1.1.0; 0.3.x, 0.4.0 and 1.0.0
// configurations too). ADD allocates the workload's addresses from tabby's IPAM, connects
// its network namespace to the node with a veth and writes its WorkloadEndpoint, from
// which the node's agent routes to it; DEL undoes all of that; CHECK verifies it; GC
// removes attachments the runtime no longer knows; STATUS says whether ADD can work.
//
// With TABBY_CNI_TIMINGS=<file> in its environment, every invocation appends one JSON
// line to file saying where its time went (timingRecord): BenchmarkAddDel reads them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/tabby-net/tabby/datastore"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// supportedVersions are the spec versions whose configurations tabby-cni accepts. CHECK
// needs 0.4.0 or later, GC and STATUS 1.1.0.
var supportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", types100.ImplementedSpecVersion}

// commandTimeout bounds one invocation; etcd calls that would outlast it fail with
// "try again later" (11).
const commandTimeout = 60 * time.Second

func main() {
	p := &plugin{cniVersion: types100.ImplementedSpecVersion, start: time.Now()}
	about := fmt.Sprintf("tabby-cni %s: tabby's CNI plugin", version)
	if e := skel.PluginMainFuncsWithError(skel.CNIFuncs{
		Add:    p.handler("ADD", cmdAdd),
		Del:    p.handler("DEL", cmdDel),
		Check:  p.handler("CHECK", cmdCheck),
		GC:     p.handler("GC", cmdGC),
		Status: p.handler("STATUS", cmdStatus),
	}, cniversion.PluginSupports(supportedVersions...), about); e != nil {
		printError(os.Stdout, p.cniVersion, e)
		os.Exit(1)
	}
}

// plugin remembers the configuration's spec version for the error it may print.
type plugin struct {
	cniVersion string
	start      time.Time // main began: package init is done
}

// printError writes a CNI error as the spec shapes it: with the configuration's
// cniVersion, which the library's own printer leaves out.
func printError(w io.Writer, cniVersion string, e *types.Error) {
	b, err := json.MarshalIndent(struct {
		CNIVersion string `json:"cniVersion"`
		*types.Error
	}{cniVersion, e}, "", "    ")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tabby-cni: encode error:", err)
		return
	}
	w.Write(append(b, '\n'))
}

// invocation is one run of the plugin: the CNI variables, the parsed configuration and
// the log, which names the command and the container on every line.
type invocation struct {
	args *skel.CmdArgs
	conf *netConf
	log  *slog.Logger
	// timings records the command's phases (for TABBY_CNI_TIMINGS); its mark is a no-op
	// on nil.
	timings *timings
}

// handler wraps a command: it parses the configuration, opens the log, runs the command
// with a deadline and turns its error into a CNI error.
func (p *plugin) handler(name string, run func(context.Context, *invocation) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) (err error) {
		tm := newTimings(p.start)
		tm.mark("start") // from main to here: reading standard input and the CNI variables
		defer func() { tm.write(name, args.ContainerID, err) }()
		hostname, _ := os.Hostname()
		conf, err := parseConfig(args.StdinData, hostname)
		if err != nil {
			return cniError(err)
		}
		p.cniVersion = conf.CNIVersion
		log, closeLog, err := openLog(conf)
		if err != nil {
			return cniError(err)
		}
		defer closeLog()
		log = log.With("cmd", name, "network", conf.Name, "containerID", args.ContainerID, "ifname", args.IfName, "netns", args.Netns)
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		start := time.Now()
		log.Debug("start", "args", args.Args, "pid", os.Getpid())
		tm.mark("config")
		if err := run(ctx, &invocation{args: args, conf: conf, log: log, timings: tm}); err != nil {
			ce := cniError(err)
			log.Error("failed", "code", ce.Code, "err", ce.Msg, "took", time.Since(start))
			return ce
		}
		log.Info("done", "took", time.Since(start))
		return nil
	}
}

// openLog returns the plugin's logger: to log_file when set (appending; its directory is
// created), else to standard error. Never to standard output, which carries the result.
func openLog(c *netConf) (*slog.Logger, func(), error) {
	opts := &slog.HandlerOptions{Level: c.level}
	if c.LogFile == "" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), func() {}, nil
	}
	if err := os.MkdirAll(filepath.Dir(c.LogFile), 0o755); err != nil {
		return nil, nil, errorf(types.ErrIOFailure, "log_file %s: %v", c.LogFile, err)
	}
	f, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, errorf(types.ErrIOFailure, "log_file: %v", err)
	}
	return slog.New(slog.NewTextHandler(f, opts)), func() { f.Close() }, nil
}

// connect opens the datastore. Files named for TLS that do not exist are a configuration
// error (7); an etcd that does not answer is worth retrying later (11).
func (inv *invocation) connect(ctx context.Context) (*datastore.Client, error) {
	c := inv.conf
	for _, f := range []struct{ field, path string }{
		{"etcd_ca_cert_file", c.EtcdCACertFile}, {"etcd_cert_file", c.EtcdCertFile}, {"etcd_key_file", c.EtcdKeyFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, errorf(types.ErrInvalidNetworkConfig, "%s: %v", f.field, err)
		}
	}
	ds, err := datastore.Connect(ctx, datastore.Config{
		Endpoints: c.endpoints,
		CAFile:    c.EtcdCACertFile,
		CertFile:  c.EtcdCertFile,
		KeyFile:   c.EtcdKeyFile,
		Logger:    inv.log,
	})
	if err != nil {
		eps := strings.Join(c.endpoints, ",")
		if eps == "" {
			eps = datastore.DefaultEndpoint + " (the default)"
		}
		if ce, ok := errors.AsType[*datastore.ConnectError](err); ok && ce.TLS {
			// Trying again will not help: the settings disagree with the server's.
			return nil, errorf(types.ErrInvalidNetworkConfig, "%v: check etcd_endpoints' scheme (%s) and etcd_ca_cert_file, etcd_cert_file and etcd_key_file against etcd's TLS settings", err, eps)
		}
		return nil, errorf(types.ErrTryAgainLater, "%v: is etcd running, and does etcd_endpoints (%s) reach it from this node?", err, eps)
	}
	inv.timings.mark("connect")
	return ds, nil
}
