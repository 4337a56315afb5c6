// Package vmtest runs a Go test inside a qemu VM booted with Debian's stock kernel, for
// kernel features this host lacks (ipip, dummy, gre).
//
// A test calls Run on the host; Run boots a VM whose init is the test binary itself and
// runs the same test there, as root, with InVM reporting true:
//
//	func TestIPIPTunnel(t *testing.T) {
//		if vmtest.InVM() {
//			// the real test body
//			return
//		}
//		vmtest.Run(t, vmtest.Options{Modules: []string{"ipip", "veth"}})
//	}
//
// The guest has the host's ip, ping, nft, iptables (nft and legacy), ipset and conntrack
// with their shared libraries, the named kernel modules (loaded, with their
// dependencies, before the test starts; nothing is loaded on demand), /proc, /sys, /dev,
// and tmpfs on /run and /tmp. It has no network interface but lo.
//
// The kernel (Debian's linux-image-amd64, fetched with apt-get download and unpacked,
// never installed) and the base initramfs are cached in /var/cache/tabby-vmtest
// (TABBY_VMTEST_CACHE). Without qemu or the kernel package the test is skipped, or
// fails when the environment variable CI is set.
package vmtest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/testenv"
)

// Options describe the VM a test runs in.
type Options struct {
	// Modules are kernel modules to load before the test, e.g. "ipip", "veth".
	Modules []string
	// Binaries are extra host programs (names on PATH or paths) copied to the same
	// path in the guest, with their shared libraries.
	Binaries []string
	// Files maps guest paths to host files copied there (mode kept), e.g. a
	// tabby-node built by BuildStatic.
	Files map[string]string
	// Package is the directory of the test's package, built into the guest's test
	// binary when the running one is not static. Default: the directory of Run's caller.
	Package string
	// Timeout bounds the whole VM run; default 120s or TABBY_VMTEST_TIMEOUT.
	Timeout time.Duration
	// MemoryMB is the guest's memory; default 512.
	MemoryMB int
}

// InVM reports whether the test binary is running inside a vmtest VM.
func InVM() bool { return os.Getenv(envInVM) == "1" }

// Verdict is the outcome of a test run inside the VM.
type Verdict int

const (
	// NoResult: the guest gave no exit status (kernel panic, timeout, qemu failure).
	NoResult Verdict = iota
	Pass
	Fail
	Skip
)

func (v Verdict) String() string {
	return [...]string{"no result", "PASS", "FAIL", "SKIP"}[v]
}

// Result is what a VM run produced.
type Result struct {
	Verdict Verdict
	Exit    int    // the test binary's exit status; -1 without one
	Reason  string // why: the skip message, a failure summary, the timeout
	Console []string
}

// Run runs the calling test (t.Name()) inside a VM and reports its outcome as t's: it
// fails, skips or passes as the guest's test did, and fails with the end of the console
// when the guest gave no result.
func Run(t testing.TB, opts Options) {
	t.Helper()
	if opts.Package == "" {
		_, file, _, ok := runtime.Caller(1)
		if !ok {
			t.Fatal("vmtest: cannot find the calling test's package; set Options.Package")
		}
		opts.Package = filepath.Dir(file)
		if !filepath.IsAbs(file) { // built with -trimpath: go test runs in the package
			opts.Package, _ = os.Getwd()
		}
	}
	res, err := run(t, opts, t.Name())
	if err != nil {
		if errors.Is(err, errUnavailable) {
			testenv.Missing(t, fmt.Sprintf("vmtest: %v", err))
		}
		t.Fatalf("vmtest: %v", err)
	}
	switch res.Verdict {
	case Pass:
	case Skip:
		t.Skipf("skipped in the VM: %s", res.Reason)
	case Fail:
		t.Fatalf("failed in the VM (exit status %d): %s", res.Exit, res.Reason)
	default:
		t.Fatalf("no result from the VM: %s; console ends:\n%s", res.Reason, tail(res.Console, 40))
	}
}

// run boots the VM for test name and returns its verdict; err is for what kept the VM
// from running (errUnavailable when qemu or the kernel is missing).
func run(t testing.TB, opts Options, name string) (*Result, error) {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, fmt.Errorf("%w: qemu-system-x86_64 not found (Debian package qemu-system-x86)", errUnavailable)
	}
	start := time.Now()
	cache := cacheDir()
	unlock, err := lockCache(cache)
	if err != nil {
		return nil, err
	}
	k, base, conf, err := prepare(cache, opts, name)
	unlock()
	if err != nil {
		return nil, err
	}
	bin, err := testBinary(cache, opts.Package)
	if err != nil {
		return nil, err
	}
	initrd := filepath.Join(t.TempDir(), "initrd.cpio")
	if err := writeInitrd(initrd, base, bin, conf, opts.Files); err != nil {
		return nil, fmt.Errorf("writing the initramfs: %w", err)
	}
	t.Logf("vmtest: kernel %s, initramfs ready in %v", k.Version, time.Since(start).Round(time.Millisecond))
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 120 * time.Second
		if s := os.Getenv("TABBY_VMTEST_TIMEOUT"); s != "" {
			if timeout, err = time.ParseDuration(s); err != nil {
				return nil, fmt.Errorf("TABBY_VMTEST_TIMEOUT: %w", err)
			}
		}
	}
	mem := opts.MemoryMB
	if mem == 0 {
		mem = 512
	}
	return boot(t, qemu, k, initrd, mem, timeout, name)
}

// prepare gets the kernel and the base initramfs; call with the cache locked.
func prepare(cache string, opts Options, name string) (*kernel, string, *guestConf, error) {
	k, err := getKernel(cache)
	if err != nil {
		return nil, "", nil, err
	}
	spec, err := planBaseOnce(k, opts.Modules, opts.Binaries)
	if err != nil {
		return nil, "", nil, err
	}
	base, err := baseArchive(cache, k, spec)
	if err != nil {
		return nil, "", nil, err
	}
	conf := &guestConf{Args: []string{"-test.run", runPattern(name), "-test.v", "-test.count=1"}}
	for _, m := range spec.Modules {
		conf.Modules = append(conf.Modules, guestModulePath(k.Version, m))
	}
	return k, base, conf, nil
}

var (
	planMu sync.Mutex
	plans  = map[string]*baseSpec{}
)

// planBaseOnce memoises planBase within the process: its ldd run and module index cost
// about a second, and the host's tools do not change while tests run.
func planBaseOnce(k *kernel, modules, extra []string) (*baseSpec, error) {
	planMu.Lock()
	defer planMu.Unlock()
	key := fmt.Sprintf("%s %q %q", k.Version, modules, extra)
	if s, ok := plans[key]; ok {
		return s, nil
	}
	s, err := planBase(k, modules, extra)
	if err == nil {
		plans[key] = s
	}
	return s, err
}

// runPattern matches exactly the test (or subtest) name.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// boot runs qemu, streams the console into t.Log and judges the result.
func boot(t testing.TB, qemu string, k *kernel, initrd string, memMB int, timeout time.Duration, name string) (*Result, error) {
	t.Helper()
	args := append(accelArgs(), "-m", strconv.Itoa(memMB), "-nographic", "-nic", "none", "-no-reboot",
		"-kernel", k.Image, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet rdinit=/init")
	// qboot with the uncompressed kernel (PVH) boots in 2.9 s instead of 7.7 s under TCG.
	if qb := "/usr/share/qemu/qboot.rom"; k.PVH {
		if _, err := os.Stat(qb); err == nil {
			args = append(args, "-bios", qb)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting qemu: %w", err)
	}
	// The pipe closes when qemu exits, powered off or killed at the timeout.
	console := readConsole(out, func(l string) { t.Log("vm: " + l) })
	werr := cmd.Wait()
	res := judge(console, name)
	elapsed := time.Since(start).Round(time.Millisecond)
	t.Logf("vmtest: %s in the VM after %v (qemu: %v)", res.Verdict, elapsed, werr)
	if res.Verdict == NoResult {
		res.Reason = fmt.Sprintf("qemu ended after %v: %v", elapsed, werr)
		if ctx.Err() != nil {
			res.Reason = fmt.Sprintf("timed out after %v", timeout)
		}
	}
	return res, nil
}

// readConsole collects the serial console's lines, passing each to logf as it arrives.
func readConsole(r io.Reader, logf func(string)) []string {
	var lines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		lines = append(lines, l)
		logf(l)
	}
	return lines
}

// accelArgs picks KVM only where a real KVM module backs /dev/kvm: a paravirtual one
// (kvm_pvm, as on the build machines) cannot run a stock kernel.
func accelArgs() []string {
	switch a := os.Getenv("TABBY_VMTEST_ACCEL"); {
	case a == "kvm":
		return []string{"-accel", "kvm", "-cpu", "host"}
	case a == "tcg":
	default:
		_, intel := os.Stat("/sys/module/kvm_intel")
		_, amd := os.Stat("/sys/module/kvm_amd")
		if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil && (intel == nil || amd == nil) {
			f.Close()
			return []string{"-accel", "kvm", "-cpu", "host"}
		}
	}
	return []string{"-accel", "tcg,thread=multi", "-cpu", "max"}
}

// judge reads the verdict of test name from the console: the exit status the guest's
// init printed and go test's "--- PASS/FAIL/SKIP: name" line.
func judge(console []string, name string) *Result {
	res := &Result{Verdict: NoResult, Exit: -1, Console: console}
	status := -1
	for _, l := range console {
		if s, ok := strings.CutPrefix(l, exitMarker); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
				status = n
			}
		}
	}
	if status < 0 {
		return res
	}
	res.Exit = status
	verdict, messages := testOutcome(console, name)
	if len(messages) > 3 {
		messages = messages[len(messages)-3:]
	}
	res.Reason = strings.Join(messages, "; ")
	switch {
	case status == 0 && verdict == "PASS":
		res.Verdict = Pass
	case status == 0 && verdict == "SKIP":
		res.Verdict = Skip
	case status == initFailed && verdict == "":
		res.Verdict = Fail
		res.Reason = "the guest could not be prepared: " + grepPrefix(console, "vmtest: ")
	case status == 0:
		res.Verdict = Fail
		res.Reason = "test " + name + " did not run in the VM"
	default:
		res.Verdict = Fail
		if res.Reason == "" {
			res.Reason = grepPrefix(console, "panic: ")
		}
		if res.Reason == "" {
			res.Reason = "see the VM's output above"
		}
	}
	return res
}

var goLogLine = regexp.MustCompile(`^\S+\.go:\d+: `)

// testOutcome finds go test's result line for test name ("--- PASS: name (0.01s)") and
// the messages the test logged ("file_test.go:12: ..."), which -test.v prints between
// "=== RUN" and the result line, and plain output after it.
func testOutcome(console []string, name string) (verdict string, messages []string) {
	for i, l := range console {
		tl := strings.TrimSpace(l)
		if tl == "=== RUN   "+name {
			verdict, messages = "", nil
			continue
		}
		if goLogLine.MatchString(tl) {
			messages = append(messages, tl)
			continue
		}
		for _, v := range []string{"PASS", "FAIL", "SKIP"} {
			if !strings.HasPrefix(tl, "--- "+v+": "+name+" (") {
				continue
			}
			verdict = v
			indent := len(l) - len(strings.TrimLeft(l, " ")) + 4
			for _, m := range console[i+1:] {
				if len(m)-len(strings.TrimLeft(m, " ")) < indent || strings.TrimSpace(m) == "" {
					break
				}
				messages = append(messages, strings.TrimSpace(m))
			}
			return verdict, messages
		}
	}
	return "", nil
}

func grepPrefix(lines []string, prefix string) string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}

func tail(lines []string, n int) string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var (
	buildMu sync.Mutex
	built   = map[string]string{} // package directory → static test binary
)

// testBinary returns a statically linked test binary of the package in dir: the running
// one when it is static, else one built with CGO_ENABLED=0 (once per process).
func testBinary(cache, dir string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	if static, err := isStatic(self); err != nil {
		return "", err
	} else if static && sameDir(dir) {
		return self, nil
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if b, ok := built[dir]; ok {
		return b, nil
	}
	// One file per package, replaced by each process's build: nothing piles up.
	bindir := filepath.Join(cache, "bin")
	if err := os.MkdirAll(bindir, 0o755); err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(dir))
	dst := filepath.Join(bindir, fmt.Sprintf("%s-%x.test", filepath.Base(dir), sum[:6]))
	f, err := os.CreateTemp(bindir, ".build-")
	if err != nil {
		return "", err
	}
	f.Close()
	defer os.Remove(f.Name())
	if out, err := goCmd(dir, "test", "-c", "-o", f.Name(), "."); err != nil {
		return "", fmt.Errorf("building a static test binary of %s: %v: %s", dir, err, out)
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return "", err
	}
	built[dir] = dst
	return dst, nil
}

// sameDir reports whether the running test binary is the one of the package in dir;
// go test runs a package's test binary in the package's directory.
func sameDir(dir string) bool {
	wd, err := os.Getwd()
	return err == nil && filepath.Clean(wd) == filepath.Clean(dir)
}

// BuildStatic builds the Go package pkg (a path go build understands, e.g.
// "github.com/tabby-net/tabby/cmd/tabby-node") with CGO_ENABLED=0, for use in the
// guest through Options.Files, and returns the binary's path.
func BuildStatic(t testing.TB, pkg string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(pkg))
	if out, err := goCmd("", "build", "-o", dst, pkg); err != nil {
		t.Fatalf("vmtest: building %s: %v: %s", pkg, err, out)
	}
	return dst
}

func goCmd(dir string, args ...string) ([]byte, error) {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if p, err := exec.LookPath("go"); err == nil {
		gobin = p
	}
	cmd := exec.Command(gobin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	return cmd.CombinedOutput()
}

// isStatic reports whether the ELF file p needs no dynamic loader.
func isStatic(p string) (bool, error) {
	f, err := elf.Open(p)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}
