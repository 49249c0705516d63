package endpoint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"testing"

	daemonv1 "github.com/petrel-vmm/petrel/sdk/proto/daemon/v1"
)

// TestProxyForwardsEveryMethod: the proxy defines a method of its own for
// every method of the daemon API. One it lacked would be served by the
// embedded UnimplementedDaemonServer, refusing remote callers something
// petreld offers them, with nothing else noticing.
func TestProxyForwardsEveryMethod(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "proxy.go", nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Recv == nil || len(fn.Recv.List) != 1 {
			continue
		}
		if star, ok := fn.Recv.List[0].Type.(*ast.StarExpr); ok {
			if id, ok := star.X.(*ast.Ident); ok && id.Name == "proxy" {
				defined[fn.Name.Name] = true
			}
		}
	}
	var api []string
	for _, m := range daemonv1.Daemon_ServiceDesc.Methods {
		api = append(api, m.MethodName)
	}
	for _, s := range daemonv1.Daemon_ServiceDesc.Streams {
		api = append(api, s.StreamName)
	}
	for _, m := range api {
		if !defined[m] {
			t.Errorf("the endpoint does not forward %s", m)
		}
	}
}
