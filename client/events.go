package client

import (
	"context"
	"sync"
	"time"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
)

// Event is one thing a front end shows: a *MessageEvent, *OpenedEvent,
// *RoomFoundEvent, *DeliveryEvent, *AlsoViaEvent, *PeerEvent, *RelayEvent, *SyncEvent,
// *PathEvent or *AlarmEvent. Client.Events delivers them in the order they happened.
type Event interface{ event() }

// MessageEvent is a message to show, once, whichever paths deliver it:
// someone else's, or our own sent from another device (Own is set).
type MessageEvent struct{ Message }

// RoomFoundEvent is a private room this home has not joined whose
// member list, the relay says, has us: a direct room someone started
// with us, or a room we were added to, while we were away. Joining it
// shows it; its member list, once there, is what decides.
type RoomFoundEvent struct{ Room string }

// OpenedEvent is a sealed message shown before as waiting for its key
// that opened now that the key came, or that will never open (Never
// says why): the front end shows it in place of the waiting one.
type OpenedEvent struct{ Message }

// DeliveryEvent is what became of our own message on one path (Path and
// Err), with what all paths did so far (Sent). Done is set on the last
// event of a send: if Sent.Via is empty then, no path took the message,
// which stays in the outbox and is sent again when a path is there.
type DeliveryEvent struct {
	Room  string
	Sent  Sent
	Path  string // ViaMesh or ViaRelay
	Relay string // which relay, when Path is ViaRelay: its address
	Err   error  // why Path did not confirm; nil if it did
	Done  bool
}

// AlsoViaEvent says that a message shown before arrived by another path
// too.
type AlsoViaEvent struct {
	ID    protocol.ID
	Room  string
	Via   string
	Relay string // which relay, when Via is ViaRelay: its address
}

// PeerEvent is a mesh peer joining or leaving a room; Peers is how many
// the room has now.
type PeerEvent struct {
	Room   string
	Peer   string
	Joined bool
	Peers  int
}

// RelayEvent is a change in a relay connection: connected (over which
// transport, "quic" or "tcp", with the round-trip time), or not and why.
type RelayEvent struct {
	Relay     string // the relay's address
	Connected bool
	Transport string
	RTT       time.Duration
	Err       error
}

// SyncEvent is catch-up progress in a room: N messages came by Path
// (ViaRelay: the relay's history; ViaSync: the mesh's sync). Done marks
// the end of the relay's history up to the moment of joining.
type SyncEvent struct {
	Room string
	Path string
	N    int
	Done bool
}

// PathEvent says that a path stopped for good in a room: the relay
// refused the room (a ban, a room rule), which retrying cannot help.
type PathEvent struct {
	Room  string
	Path  string
	Relay string // which relay, when Path is ViaRelay: its address
	Err   error
}

// Alarm kinds.
const (
	// AlarmAuditLog: the relay's audit log does not check out (a fork or
	// a rewrite). Err wraps relay.ErrAuditLog.
	AlarmAuditLog = "audit-log"
	// AlarmKeyChanged: a key that is not verified claims the nickname of
	// a contact that is (Sender, Nick).
	AlarmKeyChanged = "key-changed"
	// AlarmEquivocation: a sender signed two different messages with one
	// sequence number; the second is kept as evidence and not shown.
	AlarmEquivocation = "equivocation"
)

// AlarmEvent is a security finding that the person must see.
type AlarmEvent struct {
	Kind   string
	Relay  string // AlarmAuditLog: the relay's address
	Room   string
	Sender identity.PublicKey
	Nick   string
	ID     protocol.ID
	Err    error
}

func (*MessageEvent) event()   {}
func (*OpenedEvent) event()    {}
func (*RoomFoundEvent) event() {}
func (*DeliveryEvent) event()  {}
func (*AlsoViaEvent) event()   {}
func (*PeerEvent) event()      {}
func (*RelayEvent) event()     {}
func (*SyncEvent) event()      {}
func (*PathEvent) event()      {}
func (*AlarmEvent) event()     {}

// maxQueued bounds the events waiting for the application. Messages wait
// for room (the paths behind them slow down, and what they deliver is in
// the store meanwhile); other events never wait, and past the bound the
// oldest peer and sync progress events are dropped first, since a newer
// one of each says where things stand.
const maxQueued = 4096

// eventQueue is the ordered queue behind Client.Events: any goroutine
// pushes, one pump goroutine hands the events to the application.
type eventQueue struct {
	out  chan Event
	wake chan struct{} // something was pushed
	room chan struct{} // something was taken

	mu     sync.Mutex
	q      []Event
	closed bool
}

func newEventQueue() *eventQueue {
	return &eventQueue{out: make(chan Event), wake: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

// push queues e. A message waits while the queue is full, until ctx ends
// (false); any other event is queued at once.
func (q *eventQueue) push(ctx context.Context, e Event) bool {
	_, isMsg := e.(*MessageEvent)
	for {
		q.mu.Lock()
		switch {
		case q.closed:
			q.mu.Unlock()
			return false
		case isMsg && len(q.q) >= maxQueued:
			q.mu.Unlock()
			select {
			case <-q.room:
				continue
			case <-ctx.Done():
				return false
			}
		}
		if len(q.q) >= maxQueued {
			q.dropStatus()
		}
		q.q = append(q.q, e)
		q.mu.Unlock()
		notify(q.wake)
		return true
	}
}

// dropStatus drops the oldest peer or sync progress event, under mu.
// Never the first, which pump may be handing out, and never a relay
// state: the last one of those may be the only one saying the relay is
// down.
func (q *eventQueue) dropStatus() {
	for i := 1; i < len(q.q); i++ {
		switch e := q.q[i].(type) {
		case *PeerEvent:
			q.q = append(q.q[:i], q.q[i+1:]...)
			return
		case *SyncEvent:
			if !e.Done {
				q.q = append(q.q[:i], q.q[i+1:]...)
				return
			}
		}
	}
}

// pump hands the queued events to the application in order until ctx
// ends, then closes the channel.
func (q *eventQueue) pump(ctx context.Context) {
	defer close(q.out)
	for {
		q.mu.Lock()
		var e Event
		if len(q.q) > 0 {
			e = q.q[0]
		}
		q.mu.Unlock()
		if e == nil {
			select {
			case <-q.wake:
				continue
			case <-ctx.Done():
				q.close()
				return
			}
		}
		select {
		case q.out <- e:
			q.mu.Lock()
			q.q[0] = nil
			q.q = q.q[1:]
			q.mu.Unlock()
			notify(q.room)
		case <-ctx.Done():
			q.close()
			return
		}
	}
}

func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.q = nil
	q.mu.Unlock()
}

// notify wakes the one waiter of ch, if it is not woken already.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
