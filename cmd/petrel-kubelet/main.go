// Command petrel-kubelet makes a Petrel host a Kubernetes node. It is a
// virtual-kubelet node agent, one per host: it registers a Node whose
// capacity is the share of the host delegated to the cluster (the policy
// of its sub-CA certificate) and runs the pods bound to it as Petrel VMs
// (see package core/fleet for what a pod becomes and what is refused).
//
// It reaches petreld through petrel-endpoint with a sub-CA certificate
// and key (--destination, --ca, --ca-key, --server-ca), so Kubernetes can
// use only what the host's owner delegated to it, enforced by petreld's
// policies; or, on the host itself, through petreld's socket (--socket)
// under a path (--domain) the owner gave a policy.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"log/slog"

	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
	vkslog "github.com/virtual-kubelet/virtual-kubelet/log/slog"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/petrel-vmm/petrel/cmd/internal/remote"
	"github.com/petrel-vmm/petrel/core/fleet"
	"github.com/petrel-vmm/petrel/core/pki"
	"github.com/petrel-vmm/petrel/core/policy"
	"github.com/petrel-vmm/petrel/sdk/client"
	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// version is set at build time.
var version = "dev"

type options struct {
	kubeconfig, nodeName, nodeIP, listen, clientCA string
	socket, domain                                 string
	destination, caFile, caKey, serverCA, serverNm string
	imageDir                                       string
	interval                                       time.Duration
	debug                                          bool
}

func main() {
	var o options
	fs := flag.NewFlagSet("petrel-kubelet", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `petrel-kubelet (%s): this Petrel host as a Kubernetes node.

Through petrel-endpoint, with the sub-CA the host's owner signed for the cluster:
  petrel-kubelet --kubeconfig kubelet.conf --node-name host1 --node-ip 10.0.0.1 \
      --client-ca apiserver-kubelet-ca.pem --destination host1:1025 \
      --ca cluster.pem --ca-key cluster.key --server-ca ca.pem
On the host, through petreld's socket, under a path with a policy:
  petrel-kubelet --kubeconfig kubelet.conf --node-name host1 --node-ip 10.0.0.1 \
      --client-ca apiserver-kubelet-ca.pem --domain k8s --image-dir /srv/unikernels

Flags:
`, version)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the node's Kubernetes identity")
	fs.StringVar(&o.nodeName, "node-name", "", "name of the Node to register (default: the host name)")
	fs.StringVar(&o.nodeIP, "node-ip", "", "address the API server reaches the agent at (required)")
	fs.StringVar(&o.listen, "listen", ":10250", "kubelet API address (logs), served with TLS")
	fs.StringVar(&o.clientCA, "client-ca", "", "CA of the API server's kubelet client certificate; the kubelet API serves only it (required)")
	fs.StringVar(&o.socket, "socket", "", "petreld's socket, for an agent on the host (default as petrel's)")
	fs.StringVar(&o.domain, "domain", "", "path of the agent's VMs: required with --socket, relative to the sub-CA's domain with --destination")
	fs.StringVar(&o.destination, "destination", "", "petrel-endpoint address HOST:PORT")
	fs.StringVar(&o.caFile, "ca", "", "the cluster's sub-CA certificate chain (with --destination)")
	fs.StringVar(&o.caKey, "ca-key", "", "the sub-CA's key (with --destination)")
	fs.StringVar(&o.serverCA, "server-ca", "", "CA certificate of the endpoint's certificate (with --destination)")
	fs.StringVar(&o.serverNm, "server-name", "", "name the endpoint's certificate must carry (default: the --destination host)")
	fs.StringVar(&o.imageDir, "image-dir", "", "directory of unikernel images: reference local/NAME:TAG is the file NAME.TAG (other references petreld pulls from their registry)")
	fs.DurationVar(&o.interval, "interval", time.Second, "how often VM states are read")
	fs.BoolVar(&o.debug, "debug", false, "log at debug level")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	level := slog.LevelInfo
	if o.debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	vklog.L = vkslog.FromSlog(logger)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "petrel-kubelet:", err)
		os.Exit(1)
	}
}

// petrelConn is how the agent reaches petreld.
type petrelConn struct {
	daemon daemonv1.DaemonClient
	// keep runs what keeps the connection usable until its context ends.
	keep  func(context.Context)
	close func()
	// root is the absolute path of the agent's domain; delegated the
	// policy its sub-CA carries (nil on the local socket).
	root      string
	delegated *daemonv1.Policy
}

// dialPetrel connects to petreld as the options say.
func dialPetrel(o options) (*petrelConn, error) {
	c, keep, closeFn, err := dialDaemon(o)
	if err != nil {
		return nil, err
	}
	pc := &petrelConn{daemon: c, keep: keep, close: closeFn, root: o.domain}
	if o.destination == "" {
		return pc, nil
	}
	chain, err := pki.ReadCertsFile(o.caFile)
	if err != nil {
		closeFn()
		return nil, err
	}
	domain, err := remote.DomainOf(chain)
	if err != nil {
		closeFn()
		return nil, fmt.Errorf("domain of the sub-CA: %w", err)
	}
	pc.root = domain.String()
	if o.domain != "" {
		pc.root += ":" + o.domain
	}
	if p, err := pki.PolicyOf(chain[0]); err == nil && p != nil {
		pc.delegated = policy.ToProto(*p)
	}
	return pc, nil
}

// dialDaemon opens the connection.
func dialDaemon(o options) (daemonv1.DaemonClient, func(context.Context), func(), error) {
	if o.destination == "" {
		if o.domain == "" {
			return nil, nil, nil, errors.New("--socket needs --domain: the path the host's owner gave the cluster a policy for")
		}
		c, err := client.Dial(client.SocketPath(o.socket))
		if err != nil {
			return nil, nil, nil, err
		}
		return c.API, func(context.Context) {}, func() { _ = c.Close() }, nil
	}
	if o.caFile == "" || o.caKey == "" || o.serverCA == "" {
		return nil, nil, nil, errors.New("--destination needs --ca, --ca-key and --server-ca")
	}
	chain, err := pki.ReadCertsFile(o.caFile)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := pki.ReadKeyFile(o.caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	serverCA, err := pki.ReadCertsFile(o.serverCA)
	if err != nil {
		return nil, nil, nil, err
	}
	name := o.serverNm
	if name == "" {
		if name, _, err = net.SplitHostPort(o.destination); err != nil {
			return nil, nil, nil, fmt.Errorf("--destination %q: %w", o.destination, err)
		}
	}
	rc, err := newRotatingConn(o.destination, chain, key, serverCA[0], name)
	if err != nil {
		return nil, nil, nil, err
	}
	var cc grpc.ClientConnInterface = rc
	return daemonv1.NewDaemonClient(cc), rc.run, rc.close, nil
}

func run(ctx context.Context, o options) error {
	if o.nodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("host name: %w", err)
		}
		o.nodeName = h
	}
	if o.nodeIP == "" || o.clientCA == "" {
		return errors.New("--node-ip and --client-ca are required (see --help)")
	}
	_, portText, err := net.SplitHostPort(o.listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", o.listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return fmt.Errorf("--listen %q: port: %w", o.listen, err)
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	pconn, err := dialPetrel(o)
	if err != nil {
		return err
	}
	defer pconn.close()
	daemon, keep := pconn.daemon, pconn.keep
	tlsCfg, err := servingTLS(o.clientCA, o.nodeIP)
	if err != nil {
		return err
	}

	eb := record.NewBroadcaster()
	defer eb.Shutdown()
	eb.StartRecordingToSink(&corev1client.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	recorder := eb.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "petrel-kubelet", Host: o.nodeName})

	var (
		prov     *fleet.Provider
		nodeProv *fleet.Node
	)
	mux := http.NewServeMux()
	n, err := nodeutil.NewNode(o.nodeName, func(pc nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
		setupNode(pc.Node, o, port)
		images := fleet.Images{Registry: fleet.RegistryImages{}}
		if o.imageDir != "" {
			images.Files = &fleet.FileImages{Dir: o.imageDir, Upload: client.Over(daemon)}
		}
		p, err := fleet.NewProvider(fleet.Config{
			Daemon:   daemon,
			Images:   images,
			Domain:   o.domain,
			Pods:     pc.Pods,
			Recorder: recorder,
			HostIP:   o.nodeIP,
			Interval: o.interval,
		})
		if err != nil {
			return nil, nil, err
		}
		prov = p
		nodeProv = fleet.NewNode(fleet.NodeConfig{Daemon: daemon, Domain: o.domain, Root: pconn.root, Delegated: pconn.delegated}, pc.Node)
		nodeProv.Refresh(ctx)
		return statsless{p}, nodeProv, nil
	},
		nodeutil.WithClient(kube),
		nodeutil.AttachProviderRoutes(mux),
		func(c *nodeutil.NodeConfig) error {
			c.HTTPListenAddr = o.listen
			c.Handler = mux
			c.TLSConfig = tlsCfg
			c.EventRecorder = recorder
			c.SkipDownwardAPIResolution = true
			c.NumWorkers = 4
			return nil
		})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){keep,
		func(ctx context.Context) { _ = prov.Run(ctx) },
		func(ctx context.Context) { _ = nodeProv.Run(ctx) }} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	defer wg.Wait()
	defer cancel()
	vklog.G(ctx).Infof("node %s: running pods as Petrel VMs (VM path %q)", o.nodeName, o.domain)
	if err := n.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("node controller: %w", err)
	}
	return nil
}

// setupNode fills in what the Node object says about this host before it
// is registered: the taint, the address and port of the kubelet API, and
// what it runs.
func setupNode(n *corev1.Node, o options, port int) {
	n.Labels["kubernetes.io/os"] = "petrel"
	n.Labels["petrel-vmm.io/unikernel"] = "true"
	n.Spec.Taints = []corev1.Taint{{Key: fleet.TaintKey, Value: "true", Effect: corev1.TaintEffectNoSchedule}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: o.nodeIP}, {Type: corev1.NodeHostName, Address: o.nodeName}}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(port)
	n.Status.NodeInfo = corev1.NodeSystemInfo{
		OperatingSystem: "petrel", Architecture: "amd64",
		KubeletVersion: "v1.37.2-petrel-" + version, ContainerRuntimeVersion: "petrel://" + version,
	}
}

// servingTLS is the kubelet API's TLS configuration: a self-signed
// certificate for the node's address (the API server does not verify
// kubelets unless told to) and client certificates from clientCA only.
func servingTLS(clientCA, nodeIP string) (*tls.Config, error) {
	pool := x509.NewCertPool()
	cas, err := pki.ReadCertsFile(clientCA)
	if err != nil {
		return nil, fmt.Errorf("--client-ca: %w", err)
	}
	for _, c := range cas {
		pool.AddCert(c)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "petrel-kubelet"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(nodeIP); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{nodeIP}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}
