package main

import (
	"strings"
	"testing"
)

// TestSetFromEnv: a flag's TABBY_ variable sets it unless the command line does; an empty
// variable sets nothing; a bad value is an error naming the variable and the flag.
func TestSetFromEnv(t *testing.T) {
	env := map[string]string{
		"TABBY_ETCD_ENDPOINTS":         "http://10.0.0.1:2379",
		"TABBY_NODE_NAME":              "from-env",
		"TABBY_BGP":                    "false",
		"TABBY_BGP_HOLD_TIME":          "9s",
		"TABBY_DEFAULT_IPV4_POOL_CIDR": "10.244.0.0/16",
		"TABBY_LOG_LEVEL":              "",
		"TABBY_NOT_A_FLAG":             "x",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cmd := newRootCommand()
	f := cmd.Flags()
	if err := f.Parse([]string{"--node-name", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if err := setFromEnv(f, lookup); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{
		"etcd-endpoints":         "http://10.0.0.1:2379",
		"node-name":              "from-flag",
		"bgp":                    "false",
		"bgp-hold-time":          "9s",
		"default-ipv4-pool-cidr": "10.244.0.0/16",
		"log-level":              "info",
	} {
		if got := f.Lookup(flag).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
	if !f.Changed("default-ipv4-pool-cidr") {
		t.Error("a flag set from the environment does not count as given")
	}

	env = map[string]string{"TABBY_BGP_HOLD_TIME": "soon"}
	err := setFromEnv(newRootCommand().Flags(), lookup)
	if err == nil || !strings.Contains(err.Error(), `environment TABBY_BGP_HOLD_TIME="soon" (--bgp-hold-time)`) {
		t.Errorf("bad value: %v", err)
	}
}

// TestNoDefaultPoolsConflict: --no-default-pools with a default pool flag is refused,
// from the command line or the environment, before anything starts.
func TestNoDefaultPoolsConflict(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{args: []string{"--no-default-pools", "--default-ipv4-pool-cidr", "10.0.0.0/8"}},
		{args: []string{"--default-ipv6-pool-cidr", "fd00::/48"}, env: map[string]string{"TABBY_NO_DEFAULT_POOLS": "true"}},
		{args: []string{"--no-default-pools", "--default-ipv6-pool-vxlan", "Always"}},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		cmd := newRootCommand()
		cmd.SetArgs(tc.args)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), "--no-default-pools and --default-ipv") {
			t.Errorf("%v %v: %v", tc.args, tc.env, err)
		}
	}
}

// TestEmbeddedEtcdFlagsNeedEmbeddedEtcd: a flag of the embedded etcd given with
// --etcd-endpoints (on the command line or in the environment) is an error, not ignored.
func TestEmbeddedEtcdFlagsNeedEmbeddedEtcd(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		flag string
	}{
		{args: []string{"--etcd-endpoints", "https://10.0.0.2:2379", "--etcd-server-cert-file", "s.pem"}, flag: "etcd-server-cert-file"},
		{args: []string{"--etcd-initial-cluster", "a=https://10.0.0.2:2380"}, env: map[string]string{"TABBY_ETCD_ENDPOINTS": "https://10.0.0.2:2379"}, flag: "etcd-initial-cluster"},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		cmd := newRootCommand()
		cmd.SetArgs(tc.args)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), "--"+tc.flag+" and --etcd-endpoints: with endpoints no embedded etcd runs") {
			t.Errorf("%v %v: %v", tc.args, tc.env, err)
		}
	}
}
