package tender

import (
	"strings"

	"github.com/petrel-vmm/petrel/sdk/solo5"
)

// parseArgs parses the solo5-hvt command line (without the program name)
// with solo5.ParseTenderArgs. solo5-hvt also accepts the image without a
// preceding "--" (options end at the first argument not starting with
// "-"), so one is inserted there before parsing.
func parseArgs(argv []string) (solo5.TenderArgs, error) {
	for i, a := range argv {
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			fixed := make([]string, 0, len(argv)+1)
			fixed = append(fixed, argv[:i]...)
			fixed = append(fixed, "--")
			argv = append(fixed, argv[i:]...)
			break
		}
	}
	return solo5.ParseTenderArgs(argv)
}
