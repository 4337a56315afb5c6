package vmtest

import (
	"fmt"
	"io"
	"path"
	"strings"
)

// cpioWriter writes the "newc" cpio format the kernel unpacks as an initramfs. It creates
// missing parent directories itself, because the kernel does not.
type cpioWriter struct {
	w    io.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

func newCPIO(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w, ino: 1, dirs: map[string]bool{".": true, "/": true}}
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
	modeChar = 0o020000
)

func (c *cpioWriter) header(name string, mode uint32, size int, rdevMajor, rdevMinor uint32) {
	if c.err != nil {
		return
	}
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.ino++
	c.write([]byte(hdr + name + "\x00"))
	c.pad(len(hdr) + len(name) + 1)
}

func (c *cpioWriter) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

// pad writes zeros up to the next multiple of 4 after n bytes.
func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// clean turns an absolute guest path into the relative form initramfs entries use.
func clean(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

// Dir adds a directory and its missing parents.
func (c *cpioWriter) Dir(p string) {
	p = clean(p)
	if p == "" || c.dirs[p] {
		return
	}
	c.Dir(path.Dir(p))
	c.dirs[p] = true
	c.header(p, modeDir|0o755, 0, 0, 0)
}

// File adds a regular file with permission bits perm.
func (c *cpioWriter) File(p string, perm uint32, data []byte) {
	p = clean(p)
	c.Dir(path.Dir(p))
	c.header(p, modeFile|perm&0o7777, len(data), 0, 0)
	c.write(data)
	c.pad(len(data))
}

// FileFrom adds a regular file of size bytes read from r.
func (c *cpioWriter) FileFrom(p string, perm uint32, size int64, r io.Reader) {
	p = clean(p)
	c.Dir(path.Dir(p))
	c.header(p, modeFile|perm&0o7777, int(size), 0, 0)
	if c.err == nil {
		var n int64
		n, c.err = io.CopyN(c.w, r, size)
		if c.err != nil {
			c.err = fmt.Errorf("copying %s into the initramfs after %d bytes: %w", p, n, c.err)
		}
	}
	c.pad(int(size))
}

// Symlink adds a symbolic link p pointing at target.
func (c *cpioWriter) Symlink(p, target string) {
	p = clean(p)
	c.Dir(path.Dir(p))
	c.header(p, modeLink|0o777, len(target), 0, 0)
	c.write([]byte(target))
	c.pad(len(target))
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(p string, perm, major, minor uint32) {
	p = clean(p)
	c.Dir(path.Dir(p))
	c.header(p, modeChar|perm&0o7777, 0, major, minor)
}

// Close writes the trailer and returns the first error met.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	return c.err
}
