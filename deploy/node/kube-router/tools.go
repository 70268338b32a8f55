//go:build tools

// Package kuberouter only records, for `go mod tidy`, the main package build.sh builds:
// kube-router, of which the test node runs only the NetworkPolicy controller (--run-firewall).
// The build tag keeps it out of every real build.
package kuberouter

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
