package fuzz

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/parleychat/parley/client"
	"github.com/parleychat/parley/identity"
	"github.com/parleychat/parley/protocol"
	"github.com/parleychat/parley/store"
)

// FuzzClientConfig: any config file parses to a config or to ErrConfig;
// parsing is deterministic, and a config written out as TOML parses back
// to itself; a config that passes Validate is one the client can run
// with.
func FuzzClientConfig(f *testing.F) {
	f.Add([]byte("# a comment\nnick = \"bob\"\n"))
	f.Add([]byte("nick = \"alice\"\nmode = \"relay\"\nrelay = \"SHA256:5jV9gJBjzXqNYZCm7iKTZC6XL5PqDH1RCOJS3SBkjtc@relay.example.org:4433\"\n"))
	f.Add([]byte("peers = [\"/ip4/127.0.0.1/udp/4001/quic-v1/p2p/12D3KooW\"]\nmdns = false\n"))
	f.Add([]byte("colour = 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := client.ParseConfig(data)
		if err != nil {
			if !errors.Is(err, client.ErrConfig) {
				t.Fatalf("error %v is not ErrConfig", err)
			}
			return
		}
		if again, err := client.ParseConfig(data); err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("parsed twice, the same file gives %+v and %+v, %v", c, again, err)
		}
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(c); err != nil {
			t.Fatalf("a parsed config does not encode: %v", err)
		}
		back, err := client.ParseConfig(buf.Bytes())
		if err != nil || !reflect.DeepEqual(clientEmptyIsNil(back), clientEmptyIsNil(c)) {
			t.Fatalf("written out and parsed back, %+v becomes %+v, %v\n%s", c, back, err, buf.Bytes())
		}
		if err := c.Validate(); err != nil {
			if !errors.Is(err, client.ErrConfig) {
				t.Fatalf("error %v is not ErrConfig", err)
			}
			return
		}
		if identity.ValidNick(c.Nick) != nil {
			t.Fatalf("valid config with nick %q", c.Nick)
		}
		if !slices.Contains([]string{client.ModeAuto, client.ModeP2P, client.ModeRelay}, c.Mode) {
			t.Fatalf("valid config with mode %q", c.Mode)
		}
		if c.Mode == client.ModeRelay && len(c.Relays) == 0 {
			t.Fatal("relay mode without a relay passed")
		}
	})
}

// clientEmptyIsNil is c with empty lists as none: TOML writes both alike.
func clientEmptyIsNil(c client.Config) client.Config {
	if len(c.Peers) == 0 {
		c.Peers = nil
	}
	if len(c.Listen) == 0 {
		c.Listen = nil
	}
	if len(c.Relays) == 0 {
		c.Relays = nil
	}
	return c
}

// FuzzSearch: whatever a person types into history --search is a search,
// never an error, and finds only messages of the room searched.
func FuzzSearch(f *testing.F) {
	st, err := store.Open(filepath.Join(f.TempDir(), "chat.db"), store.Search())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	ctx := context.Background()
	for i, body := range []string{"the café opens at nine", `a "quoted" word AND an operator`, "NEAR(x y) * ^ -z"} {
		for _, room := range []string{"r", "other"} {
			raw := signedEnvelope(f, protocol.KindText, room, uint64(i+1), textPayload(f, "alice", body))
			e, err := protocol.Parse(raw)
			if err != nil {
				f.Fatal(err)
			}
			id := protocol.IDOf(raw)
			if _, err := st.Put(ctx, store.Record{ID: id, Env: e, Raw: raw, Via: "mesh", Received: time.Now()}); err != nil {
				f.Fatal(err)
			}
			if _, err := st.IndexText(ctx, id, "alice", body); err != nil {
				f.Fatal(err)
			}
		}
	}
	for _, q := range []string{"cafe", `"`, `""`, "AND", "NEAR(", "*", "^", "-", "a OR b", "col:x", "\x00", "nine café"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		got, err := st.Search(ctx, "r", q, 10)
		if err != nil {
			t.Fatalf("Search(%q): %v", q, err)
		}
		if len(got) > 3 {
			t.Fatalf("Search(%q) found %d of 3", q, len(got))
		}
		for _, r := range got {
			if r.Env.Room != "r" {
				t.Fatalf("Search(%q) found a message of room %s", q, r.Env.Room)
			}
		}
	})
}
