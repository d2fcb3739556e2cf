// Package audit is the relay's tamper-evident log: every decision the relay
// takes is a record in an append-only Merkle log of Certificate
// Transparency's design (golang.org/x/mod/sumdb/tlog), whose checkpoints
// the relay signs with its key in the signed-note format
// (golang.org/x/mod/sumdb/note). Anyone holding a checkpoint can check that
// a record is in the log (an inclusion proof) and that a later checkpoint
// extends it (a consistency proof), so no record can be changed, dropped or
// reordered unseen, by the relay's operator included. docs/audit.md has the
// formats.
package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/wire"
	"golang.org/x/crypto/cryptobyte"
)

// Version is the record format version.
const Version = 1

// Limits of a record's text fields.
const (
	MaxAddr   = 64
	MaxDetail = 1024
	// MaxRecord bounds an encoded record.
	MaxRecord = recordHead + 1 + protocol.MaxRoomLen + 1 + MaxAddr + 2 + MaxDetail
)

// Kind says what a record records.
type Kind uint8

// The kinds of record.
const (
	KindStart          Kind = 1 // the relay started
	KindStop           Kind = 2 // the relay stopped cleanly
	KindConnect        Kind = 3 // a connection authenticated and admitted
	KindRefuse         Kind = 4 // a connection refused after authentication
	KindPublish        Kind = 5 // an envelope stored
	KindPublishRefused Kind = 6 // a publish refused by a check or the policy
	KindAdmin          Kind = 7 // an admin command changed the policy
)

var kindNames = [...]string{
	KindStart: "start", KindStop: "stop", KindConnect: "connect", KindRefuse: "refuse",
	KindPublish: "publish", KindPublishRefused: "publish-refused", KindAdmin: "admin",
}

func (k Kind) String() string {
	if k >= KindStart && k <= KindAdmin {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind parses a kind's name.
func ParseKind(s string) (Kind, error) {
	for k := KindStart; k <= KindAdmin; k++ {
		if kindNames[k] == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("audit: unknown record kind %q", s)
}

// Path is how a published envelope reached the relay.
type Path uint8

const (
	PathNone  Path = 0
	PathRelay Path = 1 // from a client of the relay
	PathMesh  Path = 2 // from the mesh, through the bridge
)

func (p Path) String() string {
	switch p {
	case PathRelay:
		return "relay"
	case PathMesh:
		return "mesh"
	}
	return ""
}

// Record is one entry of the audit log. It never holds a message's
// payload: a publish is recorded by its ID, sender, room and size.
type Record struct {
	Kind          Kind
	Time          int64  // Unix ms, the relay's clock
	PolicyVersion uint64 // the policy that decided
	// Identity is who: the connecting or publishing identity, the
	// target of an admin command. Zero when there is none.
	Identity identity.PublicKey
	Message  protocol.ID // the envelope ID of a publish
	Size     uint32      // the envelope's size in bytes
	Path     Path
	Code     wire.ErrorCode // why a refusal
	Room     string
	Addr     string // the client's IP address and port
	Detail   string // the decision's reason, or the admin command
}

// ErrMalformed: bytes that are not a record.
var ErrMalformed = errors.New("audit: malformed record")

func printable(s string, max int) bool {
	if len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// MarshalBinary encodes the record: every field, always, in one order.
func (r *Record) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, r.encodedLen()))
}

// encodedLen is the length of the record's encoding.
func (r *Record) encodedLen() int {
	return recordHead + 1 + len(r.Room) + 1 + len(r.Addr) + 2 + len(r.Detail)
}

// AppendBinary appends the record's encoding to b.
func (r *Record) AppendBinary(b []byte) ([]byte, error) {
	if r.Kind < KindStart || r.Kind > KindAdmin {
		return nil, fmt.Errorf("audit: record of kind %d", r.Kind)
	}
	if r.Room != "" {
		if err := protocol.ValidRoom(r.Room); err != nil {
			return nil, fmt.Errorf("audit: record: %w", err)
		}
	}
	if !printable(r.Addr, MaxAddr) || !printable(r.Detail, MaxDetail) {
		return nil, errors.New("audit: record: address or detail too long or not printable")
	}
	if r.Path > PathMesh || r.Time < 0 {
		return nil, errors.New("audit: record: path or time out of range")
	}
	b = append(b, Version, uint8(r.Kind))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time))
	b = binary.BigEndian.AppendUint64(b, r.PolicyVersion)
	if r.Identity.IsZero() {
		b = append(b, make([]byte, 32)...)
	} else {
		id := r.Identity.Array()
		b = append(b, id[:]...)
	}
	b = append(b, r.Message[:]...)
	b = binary.BigEndian.AppendUint32(b, r.Size)
	b = append(b, uint8(r.Path))
	b = binary.BigEndian.AppendUint16(b, uint16(r.Code))
	// ValidRoom and printable bound the lengths: MaxRoomLen and MaxAddr
	// are below 256, MaxDetail below 65,536.
	b = append(b, uint8(len(r.Room)))
	b = append(b, r.Room...)
	b = append(b, uint8(len(r.Addr)))
	b = append(b, r.Addr...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Detail)))
	b = append(b, r.Detail...)
	return b, nil
}

// recordHead is the length of a record's fixed fields: version, kind,
// time, policy version, identity, message, size, path and code.
const recordHead = 1 + 1 + 8 + 8 + 32 + 32 + 4 + 1 + 2

// RecordLen returns the length of the record that data begins with, read
// from its length fields alone: the store keeps a commit's records one
// after another and splits them with it. It checks nothing else.
func RecordLen(data []byte) (int, error) {
	n := recordHead
	if len(data) < n+1 {
		return 0, fmt.Errorf("%w: %d bytes", ErrMalformed, len(data))
	}
	n += 1 + int(data[n]) // room
	if len(data) < n+1 {
		return 0, fmt.Errorf("%w: cut in the room", ErrMalformed)
	}
	n += 1 + int(data[n]) // address
	if len(data) < n+2 {
		return 0, fmt.Errorf("%w: cut in the address", ErrMalformed)
	}
	n += 2 + int(binary.BigEndian.Uint16(data[n:])) // detail
	if len(data) < n {
		return 0, fmt.Errorf("%w: cut in the detail", ErrMalformed)
	}
	return n, nil
}

// ParseRecord parses an encoded record strictly: one encoding per record.
func ParseRecord(data []byte) (*Record, error) {
	if len(data) > MaxRecord {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(data))
	}
	s := cryptobyte.String(data)
	var (
		r                   Record
		version, kind, path uint8
		t                   uint64
		code                uint16
		id                  [32]byte
		room, addr, detail  cryptobyte.String
	)
	if !s.ReadUint8(&version) || version != Version {
		return nil, fmt.Errorf("%w: version", ErrMalformed)
	}
	if !s.ReadUint8(&kind) || !s.ReadUint64(&t) || !s.ReadUint64(&r.PolicyVersion) ||
		!s.CopyBytes(id[:]) || !s.CopyBytes(r.Message[:]) || !s.ReadUint32(&r.Size) ||
		!s.ReadUint8(&path) || !s.ReadUint16(&code) || !s.ReadUint8LengthPrefixed(&room) ||
		!s.ReadUint8LengthPrefixed(&addr) || !s.ReadUint16LengthPrefixed(&detail) || !s.Empty() {
		return nil, fmt.Errorf("%w: layout", ErrMalformed)
	}
	r.Kind, r.Time, r.Path, r.Code = Kind(kind), int64(t), Path(path), wire.ErrorCode(code)
	r.Room, r.Addr, r.Detail = string(room), string(addr), string(detail)
	if r.Kind < KindStart || r.Kind > KindAdmin || r.Path > PathMesh || r.Time < 0 {
		return nil, fmt.Errorf("%w: kind, path or time out of range", ErrMalformed)
	}
	if r.Room != "" && protocol.ValidRoom(r.Room) != nil {
		return nil, fmt.Errorf("%w: room", ErrMalformed)
	}
	if !printable(r.Addr, MaxAddr) || !printable(r.Detail, MaxDetail) {
		return nil, fmt.Errorf("%w: text", ErrMalformed)
	}
	if id != ([32]byte{}) {
		pk, err := identity.PublicKeyFromBytes(id[:])
		if err != nil {
			return nil, fmt.Errorf("%w: identity: %v", ErrMalformed, err)
		}
		r.Identity = pk
	}
	return &r, nil
}

// View is a record as `relay audit show --json` prints it.
type View struct {
	Index         int64  `json:"index"`
	Kind          string `json:"kind"`
	Time          string `json:"time"`
	PolicyVersion uint64 `json:"policy_version"`
	Identity      string `json:"identity,omitempty"` // fingerprint
	Message       string `json:"message,omitempty"`
	Size          uint32 `json:"size,omitempty"`
	Path          string `json:"path,omitempty"`
	Code          string `json:"code,omitempty"`
	Room          string `json:"room,omitempty"`
	Addr          string `json:"addr,omitempty"`
	Detail        string `json:"detail,omitempty"`
}

// View returns the record's printable form, as record index of the log.
func (r *Record) View(index int64) View {
	v := View{Index: index, Kind: r.Kind.String(), Time: time.UnixMilli(r.Time).UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		PolicyVersion: r.PolicyVersion, Size: r.Size, Path: r.Path.String(), Room: r.Room, Addr: r.Addr, Detail: r.Detail}
	if !r.Identity.IsZero() {
		v.Identity = r.Identity.Fingerprint()
	}
	if r.Message != (protocol.ID{}) {
		v.Message = r.Message.String()
	}
	if r.Code != wire.CodeOK {
		v.Code = r.Code.String()
	}
	return v
}
