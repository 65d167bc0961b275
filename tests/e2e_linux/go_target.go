// A Go process with a known goroutine (main.dumplibWorker) blocked on a channel; prints one JSON line,
// then waits until its stdin closes.
package main

import (
	"fmt"
	"io"
	"os"
)

var hold = make(chan int)

func dumplibWorker(n int) int {
	return <-hold + n
}

func main() {
	go dumplibWorker(7)
	fmt.Printf("{\"pid\": %d}\n", os.Getpid())
	io.Copy(io.Discard, os.Stdin)
}
