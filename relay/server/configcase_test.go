package server

import (
	"errors"
	"strings"
	"testing"
)

// configCase is a config edit and what Validate must say of it: an
// ErrConfig naming bad, or nothing when bad is empty.
type configCase struct {
	name string
	edit func(*Config)
	bad  string
}

// checkConfigCases applies each case's edit to the default config and
// checks what Validate says.
func checkConfigCases(t *testing.T, cases []configCase) {
	t.Helper()
	for _, tc := range cases {
		cfg := DefaultConfig()
		tc.edit(&cfg)
		err := cfg.Validate()
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.bad != "" && (!errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%s: %v, want ErrConfig naming %s", tc.name, err, tc.bad)
		}
	}
}
