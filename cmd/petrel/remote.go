package main

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/petrel-vmm/petrel/cmd/internal/remote"
	"github.com/petrel-vmm/petrel/core/authz"
	"github.com/petrel-vmm/petrel/core/name"
	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/sdk/client"
)

// remoteHelp is appended to the root command's help.
const remoteHelp = `

Remote management (through petrel-endpoint, over mutual TLS 1.3):
  petrel --destination HOST[:PORT] --ca user.pem --ca-key user.key \
         --server-ca ca.pem create web ./web.hvt
runs any daemon command on another host. user.pem is your sub-CA chain
(from 'petrel ca sign-policy'), whose names form your domain; for each
command the CLI makes a fresh leaf certificate, valid for 10 minutes and
good for that one command on that one name, signed by user.key, which
never leaves your machine. Names are relative to your domain ("web" is
alice:web for alice); a leading ':' makes a name absolute (":alice:web").
  --cert leaf.pem --key leaf.key   use an existing leaf (a capability
                                   certificate) instead of --ca/--ca-key
  --csr FILE                       write a certificate request for the
                                   command to FILE (and its new key to
                                   FILE.key) instead of running it: the
                                   holder of the sub-CA key signs it with
                                   'petrel ca sign-leaf', and whoever
                                   holds the result may run exactly that
                                   command on that name (a CI job that
                                   may only restart one VM, say)`

// remoteFlags are the global flags of remote mode and what the command
// being run needs to make its leaf certificate.
type remoteFlags struct {
	destination string
	caFile      string
	caKeyFile   string
	serverCA    string
	serverName  string
	certFile    string
	keyFile     string
	csrFile     string

	// command is the capability name of the command being run and pos
	// its positional arguments, recorded before it runs.
	command string
	pos     []string
}

// addRemote registers the remote-mode flags on the root command.
func (a *app) addRemote(root *cobra.Command) {
	f := root.PersistentFlags()
	r := &a.remote
	f.StringVar(&r.destination, "destination", "", "run the command on the petrel-endpoint at `HOST[:PORT]` (default port "+client.DefaultRemotePort+")")
	f.StringVar(&r.caFile, "ca", "", "`FILE` with your CA certificate chain: it signs a leaf per remote command, or signs with 'petrel ca'")
	f.StringVar(&r.caKeyFile, "ca-key", "", "`FILE` with the private key of --ca")
	f.StringVar(&r.serverCA, "server-ca", "", "`FILE` with the CA certificate the endpoint's certificate must lead to")
	f.StringVar(&r.serverName, "server-name", "", "`NAME` the endpoint's certificate must carry (default: the host of --destination)")
	f.StringVar(&r.certFile, "cert", "", "`FILE` with an existing client certificate chain, leaf first, instead of --ca/--ca-key")
	f.StringVar(&r.keyFile, "key", "", "`FILE` with the private key of --cert")
	f.StringVar(&r.csrFile, "csr", "", "write a certificate request for this command to `FILE` (key to FILE.key) instead of running it")
	for _, name := range []string{"destination", "ca", "ca-key", "server-ca", "server-name", "cert", "key", "csr"} {
		if err := f.SetAnnotation(name, remoteAnnotation, []string{"true"}); err != nil {
			panic(err)
		}
	}
	root.Long += remoteHelp
	root.PersistentPreRunE = a.prepareRemote
}

// capabilityName is the capability a CLI command needs: its path below
// the root with dashes, as package authz names them.
func capabilityName(cmd *cobra.Command) string {
	path := strings.Fields(cmd.CommandPath())
	if len(path) > 0 {
		path = path[1:]
	}
	return strings.Join(path, "-")
}

// prepareRemote records the command being run for remoteDial and, with
// --csr, replaces it by writing a certificate request.
func (a *app) prepareRemote(cmd *cobra.Command, pos []string) error {
	r := &a.remote
	r.command, r.pos = capabilityName(cmd), pos
	isCA := r.command == "ca" || strings.HasPrefix(r.command, "ca-")
	switch {
	case r.csrFile != "" && !authz.IsCommand(r.command):
		return usageError{fmt.Errorf("--csr asks for a certificate for a daemon command; %q is not one", cmd.CommandPath())}
	case r.destination != "" && isCA:
		return usageError{fmt.Errorf("%q runs locally; --destination does not apply", cmd.CommandPath())}
	case r.csrFile != "":
		cmd.RunE = func(*cobra.Command, []string) error { return a.writeCSR() }
	}
	return nil
}

// domainOf is the administrative domain a chain file stands for
// (package remote, which petrel ui shares).
func domainOf(certs []*x509.Certificate) (name.Path, error) { return remote.DomainOf(certs) }

// capability is the command a leaf for the current command carries, its
// absolute target (or "") and the leaf's common name: the target
// relative to the domain, or "petrel" when there is none.
func (r *remoteFlags) capability(domain name.Path) (*pki.Command, string, error) {
	cmd := &pki.Command{Name: r.command}
	cn := "petrel"
	if !commandHasTarget(r.command) {
		return cmd, cn, nil
	}
	rel := ""
	if len(r.pos) > 0 {
		rel = r.pos[0]
	}
	target, err := authz.QualifyName(rel, domain)
	if err != nil {
		return nil, "", usageError{err}
	}
	cmd.Args = []string{target}
	if t, err := name.Parse(target); err == nil && domain.IsPrefixOf(t) && !domain.Equal(t) {
		cn = strings.Join(t.Labels()[len(domain.Labels()):], ":")
	}
	return cmd, cn, nil
}

// commandHasTarget reports whether a capability's methods name a VM,
// device or path.
func commandHasTarget(capability string) bool {
	switch capability {
	case "version", "plugins", "bridges":
		return false
	}
	return true
}

// writeCSR writes a certificate request for the current command.
func (a *app) writeCSR() error {
	r := &a.remote
	if r.caFile == "" {
		return usageError{fmt.Errorf("--csr needs --ca: the chain of the CA that will sign the request, whose domain names are relative to")}
	}
	signer, err := pki.ReadCertsFile(r.caFile)
	if err != nil {
		return err
	}
	domain, err := domainOf(signer)
	if err != nil {
		return err
	}
	cmd, cn, err := r.capability(domain)
	if err != nil {
		return err
	}
	key, err := pki.GenerateKey("", 0)
	if err != nil {
		return err
	}
	der, err := pki.CSR(key, cn, cmd)
	if err != nil {
		return err
	}
	keyFile := r.csrFile + ".key"
	if err := pki.WriteKeyFile(keyFile, key); err != nil {
		return err
	}
	if err := writeNewFile(r.csrFile, pki.EncodeCSR(der)); err != nil {
		os.Remove(keyFile)
		return err
	}
	fmt.Fprintf(a.out, "wrote a request for %q on %s to %s (key in %s)\n", cmd.Name, targetText(cmd), r.csrFile, keyFile)
	return nil
}

func targetText(cmd *pki.Command) string {
	if len(cmd.Args) == 0 {
		return "the host"
	}
	return cmd.Args[0]
}

// writeNewFile creates path (refusing to replace a file) with data.
func writeNewFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// remoteDial connects to --destination with a client certificate: a
// fresh leaf for this command signed by --ca-key, or --cert as given.
// Names in requests are made absolute with the chain's domain on the way.
func (a *app) remoteDial() (*client.Client, error) {
	r := &a.remote
	if !authz.IsCommand(r.command) {
		return nil, usageError{fmt.Errorf("petrel %s does not run remotely", strings.ReplaceAll(r.command, "-", " "))}
	}
	if r.serverCA == "" {
		return nil, usageError{fmt.Errorf("--destination needs --server-ca: the CA certificate the endpoint's certificate leads to")}
	}
	serverCA, err := pki.ReadCertsFile(r.serverCA)
	if err != nil {
		return nil, err
	}
	var (
		chain  []*x509.Certificate
		key    crypto.Signer
		domain name.Path
	)
	switch {
	case r.certFile != "" || r.keyFile != "":
		if r.certFile == "" || r.keyFile == "" {
			return nil, usageError{fmt.Errorf("--cert and --key go together")}
		}
		if chain, err = pki.ReadCertsFile(r.certFile); err != nil {
			return nil, err
		}
		if key, err = pki.ReadKeyFile(r.keyFile); err != nil {
			return nil, err
		}
		if domain, err = domainOf(chain); err != nil {
			return nil, err
		}
	case r.caFile != "" && r.caKeyFile != "":
		signer, err := pki.ReadCertsFile(r.caFile)
		if err != nil {
			return nil, err
		}
		signerKey, err := pki.ReadKeyFile(r.caKeyFile)
		if err != nil {
			return nil, err
		}
		if domain, err = domainOf(signer); err != nil {
			return nil, err
		}
		cmd, cn, err := r.capability(domain)
		if err != nil {
			return nil, err
		}
		if chain, key, err = pki.NewLeafChain(signer, signerKey, cn, cmd, ""); err != nil {
			return nil, err
		}
	default:
		return nil, usageError{fmt.Errorf("--destination needs --ca and --ca-key (your CA, to make a leaf certificate), or --cert and --key")}
	}
	return client.DialTLS(r.destination, chain, key, serverCA[0], r.serverName, remote.Qualifying(domain)...)
}
