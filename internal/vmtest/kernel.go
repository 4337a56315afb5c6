package vmtest

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// cacheDir is where kernels, base initramfs archives and rebuilt test binaries are kept.
func cacheDir() string {
	if d := os.Getenv("TABBY_VMTEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/tabby-vmtest"
}

// lockCache serialises cache updates between test processes (go test runs packages in
// parallel); the returned function releases the lock.
func lockCache(dir string) (func(), error) {
	// An unwritable cache (a user's go test without root) makes VM tests skip.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: creating the cache (TABBY_VMTEST_CACHE): %v", errUnavailable, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%w: opening the cache lock (TABBY_VMTEST_CACHE): %v", errUnavailable, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// kernel is an unpacked Debian kernel package.
type kernel struct {
	Version string // e.g. 6.1.0-57-amd64
	Image   string // vmlinux (PVH boot) when it could be unpacked, else vmlinuz
	PVH     bool   // Image is the uncompressed ELF vmlinux
	ModDir  string // lib/modules/<Version>
}

// errUnavailable marks what makes VM tests impossible on this machine (no qemu, no
// kernel package): a skip outside CI.
var errUnavailable = errors.New("vm tests unavailable")

// getKernel returns the cached kernel, fetching and unpacking Debian's linux-image-amd64
// dependency (never installing it) when there is none. A cached kernel is used without
// asking apt (0.7 s a run): delete the cache to move to a newer one. Call with the
// cache locked.
func getKernel(cache string) (*kernel, error) {
	if k, err := newestCachedKernel(cache); err == nil {
		return k, nil
	}
	pkg, err := kernelPackage()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cache, pkg)
	if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
		return loadKernel(dir)
	}
	tmp, err := os.MkdirTemp(cache, ".fetch-")
	if err != nil {
		return nil, fmt.Errorf("creating download directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	// apt's _apt user downloads into the directory; a 0700 one makes it warn and fall back.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if out, err := runIn(tmp, "apt-get", "download", pkg); err != nil {
		return nil, fmt.Errorf("%w: apt-get download %s: %v: %s", errUnavailable, pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("%w: apt-get download %s left %d .deb files", errUnavailable, pkg, len(debs))
	}
	root := filepath.Join(tmp, "root")
	if out, err := runIn(tmp, "dpkg-deb", "-x", debs[0], root); err != nil {
		return nil, fmt.Errorf("unpacking %s: %v: %s", debs[0], err, out)
	}
	if err := os.Remove(debs[0]); err != nil {
		return nil, err
	}
	vmlinuz, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(vmlinuz) != 1 {
		return nil, fmt.Errorf("%s has %d boot/vmlinuz-* files", pkg, len(vmlinuz))
	}
	// Under software emulation the kernel's own xz decompression takes ~4 s of every
	// boot; unpacking vmlinux once allows a PVH boot without it.
	if err := unpackVmlinux(vmlinuz[0], filepath.Join(root, "vmlinux")); err != nil {
		slog.Warn("vmtest: booting the compressed kernel, slower under emulation", "err", err)
	}
	if err := os.WriteFile(filepath.Join(root, "ready"), []byte(pkg+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(root, dir); err != nil {
		return nil, fmt.Errorf("moving the kernel into the cache: %w", err)
	}
	return loadKernel(dir)
}

// kernelPackage names the versioned package linux-image-amd64 depends on.
func kernelPackage() (string, error) {
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return "", fmt.Errorf("%w: apt-cache depends linux-image-amd64: %v", errUnavailable, err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%w: linux-image-amd64 depends on no linux-image package", errUnavailable)
}

func newestCachedKernel(cache string) (*kernel, error) {
	readies, _ := filepath.Glob(filepath.Join(cache, "linux-image-*", "ready"))
	if len(readies) == 0 {
		return nil, errors.New("no cached kernel")
	}
	sort.Strings(readies)
	return loadKernel(filepath.Dir(readies[len(readies)-1]))
}

func loadKernel(dir string) (*kernel, error) {
	mods, _ := filepath.Glob(filepath.Join(dir, "lib", "modules", "*"))
	if len(mods) != 1 {
		return nil, fmt.Errorf("%s: %d module directories", dir, len(mods))
	}
	k := &kernel{Version: filepath.Base(mods[0]), ModDir: mods[0]}
	if _, err := os.Stat(filepath.Join(dir, "vmlinux")); err == nil {
		k.Image, k.PVH = filepath.Join(dir, "vmlinux"), true
	} else {
		k.Image = filepath.Join(dir, "boot", "vmlinuz-"+k.Version)
	}
	return k, nil
}

// unpackVmlinux finds the xz stream inside a bzImage and decompresses it with xz.
func unpackVmlinux(vmlinuz, dst string) error {
	img, err := os.ReadFile(vmlinuz)
	if err != nil {
		return err
	}
	off := bytes.Index(img, []byte("\xfd7zXZ\x00"))
	if off < 0 {
		return errors.New("no xz stream in " + vmlinuz)
	}
	cmd := exec.Command("xz", "-dc")
	cmd.Stdin = bytes.NewReader(img[off:])
	// The stream is followed by padding, which xz reports as an error after writing
	// everything: judge by the output, an ELF file.
	out, _ := cmd.Output()
	if !bytes.HasPrefix(out, []byte("\x7fELF")) {
		return errors.New("xz -dc did not give an ELF vmlinux (is xz-utils installed?)")
	}
	return os.WriteFile(dst, out, 0o644)
}

func runIn(dir, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	return cmd.CombinedOutput()
}

// modules resolves names (as modprobe takes them, '-' or '_') to .ko paths relative to
// ModDir, dependencies first, skipping modules built into the kernel.
func (k *kernel) modules(names []string) ([]string, error) {
	paths := map[string]string{}
	err := filepath.WalkDir(filepath.Join(k.ModDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// Newer Debian kernels ship modules xz-compressed.
		if n, ok := strings.CutSuffix(strings.TrimSuffix(d.Name(), ".xz"), ".ko"); ok && !d.IsDir() {
			rel, _ := filepath.Rel(k.ModDir, p)
			paths[modName(n)] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("indexing kernel modules: %w", err)
	}
	builtin := map[string]bool{}
	if f, err := os.Open(filepath.Join(k.ModDir, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			builtin[modName(strings.TrimSuffix(filepath.Base(sc.Text()), ".ko"))] = true
		}
		f.Close()
	}
	deps := func(name string) ([]string, error) {
		return moduleDeps(filepath.Join(k.ModDir, paths[name]))
	}
	order, err := loadOrder(names, func(n string) bool { _, ok := paths[n]; return ok }, builtin, deps)
	if err != nil {
		return nil, err
	}
	rel := make([]string, len(order))
	for i, n := range order {
		rel[i] = paths[n]
	}
	return rel, nil
}

func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// softdepAliases resolves the aliases that "softdep=pre:" entries name: without modprobe
// in the guest nothing else would load them (nf_tables fails with "Could not fetch rule
// set generation id" without crc32c).
var softdepAliases = map[string]string{"crc32c": "crc32c_generic"}

// loadOrder returns names and their dependencies in an order insmod accepts.
func loadOrder(names []string, exists func(string) bool, builtin map[string]bool, deps func(string) ([]string, error)) ([]string, error) {
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(n string, soft bool) error
	visit = func(n string, soft bool) error {
		n = modName(n)
		if a, ok := softdepAliases[n]; ok && soft {
			n = a
		}
		switch {
		case builtin[n] || state[n] == 2:
			return nil
		case state[n] == 1:
			return fmt.Errorf("module dependency cycle through %s", n)
		case !exists(n):
			if soft {
				return nil
			}
			return fmt.Errorf("kernel module %s not found", n)
		}
		state[n] = 1
		ds, err := deps(n)
		if err != nil {
			return err
		}
		for _, d := range ds {
			soft := strings.HasPrefix(d, "~")
			if err := visit(strings.TrimPrefix(d, "~"), soft); err != nil {
				return fmt.Errorf("%s: %w", n, err)
			}
		}
		state[n] = 2
		order = append(order, n)
		return nil
	}
	for _, n := range names {
		if err := visit(n, false); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// readModule returns a module's ELF image, decompressing a .ko.xz.
func readModule(ko string) ([]byte, error) {
	if !strings.HasSuffix(ko, ".xz") {
		return os.ReadFile(ko)
	}
	out, err := exec.Command("xz", "-dc", ko).Output()
	if err != nil {
		return nil, fmt.Errorf("xz -dc %s: %w", ko, err)
	}
	return out, nil
}

// guestModulePath is where a module is in the guest: decompressed, so init_module takes it.
func guestModulePath(version, rel string) string {
	return filepath.Join("/lib/modules", version, strings.TrimSuffix(rel, ".xz"))
}

// moduleDeps reads a .ko's .modinfo: its "depends=" modules, and its "softdep=pre:"
// modules prefixed with "~" (loaded first if they exist).
func moduleDeps(ko string) ([]string, error) {
	img, err := readModule(ko)
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return nil, fmt.Errorf("reading module %s: %w", ko, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("module %s has no .modinfo", ko)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("reading %s .modinfo: %w", ko, err)
	}
	var deps []string
	for _, kv := range bytes.Split(data, []byte{0}) {
		s := string(kv)
		if v, ok := strings.CutPrefix(s, "softdep="); ok {
			pre := false
			for _, w := range strings.Fields(v) {
				switch w {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if pre {
						deps = append(deps, "~"+w)
					}
				}
			}
		}
		if v, ok := strings.CutPrefix(s, "depends="); ok && v != "" {
			deps = append(deps, strings.Split(v, ",")...)
		}
	}
	return deps, nil
}
