package upgrade

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// The commands of both releases are built once per test run, into a
// folder removed at its end.
var built = builder{bins: map[string]string{}}

func TestMain(m *testing.M) {
	code := m.Run()
	built.remove()
	os.Exit(code)
}

type builder struct {
	mu   sync.Mutex
	dir  string            // where the binaries and the old source go
	bins map[string]string // "old/chat" → its binary
	src  string            // the previous release's source, once extracted
}

// current builds cmd/NAME of this code.
func current(t testing.TB, name string) string {
	t.Helper()
	return built.build(t, "new", name, repoRoot(t))
}

// old builds cmd/NAME of the previous release.
func old(t testing.TB, name string) string {
	t.Helper()
	built.mu.Lock()
	src, err := built.extract(t)
	built.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	return built.build(t, "old", name, src)
}

func (b *builder) build(t testing.TB, release, name, srcDir string) string {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	key := release + "/" + name
	if bin, ok := b.bins[key]; ok {
		return bin
	}
	if err := b.mkdir(); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(b.dir, release+"-"+name)
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race") // shares the test's build cache
	}
	if out, err := goCmd(srcDir, append(args, "./cmd/"+name)...); err != nil {
		t.Fatalf("build %s cmd/%s: %v\n%s", release, name, err, out)
	}
	b.bins[key] = bin
	return bin
}

func (b *builder) mkdir() error {
	if b.dir != "" {
		return nil
	}
	dir, err := os.MkdirTemp("", "parley-upgrade-test-")
	b.dir = dir
	return err
}

// extract writes the previous release's tree (git archive of its commit)
// to a folder of its own, once.
func (b *builder) extract(t testing.TB) (string, error) {
	if b.src != "" {
		return b.src, nil
	}
	if err := b.mkdir(); err != nil {
		return "", err
	}
	commit, err := previousCommit(repoRoot(t))
	if err != nil {
		return "", err
	}
	src := filepath.Join(b.dir, "src-"+previous.tag)
	if err := os.Mkdir(src, 0o755); err != nil {
		return "", err
	}
	archive := filepath.Join(b.dir, "previous.tar")
	if out, err := run(repoRoot(t), "git", "archive", "--format=tar", "-o", archive, commit); err != nil {
		return "", fmt.Errorf("git archive %s: %v\n%s", commit, err, out)
	}
	if out, err := run(src, "tar", "-xf", archive); err != nil {
		return "", fmt.Errorf("untar the previous release: %v\n%s", err, out)
	}
	b.src = src
	return src, nil
}

// previousCommit is the commit of the previous release: its tag's, which
// must be the recorded one, or the recorded commit in a clone without
// tags.
func previousCommit(root string) (string, error) {
	out, err := run(root, "git", "rev-parse", "--verify", "-q", previous.tag+"^{commit}")
	if err == nil {
		if got := strings.TrimSpace(out); got != previous.commit {
			return "", fmt.Errorf("tag %s names %s, previous_test.go says %s: move one of them", previous.tag, got, previous.commit)
		}
		return previous.commit, nil
	}
	if out, err := run(root, "git", "cat-file", "-e", previous.commit+"^{commit}"); err != nil {
		return "", fmt.Errorf("the previous release %s (%s) is not in this clone's history (%v %s): clone with its history", previous.tag, previous.commit, err, out)
	}
	return previous.commit, nil
}

func (b *builder) remove() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// repoRoot is the repository's top folder: the tests run in upgrade/.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func goCmd(dir string, args ...string) (string, error) {
	return runEnv(dir, []string{"GOWORK=off", "GOFLAGS=-mod=readonly"}, filepath.Join(runtime.GOROOT(), "bin", "go"), args...)
}

func run(dir, name string, args ...string) (string, error) {
	return runEnv(dir, nil, name, args...)
}

// runEnv runs a command to completion in dir, within 10 minutes.
func runEnv(dir string, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
