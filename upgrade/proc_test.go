package upgrade

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testkit"
)

// wait is the bound on every wait for a process: generous, since the
// machine may be slow and busy.
const wait = testkit.ProcWait

// proc is a running command: its stdout line by line, its stderr kept.
type proc = testkit.Proc

// start starts bin; the test's cleanup kills it if it still runs.
func start(t testing.TB, name, bin string, args ...string) *proc {
	t.Helper()
	return testkit.Start(t, name, exec.Command(bin, args...), 1024)
}

// exited0 fails the test unless p's exit code is 0.
func exited0(t testing.TB, p *proc, code int) {
	t.Helper()
	if code != 0 {
		t.Fatalf("%s: exit %d\n%s", p.Name, code, p.Log())
	}
}

// relayProc is a relay's data folder and, while it serves, its process.
type relayProc struct {
	dir, hostPort string
	addr          string // FINGERPRINT@HOST:PORT
	p             *proc
}

// newRelay makes a relay data folder with bin (relay init), for a relay
// that will listen on a fixed loopback port, so that another release can
// serve the same folder at the same address.
func newRelay(t *testing.T, bin string) *relayProc {
	t.Helper()
	r := &relayProc{dir: filepath.Join(t.TempDir(), "relay"), hostPort: testkit.FreeAddr(t)}
	if out, err := run("", bin, "--data", r.dir, "init", "--policy", "open"); err != nil {
		t.Fatalf("relay init: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(r.dir, "config.toml"), []byte("admin = \"\"\nmdns = false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

// serve starts bin serving the folder, and waits until it says so.
func (r *relayProc) serve(t *testing.T, name, bin string) {
	t.Helper()
	r.p = start(t, name, bin, "--data", r.dir, "serve", "--listen", r.hostPort, "--p2p-listen", "/ip4/127.0.0.1/udp/0/quic-v1")
	deadline := time.After(wait)
	for {
		select {
		case line, ok := <-r.p.Lines:
			if !ok {
				t.Fatalf("%s exited before serving: %v\n%s", name, r.p.Err, r.p.Stderr.String())
			}
			if a, ok := strings.CutPrefix(line, "serving "); ok {
				r.addr = a
				return
			}
		case <-deadline:
			t.Fatalf("%s not serving after %v\n%s", name, wait, r.p.Stderr.String())
		}
	}
}

// person is a home folder, and the flags chat runs with on it; which
// release runs it is chosen per command.
type person struct {
	name, home string
	flags      []string
}

func newPerson(t *testing.T, name string, flags ...string) *person {
	return &person{name: name, home: filepath.Join(t.TempDir(), name),
		flags: append([]string{"--nick", name, "--no-mdns"}, flags...)}
}

func (p *person) args(args ...string) []string {
	return append(append([]string{"--home", p.home}, p.flags...), args...)
}

// chat runs bin as the person to completion, and fails the test on a
// non-zero exit.
func (p *person) chat(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := runEnv("", nil, bin, p.args(args...)...)
	if err != nil {
		t.Fatalf("%s: chat %s: %v\n%s", p.name, strings.Join(args, " "), err, out)
	}
	return out
}

// talk starts bin's talk in room as the person.
func (p *person) talk(t *testing.T, bin, room string) *proc {
	t.Helper()
	return start(t, p.name, bin, p.args("talk", "--room", room, "--json", "--timeout", "170s")...)
}

// message is one line of talk --json or history --json.
type message struct {
	ID   string `json:"id"`
	Nick string `json:"nick"`
	Text string `json:"text"`
}

// expect reads p's lines until it has every text in want, failing on a
// text shown twice or after the bound.
func expect(t *testing.T, p *proc, want ...string) {
	t.Helper()
	missing := make(map[string]bool)
	for _, w := range want {
		missing[w] = true
	}
	seen := make(map[string]bool)
	deadline := time.After(wait)
	for len(missing) > 0 {
		select {
		case line, ok := <-p.Lines:
			if !ok {
				t.Fatalf("%s ended still waiting for %v: %v\n%s", p.Name, keys(missing), p.Err, p.Stderr.String())
			}
			m := parseMessage(t, p.Name, line)
			if seen[m.ID] {
				t.Fatalf("%s was shown %q twice", p.Name, m.Text)
			}
			seen[m.ID] = true
			delete(missing, m.Text)
		case <-deadline:
			t.Fatalf("%s still waiting for %v after %v\n%s", p.Name, keys(missing), wait, p.Stderr.String())
		}
	}
}

func parseMessage(t *testing.T, who, line string) message {
	t.Helper()
	var m message
	if err := json.Unmarshal([]byte(line), &m); err != nil || m.ID == "" {
		t.Fatalf("%s printed %q, not a message: %v", who, line, err)
	}
	return m
}

// texts are the texts of history --json's output, failing on one twice.
func texts(t *testing.T, who, out string) map[string]bool {
	t.Helper()
	got := make(map[string]bool)
	for line := range strings.Lines(strings.TrimSpace(out)) {
		m := parseMessage(t, who, strings.TrimSpace(line))
		if got[m.Text] {
			t.Errorf("%s's history has %q twice", who, m.Text)
		}
		got[m.Text] = true
	}
	return got
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// say writes lines to a talk process, as a person types them.
func say(t *testing.T, p *proc, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if _, err := fmt.Fprintln(p.Stdin, l); err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
	}
}

// done closes a talk's input and checks it exits with 0.
func done(t *testing.T, ps ...*proc) {
	t.Helper()
	for _, p := range ps {
		p.Stdin.Close()
	}
	for _, p := range ps {
		exited0(t, p, p.Wait(t))
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// waitLog waits until p's standard error says want.
func waitLog(t *testing.T, p *proc, want string) {
	t.Helper()
	for deadline := time.Now().Add(wait); !strings.Contains(p.Stderr.String(), want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not say %q within %v\n%s", p.Name, want, wait, p.Stderr.String())
		}
	}
}
