package server

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/quic-go/quic-go"

	"github.com/parleychat/parley/audit"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/relay"
	"github.com/parleychat/parley/relay/transport"
	"github.com/parleychat/parley/relay/wire"
)

// randomStream is one stream of the random-bodies attack.
type randomStream struct {
	t    wire.FrameType
	body []byte
}

// randomStreams are rounds streams for each frame type, 0 and 26 (unknown)
// to 25, each a frame of that type with random bytes as its body: mostly
// short, a quarter of them up to 4 KiB.
func randomStreams(rng *rand.Rand, rounds int) []randomStream {
	var out []randomStream
	for range rounds {
		for ft := range wire.FrameType(27) {
			n := rng.IntN(96)
			if rng.IntN(4) == 0 {
				n = rng.IntN(4096)
			}
			body := make([]byte, n)
			for i := range body {
				body[i] = byte(rng.Uint32())
			}
			out = append(out, randomStream{ft, body})
		}
	}
	return out
}

// TestAttackRandomBodies: every frame type, as the first frame of a
// stream, with random bytes as its body, over QUIC and TCP. The relay
// answers each with frames of its protocol, or an Error frame with a
// documented code, or nothing, and ends every stream (none is left open
// for 60 s); it does not crash; it holds no subscription afterwards; and
// the honest clients lose nothing. PARLEY_ATTACK_SEED sets the seed
// (printed), PARLEY_ATTACK_RANDOM the rounds per type (default 8).
func TestAttackRandomBodies(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := envInt(t, "PARLEY_ATTACK_SEED", 0); s != 0 {
		seed = uint64(s)
	}
	rounds := envInt(t, "PARLEY_ATTACK_RANDOM", 8)
	t.Logf("seed %d (PARLEY_ATTACK_SEED=%d to rerun), %d rounds per frame type", seed, seed, rounds)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	r := startRelay(t, attackLimits)
	h := startHonest(t, r)
	codes := map[int]int{}
	var mu sync.Mutex
	for _, via := range []transport.Kind{transport.QUIC, transport.TCP} {
		conn := rawConn(t, r, testkit.Key(t), via)
		streams := randomStreams(rng, rounds)
		pipelined(len(streams), 8, func(i int) {
			rs := streams[i]
			got, err := talk(conn, [][]byte{wire.AppendFrame(nil, rs.t, rs.body)}, 0, true)
			code, msg := judgeRandom(rs.t, got, err)
			if msg != "" {
				t.Errorf("%s, stream %d, a %s frame of %d random bytes %x: %s", via, i, rs.t, len(rs.body), rs.body[:min(len(rs.body), 32)], msg)
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
		if got, err := talk(conn, [][]byte{wire.AppendFrame(nil, wire.FrameInfoRequest, nil)}, 0, true); err != io.EOF || len(got) != 1 || got[0].t != wire.FrameInfo {
			t.Fatalf("%s: an info request after the random frames: %v, %v", via, got, err)
		}
	}
	t.Logf("answers by code (-1: no Error frame): %v", codes)
	waitFor(t, "the relay to hold only the honest subscription", func() bool { return testutil.ToFloat64(r.srv.metrics.subscriptions) == 1 })
	h.check(t)
}

// judgeRandom says what is wrong with the relay's answer to a frame of
// type ft with a random body, or "": every frame it sent is one a relay
// sends, and an Error frame, if any, is the last, parses and has a code
// of the protocol (1 for an unknown type). It returns the Error code, -1
// for none.
func judgeRandom(ft wire.FrameType, got []frame, err error) (int, string) {
	if err != io.EOF && !isStreamEnd(err) {
		return -1, fmt.Sprintf("the stream ended with %v after %d frames", err, len(got))
	}
	for i, f := range got {
		switch f.t {
		case wire.FrameError:
			if i != len(got)-1 {
				return -1, "frames after an Error frame"
			}
			re, perr := wire.ParseErrorFrame(f.body)
			if perr != nil || re.Code == wire.CodeOK || re.Code > wire.CodeExpired || re.Code == wire.CodeInternal {
				return -1, fmt.Sprintf("Error frame %v, %v", re, perr)
			}
			if !ft.Known() && (re.Code != wire.CodeBadFrame || !strings.Contains(re.Message, fmt.Sprintf("unknown type %d", ft))) {
				return int(re.Code), fmt.Sprintf("an unknown type answered with %v", re)
			}
			return int(re.Code), ""
		case wire.FramePublish, wire.FrameSubscribe, wire.FrameFetchRange, wire.FrameFetchIDs, wire.FramePeersRequest,
			wire.FrameInfoRequest, wire.FrameRedeem, wire.FrameProveTree, wire.FramePutKeys, wire.FrameGetKeys, wire.FrameRoomsRequest:
			return -1, fmt.Sprintf("the relay sent a %s frame", f.t)
		}
	}
	if !ft.Known() {
		return -1, "an unknown type answered without an Error frame"
	}
	return -1, ""
}

// waitFor polls cond every 10 ms until it holds, or fails t after 60 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(attackWait); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 60 s for %s", what)
		}
	}
}

// policyAttacker is an identity the policy refuses, and what it tries.
type policyAttacker struct {
	name string
	key  identity.PrivateKey
	code wire.ErrorCode
	env  []byte      // an envelope it signed
	id   protocol.ID // its ID
	kp   []byte      // a key package it signed
}

// TestAttackPolicy: on an allowlist relay, a banned identity and one not
// on the list try every frame type over QUIC (each a new connection), and
// connect over TCP. Each is refused with its code (14 banned, 13 not
// allowed); nothing of theirs is stored (their envelope, their key
// package); and the audit log records the refusals within its rate: with
// the relay's clock standing still, exactly the burst of 20, the rest
// counted in the next record once the clock moves. Honest clients, on the
// allow list, lose nothing.
func TestAttackPolicy(t *testing.T) {
	var clock atomic.Pointer[time.Time]
	now := time.Now()
	clock.Store(&now)
	r := startRelayAt(t, t.TempDir()+"/relay.db", testkit.Key(t), func(c *Config) {
		attackLimits(c)
		c.Policy.Mode = "allowlist"
	}, func(s *Server) { s.now = func() time.Time { return *clock.Load() } })
	ctx := ctxT(t)
	var attackers []*policyAttacker
	for _, a := range []struct {
		name string
		code wire.ErrorCode
	}{{"banned", wire.CodeBanned}, {"not allowed", wire.CodeNotAllowed}} {
		key := testkit.Key(t)
		env, id := (&testkit.Author{Key: key, Room: honestRoom}).Next(t, "from "+a.name)
		attackers = append(attackers, &policyAttacker{name: a.name, key: key, code: a.code, env: env, id: id, kp: newPackage(t, key, 1, now, time.Hour)})
	}
	if err := r.srv.Policy().Ban(ctx, attackers[0].key.Public(), "attack"); err != nil {
		t.Fatal(err)
	}
	h := startHonest(t, r)
	refusesBefore := auditCount(t, r, audit.KindRefuse, identity.PublicKey{})
	if refusesBefore != 0 {
		t.Fatalf("%d refusals recorded before the attack", refusesBefore)
	}
	tries := 0
	for ft := wire.FramePublish; ft <= wire.FrameRooms; ft++ {
		for _, a := range attackers { // interleaved, so that both are in the burst
			if err := a.try(t, r, ft); err != nil {
				t.Errorf("%s identity, %s frame over QUIC: %v", a.name, ft, err)
			}
			tries++
		}
	}
	for _, a := range attackers {
		_, err := relay.DialTCP(ctx, r.addr, a.key)
		if !errors.Is(err, &wire.RelayError{Code: a.code}) {
			t.Errorf("%s identity over TCP: %v, want code %s", a.name, err, a.code)
		}
		tries++
	}
	checkNothingStored(t, r, attackers)
	checkRefusalRecords(t, r, attackers, tries, &clock)
	h.check(t)
}

// try connects as a over QUIC and sends one frame of type ft on a
// stream: its envelope for a Publish, its key package for a PutKeys, an
// empty body otherwise. It returns nil if the relay refused it with a's
// code.
func (a *policyAttacker) try(t testing.TB, r *testRelay, ft wire.FrameType) error {
	ctx := ctxT(t)
	qc, err := relay.DialQUIC(ctx, r.addr, a.key)
	if err == nil {
		defer qc.CloseWithError(0, "")
		var body []byte
		switch ft {
		case wire.FramePublish:
			body = a.env
		case wire.FramePutKeys:
			body = a.kp
		}
		_, err = talk(transport.FromQUIC(qc), [][]byte{wire.AppendFrame(nil, ft, body)}, 0, true)
		err = transport.RemoteError(err)
	}
	if !errors.Is(err, &wire.RelayError{Code: a.code}) {
		var ae *quic.ApplicationError
		errors.As(err, &ae)
		return fmt.Errorf("%v (%v), want code %s", err, ae, a.code)
	}
	return nil
}

// checkNothingStored fails t if r stored an attacker's envelope or key
// package.
func checkNothingStored(t *testing.T, r *testRelay, attackers []*policyAttacker) {
	t.Helper()
	var keys []identity.PublicKey
	for _, a := range attackers {
		if storedFrom(t, r, a.id) {
			t.Errorf("the relay stored the %s identity's envelope", a.name)
		}
		keys = append(keys, a.key.Public())
	}
	got, err := r.st.KeyPackages(ctxT(t), keys, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("the relay stored %d key packages of refused identities", len(got))
	}
}

// checkRefusalRecords checks the audit log's refusal records after tries
// refusals from 127.0.0.1 with the relay's clock standing still: exactly
// the burst, both attackers in it, the rest counted by the metric; then,
// a second later, one more record that counts the rest.
func checkRefusalRecords(t *testing.T, r *testRelay, attackers []*policyAttacker, tries int, clock *atomic.Pointer[time.Time]) {
	t.Helper()
	count := func() int { return auditCount(t, r, audit.KindRefuse, identity.PublicKey{}) }
	waitFor(t, fmt.Sprintf("%d refusal records", refusalBurst), func() bool { return count() >= refusalBurst })
	if n := count(); n != refusalBurst {
		t.Fatalf("%d refusal records of %d refusals with the clock standing still, want the burst of %d", n, tries, refusalBurst)
	}
	for _, a := range attackers {
		if n := auditCount(t, r, audit.KindRefuse, a.key.Public()); n == 0 {
			t.Errorf("no refusal of the %s identity recorded", a.name)
		}
	}
	if n := testutil.ToFloat64(r.srv.metrics.unrecorded); int(n) != tries-refusalBurst {
		t.Errorf("%v refusals counted as not recorded, want %d", n, tries-refusalBurst)
	}
	later := clock.Load().Add(time.Second)
	clock.Store(&later)
	if err := attackers[1].try(t, r, wire.FrameInfoRequest); err != nil {
		t.Fatalf("a refusal a second later: %v", err)
	}
	waitFor(t, "the refusal record a second later", func() bool { return count() > refusalBurst })
	last := lastRefusal(t, r)
	want := fmt.Sprintf("(and %d refusals of 127.0.0.1 before it", tries-refusalBurst)
	if !strings.Contains(last.Detail, want) {
		t.Fatalf("the last refusal record says %q; want %q", last.Detail, want)
	}
	t.Logf("%d refusals with the clock still: %d recorded; one a second later recorded as %q", tries, refusalBurst, last.Detail)
}

// lastRefusal is the last refusal record in r's audit log.
func lastRefusal(t testing.TB, r *testRelay) *audit.Record {
	t.Helper()
	entries, err := r.st.AuditEntries(ctxT(t), 0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(entries) - 1; i >= 0; i-- {
		if rec, err := audit.ParseRecord(entries[i].Data); err == nil && rec.Kind == audit.KindRefuse {
			return rec
		}
	}
	t.Fatal("no refusal record")
	return nil
}
