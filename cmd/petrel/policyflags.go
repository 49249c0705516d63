package main

import (
	"errors"
	"math"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/petrel-vmm/petrel/core/policy"
)

// policyFlags are the flags that describe a policy (--vms, --mem, --cpu,
// --block, --images, --bridge), bound by bindPolicyFlags. `petrel policy
// add` and `petrel ca sign-policy` both take them, so that a policy is
// spelled the same whether it is set on a host or signed into a
// certificate, and a field added to policy.Policy gets its flag here
// once.
type policyFlags struct {
	flags *pflag.FlagSet
	// p holds the fields that flags write directly, in policy.Policy's
	// own types.
	p                  policy.Policy
	mem, block, images sizeFlag
}

// bindPolicyFlags defines the policy flags on fs.
func bindPolicyFlags(fs *pflag.FlagSet) *policyFlags {
	f := &policyFlags{flags: fs, mem: sizeFlag{Max: math.MaxInt}, block: sizeFlag{Max: math.MaxInt}, images: sizeFlag{Max: math.MaxInt}}
	fs.IntVar(&f.p.VMs, "vms", 0, "number of VMs")
	fs.Var(&f.mem, "mem", "memory in total: "+sizeHelp)
	fs.IntSliceVar(&f.p.CPUs, "cpu", nil, "CPU id VMs may run on (repeatable): unpinned VMs are confined to these")
	fs.Var(&f.block, "block", "block storage in total: "+sizeHelp+" (default: none)")
	fs.Var(&f.images, "images", "image storage in total, the VMs' images and uploads waiting for a create: "+sizeHelp+" (default: as much as --mem)")
	fs.StringArrayVar(&f.p.Bridges, "bridge", nil, "bridge VMs may attach to (repeatable)")
	return f
}

// policy returns the policy the flags describe: --block and --images
// stated only when given. A number the daemon API cannot carry (it holds
// VMs and CPU ids as int32) is refused as out of range, as a number too
// large for any flag is, rather than sent to be refused as something
// else. The policy is not validated otherwise: whoever applies it does.
func (f *policyFlags) policy() (policy.Policy, error) {
	p := f.p.Clone()
	if p.VMs != int(int32(p.VMs)) {
		return p, usageError{valueError("--vms", strconv.Itoa(p.VMs), errors.New("out of range"))}
	}
	for _, c := range p.CPUs {
		if c != int(int32(c)) {
			return p, usageError{valueError("--cpu", strconv.Itoa(c), errors.New("out of range"))}
		}
	}
	p.MemoryMB = int(f.mem.MB)
	if f.flags.Changed("block") {
		b := int(f.block.MB)
		p.BlockMB = &b
	}
	if f.flags.Changed("images") {
		n := int(f.images.MB)
		p.ImagesMB = &n
	}
	return p, nil
}
