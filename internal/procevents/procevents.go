// Package procevents reports the processes that call execve, as the
// kernel's process connector tells them (netlink NETLINK_CONNECTOR,
// CN_IDX_PROC; needs root and CONFIG_PROC_EVENTS). Events are sent while
// the exec happens but read later: by then the process may already run.
package procevents

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// From linux/connector.h and linux/cn_proc.h (golang.org/x/sys has only
// NETLINK_CONNECTOR).
const (
	cnIdxProc         = 1
	cnValProc         = 1
	mcastListen       = 1
	mcastIgnore       = 2
	procEventExec     = 0x00000002
	cnMsgSize         = 20 // idx, val, seq, ack u32; len, flags u16
	procEventHdrSize  = 16 // what, cpu u32; timestamp_ns u64
	execEventBodySize = 8  // process_pid, process_tgid
)

// ErrOverrun means events were lost: the socket's buffer filled up before
// they were read. A caller that must see every exec rescans /proc.
var ErrOverrun = errors.New("process events lost (receive buffer overran)")

// Exec is one execve: the process (thread group) now runs a new program.
type Exec struct {
	Pid  int // the thread that exec'd (the new leader: equal to Tgid)
	Tgid int
}

// Listener receives exec events.
type Listener struct {
	fd int
}

// pollEvery bounds how long Next blocks before it looks at its context.
const pollEvery = 200 * time.Millisecond

// Listen subscribes to the process connector's events.
func Listen() (*Listener, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("process events: netlink socket: %w", err)
	}
	l := &Listener{fd: fd}
	// A burst of execs (a build) must not overrun the default buffer;
	// root may raise it past the sysctl limit.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	tv := unix.NsecToTimeval(pollEvery.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("process events: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("process events: bind to the process connector: %w", err)
	}
	if err := l.control(mcastListen, execOnly()); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("process events: subscribe: %w (needs root and a kernel with CONFIG_PROC_EVENTS)", err)
	}
	return l, nil
}

// control sends PROC_CN_MCAST_LISTEN or _IGNORE to the connector; with
// filter, as a struct proc_input that asks for exec events only.
func (l *Listener) control(op uint32, filter bool) error {
	size := 4
	if filter {
		size = 8
	}
	msg := make([]byte, unix.NLMSG_HDRLEN+cnMsgSize+size)
	le := binary.LittleEndian
	le.PutUint32(msg[0:], uint32(len(msg)))
	le.PutUint16(msg[4:], unix.NLMSG_DONE)
	le.PutUint32(msg[12:], uint32(os.Getpid()))
	cn := msg[unix.NLMSG_HDRLEN:]
	le.PutUint32(cn[0:], cnIdxProc)
	le.PutUint32(cn[4:], cnValProc)
	le.PutUint16(cn[16:], uint16(size))
	le.PutUint32(cn[cnMsgSize:], op)
	if filter {
		le.PutUint32(cn[cnMsgSize+4:], procEventExec)
	}
	return unix.Sendto(l.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// execOnly reports whether the kernel (6.6 or later) filters events per
// listener: then only exec events are sent to us, not every fork and exit
// of the machine, which would fill the buffer. An older kernel ignores a
// request of that size, so it gets the plain one.
func execOnly() bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	var major, minor int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 6 || major == 6 && minor >= 6
}

// Next waits for the next exec event. It returns ctx's error when ctx is
// done, and ErrOverrun when events were lost (the listener goes on).
func (l *Listener) Next(ctx context.Context) (Exec, error) {
	buf := make([]byte, 8192)
	for {
		if err := ctx.Err(); err != nil {
			return Exec{}, err
		}
		n, from, err := unix.Recvfrom(l.fd, buf, 0)
		switch {
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOBUFS):
			return Exec{}, ErrOverrun
		case err != nil:
			return Exec{}, fmt.Errorf("process events: receive: %w", err)
		}
		// Only the kernel speaks for the connector.
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		for _, m := range msgs {
			if ev, ok := parseExec(m.Data); ok {
				return ev, nil
			}
		}
	}
}

// parseExec decodes a cn_msg carrying a proc_event of kind exec.
func parseExec(b []byte) (Exec, bool) {
	le := binary.LittleEndian
	if len(b) < cnMsgSize+procEventHdrSize+execEventBodySize {
		return Exec{}, false
	}
	if le.Uint32(b[0:]) != cnIdxProc || le.Uint32(b[4:]) != cnValProc {
		return Exec{}, false
	}
	ev := b[cnMsgSize:]
	if le.Uint32(ev[0:]) != procEventExec {
		return Exec{}, false
	}
	body := ev[procEventHdrSize:]
	return Exec{Pid: int(int32(le.Uint32(body[0:]))), Tgid: int(int32(le.Uint32(body[4:])))}, true
}

// Close unsubscribes and closes the socket. Next must have returned.
func (l *Listener) Close() error {
	_ = l.control(mcastIgnore, execOnly())
	return unix.Close(l.fd)
}
