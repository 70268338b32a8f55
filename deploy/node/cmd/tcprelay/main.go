// Command tcprelay forwards every TCP connection it accepts to one other address. The test node
// runs it on the node's address in front of the test plane's API server, which listens on
// loopback only, so that pods reach the API server the way they do in a cluster: through the
// `kubernetes` Service (kube-proxy sends them here).
//
//	tcprelay -listen 198.18.0.1:6443 -to 127.0.0.1:43210
package main

import (
	"flag"
	"io"
	"log"
	"net"
	"sync"
	"time"
)

func main() {
	listen := flag.String("listen", "", "address to accept connections on")
	target := flag.String("to", "", "address to forward them to")
	flag.Parse()
	if *listen == "" || *target == "" {
		log.Fatal("usage: tcprelay -listen HOST:PORT -to HOST:PORT")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("tcprelay: %s -> %s", *listen, *target)
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go relay(conn.(*net.TCPConn), *target)
	}
}

// relay copies both ways until each side has finished sending, then closes both.
func relay(client *net.TCPConn, target string) {
	defer client.Close()
	upstream, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		log.Printf("tcprelay: %v", err)
		return
	}
	server := upstream.(*net.TCPConn)
	defer server.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src *net.TCPConn) {
		defer wg.Done()
		io.Copy(dst, src)
		dst.CloseWrite()
	}
	go pipe(server, client)
	go pipe(client, server)
	wg.Wait()
}
