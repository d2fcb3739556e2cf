package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/parleychat/parley/identity"
)

// contactJSON is a line of chat contacts --json.
type contactJSON struct {
	Nick        string             `json:"nick"`
	Fingerprint string             `json:"fingerprint"`
	PublicKey   identity.PublicKey `json:"public_key"`
	Trust       string             `json:"trust"`
	FirstSeen   time.Time          `json:"first_seen"`
	// Claims: for key-changed, the fingerprint of the verified contact
	// whose nickname this key comes with.
	Claims string `json:"claims,omitempty"`
}

// contactTrust is what chat contacts says of a contact: its trust as the
// messages it sends now would show it (known, verified, key-changed), or
// replaced for a key that Accept replaced by another. For key-changed, it
// returns the verified contact claimed too.
func contactTrust(book *identity.Contacts, ct identity.Contact) (string, identity.Contact, bool) {
	if ct.Replaced {
		return "replaced", identity.Contact{}, false
	}
	trust := book.TrustOf(ct.Nick, ct.Key)
	if trust == identity.TrustKeyChanged {
		claimed, ok := book.Claimed(ct.Nick, ct.Key)
		return trust.String(), claimed, ok
	}
	return trust.String(), identity.Contact{}, false
}

func toJSON(book *identity.Contacts, ct identity.Contact) contactJSON {
	trust, claimed, ok := contactTrust(book, ct)
	v := contactJSON{ct.Nick, ct.Key.Fingerprint(), ct.Key, trust, ct.FirstSeen, ""}
	if ok {
		v.Claims = claimed.Key.Fingerprint()
	}
	return v
}

// contacts is "chat contacts [--json]", the list, and "chat contacts
// accept FINGERPRINT-PREFIX".
func (c *cli) contacts(args []string) int {
	fs := c.flags("contacts")
	asJSON := fs.Bool("json", false, "print one JSON object a line")
	if err := c.parse(fs, args, -1); err != nil {
		return c.usageError(err)
	}
	switch {
	case len(c.args) == 0:
	case c.args[0] == "accept" && len(c.args) == 2 && !*asJSON:
		return c.accept(c.args[1])
	case c.args[0] == "accept" && len(c.args) == 2:
		return c.usageError(fmt.Errorf("contacts accept takes no --json"))
	case c.args[0] == "accept":
		return c.usageError(fmt.Errorf("contacts accept takes 1 argument (FINGERPRINT-PREFIX), got %d", len(c.args)-1))
	default:
		return c.usageError(fmt.Errorf("contacts takes no argument, or accept FINGERPRINT-PREFIX; got %q", c.args[0]))
	}
	h, err := c.open()
	if err != nil {
		return c.fail(err)
	}
	book, err := h.Contacts()
	if err != nil {
		return c.fail(err)
	}
	list := book.List()
	if *asJSON {
		for _, ct := range list {
			if code := c.printJSON(toJSON(book, ct)); code != exitOK {
				return code
			}
		}
		return exitOK
	}
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "No contacts yet: people are added when you first see them in a room.")
		return exitOK
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NICK\tTRUST\tFINGERPRINT\tFIRST SEEN")
	var changed []identity.Contact
	for _, ct := range list {
		trust, _, ok := contactTrust(book, ct)
		if ok {
			changed = append(changed, ct)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ct.Nick, trust, ct.Key.Fingerprint(), ct.FirstSeen.Format(time.RFC3339))
	}
	tw.Flush()
	for _, ct := range changed {
		claimed, _ := book.Claimed(ct.Nick, ct.Key)
		fmt.Fprintf(c.stdout, "\nKEY CHANGED: %s calls itself %s, the nickname of your verified contact %s.\n"+
			"It is someone else, or %s's new key. Compare fingerprints with %s out of band; if it is theirs:\n"+
			"  chat contacts accept %s\n",
			ct.Key.Fingerprint(), ct.Nick, claimed.Key.Fingerprint(), ct.Nick, ct.Nick, ct.Key.Fingerprint())
	}
	return exitOK
}

// accept is "chat contacts accept FINGERPRINT-PREFIX": the contact becomes
// verified and takes its nickname over from the verified contacts that had
// it with other keys.
func (c *cli) accept(prefix string) int {
	h, err := c.open()
	if err != nil {
		return c.fail(err)
	}
	lock, err := h.Lock() // a running session writes the contact book too
	if err != nil {
		return c.fail(err)
	}
	defer lock.Release()
	book, err := h.Contacts()
	if err != nil {
		return c.fail(err)
	}
	accepted, replaced, err := book.Accept(prefix)
	if err != nil {
		return c.fail(err)
	}
	if err := h.SaveContacts(book); err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "verified %s %s\n", accepted.Nick, accepted.Key.Fingerprint())
	for _, ct := range replaced {
		fmt.Fprintf(c.stdout, "replaced %s %s (kept, no longer verified)\n", ct.Nick, ct.Key.Fingerprint())
	}
	if len(replaced) == 0 {
		fmt.Fprintf(c.stdout, "no other key was verified as %s: nothing replaced\n", accepted.Nick)
	}
	return exitOK
}

// verify is "chat verify FINGERPRINT-PREFIX".
func (c *cli) verify(args []string) int {
	fs := c.flags("verify")
	if err := c.parse(fs, args, 1); err != nil {
		return c.usageError(err)
	}
	h, err := c.open()
	if err != nil {
		return c.fail(err)
	}
	lock, err := h.Lock() // a running session writes the contact book too
	if err != nil {
		return c.fail(err)
	}
	defer lock.Release()
	book, err := h.Contacts()
	if err != nil {
		return c.fail(err)
	}
	ct, err := book.Verify(c.args[0])
	if err != nil {
		return c.fail(err)
	}
	if err := h.SaveContacts(book); err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "verified %s %s\n", ct.Nick, ct.Key.Fingerprint())
	return exitOK
}
