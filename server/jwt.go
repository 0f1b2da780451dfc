package server

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	// The hashes JWT's signing methods name.
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// jwtTTLDefault is the lifetime of a JWT when --auth-token does not say,
// etcd's.
const jwtTTLDefault = 5 * time.Minute

// tokenProvider reads auth tokens: etcd's --auth-token simple
// (*simpleTokens) or jwt (*jwtTokens).
type tokenProvider interface {
	lookup(tok string, now time.Time) (token, bool)
}

// errJWTVerifyOnly answers Authenticate on a member given only a public
// key: it reads the tokens others sign, and signs none.
var errJWTVerifyOnly = errors.New("auth: token signing attempted with verify-only key")

// jwtOptions are --auth-token jwt's options.
type jwtOptions struct {
	pubKey, privKey, method string
	ttl                     time.Duration
}

// parseAuthToken checks --auth-token: "simple", or "jwt," followed by
// comma-separated pub-key=, priv-key=, sign-method= and ttl= options, as
// etcd reads them. It returns nil options for simple.
func parseAuthToken(spec string) (*jwtOptions, error) {
	kind, rest, _ := strings.Cut(spec, ",")
	switch kind {
	case "simple":
		if rest != "" {
			return nil, fmt.Errorf("simple tokens take no options, got %q", rest)
		}
		return nil, nil
	case "jwt":
	default:
		return nil, fmt.Errorf("unknown token type %q: basalt knows simple and jwt", kind)
	}
	o := &jwtOptions{ttl: jwtTTLDefault}
	for _, kv := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("invalid jwt option %q", kv)
		}
		switch k {
		case "pub-key":
			o.pubKey = v
		case "priv-key":
			o.privKey = v
		case "sign-method":
			o.method = v
		case "ttl":
			d, err := time.ParseDuration(v)
			if err != nil {
				return nil, fmt.Errorf("invalid jwt ttl %q: %v", v, err)
			}
			o.ttl = d
		default:
			return nil, fmt.Errorf("unknown jwt option %q", k)
		}
	}
	if _, ok := jwtMethods[o.method]; !ok {
		return nil, fmt.Errorf("unsupported jwt sign-method %q", o.method)
	}
	if o.pubKey == "" && o.privKey == "" {
		return nil, errors.New("jwt needs pub-key or priv-key")
	}
	return o, nil
}

// jwtMethod is one JWT signing algorithm.
type jwtMethod struct {
	family string // "RS", "PS", "ES" or "EdDSA"
	hash   crypto.Hash
	// curveBytes is the size of an ES signature's r and s.
	curveBytes int
}

var jwtMethods = map[string]jwtMethod{
	"RS256": {"RS", crypto.SHA256, 0}, "RS384": {"RS", crypto.SHA384, 0}, "RS512": {"RS", crypto.SHA512, 0},
	"PS256": {"PS", crypto.SHA256, 0}, "PS384": {"PS", crypto.SHA384, 0}, "PS512": {"PS", crypto.SHA512, 0},
	"ES256": {"ES", crypto.SHA256, 32}, "ES384": {"ES", crypto.SHA384, 48}, "ES512": {"ES", crypto.SHA512, 66},
	"EdDSA": {"EdDSA", 0, 0},
}

// jwtTokens are etcd's --auth-token jwt tokens: signed claims of user
// name, auth revision and expiry, which any member holding the public key
// can read.
type jwtTokens struct {
	name   string
	method jwtMethod
	ttl    time.Duration
	pub    crypto.PublicKey
	// priv is nil when the member only verifies.
	priv crypto.Signer
}

func newJWTTokens(o *jwtOptions) (*jwtTokens, error) {
	t := &jwtTokens{name: o.method, method: jwtMethods[o.method], ttl: o.ttl}
	if o.privKey != "" {
		b, err := os.ReadFile(o.privKey)
		if err != nil {
			return nil, err
		}
		if t.priv, err = parsePrivateKey(b); err != nil {
			return nil, fmt.Errorf("jwt priv-key %s: %w", o.privKey, err)
		}
		t.pub = t.priv.Public()
	}
	if o.pubKey != "" {
		b, err := os.ReadFile(o.pubKey)
		if err != nil {
			return nil, err
		}
		if t.pub, err = parsePublicKey(b); err != nil {
			return nil, fmt.Errorf("jwt pub-key %s: %w", o.pubKey, err)
		}
	}
	return t, nil
}

func parsePrivateKey(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", k)
	}
	return s, nil
}

// parsePublicKey reads a PEM public key or certificate.
func parsePublicKey(b []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKIXPublicKey(blk.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PublicKey(blk.Bytes); err == nil {
		return k, nil
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, err
	}
	return c.PublicKey, nil
}

var b64 = base64.RawURLEncoding

type jwtClaims struct {
	Username string  `json:"username"`
	Revision float64 `json:"revision"`
	Exp      float64 `json:"exp"`
}

func (t *jwtTokens) assign(user string, rev uint64, now time.Time) (string, error) {
	if t.priv == nil {
		return "", errJWTVerifyOnly
	}
	hdr, _ := json.Marshal(map[string]string{"alg": t.name, "typ": "JWT"})
	claims, err := json.Marshal(map[string]any{"username": user, "revision": rev, "exp": now.Add(t.ttl).Unix()})
	if err != nil {
		return "", err
	}
	signed := b64.EncodeToString(hdr) + "." + b64.EncodeToString(claims)
	sig, err := t.sign([]byte(signed))
	if err != nil {
		return "", err
	}
	return signed + "." + b64.EncodeToString(sig), nil
}

func (t *jwtTokens) digest(msg []byte) []byte {
	if t.method.hash == 0 {
		return msg
	}
	h := t.method.hash.New()
	h.Write(msg)
	return h.Sum(nil)
}

func (t *jwtTokens) sign(msg []byte) ([]byte, error) {
	d := t.digest(msg)
	switch t.method.family {
	case "RS":
		return t.priv.Sign(rand.Reader, d, t.method.hash)
	case "PS":
		return t.priv.Sign(rand.Reader, d, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: t.method.hash})
	case "ES":
		k, ok := t.priv.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s needs an ECDSA key", t.name)
		}
		r, s, err := ecdsa.Sign(rand.Reader, k, d)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 2*t.method.curveBytes)
		r.FillBytes(out[:t.method.curveBytes])
		s.FillBytes(out[t.method.curveBytes:])
		return out, nil
	}
	return t.priv.Sign(rand.Reader, d, crypto.Hash(0))
}

func (t *jwtTokens) verify(msg, sig []byte) bool {
	d := t.digest(msg)
	switch k := t.pub.(type) {
	case *rsa.PublicKey:
		switch t.method.family {
		case "RS":
			return rsa.VerifyPKCS1v15(k, t.method.hash, d, sig) == nil
		case "PS":
			return rsa.VerifyPSS(k, t.method.hash, d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: t.method.hash}) == nil
		}
	case *ecdsa.PublicKey:
		n := t.method.curveBytes
		if t.method.family != "ES" || len(sig) != 2*n {
			return false
		}
		return ecdsa.Verify(k, d, new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:]))
	case ed25519.PublicKey:
		return t.method.family == "EdDSA" && ed25519.Verify(k, msg, sig)
	}
	return false
}

func (t *jwtTokens) lookup(tok string, now time.Time) (token, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return token{}, false
	}
	hdrJSON, err1 := b64.DecodeString(parts[0])
	claimsJSON, err2 := b64.DecodeString(parts[1])
	sig, err3 := b64.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return token{}, false
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hdrJSON, &hdr) != nil || hdr.Alg != t.name || !t.verify([]byte(parts[0]+"."+parts[1]), sig) {
		return token{}, false
	}
	var c jwtClaims
	if json.Unmarshal(claimsJSON, &c) != nil || c.Username == "" || c.Revision < 0 {
		return token{}, false
	}
	if c.Exp != 0 && now.Unix() >= int64(c.Exp) {
		return token{}, false
	}
	return token{user: c.Username, rev: uint64(c.Revision)}, true
}
