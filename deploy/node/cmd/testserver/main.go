// Command testserver is the workload of the real-node tests: a small HTTP server that says who
// it runs as, can be made to fail its liveness probe, and can try connections on request, so
// that tests see from outside what a pod can reach.
//
//	GET  /          "hello from <hostname>", and the uid/gid it runs as
//	GET  /healthz   200 until POST /sicken, then 503 (a liveness probe then restarts it)
//	POST /sicken    make /healthz fail from now on
//	GET  /dial?addr=HOST:PORT&timeout=2s
//	                try a TCP connection from inside the pod; JSON {"connected": bool, "error": ""}
//	GET  /peer      the address the request came from, as this pod sees it (no masquerading
//	                on the way means it is the sending pod's own address)
//	GET  /fetch?url=http://...
//	                an HTTP GET from inside the pod; JSON {"status": int, "body": "", "error": ""}
//
// Every request is logged to stdout, so the kubelet's log of the container shows it.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

func main() {
	listen := flag.String("listen", ":8080", "address to serve on")
	flag.Parse()
	log.SetOutput(os.Stdout)
	log.SetFlags(0)
	host, _ := os.Hostname()
	var sick atomic.Bool

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s uid=%d gid=%d\n", host, os.Getuid(), os.Getgid())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if sick.Load() {
			http.Error(w, "sick", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /sicken", func(w http.ResponseWriter, r *http.Request) {
		sick.Store(true)
		fmt.Fprintln(w, "healthz fails from now on")
	})
	mux.HandleFunc("GET /dial", func(w http.ResponseWriter, r *http.Request) {
		timeout, err := time.ParseDuration(r.URL.Query().Get("timeout"))
		if err != nil {
			timeout = 2 * time.Second
		}
		result := map[string]any{"connected": false, "error": ""}
		conn, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), timeout)
		if err != nil {
			result["error"] = err.Error()
		} else {
			result["connected"] = true
			conn.Close()
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(result)
	})

	mux.HandleFunc("GET /peer", func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		fmt.Fprintln(w, host)
	})
	mux.HandleFunc("GET /fetch", func(w http.ResponseWriter, r *http.Request) {
		result := map[string]any{"status": 0, "body": "", "error": ""}
		client := http.Client{Timeout: 5 * time.Second}
		resp, err := client.Get(r.URL.Query().Get("url"))
		if err != nil {
			result["error"] = err.Error()
		} else {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			result["status"] = resp.StatusCode
			result["body"] = string(body)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(result)
	})

	log.Printf("testserver: started on %s as uid=%d gid=%d", *listen, os.Getuid(), os.Getgid())
	logged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("testserver: %s %s from %s", r.Method, r.URL.RequestURI(), r.RemoteAddr)
		mux.ServeHTTP(w, r)
	})
	log.Fatal(http.ListenAndServe(*listen, logged))
}
