//go:build difftest

package difftest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// TestGateway compares the HTTP/JSON gateway's answers: status code, headers
// (but Date and Content-Length) and the JSON body compared as a value, with
// the top-level header's cluster_id, member_id and raft_term dropped.
func TestGateway(t *testing.T) {
	n := opsFor(gatewayOpsDefault)
	ref, cand := startPair(t)
	g := newGen(*seedFlag, true, *leasesFlag)
	client := &http.Client{Timeout: requestTimeout}
	sum := tally{}
	for i := range n {
		o := g.next()
		hr := g.httpRequest(o)
		refAns, err := hr.send(client, ref.addr)
		if err == nil {
			err = ref.alive()
		}
		if err != nil {
			t.Fatalf("op #%d (seed %d): the reference failed on:\n%s\n%v", i, *seedFlag, hr.String(), err)
		}
		candAns, err := hr.send(client, cand.addr)
		if err == nil {
			err = cand.alive()
		}
		if err != nil {
			mismatch(t, sum, i, hr.String(), refAns.String(), err.Error())
		}
		if !refAns.same(candAns) {
			mismatch(t, sum, i, hr.String(), refAns.String(), candAns.String())
		}
		kind := o.kind
		if hr.variant != "" {
			kind += " (" + hr.variant + ")"
		}
		logOp(t, i, hr.String(), refAns.String())
		sum.add(kind, refAns.outcome())
		if refAns.status == http.StatusOK {
			g.observeJSON(o.req, refAns.body, hr.variant == "")
		}
	}
	t.Log(sum.String())
}

// httpRequest is one gateway request.
type httpRequest struct {
	method      string
	path        string
	contentType string // "" sends none
	body        []byte
	variant     string // how the request departs from a plain POST of the message
}

func (h httpRequest) String() string {
	body := string(h.body)
	if len(body) > shownBodyBytesMax {
		body = fmt.Sprintf("%s...(%d bytes)", body[:shownBodyBytesMax], len(body))
	}
	return fmt.Sprintf("%s %s Content-Type=%q variant=%q\n%s", h.method, h.path, h.contentType, h.variant, body)
}

func (h httpRequest) send(c *http.Client, addr string) (httpAnswer, error) {
	req, err := http.NewRequest(h.method, "http://"+addr+h.path, bytes.NewReader(h.body))
	if err != nil {
		return httpAnswer{}, err
	}
	if h.contentType != "" {
		req.Header.Set("Content-Type", h.contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		return httpAnswer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return httpAnswer{}, err
	}
	return httpAnswer{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

var gatewayPaths = map[string]string{
	"RangeRequest":       "/v3/kv/range",
	"PutRequest":         "/v3/kv/put",
	"DeleteRangeRequest": "/v3/kv/deleterange",
	"TxnRequest":         "/v3/kv/txn",
	"CompactionRequest":  "/v3/kv/compaction",
	"LeaseGrantRequest":  "/v3/lease/grant",
	"LeaseRevokeRequest": "/v3/lease/revoke",
}

// httpRequest encodes o as the gateway's JSON, in any of the spellings
// protojson accepts, and now and then breaks it.
func (g *gen) httpRequest(o op) httpRequest {
	name := string(o.req.ProtoReflect().Descriptor().Name())
	h := httpRequest{method: http.MethodPost, path: gatewayPaths[name], contentType: "application/json"}
	if name == "LeaseRevokeRequest" && g.p(0.3) {
		h.path = "/v3/kv/lease/revoke"
	}
	h.body = g.encodeJSON(o.req)
	// A broken LeaseGrant body could ask for ID 0, which the server
	// chooses at random.
	if g.p(0.05) && name != "LeaseGrantRequest" {
		g.breakJSON(&h)
	}
	if g.p(0.03) {
		g.oddRoute(&h)
	}
	switch n := g.r.IntN(100); {
	case n < 5:
		h.contentType = ""
	case n < 8:
		h.contentType = "text/plain"
	}
	return h
}

// Field names (proto and lowerCamel) whose JSON form encodeJSON varies.
var (
	int64Fields = map[string]bool{"limit": true, "revision": true, "lease": true, "version": true,
		"min_mod_revision": true, "minModRevision": true, "max_mod_revision": true, "maxModRevision": true,
		"min_create_revision": true, "minCreateRevision": true, "max_create_revision": true, "maxCreateRevision": true,
		"create_revision": true, "createRevision": true, "mod_revision": true, "modRevision": true, "ID": true, "TTL": true}
	bytesFields = map[string]bool{"key": true, "range_end": true, "rangeEnd": true, "value": true}
)

func (g *gen) encodeJSON(req proto.Message) []byte {
	opts := protojson.MarshalOptions{UseProtoNames: g.p(0.7), UseEnumNumbers: g.p(0.2), EmitUnpopulated: g.p(0.1)}
	b, err := opts.Marshal(req)
	if err != nil {
		panic(fmt.Sprintf("difftest: protojson: %v", err))
	}
	if !g.p(0.3) {
		return b
	}
	// Respell: int64 as JSON numbers, bytes as unpadded URL-safe base64,
	// and an unknown field the gateway must ignore.
	var v any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		panic(fmt.Sprintf("difftest: re-decode: %v", err))
	}
	numbers, urlSafe := g.p(0.5), g.p(0.5)
	v = respell(v, "", numbers, urlSafe)
	if m, ok := v.(map[string]any); ok && g.p(0.3) {
		m["difftest_unknown_field"] = []any{1, "x"}
	}
	out, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("difftest: re-encode: %v", err))
	}
	return out
}

func respell(v any, field string, numbers, urlSafe bool) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = respell(e, k, numbers, urlSafe)
		}
	case []any:
		for i, e := range x {
			x[i] = respell(e, field, numbers, urlSafe)
		}
	case string:
		switch {
		case numbers && int64Fields[field]:
			if _, err := strconv.ParseInt(x, 10, 64); err == nil {
				return json.Number(x)
			}
		case urlSafe && bytesFields[field]:
			if b, err := base64.StdEncoding.DecodeString(x); err == nil {
				return base64.RawURLEncoding.EncodeToString(b)
			}
		}
	}
	return v
}

// breakJSON replaces the body with one the gateway must reject, or accept
// in a way that is easy to get wrong.
func (g *gen) breakJSON(h *httpRequest) {
	bodies := []string{
		"",
		"null",
		"[]",
		"{} {}",
		`{"key":5}`,
		`{"key":"!!!"}`,
		`{"key":"YQ==",}`,
		`{"key":"YQ==","key":"Yg=="}`,
		`{"key":"YQ==","limit":"x"}`,
		`{"key":"YQ==","sort_order":"SIDEWAYS"}`,
		`{"key":"YQ==","sort_target":99}`,
		`{"key":"YQ==","revision":1e3}`,
		`{"key":"YQ==","revision":"-0"}`,
		`{"key":"YQ==","serializable":"true"}`,
		`{"compare":[{"key":"YQ==","target":"NOPE"}]}`,
		`{"success":[{"request_put":{"key":"YQ=="},"request_range":{"key":"YQ=="}}]}`,
		`{"success":[{}]}`,
		"\xff\xfe",
	}
	if len(h.body) > 1 && g.p(0.3) {
		h.body = h.body[:1+g.r.IntN(len(h.body)-1)]
		h.variant = "truncated"
		return
	}
	i := g.r.IntN(len(bodies))
	h.body = []byte(bodies[i])
	h.variant = fmt.Sprintf("malformed-%d", i)
}

// oddRoute sends the request where or how the gateway does not expect it.
func (g *gen) oddRoute(h *httpRequest) {
	switch g.r.IntN(5) {
	case 0:
		h.method, h.variant = http.MethodGet, "GET"
	case 1:
		h.method, h.variant = http.MethodPut, "PUT"
	case 2:
		h.path, h.variant = "/v3/kv/nope", "unknown-path"
	case 3:
		h.path, h.variant = strings.Replace(h.path, "/v3/", "/v3beta/", 1), "v3beta"
	default:
		h.path, h.variant = h.path+"/", "trailing-slash"
	}
}

// observeJSON moves the generator's view of the reference forward from a
// successful gateway answer; asSent says the body was req itself.
func (g *gen) observeJSON(req proto.Message, body []byte, asSent bool) {
	var resp struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	if json.Unmarshal(body, &resp) != nil {
		return
	}
	if rev, err := strconv.ParseInt(resp.Header.Revision, 10, 64); err == nil && rev > 0 {
		g.rev = rev
	}
	if c, ok := req.(*pb.CompactionRequest); ok && asSent {
		g.compacted = c.Revision
	}
}

// httpAnswer is one gateway answer.
type httpAnswer struct {
	status int
	header http.Header
	body   []byte
}

// ignoredHeaders differ between any two answers.
var ignoredHeaders = map[string]bool{"Date": true, "Content-Length": true}

func (a httpAnswer) headerLines() []string {
	var lines []string
	for k, vs := range a.header {
		if !ignoredHeaders[k] {
			lines = append(lines, k+": "+strings.Join(vs, ", "))
		}
	}
	sort.Strings(lines)
	return lines
}

// normalBody is the body as a JSON value without the member-specific parts
// of the top-level header, or the raw text if it is not JSON. protojson
// spaces its output at random and, in error messages, picks between a
// space and a no-break space at random per binary: neither is compared.
func (a httpAnswer) normalBody() any {
	var v any
	d := json.NewDecoder(bytes.NewReader(a.body))
	d.UseNumber()
	if err := d.Decode(&v); err != nil || d.More() {
		return string(a.body)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	if h, ok := m["header"].(map[string]any); ok {
		delete(h, "cluster_id")
		delete(h, "member_id")
		delete(h, "raft_term")
	}
	if msg, ok := m["message"].(string); ok {
		m["message"] = strings.ReplaceAll(msg, "\u00a0", " ")
	}
	return m
}

func (a httpAnswer) same(b httpAnswer) bool {
	return a.status == b.status &&
		reflect.DeepEqual(a.headerLines(), b.headerLines()) &&
		reflect.DeepEqual(a.normalBody(), b.normalBody())
}

func (a httpAnswer) outcome() string {
	var e struct {
		Message string `json:"message"`
	}
	if a.status != http.StatusOK && json.Unmarshal(a.body, &e) == nil && e.Message != "" {
		msg, _, _ := strings.Cut(e.Message, " (")
		msg, _, _ = strings.Cut(msg, ":\u00a0")
		return fmt.Sprintf("%d %s", a.status, msg)
	}
	return strconv.Itoa(a.status)
}

func (a httpAnswer) String() string {
	body := string(a.body)
	if len(body) > shownBodyBytesMax {
		body = fmt.Sprintf("%s...(%d bytes)", body[:shownBodyBytesMax], len(body))
	}
	return fmt.Sprintf("HTTP %d\n%s\n\n%s", a.status, strings.Join(a.headerLines(), "\n"), body)
}
