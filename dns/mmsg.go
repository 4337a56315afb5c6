package dns

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsg reads and writes batches of datagrams on one UDP socket with recvmmsg and
// sendmmsg, made as raw system calls (non-blocking; the netpoller waits when there is
// nothing to read or no room to write). golang.org/x/net's ReadBatch and WriteBatch make
// them as ordinary system calls: under load a sendmmsg that delivers to loopback clients
// often lasts longer than the runtime's 20µs sysmon tick (the woken client preempts the
// sender), so sysmon took the P away, started another thread, and kept waking every 20µs
// itself; profiled in the agent, that scheduling was a quarter of the server's CPU.
// A raw call keeps its P. Neither call can block.
type mmsg struct {
	rc    syscall.RawConn
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // the senders' addresses (an IPv4 one fits too)
	bufs  [][]byte                // the read buffers
	n     []int                   // datagram sizes after read
	trunc []bool

	out     []unix.Mmsghdr
	outIovs []unix.Iovec
	sent    int // replies of out sent so far

	// What the last system call returned, and the calls themselves as func values made
	// once: a closure made per call escapes through RawConn and costs an allocation a
	// batch (with the wire cache's hits, most of what an agent under DNS load allocated,
	// and so of its garbage collections, whose marking stalled answers).
	moved          int // datagrams the last call moved
	errno          syscall.Errno
	recvFn, sendFn func(fd uintptr) bool
}

func newMmsg(c *net.UDPConn, batch, size int) (*mmsg, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	m := &mmsg{rc: rc, hdrs: make([]unix.Mmsghdr, batch), iovs: make([]unix.Iovec, batch),
		names: make([]unix.RawSockaddrInet6, batch), bufs: make([][]byte, batch), n: make([]int, batch),
		trunc: make([]bool, batch), out: make([]unix.Mmsghdr, 0, batch), outIovs: make([]unix.Iovec, batch)}
	for i := range m.bufs {
		m.bufs[i] = make([]byte, size)
	}
	m.recvFn, m.sendFn = m.recv, m.send
	return m, nil
}

// recv is one non-blocking recvmmsg into the read buffers; false: wait to read.
func (m *mmsg) recv(fd uintptr) bool {
	r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&m.hdrs[0])), uintptr(len(m.hdrs)),
		unix.MSG_DONTWAIT, 0, 0)
	m.moved, m.errno = int(r), e
	return e != unix.EAGAIN && e != unix.EWOULDBLOCK
}

// send is one non-blocking sendmmsg of the queued replies not sent yet; false: wait to
// write.
func (m *mmsg) send(fd uintptr) bool {
	r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&m.out[m.sent])), uintptr(len(m.out)-m.sent),
		unix.MSG_DONTWAIT, 0, 0)
	m.moved, m.errno = int(r), e
	return e != unix.EAGAIN && e != unix.EWOULDBLOCK
}

// read reads up to a batch of datagrams, waiting for the first; it returns how many.
func (m *mmsg) read() (int, error) {
	for i := range m.hdrs {
		m.iovs[i] = unix.Iovec{Base: &m.bufs[i][0]}
		m.iovs[i].SetLen(len(m.bufs[i]))
		m.hdrs[i] = unix.Mmsghdr{Hdr: unix.Msghdr{Name: (*byte)(unsafe.Pointer(&m.names[i])),
			Namelen: unix.SizeofSockaddrInet6, Iov: &m.iovs[i]}}
		m.hdrs[i].Hdr.SetIovlen(1)
	}
	err := m.rc.Read(m.recvFn)
	n, errno := m.moved, m.errno
	if err != nil {
		return 0, err
	}
	if errno != 0 {
		if errno == unix.EINTR {
			return 0, nil
		}
		return 0, errno
	}
	for i := range n {
		m.n[i] = int(m.hdrs[i].Len)
		m.trunc[i] = m.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0
	}
	return n, nil
}

// addr is the sender of datagram i of the last read (invalid if not IPv4 or IPv6).
func (m *mmsg) addr(i int) netip.AddrPort {
	sa := &m.names[i]
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port)
	}
	return netip.AddrPort{}
}

// reply queues p (not copied) as the answer to datagram i of the last read.
func (m *mmsg) reply(i int, p []byte) {
	k := len(m.out)
	m.outIovs[k] = unix.Iovec{Base: &p[0]}
	m.outIovs[k].SetLen(len(p))
	m.out = m.out[:k+1]
	m.out[k] = unix.Mmsghdr{Hdr: unix.Msghdr{Name: (*byte)(unsafe.Pointer(&m.names[i])), Namelen: m.hdrs[i].Hdr.Namelen,
		Iov: &m.outIovs[k]}}
	m.out[k].Hdr.SetIovlen(1)
}

// flush sends the queued replies; a datagram the kernel refuses is skipped (onErr is
// told). It must be called before the next read, whose addresses the replies use.
func (m *mmsg) flush(onErr func(error)) {
	for m.sent = 0; m.sent < len(m.out); {
		err := m.rc.Write(m.sendFn)
		n, errno := m.moved, m.errno
		switch {
		case err != nil:
			onErr(err)
			m.out = m.out[:0]
			return
		case errno == unix.EINTR:
			continue
		case errno != 0:
			onErr(errno)
			m.sent++ // skip the datagram that failed
		default:
			m.sent += n
		}
	}
	m.out = m.out[:0]
}
