package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tabby-net/tabby/api"
	"github.com/tabby-net/tabby/datastore"
	"github.com/tabby-net/tabby/felix"
	"github.com/tabby-net/tabby/ipam"
)

// The tests drive the plugin from inside a lab node, where its etcd is reachable and
// the plugin makes the host ends of veths: the test binary runs itself there ("ip netns
// exec <node> <test binary>") with helperEnv set, reads a helperRequest on standard input
// and answers a helperResponse on standard output.
const helperEnv = "TABBY_CNI_TEST_HELPER"

// container is one attachment the helper runs CNI for.
type container struct {
	ID     string      `json:"id"`
	NetNS  string      `json:"netns"`
	IfName string      `json:"ifName"`
	Args   [][2]string `json:"args"`
}

type helperRequest struct {
	// Op is "libcni" (Command through libcni, as a runtime runs it), "exec" (the plugin
	// binary run by hand: Env and Stdin, raw output back), "cycles" (ADD, wait for the
	// host route, DEL, for each container) or "state" (the node's links, routes,
	// endpoints and IPAM).
	Op        string               `json:"op"`
	Command   string               `json:"command,omitempty"`
	ConfList  json.RawMessage      `json:"confList,omitempty"`
	PluginDir string               `json:"pluginDir,omitempty"`
	CacheDir  string               `json:"cacheDir,omitempty"`
	Container container            `json:"container"`
	Valid     []types.GCAttachment `json:"valid,omitempty"`
	// exec
	Env   []string `json:"env,omitempty"`
	Stdin string   `json:"stdin,omitempty"`
	// cycles
	Containers []container `json:"containers,omitempty"`
	Batch      bool        `json:"batch,omitempty"`
	// Streams above 1 runs the ADDs of a Batch in that many concurrent streams, without
	// waiting for routes.
	Streams int `json:"streams,omitempty"`
	// Timings is a file for the plugin to append its phase timings to (TABBY_CNI_TIMINGS).
	Timings string `json:"timings,omitempty"`
	// state
	Etcd string `json:"etcd,omitempty"`
	// race: the plugin binary run by hand (as exec) for each of Commands on Container,
	// all at once, the k-th started k×Stagger after the first.
	Commands []string      `json:"commands,omitempty"`
	Stagger  time.Duration `json:"stagger,omitempty"`
}

type helperResponse struct {
	Result json.RawMessage `json:"result,omitempty"` // ADD's result, in the configuration's version
	Error  *types.Error    `json:"error,omitempty"`  // the plugin's error
	// exec
	Stdout string `json:"stdout,omitempty"`
	Exit   int    `json:"exit"`
	// cycles
	Add   []time.Duration `json:"add,omitempty"`
	Del   []time.Duration `json:"del,omitempty"`
	Route []time.Duration `json:"route,omitempty"` // from ADD's end to the host route
	// AddCalls say when each ADD started and returned, to set against the plugin's
	// timings; AddWall is from the first ADD's start to the last one's return.
	AddCalls []addCall     `json:"addCalls,omitempty"`
	AddWall  time.Duration `json:"addWall,omitempty"`
	// state
	State *nodeState `json:"state,omitempty"`
	// race: each command's answer, in the order of Commands
	Race []*helperResponse `json:"race,omitempty"`
}

// nodeState is what attachments leave on a node and in the datastore; every attachment
// removed, it is what it was before. The IPAM blocks the node claimed (and felix's
// blackhole routes for them) stay, as in Calico: the IPAM garbage collector deletes
// blocks that stay empty.
type nodeState struct {
	Links     []string `json:"links"`     // workload veths (tabby*)
	Routes    []string `json:"routes"`    // felix's (protocol 116) through a device
	Endpoints []string `json:"endpoints"` // namespace/name
	InUse     int      `json:"inUse"`     // addresses IPAM holds
	Handles   int      `json:"handles"`
	Problems  string   `json:"problems"` // what ipam check reports
}

func helperMain() int {
	var req helperRequest
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "helper: read request:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	resp, err := serveHelper(ctx, &req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(resp); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

func serveHelper(ctx context.Context, req *helperRequest) (*helperResponse, error) {
	switch req.Op {
	case "libcni":
		return runLibcni(ctx, req, req.Command, req.Container)
	case "exec":
		return execPlugin(ctx, req)
	case "cycles":
		return cycles(ctx, req)
	case "race":
		return race(ctx, req)
	case "state":
		st, err := readNodeState(ctx, req.Etcd)
		return &helperResponse{State: st}, err
	}
	return nil, fmt.Errorf("unknown op %q", req.Op)
}

// runLibcni runs one command through libcni; a plugin error is an answer, not a failure.
func runLibcni(ctx context.Context, req *helperRequest, command string, c container) (*helperResponse, error) {
	list, err := libcni.NetworkConfFromBytes(req.ConfList)
	if err != nil {
		return nil, fmt.Errorf("configuration list: %w", err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{req.PluginDir}, req.CacheDir, nil)
	rt := &libcni.RuntimeConf{ContainerID: c.ID, NetNS: c.NetNS, IfName: c.IfName, Args: c.Args}
	resp := &helperResponse{}
	switch command {
	case "ADD":
		var res types.Result
		if res, err = cni.AddNetworkList(ctx, list, rt); err == nil {
			var buf bytes.Buffer
			if err = res.PrintTo(&buf); err == nil {
				resp.Result = buf.Bytes()
			}
		}
	case "CHECK":
		err = cni.CheckNetworkList(ctx, list, rt)
	case "DEL":
		err = cni.DelNetworkList(ctx, list, rt)
	case "GC":
		err = cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: req.Valid})
	case "STATUS":
		err = cni.GetStatusNetworkList(ctx, list)
	default:
		return nil, fmt.Errorf("unknown CNI command %q", command)
	}
	var te *types.Error
	switch {
	case errors.As(err, &te):
		resp.Error = te
	case err != nil:
		return nil, err
	}
	return resp, nil
}

// execPlugin runs the plugin binary as a runtime would, without libcni.
func execPlugin(ctx context.Context, req *helperRequest) (*helperResponse, error) {
	cmd := exec.CommandContext(ctx, req.PluginDir+"/tabby-cni")
	cmd.Env = req.Env
	cmd.Stdin = strings.NewReader(req.Stdin)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	err := cmd.Run()
	resp := &helperResponse{Stdout: stdout.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		resp.Exit = ee.ExitCode()
	case err != nil:
		return nil, err
	}
	return resp, nil
}

// race runs the plugin for each of req.Commands on req.Container concurrently, the k-th
// k×req.Stagger after the first.
func race(ctx context.Context, req *helperRequest) (*helperResponse, error) {
	out := &helperResponse{Race: make([]*helperResponse, len(req.Commands))}
	errs := make([]error, len(req.Commands))
	start := time.Now()
	var wg sync.WaitGroup
	for k, command := range req.Commands {
		wg.Go(func() {
			time.Sleep(time.Until(start.Add(time.Duration(k) * req.Stagger)))
			one := *req
			one.Env = slices.DeleteFunc(slices.Clone(req.Env), func(e string) bool { return strings.HasPrefix(e, "CNI_COMMAND=") })
			one.Env = append(one.Env, "CNI_COMMAND="+command)
			out.Race[k], errs[k] = execPlugin(ctx, &one)
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// addCall is when an ADD of container ID started and returned (Unix nanoseconds).
type addCall struct {
	ID             string
	StartNs, EndNs int64
}

// cycles attaches each container, waits for the agent's route to its address and
// detaches it, timing each step; with Batch set it attaches them all, then detaches them
// all.
func cycles(ctx context.Context, req *helperRequest) (*helperResponse, error) {
	if req.Timings != "" {
		// libcni hands the plugin this process's environment.
		os.Setenv(timingsEnv, req.Timings)
		defer os.Unsetenv(timingsEnv)
	}
	out := &helperResponse{}
	var mu sync.Mutex // out, when ADDs run concurrently
	concurrent := req.Batch && req.Streams > 1
	add := func(c container) error {
		start := time.Now()
		r, err := runLibcni(ctx, req, "ADD", c)
		if err != nil || r.Error != nil {
			return fmt.Errorf("ADD %s: %v %v", c.ID, err, r.Error)
		}
		end := time.Now()
		mu.Lock()
		out.Add = append(out.Add, end.Sub(start))
		out.AddCalls = append(out.AddCalls, addCall{ID: c.ID, StartNs: start.UnixNano(), EndNs: end.UnixNano()})
		mu.Unlock()
		if concurrent {
			return nil
		}
		addr, err := firstAddr(r.Result)
		if err != nil {
			return err
		}
		start = time.Now()
		if err := waitRoute(ctx, addr, true); err != nil {
			return err
		}
		out.Route = append(out.Route, time.Since(start))
		return nil
	}
	del := func(c container) error {
		start := time.Now()
		if r, err := runLibcni(ctx, req, "DEL", c); err != nil || r.Error != nil {
			return fmt.Errorf("DEL %s: %v %v", c.ID, err, r.Error)
		}
		out.Del = append(out.Del, time.Since(start))
		return nil
	}
	if req.Batch {
		start := time.Now()
		if err := inStreams(max(req.Streams, 1), req.Containers, add); err != nil {
			return nil, err
		}
		out.AddWall = time.Since(start)
		for _, c := range req.Containers {
			if err := del(c); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	for _, c := range req.Containers {
		if err := add(c); err != nil {
			return nil, err
		}
		if err := del(c); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// inStreams runs f for each container in n concurrent streams; it returns the first
// error, after every stream has stopped.
func inStreams(n int, cs []container, f func(container) error) error {
	work := make(chan container)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for c := range work {
				if err := f(c); err != nil {
					errs <- err
					for range work { // drain, so the sender finishes
					}
					return
				}
			}
		})
	}
	for _, c := range cs {
		work <- c
	}
	close(work)
	wg.Wait()
	close(errs)
	return <-errs
}

func firstAddr(result json.RawMessage) (netip.Addr, error) {
	var r struct {
		IPs []struct{ Address string }
	}
	if err := json.Unmarshal(result, &r); err != nil || len(r.IPs) == 0 {
		return netip.Addr{}, fmt.Errorf("result %s: no address (%v)", result, err)
	}
	p, err := netip.ParsePrefix(r.IPs[0].Address)
	return p.Addr(), err
}

// waitRoute polls every millisecond, for 10 s at most, until the node has (or, with
// present false, has not) a felix route to addr.
func waitRoute(ctx context.Context, addr netip.Addr, present bool) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		routes, err := felixRoutes()
		if err != nil {
			return err
		}
		dst := netip.PrefixFrom(addr, addr.BitLen()).String() + " "
		if slices.ContainsFunc(routes, func(r string) bool { return strings.HasPrefix(r, dst) }) == present {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("route to %s present=%v: not within 10s; felix's routes: %v", addr, !present, routes)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// felixRoutes lists the node's routes of felix's protocol through a device (to
// workloads) as "<dst> <device>".
func felixRoutes() ([]string, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: netlink.RouteProtocol(felix.RouteProtocol)}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range routes {
		if r.Type == unix.RTN_BLACKHOLE {
			continue
		}
		dev := strconv.Itoa(r.LinkIndex)
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		out = append(out, ipNetPrefix(r.Dst).String()+" "+dev)
	}
	slices.Sort(out)
	return out, nil
}

func readNodeState(ctx context.Context, etcd string) (*nodeState, error) {
	st := &nodeState{}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, hostVethPrefix) {
			st.Links = append(st.Links, l.Attrs().Name)
		}
	}
	slices.Sort(st.Links)
	if st.Routes, err = felixRoutes(); err != nil {
		return nil, err
	}
	ds, err := datastore.Connect(ctx, datastore.Config{Endpoints: []string{etcd}})
	if err != nil {
		return nil, err
	}
	defer ds.Close()
	weps, _, err := datastore.ListAs[*api.WorkloadEndpoint](ctx, ds, "")
	if err != nil {
		return nil, err
	}
	for _, w := range weps {
		st.Endpoints = append(st.Endpoints, w.Namespace+"/"+w.Name)
	}
	ic := ipam.New(ds, nil)
	u, err := ic.Usage(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range u.Pools {
		st.InUse += p.InUse
	}
	rep, err := ic.Check(ctx, ipam.CheckOptions{})
	if err != nil {
		return nil, err
	}
	st.Handles, st.Problems = rep.Summary.Handles, rep.String()
	return st, nil
}
