// Package cputime reads the CPU time the running process has used, as
// the kernel counts it: the measure benchmarks and the simulator divide
// their work by.
package cputime

import (
	"fmt"
	"syscall"
	"time"
)

// Self returns the user and system CPU time this process has used.
func Self() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("cputime: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
