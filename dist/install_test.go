// Package dist holds what an operator installs beside the binaries (systemd units, the
// agent's environment file, the CNI configuration); its tests run make install into a
// temporary root and check that tree, the units (systemd-analyze verify, no running
// systemd needed) and, in a lab, that the agent works with only the units' capabilities.
package dist

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tabby-net/tabby/internal/labtest"
	"github.com/tabby-net/tabby/internal/testenv"
)

func TestMain(m *testing.M) { labtest.Main(m) }

// makeInstall runs make install with the given variables (DESTDIR, PREFIX, ...) from the
// repository's root, building into bin (one directory per test, so later installs need
// no new link), and returns make's output.
func makeInstall(t *testing.T, bin string, vars ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", append([]string{"-s", "-C", "..", "install", "BIN=" + bin}, vars...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make install %s: %v\n%s", strings.Join(vars, " "), err, out)
	}
	return string(out)
}

// mode returns the permission bits of path, failing the test if it is missing.
func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("installed tree: %v", err)
	}
	return fi.Mode().Perm()
}

// TestMakeInstall: make install DESTDIR=… puts tabby-node and tabbyctl in PREFIX/bin (not
// the development tool tabby-lab), the CNI plugin in /opt/cni/bin, its configuration in
// /etc/cni/net.d, the units in /lib/systemd/system with ExecStart in PREFIX/bin, and the
// environment file in /etc/tabby (0600); a second install keeps the configuration files
// an operator changed. The units pass systemd-analyze verify with the installed binary;
// every variable the environment file names is a flag's; the CNI configuration is one
// tabby-cni accepts.
func TestMakeInstall(t *testing.T) {
	testenv.RequireTools(t, testenv.Tool{Cmd: "make", Package: "make"}, testenv.Tool{Cmd: "systemd-analyze", Package: "systemd"})
	root, bin := t.TempDir(), t.TempDir()
	out := makeInstall(t, bin, "DESTDIR="+root)
	want := map[string]os.FileMode{
		"usr/local/bin/tabby-node":               0o755,
		"usr/local/bin/tabbyctl":                 0o755,
		"opt/cni/bin/tabby-cni":                  0o755,
		"etc/cni/net.d/10-tabby.conflist":        0o644,
		"etc/tabby/tabby-node.env":               0o600,
		"lib/systemd/system/tabby-node.service":  0o644,
		"lib/systemd/system/tabby-node@.service": 0o644,
	}
	var got []string
	filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, path)
			got = append(got, rel)
		}
		return err
	})
	if len(got) != len(want) {
		t.Errorf("installed files %v, want exactly %d: %v", got, len(want), want)
	}
	for rel, m := range want {
		if got := mode(t, filepath.Join(root, rel)); got != m {
			t.Errorf("%s: mode %v, want %v", rel, got, m)
		}
	}
	if !strings.Contains(out, "installed "+filepath.Join(root, "etc/tabby/tabby-node.env")) {
		t.Errorf("make install does not say it installed the environment file:\n%s", out)
	}

	// The units run the installed binary; systemd-analyze verify (which checks that
	// ExecStart is executable) reads copies whose paths point into the temporary root.
	verifyDir := t.TempDir()
	for _, u := range []string{"tabby-node.service", "tabby-node@.service"} {
		b, err := os.ReadFile(filepath.Join(root, "lib/systemd/system", u))
		if err != nil {
			t.Fatal(err)
		}
		unit := string(b)
		for _, line := range []string{"Restart=always", "After=network-online.target", "Wants=network-online.target",
			"EnvironmentFile=-/etc/tabby/tabby-node.env", "ExecStart=/usr/local/bin/tabby-node"} {
			if !strings.Contains(unit, "\n"+line) {
				t.Errorf("%s has no line %q", u, line)
			}
		}
		name := strings.Replace(u, "@.", "@route-reflector.", 1) // verify an instance of the template
		unit = strings.ReplaceAll(unit, "ExecStart=/usr/local/bin/", "ExecStart="+root+"/usr/local/bin/")
		if err := os.WriteFile(filepath.Join(verifyDir, name), []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	verify := exec.Command("systemd-analyze", "verify", filepath.Join(verifyDir, "tabby-node.service"), filepath.Join(verifyDir, "tabby-node@route-reflector.service"))
	// systemd-analyze verify exits 0 on many problems it only prints: any output fails.
	if out, err := verify.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "lib/systemd/system/tabby-node@.service")); !strings.Contains(string(b), "ExecStart=/usr/local/bin/tabby-node --role %i") {
		t.Errorf("tabby-node@.service does not run the role of its instance:\n%s", b)
	}

	// Every TABBY_ variable of the environment file is a flag's, as --help lists them.
	help, err := exec.Command(filepath.Join(root, "usr/local/bin/tabby-node"), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("tabby-node --help: %v\n%s", err, help)
	}
	env, _ := os.ReadFile(filepath.Join(root, "etc/tabby/tabby-node.env"))
	vars := regexp.MustCompile(`(?m)^#?(TABBY_[A-Z0-9_]+)=`).FindAllStringSubmatch(string(env), -1)
	if len(vars) < 10 {
		t.Errorf("the environment file names %d variables: %s", len(vars), env)
	}
	for _, v := range vars {
		if !strings.Contains(string(help), "(env "+v[1]+")") {
			t.Errorf("the environment file sets %s, which is no tabby-node flag's", v[1])
		}
	}

	// The CNI configuration is one tabby-cni accepts: STATUS gets past the configuration
	// (error 2 would name a field) to the datastore, which is not there.
	checkCNIConfig(t, filepath.Join(root, "etc/cni/net.d/10-tabby.conflist"), filepath.Join(root, "opt/cni/bin/tabby-cni"))

	// A second install keeps configuration an operator changed, and says so.
	changed := []byte("TABBY_ETCD_ENDPOINTS=http://10.0.0.2:2379\n")
	conflist := []byte(`{"cniVersion": "1.1.0", "name": "mine", "plugins": [{"type": "tabby-cni"}]}`)
	os.WriteFile(filepath.Join(root, "etc/tabby/tabby-node.env"), changed, 0o600)
	os.WriteFile(filepath.Join(root, "etc/cni/net.d/10-tabby.conflist"), conflist, 0o644)
	out = makeInstall(t, bin, "DESTDIR="+root)
	if b, _ := os.ReadFile(filepath.Join(root, "etc/tabby/tabby-node.env")); !bytes.Equal(b, changed) {
		t.Errorf("make install overwrote the environment file: %s", b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/cni/net.d/10-tabby.conflist")); !bytes.Equal(b, conflist) {
		t.Errorf("make install overwrote the CNI configuration: %s", b)
	}
	if !strings.Contains(out, "kept "+filepath.Join(root, "etc/tabby/tabby-node.env")) || !strings.Contains(out, "kept "+filepath.Join(root, "etc/cni/net.d/10-tabby.conflist")) {
		t.Errorf("make install does not say it kept the configuration:\n%s", out)
	}

	// PREFIX moves the binaries and the units' ExecStart with them.
	usr := t.TempDir()
	makeInstall(t, bin, "DESTDIR="+usr, "PREFIX=/usr")
	mode(t, filepath.Join(usr, "usr/bin/tabby-node"))
	if b, _ := os.ReadFile(filepath.Join(usr, "lib/systemd/system/tabby-node.service")); !strings.Contains(string(b), "\nExecStart=/usr/bin/tabby-node\n") {
		t.Errorf("PREFIX=/usr: tabby-node.service:\n%s", b)
	}
}

// checkCNIConfig runs the installed plugin's STATUS with the configuration list's plugin
// (as libcni passes it) and fails unless the error is the datastore's, not the
// configuration's.
func checkCNIConfig(t *testing.T, conflist, plugin string) {
	t.Helper()
	b, err := os.ReadFile(conflist)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &list); err != nil || len(list.Plugins) != 1 {
		t.Fatalf("%s: %v (%d plugins)", conflist, err, len(list.Plugins))
	}
	conf := list.Plugins[0]
	conf["cniVersion"], conf["name"] = list.CNIVersion, list.Name
	// Nothing serves etcd there: a port that was free a moment ago.
	conf["etcd_endpoints"] = "http://127.0.0.1:9"
	conf["log_file"] = filepath.Join(t.TempDir(), "cni.log")
	stdin, _ := json.Marshal(conf)
	cmd := exec.Command(plugin)
	cmd.Env = append(os.Environ(), "CNI_COMMAND=STATUS", "CNI_PATH="+filepath.Dir(plugin))
	cmd.Stdin = bytes.NewReader(stdin)
	out, _ := cmd.Output()
	var res struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("tabby-cni STATUS: %v: %s", err, out)
	}
	if res.Code == 2 || res.Code == 0 {
		t.Errorf("tabby-cni STATUS with the installed configuration: code %d %s, want the datastore's error", res.Code, res.Msg)
	}
	t.Logf("tabby-cni STATUS with the installed configuration and no etcd: code %d: %s", res.Code, res.Msg)
}
