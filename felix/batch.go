package felix

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// routeBatchSize is how many route requests go to the kernel in one message: the writes
// of BGP's learned routes cost one send and a few receives per batch instead of a send
// and a receive per route (a third of the agent's CPU at a full table went to those).
const routeBatchSize = 256

// routeBatch writes learned routes through its own netlink socket, routeBatchSize
// requests to a message, each acknowledged on its own, so one failing write fails alone.
type routeBatch struct {
	sock  *nl.NetlinkSocket
	table int
	ops   []batchOp
	buf   []byte
}

// batchOp is one queued write; err is its outcome once flushed (done: acknowledged).
type batchOp struct {
	seq  uint32
	done bool
	err  error
}

func newRouteBatch(ns netns.NsHandle, table int) (*routeBatch, error) {
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket for route writes: %w", err)
	}
	return &routeBatch{sock: sock, table: table}, nil
}

func (b *routeBatch) close() { b.sock.Close() }

// add queues a route add (exclusive unless replace) of gateway route r, through link
// index oif if not 0; it returns the op's index for result.
func (b *routeBatch) add(r Route, oif int, replace bool) int {
	flags := unix.NLM_F_CREATE | unix.NLM_F_ACK
	if replace {
		flags |= unix.NLM_F_REPLACE
	} else {
		flags |= unix.NLM_F_EXCL
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWROUTE, flags)
	msg := b.rtMsg(r.Dst)
	msg.Type = unix.RTN_UNICAST
	msg.Scope = unix.RT_SCOPE_UNIVERSE
	if r.OnLink {
		msg.Flags |= unix.RTNH_F_ONLINK
	}
	req.AddData(msg)
	b.attrs(req, r.Dst)
	req.AddData(nl.NewRtAttr(unix.RTA_GATEWAY, r.Gateway.AsSlice()))
	if oif != 0 {
		req.AddData(nl.NewRtAttr(unix.RTA_OIF, nl.Uint32Attr(uint32(oif))))
	}
	return b.queue(req)
}

// del queues the deletion of felix's route to dst; it returns the op's index for result.
func (b *routeBatch) del(dst netip.Prefix) int {
	req := nl.NewNetlinkRequest(unix.RTM_DELROUTE, unix.NLM_F_ACK)
	msg := b.rtMsg(dst)
	msg.Scope = unix.RT_SCOPE_NOWHERE
	req.AddData(msg)
	b.attrs(req, dst)
	return b.queue(req)
}

func (b *routeBatch) rtMsg(dst netip.Prefix) *nl.RtMsg {
	msg := nl.NewRtMsg()
	msg.Family = unix.AF_INET6
	if dst.Addr().Is4() {
		msg.Family = unix.AF_INET
	}
	msg.Dst_len = uint8(dst.Bits())
	msg.Protocol = RouteProtocol
	msg.Table = unix.RT_TABLE_UNSPEC
	if b.table < 256 {
		msg.Table = uint8(b.table)
	}
	return msg
}

func (b *routeBatch) attrs(req *nl.NetlinkRequest, dst netip.Prefix) {
	req.AddData(nl.NewRtAttr(unix.RTA_DST, dst.Addr().AsSlice()))
	if b.table >= 256 {
		req.AddData(nl.NewRtAttr(unix.RTA_TABLE, nl.Uint32Attr(uint32(b.table))))
	}
}

func (b *routeBatch) queue(req *nl.NetlinkRequest) int {
	b.buf = append(b.buf, req.Serialize()...)
	b.ops = append(b.ops, batchOp{seq: req.Seq})
	return len(b.ops) - 1
}

// flush sends what is queued, routeBatchSize requests to a message, and reads every
// acknowledgement; it returns the ops with their outcomes and empties the batch. An error
// of its own (the socket failed) leaves the unacknowledged ops failed with it.
func (b *routeBatch) flush() ([]batchOp, error) {
	ops, buf := b.ops, b.buf
	b.ops, b.buf = nil, nil
	bySeq := make(map[uint32]int, len(ops))
	for i, op := range ops {
		bySeq[op.seq] = i
	}
	for start, off := 0, 0; start < len(ops); start += routeBatchSize {
		end := min(start+routeBatchSize, len(ops))
		// The requests of ops[start:end] are the next (end-start) messages of buf.
		n := 0
		for i := start; i < end; i++ {
			n += int(binary.NativeEndian.Uint32(buf[off+n:]))
		}
		if err := unix.Sendto(b.sock.GetFd(), buf[off:off+n], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return failRest(ops, start, err), fmt.Errorf("send %d route requests: %w", end-start, err)
		}
		off += n
		for acked := 0; acked < end-start; {
			msgs, _, err := b.sock.Receive()
			if err != nil {
				return failRest(ops, start, err), fmt.Errorf("read route acknowledgements: %w", err)
			}
			for _, m := range msgs {
				i, ok := bySeq[m.Header.Seq]
				if !ok || m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
					continue
				}
				if errno := int32(binary.NativeEndian.Uint32(m.Data[:4])); errno != 0 {
					ops[i].err = unix.Errno(-errno)
				}
				ops[i].done = true
				delete(bySeq, m.Header.Seq)
				acked++
			}
		}
	}
	return ops, nil
}

// failRest fails the ops from start on that were not acknowledged with err.
func failRest(ops []batchOp, start int, err error) []batchOp {
	for i := start; i < len(ops); i++ {
		if !ops[i].done {
			ops[i].err = err
		}
	}
	return ops
}
