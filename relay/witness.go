package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/relay/wire"
	"golang.org/x/mod/sumdb/tlog"
)

// checkAck checks an acknowledgement's receipt with the witness, which
// keeps a security error found, whether or not the publish still waits
// for it. A publish does not wait for the consistency check of the
// checkpoint: a round trip per checkpoint would stall pipelined
// publishing; but when the checks lag too far behind, it waits for them.
func (c *Client) checkAck(ack *wire.Ack, raw []byte) error {
	var r *audit.Receipt
	if ar := ack.Receipt; ar != nil {
		r = &audit.Receipt{Index: ar.Index, Time: ar.Time, PolicyVersion: ar.PolicyVersion, Checkpoint: ar.Checkpoint, Proof: ar.Proof}
	}
	if err := c.witness.CheckReceipt(ack.ID, ack.Status == wire.AckStored, r, raw); err != nil {
		return err
	}
	for c.witness.Pending() >= audit.MaxPending {
		select {
		case c.ckWake <- struct{}{}:
		default:
		}
		select {
		case <-c.ckTaken:
		case <-c.done:
			return errClientClosed
		}
	}
	select {
	case c.ckWake <- struct{}{}:
	default: // already woken
	}
	return nil
}

// RelayKey is the key the relay proved, zero before the first connection.
func (c *Client) RelayKey() identity.PublicKey { return c.relayKey() }

// relayKey is the key the relay proved.
func (c *Client) relayKey() identity.PublicKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.relay
}

// ErrAuditLog: the relay showed an audit receipt or checkpoint that does
// not check out, or a log inconsistent with one it showed before: it
// forked or rewrote its log (audit.ErrSecurity). This is a security
// error, for the user to see, not a failure to retry; once found, every
// publish fails with it.
var ErrAuditLog = audit.ErrSecurity

// Checkpoint returns the newest signed audit checkpoint proved
// consistent, for the application to keep (ClientOptions.Checkpoint) so
// that the next session holds the relay to it too. Nil before the first.
func (c *Client) Checkpoint() []byte { return c.witness.Checkpoint() }

// checkInterval is the least time between two consistency requests. The
// checkpoints seen meanwhile are proved in one request: at a few hundred
// commits a second, one request per commit cost the relay and the client
// more than all the receipts' own checks.
const checkInterval = 50 * time.Millisecond

// checkLoop checks the checkpoints seen against each other and the one
// kept, with consistency proofs from the relay: all those seen since the
// last request at once, so that its cost does not grow with the rate of
// commits.
func (c *Client) checkLoop() {
	defer close(c.ckStopped)
	var (
		last   time.Time
		b      backoff // between attempts at a check that could not be done
		warned string  // the last failure told, not told again
	)
	for {
		select {
		case <-c.ckWake:
		case <-c.done:
			return
		}
		if wait := checkInterval - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.done:
				t.Stop()
				return
			}
		}
		c.checkMu.Lock()
		seen := c.witness.Take()
		select {
		case c.ckTaken <- struct{}{}:
		default:
		}
		err := c.proveSeen(c.life, seen)
		c.checkMu.Unlock()
		switch {
		case err == nil:
			b.reset()
			warned = ""
		case errors.Is(err, ErrAuditLog):
			c.log.Error("relay audit log", "relay", c.addr.String(), "err", err)
			return // final: nothing more to check
		case c.life.Err() != nil:
			// Closing: the checkpoints not proved are not kept
			// (Checkpoint returns the last one proved), and the next
			// session proves the relay's log from that one.
			return
		default:
			// Not done, for want of a connection or an answer: the
			// checkpoints wait for the next try, after a reconnection.
			// A lost connection is told once, as a state change; a
			// relay that answers but does not prove is told here, once
			// until a check succeeds.
			if c.State().Status == StatusConnected && errText(err) != warned {
				warned = errText(err)
				c.log.Warn("relay audit: consistency check failed; will try again", "relay", c.addr.String(), "err", err)
			} else {
				c.log.Debug("relay audit: consistency check waits", "relay", c.addr.String(), "err", err)
			}
			if !c.awaitRetry(&b) {
				return
			}
			select {
			case c.ckWake <- struct{}{}:
			default:
			}
		}
		last = time.Now()
	}
}

// proveSeen proves the checkpoints seen consistent with each other and
// the one kept, in requests of at most wire.MaxProofs. A request that
// could not be made or answered puts back what it did not prove, for a
// later try, and returns its error; an error wrapping ErrAuditLog is
// final. The caller holds checkMu.
func (c *Client) proveSeen(ctx context.Context, seen []audit.Seen) error {
	for len(seen) > 0 {
		n := min(len(seen), wire.MaxProofs-1) // and the one kept
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := c.witness.Check(seen[:n:n], func(newSize int64, olds []int64) ([]tlog.TreeProof, error) {
			return c.proveTree(rctx, newSize, olds)
		})
		cancel()
		switch {
		case errors.Is(err, ErrAuditLog):
			return err
		case err != nil:
			c.witness.PutBack(seen)
			return err
		}
		seen = seen[n:]
	}
	return nil
}

// Settle proves, now, every audit checkpoint seen so far (those of the
// receipts of this session's publishes) consistent with each other and
// with the one kept from earlier sessions, and returns the relay's audit
// error if it has one. A command that ends after its publish calls it
// before it reports success: the background check would not have run
// yet, and a truncated or rewritten log would go unnoticed. An error that
// does not wrap ErrAuditLog means the check could not be made now (no
// connection, ctx ended): the checkpoints wait, and Checkpoint still
// returns the last one proved.
func (c *Client) Settle(ctx context.Context) error {
	c.checkMu.Lock()
	defer c.checkMu.Unlock()
	err := c.proveSeen(ctx, c.witness.Take())
	if werr := c.witness.Err(); werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("relay: audit: consistency check: %w", err)
	}
	return nil
}

// awaitRetry waits before another try at a consistency check: for a
// client made by Start, until it is connected, and then a backoff. It
// returns false once the client is closed.
func (c *Client) awaitRetry(b *backoff) bool {
	for c.background {
		c.stMu.Lock()
		changed, status := c.changed, c.state.Status
		c.stMu.Unlock()
		if status == StatusConnected {
			break
		}
		if status == StatusRefused {
			return false
		}
		select {
		case <-changed:
		case <-c.done:
			return false
		}
	}
	t := time.NewTimer(b.wait())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.done:
		return false
	}
}

// AuditError returns the security error found in the relay's audit log, if
// any: a fork or a rewrite, which the application must show to its user.
func (c *Client) AuditError() error { return c.witness.Err() }

// proveTree asks the relay for proofs that its log of newSize records
// extends its logs of the sizes in olds. A relay that will not prove
// sizes it signed is a security error (a log rolled back or restored from
// a backup looks like this); a lost connection is not.
func (c *Client) proveTree(ctx context.Context, newSize int64, olds []int64) ([]tlog.TreeProof, error) {
	req := &wire.ProveTree{New: uint64(newSize), Old: make([]uint64, len(olds))}
	for i, o := range olds {
		req.Old[i] = uint64(o)
	}
	body, err := req.MarshalBinary()
	if err != nil {
		return nil, err
	}
	var proofs []tlog.TreeProof
	err = c.retry(ctx, "prove tree", func() error {
		fr, done, err := c.request(ctx, wire.FrameProveTree, body)
		if err != nil {
			return err
		}
		defer done()
		t, b, err := readFrame(fr)
		var re *wire.RelayError
		if errors.As(err, &re) && re.Code != wire.CodeShuttingDown && re.Code != wire.CodeIdle {
			return fmt.Errorf("%w: the relay will not prove its log of %d records: %w", ErrAuditLog, newSize, err)
		}
		if err != nil {
			return err
		}
		if t != wire.FrameTreeProof {
			return fmt.Errorf("relay: prove tree: answered with %s", t)
		}
		m, err := wire.ParseTreeProof(b)
		if err != nil {
			return err
		}
		if len(m.Proofs) != len(olds) {
			return fmt.Errorf("%w: %d consistency proofs for %d asked", ErrAuditLog, len(m.Proofs), len(olds))
		}
		proofs = make([]tlog.TreeProof, len(m.Proofs))
		for i, p := range m.Proofs {
			proofs[i] = make(tlog.TreeProof, len(p))
			for j, h := range p {
				proofs[i][j] = h
			}
		}
		return nil
	})
	return proofs, err
}
