// Package cmdline gives Petrel's daemons, petreld and petrel-endpoint,
// the command-line conventions of the petrel CLI: GNU-style --flags
// (pflag, through cobra), help on standard output with exit status 0,
// and mistakes as usage errors (exit status 2) that point to --help. The
// daemons' mains and the README's test share the definitions here, so
// the command lines the README shows are checked against the real
// flags.
package cmdline

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit statuses of the daemons, as the CLI uses them.
const (
	// ExitOK is a clean exit, after --help or a normal shutdown.
	ExitOK = 0
	// ExitError is a failure while running.
	ExitError = 1
	// ExitUsage is a mistake on the command line or in the
	// configuration it names, which no retry will fix.
	ExitUsage = 2
)

// UsageError marks a mistake on the command line, for exit status 2.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }

// Unwrap returns the mistake, so that errors.Is and errors.As see it.
func (e UsageError) Unwrap() error { return e.Err }

// Usagef makes a UsageError from a format, for mains that find a mistake
// only once the flags are parsed (flags that go together, a --user that
// does not exist).
func Usagef(format string, args ...any) error {
	return UsageError{fmt.Errorf(format, args...)}
}

// newCommand is the skeleton of a daemon's command: no positional
// arguments, usage errors for bad flags, and no cobra chatter (usage
// dumps, "Error:" prefixes) around errors, which Execute prints.
func newCommand(use, long string) *cobra.Command {
	cmd := &cobra.Command{
		Use:           use,
		Long:          long,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(cmd *cobra.Command, pos []string) error {
			if len(pos) > 0 {
				return UsageError{fmt.Errorf("unexpected argument %q (%s takes flags only; see '%s --help')", pos[0], cmd.Name(), cmd.Name())}
			}
			return nil
		},
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	cmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return UsageError{UnknownFlag(cmd, err)}
	})
	return cmd
}

// UnknownFlag points from an unknown flag to the help of cmd, which
// lists the known ones, and from a long flag written with one dash
// ("-config", as Go's flag package took it) to its two-dash spelling.
// Other errors pass unchanged. The petrel CLI answers unknown flags with
// it too.
func UnknownFlag(cmd *cobra.Command, err error) error {
	var ne *pflag.NotExistError
	if !errors.As(err, &ne) {
		return err
	}
	if short := ne.GetSpecifiedShortnames(); len(short) > 1 {
		name, _, _ := strings.Cut(short, "=")
		if cmd.Flags().Lookup(name) != nil {
			return fmt.Errorf("-%s: flags take two dashes: --%s", short, name)
		}
	}
	return fmt.Errorf("%w (see '%s --help')", err, cmd.CommandPath())
}

// Execute runs a daemon's command with args, help going to stdout and
// errors to stderr as "NAME: message", and returns the exit status: 0,
// ExitUsage for a UsageError, else ExitError.
func Execute(cmd *cobra.Command, args []string, stdout, stderr io.Writer) int {
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	err := cmd.Execute()
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "%s: %v\n", cmd.Name(), err)
	var ue UsageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	return ExitError
}
