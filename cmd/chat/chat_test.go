package main

import (
	"os"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// asChat makes the test binary run as the chat command: the end-to-end
// tests start it as the real command, in processes of their own.
const asChat = "PARLEY_TEST_RUN_CHAT"

func TestMain(m *testing.M) {
	if os.Getenv(asChat) == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	testscript.Main(testRun{m}, map[string]func(){
		"chat": func() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs the stories in testdata/script: each drives the real
// chat command as a person would, in a fresh home folder.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("PARLEY_HOME", env.WorkDir+"/home")
			return nil
		},
	})
}
