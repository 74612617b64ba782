package imds

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// HandlerFor returns the handler serving instanceID's metadata. Every request
// arriving on it is attributed to instanceID, whatever its source address.
func (s *Server) HandlerFor(instanceID string) http.Handler {
	return &handler{s: s, id: instanceID}
}

type handler struct {
	s  *Server
	id string
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	in := h.s.instance(h.id, true)
	in.requests.Add(1)
	w.Header().Set("Server", "EC2ws")

	if r.URL.Path == TokenPath {
		h.serveToken(w, r, in)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed)
		return
	}
	if !h.validToken(in, r.Header.Get(TokenHeader)) {
		writeError(w, http.StatusUnauthorized)
		return
	}
	snap, ok := h.s.visible(in)
	if !ok {
		writeError(w, http.StatusNotFound)
		return
	}
	n := snap.root.lookup(r.URL.Path)
	if n == nil {
		writeError(w, http.StatusNotFound)
		return
	}
	body := n.body()
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(body))
	}
}

func (h *handler) serveToken(w http.ResponseWriter, r *http.Request, in *instance) {
	if r.Method != http.MethodPut {
		w.Header().Set("Allow", "PUT")
		writeError(w, http.StatusMethodNotAllowed)
		return
	}
	// IMDS refuses token requests that went through a proxy.
	if len(r.Header.Values("X-Forwarded-For")) > 0 {
		writeError(w, http.StatusForbidden)
		return
	}
	ttlText := r.Header.Get(TokenTTLHeader)
	ttl, err := strconv.Atoi(ttlText)
	if err != nil || ttl < 1 || time.Duration(ttl)*time.Second > MaxTokenTTL {
		writeError(w, http.StatusBadRequest)
		return
	}

	token := newToken()
	now := h.s.now()
	in.mu.Lock()
	if len(in.tokens) >= in.sweepAt {
		for t, exp := range in.tokens {
			if !now.Before(exp) {
				delete(in.tokens, t)
			}
		}
		in.sweepAt = max(64, 2*len(in.tokens))
	}
	in.tokens[token] = now.Add(time.Duration(ttl) * time.Second)
	in.mu.Unlock()

	w.Header().Set(TokenTTLHeader, strconv.Itoa(ttl))
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(token)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(token))
}

func (h *handler) validToken(in *instance, token string) bool {
	if token == "" {
		return false
	}
	now := h.s.now()
	in.mu.Lock()
	defer in.mu.Unlock()
	exp, ok := in.tokens[token]
	if !ok {
		return false
	}
	if !now.Before(exp) {
		delete(in.tokens, token)
		return false
	}
	return true
}

// newToken returns a random opaque token shaped like IMDS's (56 base64 chars).
func newToken() string {
	var b [42]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	return base64.StdEncoding.EncodeToString(b[:])
}

// writeError answers like IMDS does: a small XHTML page naming the status.
func writeError(w http.ResponseWriter, code int) {
	body := fmt.Sprintf(errorPage, code, http.StatusText(code), code, http.StatusText(code))
	w.Header().Set("Content-Type", "text/html")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

const errorPage = `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
	"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>%d - %s</title>
 </head>
 <body>
  <h1>%d - %s</h1>
 </body>
</html>
`
