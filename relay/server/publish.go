package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
	"github.com/parleychat/parley/store"
)

// The publish stream: publishes read and checked in batches, queued for
// the committer in order, and answered in order by acks (acks.go).

// publishStream takes publishes from a stream, pipelined: the client may
// send many before the first acknowledgement, and gets each Ack (after
// the commit) or Nack in the order it sent them.
func (s *Server) publishStream(ctx context.Context, c *client, str transport.Stream, fr *wire.Reader, fw *wire.Writer, first []byte) {
	inflight := make(chan *pending, maxBatch)
	writeErr := make(chan error, 1)
	go func() { writeErr <- s.acks(str, fw, inflight) }()
	// At shutdown, stop reading: what was read is still committed and
	// acknowledged.
	stop := context.AfterFunc(ctx, func() { str.CancelRead(wire.CodeShuttingDown) })
	defer stop()
	// A bigger buffer than other streams get, so that a pipelining
	// client's publishes are read, and their signatures checked, many at
	// a time.
	fr.Resize(str, publishBuffer)
	var end *wire.RelayError
	raws := [][]byte{bytes.Clone(first)}
	for end == nil {
		// Take every publish already here, then check them together.
		for end == nil && len(raws) < maxVerifyBatch && fr.Buffered() {
			raw, err := nextPublish(fr)
			if err != nil {
				end = err
				break
			}
			raws = append(raws, raw)
		}
		s.acceptAll(ctx, c, raws, inflight)
		raws = raws[:0]
		if end != nil {
			break
		}
		raw, err := nextPublish(fr)
		if err != nil {
			end = err
			break
		}
		raws = append(raws, raw)
	}
	if end != nil && end.Code == wire.CodeOK {
		end = nil
	}
	close(inflight)
	if err := <-writeErr; err != nil {
		s.metrics.dropped.WithLabelValues(wire.CodeSlowConsumer.String()).Inc()
		str.CancelWrite(wire.CodeSlowConsumer)
		str.CancelRead(wire.CodeSlowConsumer)
		return
	}
	if end != nil {
		s.endStream(c, str, fw, end)
		return
	}
	str.Close()
}

const (
	// publishBuffer is the read buffer of a publish stream: about 24
	// envelopes of a few hundred bytes.
	publishBuffer = 8 << 10
	// maxVerifyBatch is the most publishes checked in one batch.
	maxVerifyBatch = 64
)

// nextPublish reads the next frame of a publish stream and returns a copy
// of its body. At the stream's end it returns an error with CodeOK; a
// frame that is not a publish, or a broken one, gets the error to send.
func nextPublish(fr *wire.Reader) ([]byte, *wire.RelayError) {
	t, b, err := fr.Next()
	switch {
	case err != nil && isStreamEnd(err):
		return nil, &wire.RelayError{Code: wire.CodeOK}
	case err != nil:
		return nil, wire.AsRelayError(err)
	case t != wire.FramePublish:
		return nil, &wire.RelayError{Code: wire.CodeBadFrame, Message: fmt.Sprintf("%s frame on a publish stream", t)}
	}
	return bytes.Clone(b), nil
}

func refused(code wire.ErrorCode, format string, args ...any) *pending {
	p := &pending{done: make(chan committed, 1)}
	p.done <- committed{err: &wire.RelayError{Code: code, Message: fmt.Sprintf(format, args...)}}
	return p
}

// acceptAll checks publishes of one stream, their signatures in one
// batch, and queues each that passes for the committer, in order. It
// sends to answers, in order, a pending of each that answers the client
// either way.
func (s *Server) acceptAll(ctx context.Context, c *client, raws [][]byte, answers chan<- *pending) {
	envs := make([]*protocol.Envelope, len(raws))
	errs := make([]error, len(raws))
	var (
		parsed []*protocol.Envelope
		at     []int // parsed[j] is envs[at[j]]
	)
	for i, raw := range raws {
		if len(raw) > s.lim().MaxEnvelope {
			continue // accept says so
		}
		if envs[i], errs[i] = protocol.Parse(raw); errs[i] == nil {
			parsed = append(parsed, envs[i])
			at = append(at, i)
		}
	}
	if bad := protocol.VerifyBatch(parsed); bad != nil {
		for j, err := range bad {
			if err != nil {
				envs[at[j]], errs[at[j]] = nil, err
			}
		}
	}
	b := &publishBatch{s: s, ctx: ctx, answers: answers, out: make([]*pending, 0, len(raws))}
	for i, raw := range raws {
		p, ok := s.accept(ctx, c, raw, envs[i], errs[i], b)
		if ok {
			b.queue = append(b.queue, p)
		}
		b.out = append(b.out, p)
	}
	b.flush()
}

// publishBatch is the publishes of one acceptAll on their way to the
// committer and to the stream's answers.
type publishBatch struct {
	s       *Server
	ctx     context.Context
	answers chan<- *pending
	// out has the publishes checked so far, in order; those before
	// out[sent] are with answers. queue has those that passed and are
	// not queued for the committer yet.
	out   []*pending
	sent  int
	queue []*pending
	// until is when the batch's publishes stop waiting for member-list
	// changes (private.go); zero until one waits.
	until time.Time
}

// flush queues for the committer, in order, what passed so far, and
// hands every publish checked so far to the answers: before a publish
// waits, so that the ones before it are not held up.
func (b *publishBatch) flush() {
	if n, err := b.s.enqueue(b.ctx, b.queue); err != nil {
		for _, p := range b.queue[n:] {
			p.done <- committed{err: &wire.RelayError{Code: wire.CodeShuttingDown, Message: "the relay is shutting down"}}
		}
	}
	b.queue = nil
	for _, p := range b.out[b.sent:] {
		b.answers <- p
	}
	b.sent = len(b.out)
}

// accept takes one published envelope, with what parsing and verifying it
// gave, and checks it against the relay's rules. The pending it returns
// answers the client either way; queue says it passed, and is for the
// committer, to be queued in b after the publishes before it.
func (s *Server) accept(ctx context.Context, c *client, raw []byte, env *protocol.Envelope, err error, b *publishBatch) (p *pending, queue bool) {
	id := protocol.IDOf(raw)
	nack := func(code wire.ErrorCode, format string, args ...any) (*pending, bool) {
		p := refused(code, format, args...)
		p.rec.ID = id
		return p, false
	}
	lim := s.lim()
	if len(raw) > lim.MaxEnvelope {
		return nack(wire.CodeTooLarge, "envelope of %d bytes, limit %d", len(raw), lim.MaxEnvelope)
	}
	switch {
	case errors.Is(err, protocol.ErrUnknownVersion):
		return nack(wire.CodeUnsupported, "%v", err)
	case errors.Is(err, protocol.ErrTooLarge):
		return nack(wire.CodeTooLarge, "%v", err)
	case err != nil:
		return nack(wire.CodeBadEnvelope, "%v", err)
	}
	switch err := protocol.CheckPayload(env); {
	case errors.Is(err, protocol.ErrUnknownVersion):
		return nack(wire.CodeUnsupported, "%v", err)
	case err != nil:
		return nack(wire.CodeBadEnvelope, "%v", err)
	}
	if !env.Sender.Equal(c.id) {
		return nack(wire.CodeNotSender, "the envelope is signed by %s, the connection is %s", env.Sender.Fingerprint(), c.fp)
	}
	// The rate first: a publish the policy refuses is an audit record,
	// and no client may write records faster than its rate allows.
	now := s.now()
	if !s.policy.admin(c.fp) && !s.idRates.allow(c.fp, now) {
		return nack(wire.CodeRateLimited, "over %g envelopes per second", lim.PublishRate)
	}
	d := s.policy.post(c.fp, env.Room)
	if !d.Allow {
		s.recordRefusal(ctx, c.fp, &audit.Record{Kind: audit.KindPublishRefused, PolicyVersion: d.Version, Identity: c.id, Message: id,
			Size: uint32(len(raw)), Room: env.Room, Addr: addrOf(c.addr), Code: d.Code, Detail: d.Reason})
		return nack(d.Code, "%s (policy version %d)", d.Reason, d.Version)
	}
	if skewed(now.UnixMilli(), env.Time, lim.Skew.Duration) {
		return nack(wire.CodeStale, "the envelope's time is %s from the relay's clock, limit %s",
			protocol.Age(now, env.Time).Round(time.Millisecond), lim.Skew.Duration)
	}
	// Last, the member list of a private room (private.go), which may
	// wait for a change; a change that passes is on the list from now on.
	if protocol.IsPrivateRoom(env.Room) {
		if code, msg := s.judgePublish(ctx, env, id, b); code != wire.CodeOK {
			return nack(code, "%s", msg)
		}
	}
	if s.bridge != nil {
		s.bridge.Join(env.Room)
	}
	return &pending{rec: store.Record{ID: id, Env: env, Raw: raw, Via: viaRelay, Received: now}, policy: d.Version, done: make(chan committed, 1)}, true
}

// skewed reports whether the time t (Unix milliseconds, an envelope's
// Time) is more than limit away from now (Unix milliseconds), either
// side. It compares milliseconds and cannot overflow: the distance
// between two int64 is exact as a uint64, where
// time.Duration(now-t)*time.Millisecond wraps (a time 2^58 ms away would
// be 0 ms away).
func skewed(now, t int64, limit time.Duration) bool {
	lim := uint64(max(limit.Milliseconds(), 0))
	if t < now {
		return uint64(now)-uint64(t) > lim
	}
	return uint64(t)-uint64(now) > lim
}
