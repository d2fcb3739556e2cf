package keypackage

import (
	"bytes"
	"fmt"
	"time"
)

// Valid reports, with an error wrapping ErrExpired, whether p is outside
// its life at now: expired (now at or after Expires), or made more than
// MaxSkew in the future.
func (p *Package) Valid(now time.Time) error {
	if now.Unix() >= p.Expires {
		return fmt.Errorf("%w: key package expired at %v", ErrExpired, time.Unix(p.Expires, 0).UTC())
	}
	if p.Created > now.Add(MaxSkew).Unix() {
		return fmt.Errorf("%w: key package made in the future, at %v", ErrExpired, time.Unix(p.Created, 0).UTC())
	}
	return nil
}

// Newer reports whether p replaces q, two packages of one device: p was
// made later, or at the same second and has the larger ID. Every peer
// that holds both gives the same answer.
func (p *Package) Newer(q *Package) bool {
	if p.Created != q.Created {
		return p.Created > q.Created
	}
	pid, qid := p.ID(), q.ID()
	return bytes.Compare(pid[:], qid[:]) > 0
}
