// Package pki is Petrel's certificate authority and verifier: it lets a
// host's owner manage the host remotely with nothing but X.509
// certificates, and delegate part of the host's resources to others who
// can delegate further, each bounded by a policy carried in their CA
// certificate.
//
// # Hierarchy
//
// The owner's root CA (InitCA) signs sub-CA certificates (SignPolicy),
// each carrying a policy.Policy; a sub-CA signs further sub-CAs, each no
// larger than its issuer, and finally short-lived leaf certificates
// (IssueLeaf, NewLeafChain) with which a client authenticates over mutual
// TLS 1.3. The administrative domain of a client is the path formed by the
// common names of the sub-CAs in its chain, issuer-most first (the root's
// name is not part of it): root → "a" → "b" → leaf "vm" acts on a:b, and
// names the VM a:b:vm. Every common name must be a valid label (package
// core/name); a leaf's may be a path. Chains hold at most 9 certificates,
// root included.
//
// A leaf MAY carry exactly one command (a capability): the endpoint then
// executes that command and nothing else. Certificates are revoked by
// listing their serial with their issuer in a RevocationList, which the
// endpoint and petreld reload while running (Watcher).
//
// # Object identifiers
//
// Petrel's extensions live under the arc OIDArc, 1.3.6.1.4.1.32473.7077,
// chosen below the IANA private enterprise number 32473 that RFC 5612
// reserves for examples, so it cannot collide with any organisation's
// live extensions (Albatross uses 1.3.6.1.4.1.49836.42; Sigstore uses
// 1.3.6.1.4.1.57264). Once the project registers a private enterprise
// number the arc moves there; certificates issued under this arc then
// have to be re-issued.
//
//	OIDArc      1.3.6.1.4.1.32473.7077
//	OIDPolicy   OIDArc.1   resource policy of a CA or sub-CA certificate
//	OIDCommand  OIDArc.2   the one command a leaf certificate allows
//
// Both extensions are marked critical, because they restrict what a
// certificate allows: software that does not understand them must refuse
// the certificate rather than grant it everything. This package verifies
// chains itself and handles them.
//
// # Extension schemas
//
// Both values are DER, versioned by their first field. Decoders accept
// only version 1, only the canonical encoding this package produces (so
// a value has exactly one encoding), nothing after the outer SEQUENCE, and
// at most MaxExtensionSize bytes.
//
//	PolicyExt ::= SEQUENCE {
//	    version   INTEGER (1),
//	    vms       INTEGER (0..1048576),
//	    cpus      SEQUENCE OF INTEGER (0..8191),  -- ascending, no duplicates
//	    memoryMB  INTEGER (0..2^40),
//	    blockMB   [0] IMPLICIT INTEGER (0..2^40) OPTIONAL,  -- absent: no block allowance
//	    bridges   SEQUENCE SIZE (0..256) OF UTF8String (SIZE (1..15)),  -- ascending, no duplicates
//	    imagesMB  [1] IMPLICIT INTEGER (0..2^40) OPTIONAL   -- absent: as much as memoryMB
//	}
//
//	CommandExt ::= SEQUENCE {
//	    version   INTEGER (1),
//	    command   UTF8String (SIZE (1..64)),       -- printable ASCII
//	    args      SEQUENCE SIZE (1..64) OF UTF8String OPTIONAL  -- absent when there are none
//	}
//
// imagesMB, the image storage the domain's VMs and uploads may hold in
// petreld's image store, came after version 1's first release; as an
// optional field at the end it changes no earlier certificate's encoding,
// and a decoder without it refuses a certificate that carries it rather
// than ignoring a limit.
//
// The command is the name of a daemon operation ("create", "destroy",
// "console", ...) and args are its arguments as the CLI takes them; the
// endpoint compares a request with them before forwarding it. A later
// incompatible schema gets version 2 and decoders that accept both.
//
// # Keys
//
// Ed25519 (the default), ECDSA P-256 and P-384, and RSA of 2048 to 8192
// bits. Every key in a chain is checked, so an RSA-1024 certificate is
// refused wherever it appears.
package pki
