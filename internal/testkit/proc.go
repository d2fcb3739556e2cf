package testkit

import (
	"bufio"
	"errors"
	"io"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// ProcWait bounds every wait for a process a test started to end:
// generous, since the machine may be slow and busy.
const ProcWait = 90 * time.Second

// Proc is a process a test started: its standard output line by line, its
// standard error kept, and how it ended.
type Proc struct {
	Name   string
	Cmd    *exec.Cmd
	Stdin  io.WriteCloser
	Lines  chan string // standard output, line by line; closed at its end
	Stderr LogBuffer
	Exited chan struct{} // closed once it has ended; Err is set then
	Err    error
}

// Start starts cmd, with room for lines lines of its standard output not
// yet read. The test's cleanup kills it if it still runs.
func Start(t testing.TB, name string, cmd *exec.Cmd, lines int) *Proc {
	t.Helper()
	p := &Proc{Name: name, Cmd: cmd, Lines: make(chan string, lines), Exited: make(chan struct{})}
	cmd.Stderr = &p.Stderr
	var err error
	if p.Stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.Lines <- sc.Text()
		}
		close(p.Lines)
		p.Err = cmd.Wait()
		close(p.Exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.Exited:
		default:
			cmd.Process.Kill()
			<-p.Exited
		}
	})
	return p
}

// Log is what the process wrote on its standard error so far.
func (p *Proc) Log() string { return p.Stderr.String() }

// Wait waits for the process to end, ProcWait at most, and returns its
// exit code.
func (p *Proc) Wait(t testing.TB) int {
	t.Helper()
	select {
	case <-p.Exited:
	case <-time.After(ProcWait):
		t.Fatalf("%s did not exit within %v\n%s", p.Name, ProcWait, p.Log())
	}
	var ee *exec.ExitError
	if errors.As(p.Err, &ee) {
		return ee.ExitCode()
	}
	if p.Err != nil {
		t.Fatalf("%s: %v", p.Name, p.Err)
	}
	return 0
}

// Stop ends the process with SIGTERM, as an operator would, and returns
// its exit code.
func (p *Proc) Stop(t testing.TB) int {
	t.Helper()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	return p.Wait(t)
}
