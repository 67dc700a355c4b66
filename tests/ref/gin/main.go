// The old service's `GET /updateTask`, as a same-machine reference for the
// `http` benchmark scenario (tests/src/bench/scenarios/http.rs): Gin's default
// engine (its request logger writing to stdout, Recovery), the id trimmed, a
// map of jobs under a mutex, the answer by c.JSON. With -nolog, gin.New()
// without the logger: the Gin stack alone.
//
// Built by the benchmark from Debian's packages (golang-go,
// golang-github-gin-gonic-gin-dev) in GOPATH mode; no module download.
package main

import (
	"flag"
	"net/http"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"
)

var (
	mu   sync.Mutex
	jobs = map[string]struct{}{}
)

func updateTask(c *gin.Context) {
	id := strings.TrimSpace(c.Query("id"))
	if id == "" {
		c.JSON(http.StatusBadRequest, gin.H{"errorType": "invalid_id"})
		return
	}
	mu.Lock()
	_, ok := jobs[id]
	mu.Unlock()
	if !ok {
		c.JSON(http.StatusNotFound, gin.H{"errorType": "id_doesn't_exist"})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "Job " + id + " stopped."})
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	nolog := flag.Bool("nolog", false, "leave out Gin's request logger")
	flag.Parse()
	gin.SetMode(gin.ReleaseMode)
	r := gin.Default()
	if *nolog {
		r = gin.New()
		r.Use(gin.Recovery())
	}
	r.GET("/updateTask", updateTask)
	if err := r.Run(*listen); err != nil {
		panic(err)
	}
}
