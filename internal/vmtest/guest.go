package vmtest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"unsafe"
)

// The test binary is also the guest's /init: when it starts as PID 1 it prepares the
// machine, runs itself again as the test, prints the exit status and powers off. No
// shell or busybox is needed in the guest.

const (
	guestConfig = "/vmtest/config.json"
	exitMarker  = "VMTEST-EXIT "
	envInVM     = "TABBY_IN_VM"
	// initFailed is the status reported when the guest could not be prepared.
	initFailed = 125
)

// guestConf is what the host tells the guest's init.
type guestConf struct {
	Modules []string // .ko paths in load order
	Args    []string // arguments of the test binary
}

func init() {
	if os.Getpid() != 1 || os.Getenv(envInVM) != "" {
		return
	}
	if _, err := os.Stat(guestConfig); err != nil {
		return
	}
	status := initFailed
	if conf, err := guestSetup(); err != nil {
		fmt.Printf("vmtest: guest init: %v\n", err)
	} else {
		status = runGuestTest(conf)
	}
	fmt.Printf("\n%s%d\n", exitMarker, status)
	syscall.Sync()
	err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	// Still here: exiting makes the kernel panic, which ends qemu too (panic=-1, -no-reboot).
	fmt.Printf("vmtest: power off: %v\n", err)
	os.Exit(1)
}

func guestSetup() (*guestConf, error) {
	mounts := []struct{ fs, dir string }{
		{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"},
		{"tmpfs", "/run"}, {"tmpfs", "/tmp"},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return nil, err
		}
		if err := syscall.Mount(m.fs, m.dir, m.fs, 0, ""); err != nil && err != syscall.EBUSY {
			return nil, fmt.Errorf("mounting %s on %s: %w", m.fs, m.dir, err)
		}
	}
	if err := os.MkdirAll("/dev/pts", 0o755); err == nil {
		_ = syscall.Mount("devpts", "/dev/pts", "devpts", 0, "")
	}
	b, err := os.ReadFile(guestConfig)
	if err != nil {
		return nil, err
	}
	var conf guestConf
	if err := json.Unmarshal(b, &conf); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", guestConfig, err)
	}
	for _, ko := range conf.Modules {
		if err := insmod(ko); err != nil {
			return nil, err
		}
	}
	return &conf, loopbackUp()
}

func insmod(ko string) error {
	img, err := os.ReadFile(ko)
	if err != nil {
		return fmt.Errorf("loading module: %w", err)
	}
	params := []byte{0}
	_, _, errno := syscall.Syscall(syscall.SYS_INIT_MODULE,
		uintptr(unsafe.Pointer(&img[0])), uintptr(len(img)), uintptr(unsafe.Pointer(&params[0])))
	if errno != 0 && errno != syscall.EEXIST {
		return fmt.Errorf("loading module %s: %w", ko, errno)
	}
	return nil
}

// loopbackUp sets lo up, as every real init does.
func loopbackUp() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer syscall.Close(fd)
	var ifr struct {
		name  [syscall.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(ifr.name[:], "lo")
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCGIFFLAGS, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return fmt.Errorf("reading lo's flags: %w", errno)
	}
	ifr.flags |= syscall.IFF_UP
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCSIFFLAGS, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return fmt.Errorf("setting lo up: %w", errno)
	}
	return nil
}

func runGuestTest(conf *guestConf) int {
	cmd := exec.Command("/init", conf.Args...)
	cmd.Dir = "/vmtest"
	cmd.Env = []string{
		envInVM + "=1", "HOME=/root", "TMPDIR=/tmp",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	err := cmd.Run()
	if exit, ok := err.(*exec.ExitError); ok {
		if exit.ExitCode() < 0 {
			fmt.Printf("vmtest: test binary: %v\n", err)
			return 128
		}
		return exit.ExitCode()
	}
	if err != nil {
		fmt.Printf("vmtest: running the test binary: %v\n", err)
		return initFailed
	}
	return 0
}
