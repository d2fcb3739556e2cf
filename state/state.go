// Package state keeps a node's protocol state in files of its home folder,
// so that it survives a restart: the replay guard's windows and the sender's
// reserved sequence numbers. Every file is replaced atomically.
package state

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/parleychat/parley/internal/atomicfile"
	"github.com/parleychat/parley/protocol"
)

// ErrMalformed reports a state file that cannot be parsed.
var ErrMalformed = errors.New("state: malformed file")

// SaveReplay writes the replay guard's state to path.
func SaveReplay(path string, g *protocol.ReplayGuard) error {
	data, err := g.MarshalBinary()
	if err != nil {
		return fmt.Errorf("state: save replay state: %w", err)
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("state: save replay state: %w", err)
	}
	return nil
}

// LoadReplay restores the replay guard's state from path. A missing file
// leaves the guard as it is: the first start has no state yet.
func LoadReplay(path string, g *protocol.ReplayGuard) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state: load replay state: %w", err)
	}
	if err := g.UnmarshalBinary(data); err != nil {
		return fmt.Errorf("state: load replay state %s: %w", path, err)
	}
	return nil
}

// SeqFile implements protocol.SeqReservations with a file. The file is
// rewritten, and synced, once per reserved block, not once per message.
// It is safe for concurrent use.
type SeqFile struct {
	path  string
	mu    sync.Mutex
	rooms map[string]uint64
}

// OpenSeqFile reads the reservations at path; a missing file has none.
func OpenSeqFile(path string) (*SeqFile, error) {
	f := &SeqFile{path: path, rooms: map[string]uint64{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: open sequence numbers: %w", err)
	}
	if f.rooms, err = ParseSeqs(data); err != nil {
		return nil, fmt.Errorf("state: %s: %w", path, err)
	}
	return f, nil
}

// Reserved implements protocol.SeqReservations.
func (f *SeqFile) Reserved(room string) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rooms[room], nil
}

// Reserve implements protocol.SeqReservations: it returns once the file
// that records n is on disk.
func (f *SeqFile) Reserve(room string, n uint64) error {
	if err := protocol.ValidRoom(room); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if n <= f.rooms[room] {
		return fmt.Errorf("state: reserve %d in %s: %d is reserved already", n, room, f.rooms[room])
	}
	next := maps.Clone(f.rooms)
	next[room] = n
	if err := atomicfile.WriteFile(f.path, FormatSeqs(next), 0o600); err != nil {
		return fmt.Errorf("state: reserve sequence numbers: %w", err)
	}
	f.rooms = next
	return nil
}

// The sequence file is text: a header line, then "ROOM N\n" per room,
// sorted by room, N in decimal without leading zeros.
const seqHeader = "# parley sequence reservations v1\n"

// FormatSeqs returns the sequence file for the given reservations.
func FormatSeqs(rooms map[string]uint64) []byte {
	var b bytes.Buffer
	b.WriteString(seqHeader)
	for _, room := range slices.Sorted(maps.Keys(rooms)) {
		fmt.Fprintf(&b, "%s %d\n", room, rooms[room])
	}
	return b.Bytes()
}

// MaxSeqFile is the largest sequence file ParseSeqs reads.
const MaxSeqFile = 16 << 20

// ParseSeqs parses a sequence file as FormatSeqs writes it, and only that
// form: FormatSeqs(ParseSeqs(b)) == b.
func ParseSeqs(data []byte) (map[string]uint64, error) {
	if len(data) > MaxSeqFile {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, MaxSeqFile)
	}
	rest, ok := bytes.CutPrefix(data, []byte(seqHeader))
	if !ok {
		return nil, fmt.Errorf("%w: line 1: want %q", ErrMalformed, strings.TrimSpace(seqHeader))
	}
	rooms := map[string]uint64{}
	prev := ""
	for lineNo := 2; len(rest) > 0; lineNo++ {
		line, after, found := bytes.Cut(rest, []byte{'\n'})
		if !found {
			return nil, fmt.Errorf("%w: line %d: no newline at end", ErrMalformed, lineNo)
		}
		rest = after
		room, num, ok := strings.Cut(string(line), " ")
		if !ok {
			return nil, fmt.Errorf("%w: line %d: want ROOM NUMBER", ErrMalformed, lineNo)
		}
		if err := protocol.ValidRoom(room); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrMalformed, lineNo, err)
		}
		if room <= prev {
			return nil, fmt.Errorf("%w: line %d: room %s is out of order or repeated", ErrMalformed, lineNo, room)
		}
		prev = room
		n, err := strconv.ParseUint(num, 10, 64)
		if err != nil || n == 0 || n > protocol.MaxCounter || strconv.FormatUint(n, 10) != num {
			return nil, fmt.Errorf("%w: line %d: %q is not a positive decimal number", ErrMalformed, lineNo, num)
		}
		rooms[room] = n
	}
	return rooms, nil
}
