package shim

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"syscall"

	"golang.org/x/sys/unix"
)

// readyFD is the file descriptor on which a launcher passes the write end
// of the readiness pipe.
const readyFD = 3

// shimGCPercent is the shim's garbage collection target (GOGC) unless the
// environment sets one.
const shimGCPercent = 20

// options is the parsed command line of the shim.
type options struct {
	dir          string
	cpus         []int
	consoleLines int
	consoleBytes int
	lineMax      int
	argv         []string
	// ownGOMAXPROCS: GOMAXPROCS in the environment is the shim's alone
	// (see Launch) and is left out of the tender's environment.
	ownGOMAXPROCS bool
	// tenderDir is the tender's working directory; empty means the shim's.
	tenderDir string
}

// Main runs the shim with its command-line arguments (without the program
// name) and returns the process exit status: 0 once the tender has exited
// and its exit has been recorded, 1 when the tender could not be started,
// 2 on a usage error. It is the whole of cmd/petrel-shim, and tests re-exec
// their own binary into it.
func Main(args []string) int {
	// Heap profiling is of no use in the shim, and its first sample
	// allocates a 1.4 MB hash table.
	runtime.MemProfileRate = 0
	if os.Getenv("GOMAXPROCS") == "" {
		// The shim mostly sleeps; one processor means fewer threads and
		// per-processor caches, about half a megabyte less memory.
		runtime.GOMAXPROCS(1)
	}
	if os.Getenv("GOGC") == "" {
		// The shim's live heap is small and its work is light, so trading
		// a little CPU for memory is right: with the default the heap
		// grows to 4 MB before the first collection, doubling the shim's
		// footprint.
		debug.SetGCPercent(shimGCPercent)
	}
	var ready, lock *os.File
	spare := len(args) == 1 && args[0] == flagSpare
	if spare {
		// A spare: wait for the launch it is to serve (spare.go).
		w, ok, err := awaitWork()
		spareLog := log.New(os.Stderr, "petrel-shim: ", log.LstdFlags|log.Lmicroseconds)
		switch {
		case !ok && err != nil:
			spareLog.Print(err)
			return 2
		case !ok:
			return 0 // its launcher is gone
		case err != nil:
			spareLog.Print(err)
			report(w.ready, readyReport{Error: "spare shim: " + err.Error()}, spareLog)
			return 2
		}
		ready = w.ready
		args, lock = w.args, w.lock
	} else {
		ready = readyPipe()
		lock = inheritedLock()
	}
	logger := log.New(os.Stderr, "petrel-shim: ", log.LstdFlags|log.Lmicroseconds)

	// Catch signals before the tender exists, so that an early SIGTERM is
	// forwarded rather than killing the shim and orphaning the tender.
	// SIGHUP and SIGPIPE are caught and dropped instead of ignored, because
	// an ignored disposition would be inherited by the tender.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	defer signal.Stop(sigs)

	opts, err := parseArgs(args)
	if err != nil {
		logger.Print(err)
		report(ready, readyReport{Error: err.Error()}, logger)
		return 2
	}
	if spare {
		// A spare keeps the command line it was started with, which names
		// no VM: its working directory does instead (/proc/PID/cwd), while
		// the tender starts where a shim started afresh would have.
		if opts.tenderDir, err = os.Getwd(); err == nil {
			err = os.Chdir(opts.dir)
		}
		if err != nil {
			logger.Print(err)
			report(ready, readyReport{Error: err.Error()}, logger)
			return 1
		}
	}
	if lock == nil {
		// Started by hand: take the directory as Launch would have.
		if lock, err = lockDir(opts.dir); err != nil {
			logger.Print(err)
			report(ready, readyReport{Error: err.Error()}, logger)
			return 1
		}
	}
	// The lock is held until the run is over and recorded: its release
	// tells a later launcher that nothing runs here any more.
	defer lock.Close()
	s, err := start(opts, logger)
	if err != nil {
		logger.Print(err)
		report(ready, readyReport{Error: err.Error()}, logger)
		return 1
	}
	// The launcher waits for the report, so the log line comes after it.
	report(ready, readyReport{TenderPID: s.pid, StartedAt: s.started}, logger)
	logger.Printf("tender %d started: %q", s.pid, opts.argv)
	return s.run(sigs)
}

// readyPipe returns the inherited readiness pipe, or nil when the shim was
// started without one (e.g. by hand). The descriptor is made close-on-exec
// so that the tender does not inherit it.
func readyPipe() *os.File {
	var st unix.Stat_t
	if err := unix.Fstat(readyFD, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return nil
	}
	unix.CloseOnExec(readyFD)
	return os.NewFile(readyFD, "ready")
}

// report writes the readiness line and closes the pipe.
func report(ready *os.File, r readyReport, logger *log.Logger) {
	if ready == nil {
		return
	}
	data, err := json.Marshal(r)
	if err == nil {
		_, err = ready.Write(append(data, '\n'))
	}
	if err != nil {
		logger.Printf("report readiness: %v", err)
	}
	_ = ready.Close()
}

// parseArgs parses and checks the shim's command line.
func parseArgs(args []string) (options, error) {
	fs := flag.NewFlagSet("petrel-shim", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var o options
	var cpus string
	fs.StringVar(&o.dir, "dir", "", "directory for the socket and records (must exist)")
	fs.StringVar(&cpus, "cpus", "", "CPUs to pin the tender to, e.g. 0,2-3")
	fs.IntVar(&o.consoleLines, "console-lines", DefaultConsoleLines, "console lines kept")
	fs.IntVar(&o.consoleBytes, "console-bytes", DefaultConsoleBytes, "console text bytes kept")
	fs.IntVar(&o.lineMax, "line-max", DefaultLineMax, "longest console line kept, in bytes")
	fs.BoolVar(&o.ownGOMAXPROCS, flagOwnGOMAXPROCS[2:], false, "GOMAXPROCS in the environment is for the shim only; the tender does not get it")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("usage: %w", err)
	}
	o.argv = fs.Args()
	switch {
	case o.dir == "":
		return o, errors.New("usage: --dir is required")
	case len(o.argv) == 0:
		return o, errors.New("usage: no tender command after --")
	case o.argv[0] == "":
		return o, errors.New("usage: empty tender path")
	case o.consoleLines < 1:
		return o, fmt.Errorf("usage: --console-lines must be at least 1, got %d", o.consoleLines)
	case o.consoleBytes < 1:
		return o, fmt.Errorf("usage: --console-bytes must be at least 1, got %d", o.consoleBytes)
	case o.lineMax < 1 || o.lineMax > o.consoleBytes || o.lineMax > MaxLineMax:
		return o, fmt.Errorf("usage: --line-max must be between 1 and the smaller of --console-bytes (%d) and %d, got %d", o.consoleBytes, MaxLineMax, o.lineMax)
	}
	if err := checkSocketPath(o.dir); err != nil {
		return o, err
	}
	fi, err := os.Stat(o.dir)
	if err != nil {
		return o, fmt.Errorf("shim directory: %w", err)
	}
	if !fi.IsDir() {
		return o, fmt.Errorf("shim directory %s is not a directory", o.dir)
	}
	if cpus != "" {
		if o.cpus, err = parseCPUs(cpus); err != nil {
			return o, err
		}
	}
	return o, nil
}

// checkSocketPath refuses a directory whose socket path the kernel could
// not bind.
func checkSocketPath(dir string) error {
	if p := filepath.Join(dir, SocketName); len(p) > MaxSocketPath {
		return fmt.Errorf("socket path %s is %d bytes, longer than the %d the kernel accepts; use a shorter directory", p, len(p), MaxSocketPath)
	}
	return nil
}
