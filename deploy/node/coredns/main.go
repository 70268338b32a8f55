// Command coredns is CoreDNS with only the plugins the test node's cluster DNS needs: it
// answers Service and pod names from the API server (plugin kubernetes), on the address it is
// given (bind), and nothing else.
// It has no forward plugin, so no query ever leaves the machine. CoreDNS's own build picks
// plugins from plugin.cfg; a wrapper module does the same by importing them and setting the
// order they run in.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// The order plugins handle a query in (plugin.cfg's order, restricted to these).
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "log", "cache", "kubernetes"}
}

func main() {
	coremain.Run()
}
