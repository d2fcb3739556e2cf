package main

import (
	"strings"
	"time"
)

// msg is "chat msg PERSON TEXT": a direct message, sealed end to end, in
// the direct room of the two people, started on first use.
func (c *cli) msg(args []string) int {
	fs := c.flags("msg")
	asJSON := fs.Bool("json", false, "JSON output")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := c.parseMin(fs, args, 2); err != nil {
		return c.usageError(err)
	}
	if err := positive(*timeout); err != nil {
		return c.usageError(err)
	}
	ctx, cl, done, err := c.timedSession(*timeout, false)
	if err != nil {
		return c.fail(err)
	}
	defer done()
	who, err := cl.Person(c.args[0])
	if err != nil {
		return c.fail(err)
	}
	room, err := cl.Direct(ctx, who)
	if err != nil {
		return c.fail(ranOut(ctx, *timeout, err))
	}
	return c.sendText(ctx, cl, room, strings.Join(c.args[1:], " "), *asJSON, *timeout)
}
