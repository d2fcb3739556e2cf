package server

import (
	"bytes"
	"time"

	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
	"golang.org/x/mod/sumdb/tlog"
)

// acker writes the answers of one publish stream, in the order of the
// publishes: an Ack with its audit receipt, or a Nack. A receipt leaves
// out what the previous one on the stream said already (the checkpoint,
// the hashes its proof ends with).
type acker struct {
	s   *Server
	str transport.Stream
	fw  *wire.Writer

	lastCheckpoint []byte           // the checkpoint of the previous receipt on this stream
	lastProof      tlog.RecordProof // and its whole proof
	proof          [][32]byte       // the hashes a receipt sends, reused
	body           []byte           // an Ack's body, reused
	receipt        wire.Receipt
}

// acks writes the answer to each publish in order, flushing whenever no
// answer is waiting. After a write fails it still waits for every answer
// (the committer never waits for the stream) and returns that error.
func (s *Server) acks(str transport.Stream, fw *wire.Writer, inflight <-chan *pending) error {
	a := &acker{s: s, str: str, fw: fw}
	var werr error
	for p := range inflight {
		res := <-p.done
		if werr != nil {
			continue // drain: the senders' channels are buffered
		}
		werr = a.answer(p, res)
		if werr == nil && len(inflight) == 0 {
			werr = a.flush()
		}
	}
	if werr == nil {
		werr = a.flush()
	}
	return werr
}

func (a *acker) flush() error {
	a.str.SetWriteDeadline(time.Now().Add(a.s.lim().WriteTimeout.Duration))
	return a.fw.Flush()
}

// answer writes the Ack or Nack of one publish.
func (a *acker) answer(p *pending, res committed) error {
	m := a.s.metrics
	if res.err == nil && res.app.Result == store.Equivocation {
		res.err = &wire.RelayError{Code: wire.CodeEquivocation,
			Message: "another envelope of this sender has the same room and sequence number; it is kept as evidence"}
	}
	if res.err != nil {
		nack := &wire.Nack{ID: p.rec.ID, Err: *wire.AsRelayError(res.err)}
		nack.Err.Message = truncate(nack.Err.Message)
		m.publishes.WithLabelValues(nack.Err.Code.String()).Inc()
		return a.fw.Msg(wire.FrameNack, nack)
	}
	status, counter := wire.AckStored, m.publishStored
	if res.app.Result == store.Duplicate {
		status, counter = wire.AckDuplicate, m.publishDuplicate
	}
	counter.Inc()
	ack := wire.Ack{ID: p.rec.ID, Status: status, Pos: uint64(res.app.Pos), Time: res.time}
	if res.audited != nil {
		ack.Receipt = a.receiptOf(res.audited)
	}
	var err error
	if a.body, err = ack.AppendBinary(a.body[:0]); err != nil {
		return err
	}
	return a.fw.Raw(wire.FrameAck, a.body)
}

// receiptOf makes the receipt of an audited publish, in a.receipt.
func (a *acker) receiptOf(at *auditedAt) *wire.Receipt {
	a.receipt = wire.Receipt{Index: uint64(at.index), Time: at.record.Time, PolicyVersion: at.record.PolicyVersion}
	if !bytes.Equal(at.signed, a.lastCheckpoint) {
		a.receipt.Checkpoint = at.signed // else the same as the previous receipt's
		a.lastCheckpoint = at.signed
	}
	// The hashes this proof ends with that the previous one ended with
	// too are not sent again.
	full := at.proof
	k := 0
	for k < len(full) && k < len(a.lastProof) && full[len(full)-1-k] == a.lastProof[len(a.lastProof)-1-k] {
		k++
	}
	a.proof = a.proof[:0]
	for _, h := range full[:len(full)-k] {
		a.proof = append(a.proof, h)
	}
	a.receipt.Proof, a.receipt.Shared, a.lastProof = a.proof, uint8(k), full
	return &a.receipt
}
