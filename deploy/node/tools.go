//go:build tools

// Package node only records, for `go mod tidy`, the Kubernetes main packages that build.sh
// builds. The build tag keeps it out of every real build.
package node

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
