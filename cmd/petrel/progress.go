package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/petrel-vmm/petrel/sdk/client"
)

// progressInterval is how often a progress bar is redrawn at most.
const progressInterval = 100 * time.Millisecond

// progressBar returns the progress callback of a transfer (image and
// block uploads, block downloads, state exports and imports): a bar
// redrawn in place on standard error when that is a terminal, and nil
// otherwise, so that scripts, whose standard error is a file or a pipe,
// get no progress lines to filter out.
func (a *app) progressBar(what string) client.Progress {
	if !isTerminal(a.errw) {
		return nil
	}
	var last time.Time
	start := time.Now()
	return func(done, total int64) {
		finished := total > 0 && done >= total
		if time.Since(last) < progressInterval && !finished {
			return
		}
		last = time.Now()
		rate := float64(done) / time.Since(start).Seconds() / (1 << 20)
		if total > 0 {
			const width = 30
			filled := min(int(float64(width)*float64(done)/float64(total)), width)
			fmt.Fprintf(a.errw, "\r%s [%s%s] %5.1f%% %.1f MB/s", what, strings.Repeat("=", filled), strings.Repeat(" ", width-filled),
				float64(done)*100/float64(total), rate)
		} else {
			fmt.Fprintf(a.errw, "\r%s %d bytes %.1f MB/s", what, done, rate)
		}
		a.midLine = !finished
		if finished {
			fmt.Fprintln(a.errw)
		}
	}
}

// endProgress ends the line of a progress bar that a failed or
// interrupted transfer left unfinished, so that what follows (the
// error) starts on a line of its own.
func (a *app) endProgress() {
	if a.midLine {
		fmt.Fprintln(a.errw)
		a.midLine = false
	}
}
