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
	ctx, cl, done, code := c.parsedSession(func() error { return c.parseMin(fs, args, 2) }, timeout)
	if cl == nil {
		return code
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
