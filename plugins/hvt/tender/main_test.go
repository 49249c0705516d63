package tender

import (
	"os"
	"testing"
)

// TestMain lets the test binary act as the tender: the end-to-end tests run
// it again with PETREL_TENDER_TEST_MAIN=1 and the tender's command line.
// Guests built for those tests are removed once all tests have run.
func TestMain(m *testing.M) {
	if os.Getenv("PETREL_TENDER_TEST_MAIN") == "1" {
		os.Exit(Main(os.Args[1:]))
	}
	code := m.Run()
	cleanupGuests()
	os.Exit(code)
}
