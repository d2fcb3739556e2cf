package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/internal/testkit"
	"github.com/parleychat/parley/relay"
)

// The client's benchmarks run the real chat binary, built from cmd/chat,
// as a person would, against a real relay on loopback:
//
//	go test -run '^$' -bench . -benchtime 10x ./cmd/chat
//
// docs/performance.md has the figures and the targets.

// benchRelay is a relay whose limits let a benchmark publish at full
// speed and connect as often as it likes.
func benchRelay(b *testing.B) (p *proc, addr, meshAddr string) {
	return startRelay(b, "[limits]\npublish_rate = 1000000.0\npublish_burst = 1000000\naddr_rate = 1000000.0\naddr_burst = 1000000")
}

// chatBin runs the built chat binary with a home folder of its own.
func chatBin(b *testing.B, home string, args ...string) *exec.Cmd {
	cmd := exec.Command(build(b, "chat"), append([]string{"--home", home, "--no-mdns"}, args...)...)
	cmd.Env = os.Environ()
	return cmd
}

func runChat(b *testing.B, cmd *exec.Cmd) {
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%v: %v\n%s", cmd.Args, err, out)
	}
}

// BenchmarkID: "chat id", from process start to exit (target: < 50 ms).
func BenchmarkID(b *testing.B) {
	home := filepath.Join(b.TempDir(), "home")
	runChat(b, chatBin(b, home, "id")) // the first run creates the identity
	b.ResetTimer()
	for b.Loop() {
		runChat(b, chatBin(b, home, "id"))
	}
}

// BenchmarkSendRelay: "chat send" through a relay on loopback, from
// process start to exit with the relay's acknowledgement (target:
// < 150 ms).
func BenchmarkSendRelay(b *testing.B) {
	rp, addr, _ := benchRelay(b)
	home := filepath.Join(b.TempDir(), "home")
	runChat(b, chatBin(b, home, "id"))
	b.ResetTimer()
	for b.Loop() {
		runChat(b, chatBin(b, home, "--mode", "relay", "--relay", addr, "send", "--room", "bench", "hello"))
	}
	b.StopTimer()
	rp.Stop(b)
}

// BenchmarkCatchUp: a client joining a room that holds 10,000 messages,
// from process start until it has printed the last one (target: < 2 s):
// through the relay (its subscription from the start), and over the mesh
// (catch-up sync from the relay's mesh node, which has them all too).
func BenchmarkCatchUp(b *testing.B) {
	const history = 10_000
	rp, addrStr, meshAddr := benchRelay(b)
	addr, err := relay.ParseAddr(addrStr)
	if err != nil {
		b.Fatal(err)
	}
	fillRoom(b, addr, "history", history)
	for _, path := range []struct {
		name  string
		flags []string
	}{
		{"relay", []string{"--mode", "relay", "--relay", addrStr}},
		{"mesh", []string{"--mode", "p2p", "--peer", meshAddr, "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"}},
	} {
		b.Run(path.name, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				home := filepath.Join(b.TempDir(), strconv.Itoa(i))
				cmd := chatBin(b, home, append(path.flags, "listen", "--room", "history",
					"--json", "--count", strconv.Itoa(history), "--timeout", "60s")...)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("listen: %v\n%s", err, out[max(0, len(out)-2000):])
				}
			}
			b.ReportMetric(float64(history)*float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
	rp.Stop(b)
}

// BenchmarkIdleRooms: the memory of a client in auto mode (mesh and
// relay) idle in 10 rooms, after it has settled: its resident set, as
// the kernel counts it (target: < 64 MB).
func BenchmarkIdleRooms(b *testing.B) {
	rp, addr, meshAddr := benchRelay(b)
	home := filepath.Join(b.TempDir(), "home")
	args := []string{"--mode", "auto", "--relay", addr, "--peer", meshAddr,
		"--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "listen"}
	for i := range 10 {
		args = append(args, "--room", fmt.Sprintf("room-%d", i))
	}
	var rss, peak float64
	for b.Loop() {
		cmd := chatBin(b, home, args...)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(5 * time.Second) // joined, subscribed, meshed: idle
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		cmd.Process.Kill()
		cmd.Wait()
		if err != nil {
			b.Fatal(err)
		}
		rss, peak = statusKB(b, status, "VmRSS:")/1024, statusKB(b, status, "VmHWM:")/1024
	}
	b.ReportMetric(rss, "MB-rss")
	b.ReportMetric(peak, "MB-peak-rss")
	rp.Stop(b)
}

func statusKB(b *testing.B, status []byte, field string) float64 {
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb
		}
	}
	b.Fatalf("no %s in /proc status", field)
	return 0
}

// fillRoom publishes n messages to room through the relay, from eight
// authors in parallel.
func fillRoom(t testing.TB, addr relay.Addr, room string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := testkit.Key(t)
			c, err := relay.Dial(ctx, addr, key, relay.ClientOptions{})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			a := &testkit.Author{Key: key, Room: room}
			for i := range n / 8 {
				raw, _ := a.Next(t, fmt.Sprintf("message %d of author %d", i, w))
				if _, err := c.Publish(ctx, raw); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// BenchmarkCatchUpSealed: catching up 10,000 messages sealed end to end
// in a private room, beside 10,000 of a public room sent the same way
// (one author's chat talk), in the same run: a reader who joined the
// private room before they were sent (so every sender key reached it)
// runs listen --count 10000 in a copy of its home folder, for each room
// (target: sealed within 1.2x of plaintext). The public room's name is
// as long as a private room's ID (34 bytes): the store repeats a room's
// ID in four indexes, which is not the cost of encryption.
func BenchmarkCatchUpSealed(b *testing.B) {
	const history = 10_000
	rp, addr, _ := benchRelay(b)
	dir := b.TempDir()
	author, reader := filepath.Join(dir, "author"), filepath.Join(dir, "reader")
	relayMode := []string{"--mode", "relay", "--relay", addr}
	runChat(b, chatBin(b, author, append(relayMode, "room", "create", "sealed")...))
	code := outChat(b, chatBin(b, author, append(relayMode, "room", "invite", "sealed")...))
	runChat(b, chatBin(b, reader, append(relayMode, "join", strings.TrimSpace(code))...))
	private := strings.Fields(outChat(b, chatBin(b, reader, "rooms")))
	room := ""
	for _, r := range private {
		if strings.HasPrefix(r, "p:") {
			room = r
		}
	}
	if room == "" {
		b.Fatalf("the reader's rooms: %q", private)
	}
	var lines strings.Builder
	for i := range history {
		fmt.Fprintf(&lines, "message %d of the author\n", i)
	}
	const plain = "plainroom-0123456789abcdefghijklmn" // 34 bytes, as "p:" and 32
	for _, r := range []string{plain, room} {
		cmd := chatBin(b, author, append(relayMode, "talk", "--room", r, "--timeout", "120s")...)
		cmd.Stdin = strings.NewReader(lines.String())
		runChat(b, cmd)
	}
	for _, c := range []struct{ name, room string }{{"plain", plain}, {"sealed", room}} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				home := filepath.Join(b.TempDir(), strconv.Itoa(i))
				copyHome(b, reader, home)
				b.StartTimer()
				out := outChat(b, chatBin(b, home, append(relayMode, "listen", "--room", c.room,
					"--json", "--count", strconv.Itoa(history), "--timeout", "120s")...))
				if strings.Contains(out, `"waiting":true`) || strings.Contains(out, `"never"`) {
					b.Fatalf("a message did not open:\n%s", out[:min(len(out), 2000)])
				}
			}
			b.ReportMetric(float64(history)*float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
	rp.Stop(b)
}

// outChat runs cmd and returns its standard output.
func outChat(b *testing.B, cmd *exec.Cmd) string {
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("%v: %v\n%s", cmd.Args, err, stderr.String())
	}
	return string(out)
}

// copyHome copies a home folder, keeping it private to its owner.
func copyHome(b *testing.B, from, to string) {
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), data, 0o600)
	})
	if err != nil {
		b.Fatal(err)
	}
}
