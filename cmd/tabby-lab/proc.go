package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tabby-net/tabby/internal/labstate"
)

// started is a process this tabby-lab command started and can still wait for.
type started struct {
	*labstate.Process
	done chan struct{} // closed when it has exited
	err  error         // its exit status, once done is closed
}

// startDetached starts argv inside a namespace ("ip netns exec ns argv...", which execs, so
// the pid is argv's own) in a session of its own, with no standard input and its output
// appended to logPath. It outlives this command.
func startDetached(ns string, argv []string, logPath string) (*started, error) {
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	defer log.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", argv[0], ns, err)
	}
	p := &started{Process: &labstate.Process{PID: cmd.Process.Pid, Log: logPath, Argv: argv}, done: make(chan struct{})}
	// Read before anything can reap it: the start time tells this process from a later
	// one that reuses its pid.
	p.StartTime, _ = procStartTime(p.PID)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *started) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// procStat returns a process's state letter and start time from /proc/<pid>/stat.
func procStat(pid int) (state byte, start uint64, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 20 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	start, err = strconv.ParseUint(fields[19], 10, 64) // field 22 overall
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return fields[0][0], start, nil
}

func procStartTime(pid int) (uint64, error) {
	_, start, err := procStat(pid)
	return start, err
}

// alive says whether the recorded process still runs: same pid, same start time, and not
// a zombie.
func alive(p *labstate.Process) bool {
	if p == nil || p.PID <= 0 {
		return false
	}
	state, start, err := procStat(p.PID)
	return err == nil && state != 'Z' && (p.StartTime == 0 || start == p.StartTime)
}

// running says whether a pid names a live process (not a zombie).
func running(pid int) bool {
	state, _, err := procStat(pid)
	return err == nil && state != 'Z'
}

// Bounds on stopping processes: SIGTERM, then SIGKILL.
const (
	termGrace = 10 * time.Second
	killGrace = 5 * time.Second
)

// stopAll sends SIGTERM to pids, waits up to termGrace for them to exit, SIGKILLs the rest
// and waits up to killGrace. It fails naming the processes that are still there.
func stopAll(pids []int) error {
	if len(pids) == 0 {
		return nil
	}
	signalAll(pids, syscall.SIGTERM)
	left := waitGone(pids, termGrace)
	if len(left) == 0 {
		return nil
	}
	signalAll(left, syscall.SIGKILL)
	left = waitGone(left, killGrace)
	if len(left) == 0 {
		return nil
	}
	var desc []string
	for _, pid := range left {
		desc = append(desc, fmt.Sprintf("%d (%s)", pid, procName(pid)))
	}
	return fmt.Errorf("processes still running after SIGKILL: %s", strings.Join(desc, ", "))
}

func signalAll(pids []int, sig syscall.Signal) {
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			fmt.Fprintf(os.Stderr, "tabby-lab: signal %d: %v\n", pid, err)
		}
	}
}

// waitGone polls until none of pids runs, or timeout; it returns those still running.
func waitGone(pids []int, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		var left []int
		for _, pid := range pids {
			if running(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func procName(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(data) == 0 {
		return "?"
	}
	return strings.TrimSpace(strings.ReplaceAll(string(data), "\x00", " "))
}

// logTail returns the last n lines of a log file, or a note saying why there are none.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return "(log is empty)"
	}
	return strings.Join(lines, "\n")
}
