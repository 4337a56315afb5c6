package vmtest

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// defaultTools are host programs every guest gets (with their shared libraries) when the
// host has them: the tools tabby and its tests drive. Busybox's versions will not do
// (its ip has no "ip netns").
var defaultTools = []string{"ip", "ping", "nft", "xtables-nft-multi", "xtables-legacy-multi", "ipset", "conntrack"}

// xtablesNames are the names xtables-*-multi dispatch on.
var xtablesNames = []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"}

// hostFile is one file copied from the host into the guest.
type hostFile struct {
	Guest string // path in the guest
	Host  string // the file read (symlinks resolved)
	Size  int64
	MTime int64
}

// baseSpec lists the inputs of a base initramfs: host files, links and modules.
type baseSpec struct {
	Kernel   string
	Modules  []string // paths relative to the kernel's module directory, load order
	Files    []hostFile
	Symlinks [][2]string // guest path, target
}

// baseFormat changes whenever the base archive's layout does, invalidating the cache.
const baseFormat = "tabby-vmtest-base-1"

func (s *baseSpec) key() string {
	b, _ := json.Marshal(s)
	h := sha256.Sum256(append([]byte(baseFormat), b...))
	return hex.EncodeToString(h[:12])
}

// planBase resolves the tools (defaults plus extra, which must exist) and modules.
func planBase(k *kernel, modules, extra []string) (*baseSpec, error) {
	mods, err := k.modules(modules)
	if err != nil {
		return nil, err
	}
	s := &baseSpec{Kernel: k.Version, Modules: mods}
	seen := map[string]bool{}
	add := func(guest, host string) error {
		if seen[guest] {
			return nil
		}
		real, err := filepath.EvalSymlinks(host)
		if err != nil {
			return err
		}
		fi, err := os.Stat(real)
		if err != nil {
			return err
		}
		seen[guest] = true
		s.Files = append(s.Files, hostFile{Guest: guest, Host: real, Size: fi.Size(), MTime: fi.ModTime().UnixNano()})
		return nil
	}
	var progs []string // added with their shared libraries
	for _, name := range defaultTools {
		p, err := lookTool(name)
		if err != nil {
			continue // optional: tests that need it say so through Options.Binaries
		}
		progs = append(progs, p)
		if m, ok := strings.CutSuffix(name, "-multi"); ok && strings.HasPrefix(name, "xtables-") {
			backend := strings.TrimPrefix(m, "xtables-") // nft or legacy
			for _, n := range xtablesNames {
				l := strings.Replace(n, "tables", "tables-"+backend, 1)
				s.Symlinks = append(s.Symlinks, [2]string{filepath.Join(filepath.Dir(p), l), name})
				if backend == "nft" { // iptables-nft is the default, as on Debian
					s.Symlinks = append(s.Symlinks, [2]string{filepath.Join(filepath.Dir(p), n), name})
				}
			}
		}
	}
	plugins, _ := filepath.Glob("/usr/lib/x86_64-linux-gnu/xtables/*.so")
	progs = append(progs, plugins...)
	for _, name := range extra {
		p, err := lookTool(name)
		if err != nil {
			return nil, fmt.Errorf("binary %s: %w", name, err)
		}
		progs = append(progs, p)
	}
	libs, err := sharedLibs(progs)
	if err != nil {
		return nil, err
	}
	for _, p := range append(progs, libs...) {
		if err := add(p, p); err != nil {
			return nil, err
		}
	}
	sort.Slice(s.Files, func(i, j int) bool { return s.Files[i].Guest < s.Files[j].Guest })
	return s, nil
}

// lookTool finds a program on PATH or in the sbin directories a non-root PATH may lack.
func lookTool(name string) (string, error) {
	if strings.Contains(name, "/") {
		return filepath.Abs(name)
	}
	if p, err := exec.LookPath(name); err == nil {
		return filepath.Abs(p)
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on the host", name)
}

var lddPath = regexp.MustCompile(`(?:=> )?(/\S+) \(0x`)

// sharedLibs lists the libraries ldd says the programs load, the dynamic loader
// included. One ldd run for all: each costs ~0.1 s, and iptables has ~100 plugins.
func sharedLibs(progs []string) ([]string, error) {
	if len(progs) == 0 {
		return nil, nil
	}
	// ldd fails when any file is static ("not a dynamic executable"); the others'
	// libraries are still listed.
	out, err := exec.Command("ldd", progs...).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "not a dynamic executable") {
		return nil, fmt.Errorf("ldd: %v: %s", err, out)
	}
	seen := map[string]bool{}
	var libs []string
	for _, m := range lddPath.FindAllStringSubmatch(string(out), -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			libs = append(libs, m[1])
		}
	}
	return libs, nil
}

// baseArchive returns the cached base initramfs for s, building it if needed. Call with
// the cache locked.
func baseArchive(cache string, k *kernel, s *baseSpec) (string, error) {
	dst := filepath.Join(cache, "initramfs", s.key()+".cpio")
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".base-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	bw := bufio.NewWriterSize(f, 1<<20)
	c := newCPIO(bw)
	for _, d := range []string{"/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/etc"} {
		c.Dir(d)
	}
	// The kernel gives init /dev/console as its standard streams only if it exists.
	c.CharDev("/dev/console", 0o600, 5, 1)
	c.File("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"))
	c.File("/etc/group", 0o644, []byte("root:x:0:\n"))
	for _, hf := range s.Files {
		if err := copyInto(c, hf.Guest, hf.Host); err != nil {
			return "", err
		}
	}
	for _, l := range s.Symlinks {
		c.Symlink(l[0], l[1])
	}
	for _, m := range s.Modules {
		img, err := readModule(filepath.Join(k.ModDir, m))
		if err != nil {
			return "", err
		}
		c.File(guestModulePath(k.Version, m), 0o644, img)
	}
	if err := c.Close(); err != nil {
		return "", fmt.Errorf("writing the base initramfs: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return "", err
	}
	return dst, nil
}

// copyInto adds the host file src to the archive at guest path dst, keeping its mode.
func copyInto(c *cpioWriter, dst, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	c.FileFrom(dst, uint32(fi.Mode().Perm()), fi.Size(), f)
	return c.err
}

// writeInitrd writes the boot initramfs: the base archive followed by the payload (the
// test binary as /init, the guest's configuration and extra files). The kernel unpacks
// concatenated archives in order.
func writeInitrd(dst, base, testBin string, conf *guestConf, files map[string]string) error {
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	b, err := os.Open(base)
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err := io.Copy(out, b); err != nil {
		return fmt.Errorf("copying the base initramfs: %w", err)
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	c := newCPIO(bw)
	if err := copyInto(c, "/init", testBin); err != nil {
		return fmt.Errorf("test binary: %w", err)
	}
	cj, err := json.Marshal(conf)
	if err != nil {
		return err
	}
	c.File(guestConfig, 0o644, cj)
	guests := make([]string, 0, len(files))
	for g := range files {
		guests = append(guests, g)
	}
	sort.Strings(guests)
	for _, g := range guests {
		if err := copyInto(c, g, files[g]); err != nil {
			return fmt.Errorf("file for %s: %w", g, err)
		}
	}
	if err := c.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return out.Close()
}
