// Command pause is the sandbox process of every pod on the test node (containerd's
// sandbox_image). It holds the pod's namespaces open, reaps children that end up under it
// and exits on SIGINT or SIGTERM. Nothing can be pulled on the test machine, so build.sh
// builds it here and packs it as an image (see cmd/ociarchive).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			// As PID 1 of a shared PID namespace, collect every exited child.
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
