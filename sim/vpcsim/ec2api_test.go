package vpcsim

import (
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// ec2Call sends one raw Query API request to h and returns the HTTP status
// and, for an error document, its code and message.
func ec2Call(t *testing.T, h http.Handler, form url.Values) (status int, code, msg string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=test")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		var e xErrorResponse
		if err := xml.Unmarshal(rec.Body.Bytes(), &e); err != nil {
			t.Fatalf("%s: error document %q: %v", form.Get("Action"), rec.Body.String(), err)
		}
		code, msg = e.Code, e.Message
	}
	return rec.Code, code, msg
}

// Every action of the dispatch table reaches its handler; any other gets
// EC2's InvalidAction, after the dry-run check as before.
func TestEC2DispatchTable(t *testing.T) {
	h := NewEC2Handler(NewCloud("us-west-2"), newFaults())
	for action := range ec2Actions {
		if _, code, msg := ec2Call(t, h, url.Values{"Action": {action}}); code == "InvalidAction" {
			t.Errorf("%s: %s %s", action, code, msg)
		}
	}
	status, code, msg := ec2Call(t, h, url.Values{"Action": {"FrobnicateWidgets"}})
	if status != http.StatusBadRequest || code != "InvalidAction" ||
		msg != "The action FrobnicateWidgets is not valid for this web service." {
		t.Errorf("unknown action: %d %s %q", status, code, msg)
	}
	if _, code, _ := ec2Call(t, h, url.Values{"Action": {"FrobnicateWidgets"}, "DryRun": {"true"}}); code != "DryRunOperation" {
		t.Errorf("unknown action, dry run: %s, want DryRunOperation", code)
	}
}
