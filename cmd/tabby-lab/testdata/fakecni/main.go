// Command fakecni is a CNI plugin for tabby-lab's tests. It moves nothing: it records each
// call (command, CNI_* environment, its own network namespace, the configuration on
// standard input) as a JSON line in the configuration's log_file, and answers ADD with
// 10.244.0.<2+number of earlier ADDs>/32. A workload labelled fakecni-fail=add makes ADD fail.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// Call is one recorded invocation; the tests decode the same shape.
type Call struct {
	Command     string         `json:"command"`
	ContainerID string         `json:"containerID"`
	Netns       string         `json:"netns"`
	IfName      string         `json:"ifName"`
	Args        string         `json:"args"`
	Path        string         `json:"path"`
	OwnNetns    string         `json:"ownNetns"`    // readlink /proc/self/ns/net: "net:[<inode>]"
	NetnsExists bool           `json:"netnsExists"` // whether CNI_NETNS could be opened
	Config      map[string]any `json:"config"`
}

func main() {
	stdin, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("1.1.0", 100, "read stdin", err.Error())
	}
	var conf map[string]any
	if len(bytes.TrimSpace(stdin)) > 0 {
		if err := json.Unmarshal(stdin, &conf); err != nil {
			fail("1.1.0", 6, "decode network configuration", err.Error())
		}
	}
	version, _ := conf["cniVersion"].(string)
	cmd := os.Getenv("CNI_COMMAND")
	if cmd == "VERSION" {
		fmt.Println(`{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}`)
		return
	}
	own, _ := os.Readlink("/proc/self/ns/net")
	c := Call{
		Command:     cmd,
		ContainerID: os.Getenv("CNI_CONTAINERID"),
		Netns:       os.Getenv("CNI_NETNS"),
		IfName:      os.Getenv("CNI_IFNAME"),
		Args:        os.Getenv("CNI_ARGS"),
		Path:        os.Getenv("CNI_PATH"),
		OwnNetns:    own,
		Config:      conf,
	}
	if f, err := os.Open(c.Netns); err == nil {
		c.NetnsExists = true
		f.Close()
	}
	logFile, _ := conf["log_file"].(string)
	if logFile == "" {
		fail(version, 7, "no log_file in the configuration", "")
	}
	adds := countAdds(logFile)
	line, _ := json.Marshal(c)
	f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fail(version, 100, "open log_file", err.Error())
	}
	f.Write(append(line, '\n'))
	f.Close()

	switch cmd {
	case "ADD":
		if label(conf, "fakecni-fail") == "add" {
			fail(version, 100, "fakecni: ADD failed as the label fakecni-fail=add asks", "")
		}
		res := map[string]any{
			"cniVersion": version,
			"interfaces": []any{map[string]any{"name": c.IfName, "sandbox": c.Netns}},
			"ips":        []any{map[string]any{"address": fmt.Sprintf("10.244.0.%d/32", 2+adds), "interface": 0}},
		}
		if servers, ok := conf["cluster_dns"]; ok { // as tabby-cni answers it
			res["dns"] = map[string]any{"nameservers": servers, "search": []string{"default.svc.cluster.local"}, "options": []string{"ndots:5"}}
		}
		json.NewEncoder(os.Stdout).Encode(res)
	case "DEL", "CHECK", "GC", "STATUS":
	default:
		fail(version, 4, "unknown CNI_COMMAND "+cmd, "")
	}
}

// label finds a label in args.cni.labels.
func label(conf map[string]any, key string) string {
	args, _ := conf["args"].(map[string]any)
	cni, _ := args["cni"].(map[string]any)
	labels, _ := cni["labels"].([]any)
	for _, l := range labels {
		m, _ := l.(map[string]any)
		if m["key"] == key {
			v, _ := m["value"].(string)
			return v
		}
	}
	return ""
}

func countAdds(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"command":"ADD"`) {
			n++
		}
	}
	return n
}

// fail answers with a CNI error on standard output and exits non-zero, as the spec says.
func fail(version string, code int, msg, details string) {
	if version == "" {
		version = "1.1.0"
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{"cniVersion": version, "code": code, "msg": msg, "details": details})
	os.Exit(1)
}
