package ui

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/core/policy"
)

// signPolicy signs a sub-tenant's request into a sub-CA carrying the
// form's policy with the host's CA, as `petrel ca sign-policy` does:
// refused when the policy exceeds the signer's own.
func (s *Server) signPolicy(r *http.Request) (any, error) {
	h, err := s.host(r.URL.Query().Get("host"))
	if err != nil {
		return nil, err
	}
	var req struct {
		CSR    string     `json:"csr"`
		Days   int        `json:"days"`
		Policy policyForm `json:"policy"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	csr, err := pki.DecodeCSR([]byte(req.CSR))
	if err != nil {
		return nil, badRequest("certificate request: %v", err)
	}
	p, err := req.Policy.policy()
	if err != nil {
		return nil, err
	}
	chain, key, err := h.signerFor()
	if err != nil {
		return nil, badRequest("host %s cannot sign: %v", h.cfg.Name, err)
	}
	days := req.Days
	if days <= 0 {
		days = 365
	}
	c, err := pki.SignPolicy(csr, chain[0], key, p, time.Duration(days)*24*time.Hour)
	if err != nil {
		if errors.Is(err, policy.ErrExceeded) {
			return nil, httpError{http.StatusUnprocessableEntity, err.Error()}
		}
		return nil, badRequest("%v", err)
	}
	// The file the delegate passes as --ca: the certificate and the
	// signer's chain without its self-signed root.
	out := []byte{}
	out = append(out, pki.EncodeCerts(c)...)
	for _, sc := range chain {
		if string(sc.RawIssuer) != string(sc.RawSubject) {
			out = append(out, pki.EncodeCerts(sc)...)
		}
	}
	return map[string]string{"name": c.Subject.CommonName, "pem": string(out), "policy": p.Canonical().String(),
		"until": c.NotAfter.UTC().Format(time.RFC3339)}, nil
}

// revoke adds a certificate to the host's revocation list, as `petrel ca
// revoke` does; petrel-endpoint and petreld refuse it, and every chain it
// is part of, from then on.
func (s *Server) revoke(r *http.Request) (any, error) {
	h, err := s.host(r.URL.Query().Get("host"))
	if err != nil {
		return nil, err
	}
	if h.cfg.Revocations == "" {
		return nil, badRequest("host %s has no revocation list in the host list (the revoked.json of petrel ca init)", h.cfg.Name)
	}
	var req struct {
		PEM string `json:"pem"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	certs, err := pki.DecodeCerts([]byte(req.PEM))
	if err != nil || len(certs) == 0 {
		return nil, badRequest("certificate: not a PEM certificate (%v)", err)
	}
	if err := pki.Revoke(h.cfg.Revocations, certs[0]); err != nil {
		return nil, fmt.Errorf("revoke %q: %w", certs[0].Subject.CommonName, err)
	}
	return map[string]string{"revoked": certs[0].Subject.CommonName, "serial": certs[0].SerialNumber.Text(16)}, nil
}
