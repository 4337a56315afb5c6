// Package examples holds the example manifests and the demo (demo.sh, make demo); its
// test keeps what make demo installs in step with what the demo checks for.
package examples

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// makeVar is the value of a variable of the Makefile, as make itself reads it.
func makeVar(t *testing.T, name string) []string {
	t.Helper()
	out, err := exec.Command("make", "-C", "..", "-pn", "demo-deps").Output()
	if err != nil {
		t.Fatalf("make -pn: %v", err)
	}
	m := regexp.MustCompile(`(?m)^` + name + ` :?= (.*)$`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("the Makefile has no %s", name)
	}
	return strings.Fields(m[1])
}

// TestDemoPackages: make demo installs (DEMO_PACKAGES) exactly the Debian packages of
// the tools demo.sh checks for, and nothing else (no qemu or frr); make test's list
// (APT_PACKAGES) holds them all.
func TestDemoPackages(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	script, err := os.ReadFile("demo.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^for tool in (.*); do$`).FindSubmatch(script)
	if m == nil {
		t.Fatal("demo.sh has no `for tool in TOOL:PACKAGE ...; do` check")
	}
	var checked []string
	for _, pair := range strings.Fields(string(m[1])) {
		_, pkg, _ := strings.Cut(pair, ":")
		checked = append(checked, pkg)
	}
	demo, all := makeVar(t, "DEMO_PACKAGES"), makeVar(t, "APT_PACKAGES")
	slices.Sort(checked)
	slices.Sort(demo)
	if !slices.Equal(demo, checked) {
		t.Errorf("DEMO_PACKAGES %v, but demo.sh checks for the packages %v", demo, checked)
	}
	for _, p := range demo {
		if !slices.Contains(all, p) {
			t.Errorf("DEMO_PACKAGES has %s, APT_PACKAGES (make test) does not", p)
		}
	}
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^demo: demo-deps build$`).Match(mk) {
		t.Error("make demo does not install DEMO_PACKAGES (demo: demo-deps build)")
	}
}
