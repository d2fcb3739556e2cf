package sim

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteTable writes one row per result. "twice" is AppDups: messages
// handed to a person's application a second time, which should be 0.
func WriteTable(w io.Writer, rs []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tmsgs\tdelivered\tof\tdelivery %\tby sync\tcatch-up\tp50 ms\tp99 ms\tlive p99 ms\tdups/deliv\ttwice\tbytes/deliv\tview known\ttruth\trecall\tmin recall\tconns\tleaves\tdrops\twall\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.3f\t%d\t%d/%d\t%.0f\t%.0f\t%.0f\t%.2f\t%d\t%.0f\t%.1f\t%.1f\t%.3f\t%.2f\t%.1f\t%d\t%d\t%s\t\n",
			r.Label, r.Messages, r.Delivered, r.Expected, r.DeliveryPct, r.BySync, r.CatchUpDelivered, r.CatchUpExpected,
			r.P50ms, r.P99ms, r.LiveP99ms, r.DupsPerDelivery, r.AppDups, r.BytesPerDelivery,
			r.ViewKnown, r.ViewTruth, r.ViewRecall, r.ViewMinRecall, r.ViewConns, r.Leaves, r.Dropped, r.Wall.Round(1e9))
	}
	return tw.Flush()
}
