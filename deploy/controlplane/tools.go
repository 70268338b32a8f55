//go:build tools

// Package controlplane only records, for `go mod tidy`, the main packages that build.sh builds.
// The build tag keeps it out of every real build.
package controlplane

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
