package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
)

// benchPluginEnv names another build of tabby-cni for the benchmarks to run instead of
// the one built from this tree, to compare two builds on the same machine in one session
// (its phases are reported only if it writes TABBY_CNI_TIMINGS records).
const benchPluginEnv = "TABBY_CNI_BENCH_PLUGIN"

// BenchmarkAddDel attaches 100 workloads to one node through libcni, one after another,
// then detaches them: the latency of ADD and DEL (as a runtime sees it: libcni runs the
// plugin binary), how long after ADD returns the agent's route to the workload is there,
// and where an ADD's time goes (the p50 of each phase, see addPhases). Printed, not
// asserted.
func BenchmarkAddDel(b *testing.B) {
	l := newLab(b, 1)
	pluginDir := benchPluginDir(b)
	for i := range b.N {
		r, timings := benchBatch(b, l, pluginDir, fmt.Sprintf("bench%d", i), 1)
		for _, m := range []struct {
			name string
			ds   []time.Duration
		}{{"add", r.Add}, {"del", r.Del}, {"route", r.Route}} {
			s := slices.Sorted(slices.Values(m.ds))
			b.ReportMetric(float64(s[len(s)/2].Microseconds())/1000, m.name+"-p50-ms")
			b.ReportMetric(float64(s[(len(s)*99-1)/100].Microseconds())/1000, m.name+"-p99-ms")
		}
		b.Logf("100 workloads: ADD %s, DEL %s, host route present after ADD returned %s", percentiles(r.Add), percentiles(r.Del), percentiles(r.Route))
		reportPhases(b, timings, r.AddCalls)
	}
}

// BenchmarkAddConcurrent attaches 100 workloads to one node in 8 concurrent streams of
// ADDs, as a runtime starting many pods at once does, then detaches them: ADDs per second
// and the latency of one ADD under that load.
func BenchmarkAddConcurrent(b *testing.B) {
	const streams = 8
	l := newLab(b, 1)
	pluginDir := benchPluginDir(b)
	for i := range b.N {
		r, timings := benchBatch(b, l, pluginDir, fmt.Sprintf("conc%d", i), streams)
		b.ReportMetric(float64(len(r.Add))/r.AddWall.Seconds(), "add/s")
		s := slices.Sorted(slices.Values(r.Add))
		b.ReportMetric(float64(s[len(s)/2].Microseconds())/1000, "add-p50-ms")
		b.Logf("100 workloads in %d streams: %.1f ADD/s, ADD %s", streams, float64(len(r.Add))/r.AddWall.Seconds(), percentiles(r.Add))
		reportPhases(b, timings, r.AddCalls)
	}
}

// benchBatch makes 100 workload namespaces (pods <prefix>-<n>) and times, through the
// helper in node1, ADDs of all of them (in streams concurrent streams when above 1)
// and then DELs. It returns the helper's answer and the file of the plugin's timings.
func benchBatch(b *testing.B, l *lab, pluginDir, prefix string, streams int) (*helperResponse, string) {
	var cs []container
	for j := range 100 {
		cs = append(cs, l.container(fmt.Sprintf("%s-%d", prefix, j)))
	}
	timings := filepath.Join(b.TempDir(), "timings.jsonl")
	b.ResetTimer()
	r := l.helper("node1", helperRequest{Op: "cycles", ConfList: l.confList("1.1.0", nil), Containers: cs, Batch: true,
		Streams: streams, PluginDir: pluginDir, Timings: timings})
	b.StopTimer()
	return r, timings
}

// benchPluginDir is where libcni finds the tabby-cni to benchmark: labtest.BinDir, or a
// directory holding the build benchPluginEnv names.
func benchPluginDir(b *testing.B) string {
	path := os.Getenv(benchPluginEnv)
	if path == "" {
		return labtest.BinDir(b)
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		b.Fatalf("%s: %v", benchPluginEnv, err)
	}
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tabby-cni"), bin, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Logf("benchmarking the tabby-cni at %s", path)
	return dir
}

// addPhases joins the plugin's timing records of ADD with when the helper started and
// saw the end of each call: "exec" is from the call to the plugin's main (libcni,
// fork and exec, the Go runtime's and the packages' init), the plugin's own phases
// follow, and "exit" is from the end of its work to the call's return (process exit,
// libcni reading the result). Each phase's durations, in call order.
func addPhases(path string, calls []addCall) (names []string, phases map[string][]time.Duration, err error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil, nil // a plugin that records no timings
	}
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	recs := map[string]timingRecord{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r timingRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		if r.Command == "ADD" {
			recs[r.ContainerID] = r
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	phases = map[string][]time.Duration{}
	add := func(name string, d time.Duration) {
		if _, ok := phases[name]; !ok {
			names = append(names, name)
		}
		phases[name] = append(phases[name], d)
	}
	for _, c := range calls {
		r, ok := recs[c.ID]
		if !ok {
			return nil, nil, fmt.Errorf("%s: no ADD record for container %s", path, c.ID)
		}
		add("exec", time.Duration(r.MainNs-c.StartNs))
		for _, p := range r.Phases {
			add(p.Name, time.Duration(p.Us)*time.Microsecond)
		}
		add("exit", time.Duration(c.EndNs-r.EndNs))
	}
	return names, phases, nil
}

// reportPhases reports the p50 of each phase of ADD as <phase>-p50-ms and logs them.
func reportPhases(b *testing.B, timings string, calls []addCall) {
	names, phases, err := addPhases(timings, calls)
	if err != nil {
		b.Fatal(err)
	}
	if len(names) == 0 {
		b.Log("the plugin wrote no timings")
		return
	}
	var line []string
	var sum time.Duration
	for _, n := range names {
		s := slices.Sorted(slices.Values(phases[n]))
		p50 := s[len(s)/2]
		sum += p50
		b.ReportMetric(float64(p50.Microseconds())/1000, n+"-p50-ms")
		line = append(line, fmt.Sprintf("%s %s", n, p50.Round(10*time.Microsecond)))
	}
	b.Logf("ADD phases (p50 each, sum %s): %s", sum.Round(10*time.Microsecond), strings.Join(line, ", "))
}
