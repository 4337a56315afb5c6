package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadOrCreateKey: a missing key file is made (0600, its directory 0700) and then read
// back the same; a file that holds no key is an error naming it, and is left alone.
func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "wireguard.key")
	k1, err := loadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, fi.Mode().Perm())
	}
	k2, err := loadOrCreateKey(path)
	if err != nil || k2 != k1 {
		t.Errorf("read back: %v, same key %v", err, k2 == k1)
	}
	if err := os.WriteFile(path, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("a malformed key file: %v, want an error naming it", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "not a key\n" {
		t.Errorf("the malformed key file was rewritten: %q", b)
	}
}
