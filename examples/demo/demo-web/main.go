// Command demo-web is the web server of make demo's Service step: it answers
// "hello from NAME" on / and "ok" on /healthz (the Service's health check), on port 8080,
// until killed.
//
//	demo-web NAME
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: demo-web NAME")
		os.Exit(2)
	}
	name := os.Args[1]
	http.HandleFunc("GET /", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "hello from %s\n", name) })
	http.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	log.Fatal(http.ListenAndServe(":8080", nil))
}
