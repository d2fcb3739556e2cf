package wire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"

	"github.com/parleychat/parley/protocol"
)

// The publish stream's frames: Ack with the audit receipt it carries,
// Nack, and the Error frame that ends any stream.

// AckStatus says what a committed publish was.
type AckStatus uint8

const (
	// AckStored: the envelope is new and committed.
	AckStored AckStatus = 1
	// AckDuplicate: the relay had committed this envelope before; a
	// client that resends after a lost acknowledgement gets this.
	AckDuplicate AckStatus = 2
)

// Ack acknowledges a publish once the envelope is committed to disk.
type Ack struct {
	ID     protocol.ID
	Status AckStatus
	// Pos is the envelope's position in the relay's log: the order in
	// which subscribers get it.
	Pos uint64
	// Time is when the relay committed it, Unix ms.
	Time int64
	// Receipt proves the publish's record is in the relay's audit log
	// (of a duplicate too: a client's publish is recorded each time);
	// nil when the relay keeps no audit log, or for a duplicate from a
	// relay of before that.
	Receipt *Receipt
}

// Receipt is a publish's audit receipt: the index of its record in the
// relay's audit log, the two fields of that record the client cannot know
// (the relay's time and policy version: the client rebuilds the record
// from them and its envelope, docs/audit.md), a checkpoint of the log
// signed by the relay (a signed note), and the Merkle proof that the
// record is in the tree the checkpoint names. On a publish stream the
// checkpoint is sent only when it changes: an empty one means the one of
// the stream's previous receipt. So are the hashes a proof shares with the
// previous receipt's (those of one commit share all but their first few):
// Shared says how many of the previous receipt's last hashes end this one.
type Receipt struct {
	Index         uint64
	Time          int64
	PolicyVersion uint64
	Checkpoint    []byte
	Proof         [][32]byte
	Shared        uint8
}

// Limits of a receipt.
const (
	MaxCheckpointNote = 1024
	MaxProofHashes    = 64
)

func addHashes(b *cryptobyte.Builder, hs [][32]byte) {
	b.AddUint8(uint8(len(hs)))
	for _, h := range hs {
		b.AddBytes(h[:])
	}
}

func readHashes(s *cryptobyte.String, out *[][32]byte) bool {
	var n uint8
	if !s.ReadUint8(&n) || n > MaxProofHashes {
		return false
	}
	hs := make([][32]byte, n)
	for i := range hs {
		if !s.CopyBytes(hs[i][:]) {
			return false
		}
	}
	*out = hs
	return true
}

func (a *Ack) MarshalBinary() ([]byte, error) { return a.AppendBinary(nil) }

// AppendBinary appends the Ack's body to b: the relay writes one per
// publish, so it is encoded field by field, without a builder.
func (a *Ack) AppendBinary(b []byte) ([]byte, error) {
	r := a.Receipt
	if r != nil && (len(r.Checkpoint) > MaxCheckpointNote || len(r.Proof)+int(r.Shared) > MaxProofHashes || r.Time < 0) {
		return nil, errors.New("wire: receipt out of bounds")
	}
	if a.Time < 0 { // ParseAck refuses it: never send what the client drops
		return nil, errors.New("wire: ack time before 1970")
	}
	b = append(b, a.ID[:]...)
	b = append(b, uint8(a.Status))
	b = binary.BigEndian.AppendUint64(b, a.Pos)
	b = binary.BigEndian.AppendUint64(b, uint64(a.Time))
	if r == nil {
		return append(b, 0), nil
	}
	b = append(b, 1)
	b = binary.BigEndian.AppendUint64(b, r.Index)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time))
	b = binary.BigEndian.AppendUint64(b, r.PolicyVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Checkpoint)))
	b = append(b, r.Checkpoint...)
	b = append(b, uint8(len(r.Proof)))
	for _, h := range r.Proof {
		b = append(b, h[:]...)
	}
	return append(b, r.Shared), nil
}

// ParseAck parses an Ack body.
func ParseAck(body []byte) (*Ack, error) {
	s := cryptobyte.String(body)
	var a Ack
	var status, has uint8
	var t uint64
	if !readID(&s, &a.ID) || !s.ReadUint8(&status) || !s.ReadUint64(&a.Pos) || !s.ReadUint64(&t) || !s.ReadUint8(&has) || has > 1 {
		return nil, badFrame(FrameAck, "bad layout")
	}
	if has == 1 {
		var r Receipt
		var t uint64
		var note cryptobyte.String
		if !s.ReadUint64(&r.Index) || !s.ReadUint64(&t) || t > 1<<63-1 || !s.ReadUint64(&r.PolicyVersion) ||
			!s.ReadUint16LengthPrefixed(&note) || len(note) > MaxCheckpointNote || !readHashes(&s, &r.Proof) ||
			!s.ReadUint8(&r.Shared) || len(r.Proof)+int(r.Shared) > MaxProofHashes {
			return nil, badFrame(FrameAck, "bad receipt")
		}
		r.Time = int64(t)
		if len(note) > 0 {
			r.Checkpoint = append([]byte(nil), note...)
		}
		a.Receipt = &r
	}
	if !s.Empty() {
		return nil, badFrame(FrameAck, "trailing bytes")
	}
	a.Status, a.Time = AckStatus(status), int64(t)
	if a.Status != AckStored && a.Status != AckDuplicate {
		return nil, badFrame(FrameAck, "unknown status")
	}
	if a.Time < 0 || a.Pos == 0 || a.Pos > 1<<63-1 {
		return nil, badFrame(FrameAck, "position or time out of range")
	}
	return &a, nil
}

// Nack refuses one publish: the envelope with ID (the hash of the bytes
// sent, even if they do not parse) was not committed.
type Nack struct {
	ID  protocol.ID
	Err RelayError
}

func (n *Nack) MarshalBinary() ([]byte, error) {
	if err := checkError(&n.Err); err != nil {
		return nil, err
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddBytes(n.ID[:])
		b.AddUint16(uint16(n.Err.Code))
		addText(b, n.Err.Message)
	}), nil
}

// ParseNack parses a Nack body.
func ParseNack(body []byte) (*Nack, error) {
	s := cryptobyte.String(body)
	var n Nack
	var code uint16
	if !readID(&s, &n.ID) || !s.ReadUint16(&code) || !readText(&s, MaxErrorMessage, &n.Err.Message) || !s.Empty() {
		return nil, badFrame(FrameNack, "bad layout")
	}
	n.Err.Code = ErrorCode(code)
	if n.Err.Code == CodeOK {
		return nil, badFrame(FrameNack, "code 0")
	}
	return &n, nil
}

func checkError(e *RelayError) error {
	if len(e.Message) > MaxErrorMessage {
		return fmt.Errorf("wire: error message of %d bytes, limit %d", len(e.Message), MaxErrorMessage)
	}
	var s string
	b := build(func(b *cryptobyte.Builder) { addText(b, e.Message) })
	str := cryptobyte.String(b)
	if !readText(&str, MaxErrorMessage, &s) {
		return errors.New("wire: error message is not printable UTF-8")
	}
	return nil
}

// MarshalErrorFrame encodes an Error frame's body.
func MarshalErrorFrame(e *RelayError) ([]byte, error) {
	if err := checkError(e); err != nil {
		return nil, err
	}
	return build(func(b *cryptobyte.Builder) {
		b.AddUint16(uint16(e.Code))
		addText(b, e.Message)
	}), nil
}

// ParseErrorFrame parses an Error frame's body.
func ParseErrorFrame(body []byte) (*RelayError, error) {
	s := cryptobyte.String(body)
	var e RelayError
	var code uint16
	if !s.ReadUint16(&code) || !readText(&s, MaxErrorMessage, &e.Message) || !s.Empty() {
		return nil, badFrame(FrameError, "bad layout")
	}
	e.Code = ErrorCode(code)
	return &e, nil
}
