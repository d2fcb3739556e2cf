package protocol

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// memReservations is a SeqReservations in memory that can be told to fail,
// to stand for a disk that refuses writes.
type memReservations struct {
	mu      sync.Mutex
	rooms   map[string]uint64
	writes  int
	failing bool
}

var errDiskFull = errors.New("disk full")

func (m *memReservations) Reserved(room string) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rooms[room], nil
}

func (m *memReservations) Reserve(room string, n uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failing {
		return errDiskFull
	}
	if m.rooms == nil {
		m.rooms = map[string]uint64{}
	}
	m.rooms[room] = n
	m.writes++
	return nil
}

func TestSeqAllocatorNeverReusesAfterCrash(t *testing.T) {
	store := &memReservations{}
	used := map[uint64]bool{}
	// Five lives, each handing out a different number of sequence numbers
	// and then "crashing" (the allocator is dropped; the store remains).
	for life, count := range []int{3, 10, 1, 25, 0} {
		a := &SeqAllocator{Store: store, Block: 10}
		var last uint64
		for range count {
			n, err := a.Next("general")
			if err != nil {
				t.Fatal(err)
			}
			if used[n] {
				t.Fatalf("life %d: number %d handed out twice", life, n)
			}
			if n <= last {
				t.Fatalf("life %d: %d after %d", life, n, last)
			}
			if r, _ := store.Reserved("general"); n > r {
				t.Fatalf("life %d: %d handed out before it was reserved (reserved %d)", life, n, r)
			}
			used[n], last = true, n
		}
	}
	if store.writes > 10 {
		t.Fatalf("%d reservations written for 39 numbers in blocks of 10", store.writes)
	}
	// Rooms are independent.
	a := &SeqAllocator{Store: store, Block: 10}
	if n, err := a.Next("other"); err != nil || n != 1 {
		t.Fatalf("first number of a new room = %d, %v; want 1", n, err)
	}
}

func TestSeqAllocatorFailsWhenReservationFails(t *testing.T) {
	store := &memReservations{}
	a := &SeqAllocator{Store: store, Block: 2}
	for range 2 {
		if _, err := a.Next("r"); err != nil {
			t.Fatal(err)
		}
	}
	store.failing = true
	if n, err := a.Next("r"); !errors.Is(err, errDiskFull) {
		t.Fatalf("Next with a failing store = %d, %v; want the store's error and no number", n, err)
	}
	store.failing = false
	n, err := a.Next("r")
	if err != nil || n != 3 {
		t.Fatalf("after the store recovers: %d, %v; want 3", n, err)
	}
}

func TestSeqAllocatorEnd(t *testing.T) {
	store := &memReservations{rooms: map[string]uint64{"r": MaxCounter - 2}}
	a := &SeqAllocator{Store: store, Block: 10}
	for _, want := range []uint64{MaxCounter - 1, MaxCounter} {
		if n, err := a.Next("r"); err != nil || n != want {
			t.Fatalf("Next = %d, %v; want %d", n, err, want)
		}
	}
	if _, err := a.Next("r"); err == nil {
		t.Fatal("Next past the last number succeeded")
	}
}

func TestLamportClock(t *testing.T) {
	var c LamportClock
	if c.Tick() != 1 || c.Tick() != 2 {
		t.Fatal("Tick does not count from 1")
	}
	c.Witness(10)
	c.Witness(5)
	if got := c.Tick(); got != 11 {
		t.Fatalf("Tick after Witness(10) = %d, want 11", got)
	}
	// One hostile envelope cannot push the clock to the end of its range.
	c.Witness(MaxCounter)
	if got := c.Tick(); got != 11+MaxLamportJump+1 {
		t.Fatalf("Tick after Witness(MaxCounter) = %d, want %d", got, 11+MaxLamportJump+1)
	}
}

func TestSeqAllocatorHugeBlock(t *testing.T) {
	a := &SeqAllocator{Store: &memReservations{}, Block: 1 << 63}
	if n, err := a.Next("r"); err != nil || n != 1 {
		t.Fatalf("Next = %d, %v", n, err)
	}
	if r, _ := a.Store.Reserved("r"); r != MaxCounter {
		t.Fatalf("reserved %d, want MaxCounter", r)
	}
}

// slowReservations holds every reservation of one room until released,
// as a disk flush that takes its time.
type slowReservations struct {
	memReservations
	slowRoom string
	entered  chan struct{}
	release  chan struct{}
}

func (s *slowReservations) Reserve(room string, n uint64) error {
	if room == s.slowRoom {
		s.entered <- struct{}{}
		<-s.release
	}
	return s.memReservations.Reserve(room, n)
}

// TestSeqAllocatorRoomsDoNotWaitForEachOther: a reservation being written
// for one room holds up that room's numbers only.
func TestSeqAllocatorRoomsDoNotWaitForEachOther(t *testing.T) {
	st := &slowReservations{slowRoom: "slow", entered: make(chan struct{}), release: make(chan struct{})}
	a := &SeqAllocator{Store: st}
	slow := make(chan error, 1)
	go func() {
		_, err := a.Next("slow")
		slow <- err
	}()
	<-st.entered
	fast := make(chan uint64, 1)
	go func() {
		n, _ := a.Next("fast")
		fast <- n
	}()
	select {
	case n := <-fast:
		if n != 1 {
			t.Fatalf("fast room: %d, want 1", n)
		}
	case <-slow:
		t.Fatal("the slow reservation ended first")
	case <-time.After(30 * time.Second):
		close(st.release)
		t.Fatal("the fast room waited for the slow room's reservation")
	}
	close(st.release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
}
