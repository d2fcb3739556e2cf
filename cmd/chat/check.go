package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/parleychat/parley/client"
)

// checkConfig checks the home folder's config file with the global flags
// over it. It creates nothing (not the home folder, not an identity) and
// starts no network: it only reads.
func (c *cli) checkConfig(args []string) int {
	fs := c.flags("check-config")
	if err := c.parse(fs, args, 0); err != nil {
		return c.usageError(err)
	}
	dir, err := c.homeDir()
	if err != nil {
		return c.fail(err)
	}
	path := filepath.Join(dir, client.ConfigFile)
	if err := c.check(dir); err != nil {
		fmt.Fprintf(c.stderr, "chat: config not ok: %s: %s\n", path, oneLine(err))
		return exitUsage
	}
	fmt.Fprintf(c.stdout, "config ok: %s\n", path)
	return exitOK
}

// check reads and validates the configuration of the home folder dir, and
// checks that the key it would use is there or may be made.
func (c *cli) check(dir string) error {
	h := &client.Home{Dir: dir} // not opened: nothing is created, no key is read
	if _, err := c.config(h); err != nil {
		return err
	}
	keyFile, create, err := client.WhichKey(dir, c.g.keyFile)
	if err != nil || create {
		return err
	}
	if _, err := os.Stat(keyFile); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}
