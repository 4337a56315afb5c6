package vmtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/testenv"
)

// TestIPIPTunnel joins two network namespaces by veth, tunnels between them with ipip
// (a module this host's kernel lacks) and pings across.
func TestIPIPTunnel(t *testing.T) {
	const marker = "/etc/vmtest-marker"
	if InVM() {
		if b, err := os.ReadFile(marker); err != nil || string(b) != "copied" {
			t.Errorf("%s (from Options.Files) reads %q, %v", marker, b, err)
		}
		for _, m := range []string{"ipip", "tunnel4", "ip_tunnel", "veth"} {
			if _, err := os.Stat("/sys/module/" + m); err != nil {
				t.Errorf("module %s not loaded: %v", m, err)
			}
		}
		sh := func(args ...string) string {
			t.Helper()
			out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return string(out)
		}
		sh("ip", "netns", "add", "a")
		sh("ip", "netns", "add", "b")
		sh("ip", "link", "add", "va", "netns", "a", "type", "veth", "peer", "name", "vb", "netns", "b")
		sh("ip", "-n", "a", "addr", "add", "10.0.0.1/24", "dev", "va")
		sh("ip", "-n", "b", "addr", "add", "10.0.0.2/24", "dev", "vb")
		sh("ip", "-n", "a", "link", "set", "va", "up")
		sh("ip", "-n", "b", "link", "set", "vb", "up")
		sh("ip", "-n", "a", "link", "add", "ipip0", "type", "ipip", "local", "10.0.0.1", "remote", "10.0.0.2")
		sh("ip", "-n", "b", "link", "add", "ipip0", "type", "ipip", "local", "10.0.0.2", "remote", "10.0.0.1")
		sh("ip", "-n", "a", "addr", "add", "192.168.100.1/30", "dev", "ipip0")
		sh("ip", "-n", "b", "addr", "add", "192.168.100.2/30", "dev", "ipip0")
		sh("ip", "-n", "a", "link", "set", "ipip0", "up")
		sh("ip", "-n", "b", "link", "set", "ipip0", "up")
		t.Log(sh("ip", "netns", "exec", "a", "ping", "-c3", "-i0.2", "-W2", "192.168.100.2"))
		var links []struct {
			Stats64 struct{ RX struct{ Packets int } } `json:"stats64"`
		}
		if err := json.Unmarshal([]byte(sh("ip", "-n", "b", "-j", "-s", "link", "show", "ipip0")), &links); err != nil || len(links) != 1 {
			t.Fatalf("ip -j -s link show: %v, %d links", err, len(links))
		}
		if n := links[0].Stats64.RX.Packets; n < 3 {
			t.Fatalf("ipip0 in b received %d packets, want at least 3", n)
		}
		return
	}
	f := filepath.Join(t.TempDir(), "marker")
	if err := os.WriteFile(f, []byte("copied"), 0o644); err != nil {
		t.Fatal(err)
	}
	Run(t, Options{Modules: []string{"ipip", "veth"}, Files: map[string]string{marker: f}})
}

// TestIptablesInVM drives iptables-nft, iptables-legacy and nft in the guest: the
// modules (nf_tables needs crc32c_generic, a soft dependency) and the xtables links.
func TestIptablesInVM(t *testing.T) {
	if InVM() {
		for _, args := range [][]string{
			{"iptables", "-A", "INPUT", "-p", "tcp", "--dport", "80", "-j", "DROP"},
			{"iptables-legacy", "-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "ACCEPT"},
			{"nft", "add", "table", "inet", "tby"},
		} {
			if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		for _, c := range []struct{ cmd, want string }{
			{"iptables-save", "-A INPUT -p tcp -m tcp --dport 80 -j DROP"},
			{"iptables-legacy-save", "-A INPUT -p udp -m udp --dport 53 -j ACCEPT"},
		} {
			out, err := exec.Command(c.cmd).CombinedOutput()
			if err != nil || !strings.Contains(string(out), c.want) {
				t.Errorf("%s: %v, want %q in:\n%s", c.cmd, err, c.want, out)
			}
		}
		if out, err := exec.Command("nft", "list", "tables").CombinedOutput(); err != nil || !strings.Contains(string(out), "table inet tby") {
			t.Errorf("nft list tables: %v\n%s", err, out)
		}
		return
	}
	Run(t, Options{Modules: []string{"nf_tables", "nft_compat", "xt_tcpudp", "iptable_filter"}})
}

// The helpers below run only inside the VM, started by the tests of Run's verdicts.

func TestHelperFails(t *testing.T) {
	if !InVM() {
		t.Skip("runs in the VM for TestRunReportsFailure")
	}
	t.Fatal("failing on purpose")
}

func TestHelperSkips(t *testing.T) {
	if !InVM() {
		t.Skip("runs in the VM for TestRunReportsSkip")
	}
	t.Skip("skipping on purpose")
}

func TestHelperHangs(t *testing.T) {
	if !InVM() {
		t.Skip("runs in the VM for TestRunTimeout")
	}
	t.Log("hanging on purpose")
	// Sleeping is the point: a blocked select{} would be caught as a deadlock.
	time.Sleep(time.Hour)
}

// runHelper boots the VM for a helper test, skipping where VMs cannot run.
func runHelper(t *testing.T, opts Options, name string) *Result {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	opts.Package = wd
	res, err := run(t, opts, name)
	if errors.Is(err, errUnavailable) {
		testenv.Missing(t, fmt.Sprintf("vmtest: %v", err))
	}
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestRunReportsFailure(t *testing.T) {
	res := runHelper(t, Options{}, "TestHelperFails")
	if res.Verdict != Fail || res.Exit != 1 || !strings.Contains(res.Reason, "failing on purpose") {
		t.Fatalf("got %v, exit %d, reason %q; want FAIL, exit 1, the test's message", res.Verdict, res.Exit, res.Reason)
	}
}

func TestRunReportsSkip(t *testing.T) {
	res := runHelper(t, Options{}, "TestHelperSkips")
	if res.Verdict != Skip || !strings.Contains(res.Reason, "skipping on purpose") {
		t.Fatalf("got %v, reason %q; want SKIP with the test's message", res.Verdict, res.Reason)
	}
}

func TestRunTimeout(t *testing.T) {
	res := runHelper(t, Options{Timeout: 6 * time.Second}, "TestHelperHangs")
	if res.Verdict != NoResult || !strings.Contains(res.Reason, "timed out") {
		t.Fatalf("got %v, reason %q; want no result after a timeout", res.Verdict, res.Reason)
	}
}

func TestJudge(t *testing.T) {
	lines := func(s string) []string { return strings.Split(s, "\n") }
	for _, tc := range []struct {
		name, console string
		verdict       Verdict
		exit          int
		reason        string
	}{
		{"pass", "=== RUN   TestX\n--- PASS: TestX (0.01s)\nPASS\n\nVMTEST-EXIT 0", Pass, 0, ""},
		{"fail", "=== RUN   TestX\n    x_test.go:8: one\n        more\n    x_test.go:9: boom\n--- FAIL: TestX (0.01s)\nFAIL\nVMTEST-EXIT 1", Fail, 1, "x_test.go:8: one; x_test.go:9: boom"},
		{"fail without -v", "--- FAIL: TestX (0.01s)\n    x_test.go:9: boom\nFAIL\nVMTEST-EXIT 1", Fail, 1, "x_test.go:9: boom"},
		{"skip", "=== RUN   TestX\n    x_test.go:3: not here\n--- SKIP: TestX (0.00s)\nPASS\nVMTEST-EXIT 0", Skip, 0, "x_test.go:3: not here"},
		{"skip without -v", "--- SKIP: TestX (0.00s)\n    x_test.go:3: not here\n    x_test.go:4: really\nPASS\nVMTEST-EXIT 0", Skip, 0, "x_test.go:3: not here; x_test.go:4: really"},
		{"panic", "=== RUN   TestX\npanic: oops\ngoroutine 1\nVMTEST-EXIT 2", Fail, 2, "panic: oops"},
		{"exit 3", "=== RUN   TestX\nVMTEST-EXIT 3", Fail, 3, "see the VM's output above"},
		{"no test ran", "testing: warning: no tests to run\nPASS\nVMTEST-EXIT 0", Fail, 0, "test TestX did not run in the VM"},
		{"other test passed", "--- PASS: TestXY (0.00s)\nVMTEST-EXIT 0", Fail, 0, "test TestX did not run in the VM"},
		{"init failed", "vmtest: guest init: loading module /x.ko: exec format error\n\nVMTEST-EXIT 125", Fail, 125, "the guest could not be prepared: vmtest: guest init: loading module /x.ko: exec format error"},
		{"kernel panic", "Kernel panic - not syncing: Attempted to kill init!", NoResult, -1, ""},
		{"empty", "", NoResult, -1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := judge(lines(tc.console), "TestX")
			if r.Verdict != tc.verdict || r.Exit != tc.exit || r.Reason != tc.reason {
				t.Errorf("got %v, exit %d, reason %q; want %v, %d, %q", r.Verdict, r.Exit, r.Reason, tc.verdict, tc.exit, tc.reason)
			}
		})
	}
}

func TestJudgeSubtest(t *testing.T) {
	r := judge(strings.Split("--- FAIL: TestX (0.1s)\n    --- PASS: TestX/a (0.0s)\n    --- FAIL: TestX/b_c (0.0s)\n        x_test.go:5: bad\nVMTEST-EXIT 1", "\n"), "TestX/b_c")
	if r.Verdict != Fail || r.Reason != "x_test.go:5: bad" {
		t.Fatalf("got %v %q", r.Verdict, r.Reason)
	}
}

func TestRunPattern(t *testing.T) {
	if got, want := runPattern("TestA/b.c"), `^TestA$/^b\.c$`; got != want {
		t.Fatalf("runPattern = %q, want %q", got, want)
	}
}

func TestLoadOrder(t *testing.T) {
	deps := map[string][]string{
		"ipip":           {"tunnel4", "ip_tunnel"},
		"tunnel4":        nil,
		"ip_tunnel":      nil,
		"nf_tables":      {"nfnetlink", "libcrc32c"},
		"nfnetlink":      nil,
		"libcrc32c":      {"~crc32c"},
		"crc32c_generic": nil,
		"loop_a":         {"loop_b"},
		"loop_b":         {"loop_a"},
	}
	exists := func(n string) bool { _, ok := deps[n]; return ok }
	get := func(n string) ([]string, error) { return deps[n], nil }
	got, err := loadOrder([]string{"ipip", "nf-tables", "veth"}, exists, map[string]bool{"veth": true}, get)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"tunnel4", "ip_tunnel", "ipip", "nfnetlink", "crc32c_generic", "libcrc32c", "nf_tables"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	if _, err := loadOrder([]string{"nosuch"}, exists, nil, get); err == nil || !strings.Contains(err.Error(), "nosuch not found") {
		t.Fatalf("unknown module: err %v", err)
	}
	if _, err := loadOrder([]string{"loop_a"}, exists, nil, get); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("cycle: err %v", err)
	}
}

// TestCPIO reads an archive back with cpio(1) when the host has it, else checks the
// layout by hand.
func TestCPIO(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIO(&buf)
	c.File("/a/b/file", 0o755, []byte("hello"))
	c.Symlink("/a/link", "b/file")
	c.CharDev("/dev/console", 0o600, 5, 1)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Fatalf("archive length %d is not a multiple of 4", buf.Len())
	}
	names := parseNewc(t, buf.Bytes())
	want := []string{"a 040755", "a/b 040755", "a/b/file 100755 hello", "a/link 120777 b/file", "dev 040755", "dev/console 020600", "TRAILER!!! 000000"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("entries %q, want %q", names, want)
	}
	if _, err := exec.LookPath("cpio"); err == nil {
		dir := t.TempDir()
		cmd := exec.Command("cpio", "-i", "-d", "--no-absolute-filenames", "-u", "--quiet", "--nonmatching", "dev/*")
		cmd.Dir, cmd.Stdin = dir, bytes.NewReader(buf.Bytes())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cpio -i: %v: %s", err, out)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "a", "link")); err != nil || string(b) != "hello" {
			t.Fatalf("a/link reads %q, %v", b, err)
		}
	}
}

// parseNewc lists "name mode [data]" of each entry of a newc archive.
func parseNewc(t *testing.T, b []byte) []string {
	var out []string
	hex := func(s []byte) int {
		n, err := strconv.ParseUint(string(s), 16, 32)
		if err != nil {
			t.Fatalf("bad header field %q", s)
		}
		return int(n)
	}
	align := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; off < len(b); {
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic at %d: %q", off, h[:6])
		}
		mode, size, nameLen := hex(h[14:22]), hex(h[54:62]), hex(h[94:102])
		name := string(b[off+110 : off+110+nameLen-1])
		data := off + align(110+nameLen)
		e := fmt.Sprintf("%s %06o", name, mode)
		if size > 0 {
			e += " " + string(b[data:data+size])
		}
		out = append(out, e)
		off = data + align(size)
		if name == "TRAILER!!!" {
			break
		}
	}
	return out
}

// TestKernelModules resolves module dependencies from the cached Debian kernel's
// .modinfo sections (skipped before the first VM test fetched it).
func TestKernelModules(t *testing.T) {
	k, err := newestCachedKernel(cacheDir())
	if err != nil {
		t.Skipf("no cached kernel: %v", err)
	}
	mods, err := k.modules([]string{"ipip", "nf_tables"})
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		pos[strings.TrimSuffix(strings.TrimSuffix(filepath.Base(m), ".xz"), ".ko")] = i + 1
	}
	for _, before := range [][2]string{{"tunnel4", "ipip"}, {"ip_tunnel", "ipip"}, {"nfnetlink", "nf_tables"}, {"crc32c_generic", "libcrc32c"}, {"libcrc32c", "nf_tables"}} {
		if pos[before[0]] == 0 || pos[before[1]] == 0 || pos[before[0]] > pos[before[1]] {
			t.Errorf("want %s loaded before %s; order %v", before[0], before[1], mods)
		}
	}
	if _, err := k.modules([]string{"no_such_module"}); err == nil {
		t.Error("an unknown module resolved")
	}
}
