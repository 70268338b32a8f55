//go:build tools

// Package jobset only records, for `go mod tidy`, the JobSet manager that build.sh builds.
// JobSet's manager is the module's root package, and `go install module@version` of a module
// root is refused when the proxy does not list the module's versions, so this wrapper module
// requires it and `go build`s it. The build tag keeps this file out of every real build.
package jobset

import (
	_ "sigs.k8s.io/jobset"
)
