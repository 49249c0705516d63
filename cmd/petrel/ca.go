package main

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/petrel-vmm/petrel/core/authz"
	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/core/policy"
)

func (a *app) caCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Manage the certificates of remote management and delegation",
		Long: `Remote management uses X.509 certificates, all made with these commands:

  owner:     petrel ca init /etc/petrel/ca                  root CA, endpoint certificate
  delegate:  petrel ca csr alice --key-out alice.key --out alice.csr
  owner:     petrel --ca ca.pem --ca-key ca.key ca sign-policy alice.csr \
               --vms 2 --mem 256 --out alice.pem            sub-CA "alice" with a policy
  delegate:  petrel --destination host --ca alice.pem --ca-key alice.key \
               --server-ca ca.pem create web ./web.hvt       runs as alice:web

A sub-CA signs further sub-CAs, never larger than its own policy, and the
host checks every deploy against every policy above it, so delegations
together never exceed what was delegated. 'petrel ca revoke' takes a
certificate (and everything it signed) out of use without restarting
petrel-endpoint or petreld. Key types: ed25519 (default), p256, p384, rsa.
Policy and command extensions use OIDs under 1.3.6.1.4.1.32473.7077
(documented in core/pki).`,
	}
	cmd.AddCommand(a.caInitCmd(), a.caCSRCmd(), a.caSignPolicyCmd(), a.caSignLeafCmd(), a.caRevokeCmd())
	return cmd
}

func (a *app) caInitCmd() *cobra.Command {
	var (
		cn, keyType string
		hosts       []string
	)
	cmd := &cobra.Command{
		Use:   "init DIR",
		Short: "Create a root CA and the endpoint's certificate in DIR",
		Long: `Create DIR with the root CA's key and certificate (ca.key,
ca.pem), the endpoint's key and certificate (server.key, server.pem; valid
for localhost, 127.0.0.1, ::1 and every --host) and an empty revocation
list (revoked.json). Existing files are never overwritten. The keys are
readable by root only; a new DIR is 0755, because petrel-endpoint runs as
its own user and reads ca.pem and revoked.json there. Keep ca.key offline
if you can: it signs everything.`,
		Example: "  petrel ca init /etc/petrel/ca --host host.example.org --host 192.0.2.7",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if err := pki.InitCA(pos[0], pki.CAOptions{CommonName: cn, KeyKind: keyType, ServerNames: hosts}); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "created CA %q in %s (ca.pem, ca.key, server.pem, server.key, revoked.json)\n", cnOr(cn), pos[0])
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cn, "cn", "", "name of the root CA (default \"petrel\"; not part of any domain)")
	f.StringVar(&keyType, "key-type", "", "ed25519 (default), p256, p384 or rsa")
	f.StringArrayVar(&hosts, "host", nil, "host name or IP address the endpoint is reached at (repeatable)")
	return cmd
}

func cnOr(cn string) string {
	if cn == "" {
		return "petrel"
	}
	return cn
}

func (a *app) caCSRCmd() *cobra.Command {
	var keyOut, out, keyType string
	cmd := &cobra.Command{
		Use:   "csr NAME --key-out KEY --out CSR",
		Short: "Make a key and a certificate request, to become sub-CA NAME",
		Long: `Make a new private key (written to --key-out, mode 0600) and a request
(--out) for a certificate named NAME, which becomes one label of your
domain. Send the request to whoever holds the CA above you; they sign it
with 'petrel ca sign-policy'. The key never leaves your machine.`,
		Example: "  petrel ca csr alice --key-out alice.key --out alice.csr",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if keyOut == "" || out == "" {
				return usageError{errors.New("--key-out and --out are required")}
			}
			key, err := pki.GenerateKey(keyType, 0)
			if err != nil {
				return usageError{err}
			}
			der, err := pki.CSR(key, pos[0], nil)
			if err != nil {
				return err
			}
			if err := pki.WriteKeyFile(keyOut, key); err != nil {
				return err
			}
			if err := writeNewFile(out, pki.EncodeCSR(der)); err != nil {
				os.Remove(keyOut)
				return err
			}
			fmt.Fprintf(a.out, "wrote key %s and request %s for %q\n", keyOut, out, pos[0])
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyOut, "key-out", "", "file for the new private key (must not exist)")
	f.StringVar(&out, "out", "", "file for the certificate request (must not exist)")
	f.StringVar(&keyType, "key-type", "", "ed25519 (default), p256, p384 or rsa")
	return cmd
}

// signer loads the CA given with the global --ca and --ca-key.
func (a *app) signer() ([]*x509.Certificate, crypto.Signer, error) {
	if a.remote.caFile == "" || a.remote.caKeyFile == "" {
		return nil, nil, usageError{errors.New("--ca and --ca-key name the signing CA's certificate chain and key")}
	}
	chain, err := pki.ReadCertsFile(a.remote.caFile)
	if err != nil {
		return nil, nil, err
	}
	key, err := pki.ReadKeyFile(a.remote.caKeyFile)
	if err != nil {
		return nil, nil, err
	}
	return chain, key, nil
}

// issuedChain is what a signed certificate's file holds: the certificate
// and the signer's chain without its self-signed root, which the verifier
// has already; that is exactly what a client presents.
func issuedChain(c *x509.Certificate, signer []*x509.Certificate) []*x509.Certificate {
	out := []*x509.Certificate{c}
	for _, s := range signer {
		if string(s.RawIssuer) != string(s.RawSubject) {
			out = append(out, s)
		}
	}
	return out
}

func readCSR(path string) (*x509.CertificateRequest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	csr, err := pki.DecodeCSR(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return csr, nil
}

func (a *app) caSignPolicyCmd() *cobra.Command {
	var (
		flags *policyFlags
		out   string
		days  int
	)
	cmd := &cobra.Command{
		Use:   "sign-policy CSR --vms N --mem SIZE [--cpu N]... [--block SIZE] [--images SIZE] [--bridge B]... --out CERT",
		Short: "Sign a request as a sub-CA carrying a resource policy",
		Long: `Sign CSR (from 'petrel ca csr') with the CA given by the global --ca and
--ca-key, making a sub-CA certificate that carries the policy: at most
--vms VMs with --mem of memory in total, running only on the --cpu ids
(unpinned VMs are confined to them, pinned ones must name some of them),
--block of block storage (none if not given), --images of image storage
(as much as --mem if not given: the images its VMs use and its uploads
for VMs to come, in the host's image store) and the --bridge bridges.
Sizes are MB (256), or carry a unit (512M, 2G, 1Gi; 1G = 1024M).
The policy must be within the signer's own in every field, or signing is
refused (exit 10). --out receives the new certificate followed by the
signer's chain (without the root): the file the delegate passes as --ca.`,
		Example: "  petrel --ca ca.pem --ca-key ca.key ca sign-policy alice.csr --vms 2 --mem 256 --cpu 0 --out alice.pem\n" +
			"  petrel --ca alice.pem --ca-key alice.key ca sign-policy x.csr --vms 1 --mem 64 --out x.pem",
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if !cmd.Flags().Changed("vms") || !cmd.Flags().Changed("mem") || out == "" {
				return usageError{errors.New("--vms, --mem and --out are required")}
			}
			p, err := flags.policy()
			if err != nil {
				return err
			}
			chain, key, err := a.signer()
			if err != nil {
				return err
			}
			csr, err := readCSR(pos[0])
			if err != nil {
				return err
			}
			c, err := pki.SignPolicy(csr, chain[0], key, p, time.Duration(days)*24*time.Hour)
			if err != nil {
				if errors.Is(err, policy.ErrExceeded) {
					return status.Error(codes.ResourceExhausted, err.Error())
				}
				return err
			}
			if err := pki.WriteCertsFile(out, issuedChain(c, chain)...); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "signed sub-CA %q with policy %s, valid until %s, in %s\n", c.Subject.CommonName, p.Canonical(), c.NotAfter.UTC().Format(time.RFC3339), out)
			return nil
		},
	}
	f := cmd.Flags()
	flags = bindPolicyFlags(f)
	f.StringVar(&out, "out", "", "file for the certificate chain")
	f.IntVar(&days, "days", 365, "validity in days (never beyond the signer's)")
	return cmd
}

func (a *app) caSignLeafCmd() *cobra.Command {
	var (
		out      string
		validity time.Duration
	)
	cmd := &cobra.Command{
		Use:   "sign-leaf CSR --out CERT",
		Short: "Sign a request made with --csr as a client (capability) certificate",
		Long: `Sign CSR, made by 'petrel --csr FILE COMMAND ...', with the CA given by
the global --ca and --ca-key. The certificate allows exactly the command
(and name) the request asks for; its holder runs it with
  petrel --destination HOST --cert CERT --key FILE.key --server-ca ca.pem COMMAND ...`,
		Example: "  petrel --ca alice.pem --ca-key alice.key ca sign-leaf restart-web.csr --out restart-web.pem --validity 720h",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if out == "" {
				return usageError{errors.New("--out is required")}
			}
			chain, key, err := a.signer()
			if err != nil {
				return err
			}
			csr, err := readCSR(pos[0])
			if err != nil {
				return err
			}
			if c, err := pki.CommandFromCSR(csr); err == nil && c != nil && !authz.IsCommand(c.Name) {
				return fmt.Errorf("the request asks for command %q, which is not one of %v", c.Name, authz.Commands())
			}
			c, err := pki.IssueLeafFromCSR(csr, chain[0], key, validity)
			if err != nil {
				return err
			}
			if err := pki.WriteCertsFile(out, issuedChain(c, chain)...); err != nil {
				return err
			}
			what := "any command"
			if cmd, _ := pki.CommandOf(c); cmd != nil {
				what = fmt.Sprintf("%q %v", cmd.Name, cmd.Args)
			}
			fmt.Fprintf(a.out, "signed client certificate %q for %s, valid until %s, in %s\n", c.Subject.CommonName, what, c.NotAfter.UTC().Format(time.RFC3339), out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file for the certificate chain")
	cmd.Flags().DurationVar(&validity, "validity", pki.DefaultLeafValidity, "how long the certificate is valid")
	return cmd
}

func (a *app) caRevokeCmd() *cobra.Command {
	var list string
	cmd := &cobra.Command{
		Use:   "revoke --list REVOKED CERT",
		Short: "Revoke a certificate, and with it everything it signed",
		Long: `Add the first certificate of CERT to the revocation list REVOKED (the
revoked.json of 'petrel ca init', created if missing). petrel-endpoint
and petreld re-read the list when it changes and refuse every chain that
contains the certificate from then on, with no restart.`,
		Example: "  petrel ca revoke --list /etc/petrel/ca/revoked.json alice.pem",
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, pos []string) error {
			if list == "" {
				return usageError{errors.New("--list is required")}
			}
			certs, err := pki.ReadCertsFile(pos[0])
			if err != nil {
				return err
			}
			if err := pki.Revoke(list, certs[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "revoked %q (serial %s)\n", certs[0].Subject.CommonName, certs[0].SerialNumber.Text(16))
			return nil
		},
	}
	cmd.Flags().StringVar(&list, "list", "", "the revocation list file")
	return cmd
}
