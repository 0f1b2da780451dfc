package server

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/version"
)

// Config is a member's configuration, from etcd's flags and environment.
type Config struct {
	Name    string
	DataDir string

	ListenClientURLs    []url.URL
	AdvertiseClientURLs []url.URL
	ListenPeerURLs      []url.URL
	AdvertisePeerURLs   []url.URL

	// InitialCluster maps member names to peer URLs; it, the state and the
	// token matter only when the data dir is new.
	InitialCluster      map[string][]url.URL
	InitialClusterState string
	InitialClusterToken string

	SnapshotCount     uint64
	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration
	UnsafeNoFsync     bool
	StrictReconfig    bool

	RequestBytesMax   int
	TxnOpsMax         int
	QuotaBackendBytes int64
	MaxSnapshots      int
	// AuthToken is --auth-token: "simple" or "jwt,<options>".
	AuthToken string
	// AuthTokenTTLSeconds is how long an unused simple auth token lives.
	AuthTokenTTLSeconds int

	// WatchProgressNotifyInterval is the period of progress notifications to watchers that
	// asked for them, at least watchProgressIntervalMin.
	WatchProgressNotifyInterval time.Duration

	GRPCKeepaliveMinTime  time.Duration
	GRPCKeepaliveInterval time.Duration
	GRPCKeepaliveTimeout  time.Duration
	MaxConcurrentStreams  uint32
	EnableGRPCGateway     bool
	// EnablePprof serves Go's profiles under /debug/pprof/ on the client
	// URLs, as etcd's --enable-pprof.
	EnablePprof bool

	FeatureGates map[string]bool

	LogLevel   string
	LogOutputs []string
	LogFormat  string

	// Warnings are notes on flags that only tune etcd's performance or
	// logging and that basalt accepts without acting on them; they are
	// logged once the logger exists.
	Warnings []string
}

// Defaults are etcd v3.7.3's.
const (
	defaultName         = "default"
	defaultClientURL    = "http://localhost:2379"
	defaultPeerURL      = "http://localhost:2380"
	defaultSnapshots    = 10000
	requestBytesDefault = 3 * 1024 * 1024 / 2
	txnOpsDefault       = 128
	// electionTimeoutMsMax is etcd's upper bound for --election-timeout.
	electionTimeoutMsMax = 50000
)

// ErrHelp is returned by ParseFlags when help was asked for.
var ErrHelp = flag.ErrHelp

// ErrVersion is returned by ParseFlags when --version was given.
var ErrVersion = errors.New("server: version requested")

// flagKind says what basalt does with an etcd flag.
type flagKind int

const (
	// flagImplemented flags act as in etcd.
	flagImplemented flagKind = iota
	// flagTuning flags only tune etcd's performance or logging: a value
	// other than the default is accepted with a warning.
	flagTuning
	// flagUnsupported flags change behaviour basalt does not have yet: a
	// value other than the default stops the start.
	flagUnsupported
)

// etcdFlag is one of etcd v3.7.3's server flags.
type etcdFlag struct {
	name   string
	def    string
	isBool bool
	kind   flagKind
	usage  string
}

// etcdFlags lists every etcd v3.7.3 server flag, in etcd's help order.
var etcdFlags = []etcdFlag{
	{name: "config-file", kind: flagUnsupported, usage: "Path to the server configuration file."},
	{name: "name", def: defaultName, usage: "Human-readable name for this member."},
	{name: "data-dir", usage: "Path to the data directory (default '${name}.etcd')."},
	{name: "wal-dir", kind: flagUnsupported, usage: "Path to the dedicated wal directory."},
	{name: "snapshot-count", def: strconv.Itoa(defaultSnapshots), usage: "Number of committed transactions to trigger a snapshot to disk."},
	{name: "heartbeat-interval", def: "100", usage: "Time (in milliseconds) of a heartbeat interval."},
	{name: "election-timeout", def: "1000", usage: "Time (in milliseconds) for an election to timeout."},
	{name: "initial-election-tick-advance", def: "true", isBool: true, kind: flagTuning, usage: "Whether to fast-forward initial election ticks on boot for faster election."},
	{name: "listen-peer-urls", def: defaultPeerURL, usage: "List of URLs to listen on for peer traffic."},
	{name: "listen-client-urls", def: defaultClientURL, usage: "List of URLs to listen on for client grpc traffic and http as long as --listen-client-http-urls is not specified."},
	{name: "listen-client-http-urls", kind: flagUnsupported, usage: "List of URLs to listen on for http only client traffic."},
	{name: "max-snapshots", def: "5", usage: "Maximum number of snapshot files to retain (0 is unlimited)."},
	{name: "max-wals", def: "5", kind: flagTuning, usage: "Maximum number of wal files to retain (0 is unlimited)."},
	{name: "memory-mlock", def: "false", isBool: true, kind: flagTuning, usage: "Enable to enforce etcd pages (in particular bbolt) to stay in RAM."},
	{name: "quota-backend-bytes", def: "0", usage: "Sets the maximum size (in bytes) that the backend may consume; 0 means 2GiB."},
	{name: "backend-bbolt-freelist-type", def: "map", kind: flagTuning, usage: "BackendFreelistType (basalt has no bbolt)."},
	{name: "backend-batch-interval", kind: flagTuning, usage: "BackendBatchInterval (basalt has no bbolt)."},
	{name: "backend-batch-limit", def: "0", kind: flagTuning, usage: "BackendBatchLimit (basalt has no bbolt)."},
	{name: "max-txn-ops", def: strconv.Itoa(txnOpsDefault), usage: "Maximum number of operations permitted in a transaction."},
	{name: "max-request-bytes", def: strconv.Itoa(requestBytesDefault), usage: "Maximum client request size in bytes the server will accept."},
	{name: "max-concurrent-streams", def: "4294967295", usage: "Maximum concurrent streams that each client can open at a time."},
	{name: "grpc-keepalive-min-time", def: "5s", usage: "Minimum interval duration that a client should wait before pinging server."},
	{name: "grpc-keepalive-interval", def: "2h0m0s", usage: "Frequency duration of server-to-client ping to check if a connection is alive (0 to disable)."},
	{name: "grpc-keepalive-timeout", def: "20s", usage: "Additional duration of wait before closing a non-responsive connection (0 to disable)."},
	{name: "socket-reuse-port", def: "false", isBool: true, kind: flagTuning, usage: "Enable to set socket option SO_REUSEPORT on listeners."},
	{name: "socket-reuse-address", def: "false", isBool: true, kind: flagTuning, usage: "Enable to set socket option SO_REUSEADDR on listeners."},
	{name: "enable-grpc-gateway", def: "true", isBool: true, usage: "Enable GRPC gateway."},
	{name: "raft-read-timeout", def: "5s", kind: flagTuning, usage: "Read timeout set on each rafthttp connection."},
	{name: "raft-write-timeout", def: "5s", kind: flagTuning, usage: "Write timeout set on each rafthttp connection."},
	{name: "feature-gates", usage: "A set of key=value pairs that describe server level feature gates."},
	{name: "initial-advertise-peer-urls", def: defaultPeerURL, usage: "List of this member's peer URLs to advertise to the rest of the cluster."},
	{name: "initial-cluster", def: "default=" + defaultPeerURL, usage: "Initial cluster configuration for bootstrapping."},
	{name: "initial-cluster-state", def: "new", usage: "Initial cluster state ('new' or 'existing')."},
	{name: "initial-cluster-token", def: "etcd-cluster", usage: "Initial cluster token for the etcd cluster during bootstrap."},
	{name: "advertise-client-urls", def: defaultClientURL, usage: "List of this member's client URLs to advertise to the public."},
	{name: "discovery", kind: flagUnsupported, usage: "Discovery URL used to bootstrap the cluster."},
	{name: "discovery-token", kind: flagUnsupported, usage: "V3 discovery: discovery token for the etcd cluster to be bootstrapped."},
	{name: "discovery-endpoints", kind: flagUnsupported, usage: "V3 discovery: List of gRPC endpoints of the discovery service."},
	{name: "discovery-dial-timeout", def: "2s", kind: flagUnsupported, usage: "V3 discovery: dial timeout for client connections."},
	{name: "discovery-request-timeout", def: "5s", kind: flagUnsupported, usage: "V3 discovery: timeout for discovery requests (excluding dial timeout)."},
	{name: "discovery-keepalive-time", def: "2s", kind: flagUnsupported, usage: "V3 discovery: keepalive time for client connections."},
	{name: "discovery-keepalive-timeout", def: "6s", kind: flagUnsupported, usage: "V3 discovery: keepalive timeout for client connections."},
	{name: "discovery-insecure-transport", def: "true", isBool: true, kind: flagUnsupported, usage: "V3 discovery: disable transport security for client connections."},
	{name: "discovery-insecure-skip-tls-verify", def: "false", isBool: true, kind: flagUnsupported, usage: "V3 discovery: skip server certificate verification."},
	{name: "discovery-cert", kind: flagUnsupported, usage: "V3 discovery: identify secure client using this TLS certificate file."},
	{name: "discovery-key", kind: flagUnsupported, usage: "V3 discovery: identify secure client using this TLS key file."},
	{name: "discovery-cacert", kind: flagUnsupported, usage: "V3 discovery: verify certificates of TLS-enabled secure servers using this CA bundle."},
	{name: "discovery-user", kind: flagUnsupported, usage: "V3 discovery: username[:password] for authentication."},
	{name: "discovery-password", kind: flagUnsupported, usage: "V3 discovery: password for authentication."},
	{name: "discovery-fallback", def: "exit", kind: flagUnsupported, usage: "Expected behavior ('exit') when discovery services fails."},
	{name: "discovery-proxy", kind: flagUnsupported, usage: "HTTP proxy to use for traffic to discovery service."},
	{name: "discovery-srv", kind: flagUnsupported, usage: "DNS srv domain used to bootstrap the cluster."},
	{name: "discovery-srv-name", kind: flagUnsupported, usage: "Suffix to the dns srv name queried when bootstrapping."},
	{name: "strict-reconfig-check", def: "true", isBool: true, usage: "Reject reconfiguration requests that would cause quorum loss."},
	{name: "pre-vote", def: "true", isBool: true, kind: flagUnsupported, usage: "Enable the raft Pre-Vote algorithm (basalt always uses it)."},
	{name: "auto-compaction-retention", def: "0", kind: flagUnsupported, usage: "Auto compaction retention length. 0 means disable auto compaction."},
	{name: "auto-compaction-mode", def: "periodic", kind: flagUnsupported, usage: "Interpret 'auto-compaction-retention' one of: periodic|revision."},
	{name: "v2-deprecation", def: "write-only", kind: flagTuning, usage: "Phase of v2store deprecation (basalt has no v2 store)."},
	{name: "cert-file", kind: flagUnsupported, usage: "Path to the client server TLS cert file."},
	{name: "key-file", kind: flagUnsupported, usage: "Path to the client server TLS key file."},
	{name: "client-cert-auth", def: "false", isBool: true, kind: flagUnsupported, usage: "Enable client cert authentication."},
	{name: "client-cert-file", kind: flagUnsupported, usage: "Path to an explicit peer client TLS cert file otherwise cert file will be used when client auth is required."},
	{name: "client-key-file", kind: flagUnsupported, usage: "Path to an explicit peer client TLS key file otherwise key file will be used when client auth is required."},
	{name: "client-crl-file", kind: flagUnsupported, usage: "Path to the client certificate revocation list file."},
	{name: "client-cert-allowed-hostname", kind: flagUnsupported, usage: "Allowed TLS hostname for client cert authentication."},
	{name: "trusted-ca-file", kind: flagUnsupported, usage: "Path to the client server TLS trusted CA cert file."},
	{name: "auto-tls", def: "false", isBool: true, kind: flagUnsupported, usage: "Client TLS using generated certificates."},
	{name: "peer-cert-file", kind: flagUnsupported, usage: "Path to the peer server TLS cert file."},
	{name: "peer-key-file", kind: flagUnsupported, usage: "Path to the peer server TLS key file."},
	{name: "peer-client-cert-auth", def: "false", isBool: true, kind: flagUnsupported, usage: "Enable peer client cert authentication."},
	{name: "peer-client-cert-file", kind: flagUnsupported, usage: "Path to an explicit peer client TLS cert file."},
	{name: "peer-client-key-file", kind: flagUnsupported, usage: "Path to an explicit peer client TLS key file."},
	{name: "peer-trusted-ca-file", kind: flagUnsupported, usage: "Path to the peer server TLS trusted CA file."},
	{name: "peer-cert-allowed-cn", kind: flagUnsupported, usage: "Allowed CN for inter peer authentication."},
	{name: "peer-cert-allowed-hostname", kind: flagUnsupported, usage: "Allowed TLS hostname for inter peer authentication."},
	{name: "peer-auto-tls", def: "false", isBool: true, kind: flagUnsupported, usage: "Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided."},
	{name: "self-signed-cert-validity", def: "1", kind: flagUnsupported, usage: "The validity period of the client and peer certificates, unit is year."},
	{name: "peer-crl-file", kind: flagUnsupported, usage: "Path to the peer certificate revocation list file."},
	{name: "cipher-suites", kind: flagUnsupported, usage: "Comma-separated list of supported TLS cipher suites between client/server and peers."},
	{name: "cors", def: "*", kind: flagUnsupported, usage: "Comma-separated whitelist of origins for CORS, or cross-origin resource sharing."},
	{name: "host-whitelist", def: "*", kind: flagUnsupported, usage: "Comma-separated acceptable hostnames from HTTP client requests, if server is not secure."},
	{name: "tls-min-version", def: "TLS1.2", kind: flagUnsupported, usage: "Minimum TLS version supported by etcd."},
	{name: "tls-max-version", kind: flagUnsupported, usage: "Maximum TLS version supported by etcd."},
	{name: "auth-token", def: "simple", kind: flagImplemented, usage: "Specify auth token specific options."},
	{name: "bcrypt-cost", def: "10", kind: flagTuning, usage: "Specify bcrypt algorithm cost factor for auth password hashing."},
	{name: "auth-token-ttl", def: "300", kind: flagImplemented, usage: "The lifetime in seconds of the auth token."},
	{name: "enable-pprof", def: "false", isBool: true, usage: "Enable runtime profiling data via HTTP server."},
	{name: "metrics", def: "basic", kind: flagTuning, usage: "Set level of detail for exported metrics, specify 'extensive' to include server side grpc histogram metrics."},
	{name: "listen-metrics-urls", kind: flagUnsupported, usage: "List of URLs to listen on for the metrics and health endpoints."},
	{name: "logger", def: "zap", usage: "Currently only supports 'zap' for structured logging."},
	{name: "log-outputs", def: "default", usage: "Specify 'stdout' or 'stderr' to skip journald logging even when running under systemd, or list of comma separated output targets."},
	{name: "log-level", def: "info", usage: "Configures log level. Only supports debug, info, warn, error, panic, or fatal."},
	{name: "log-format", def: "json", usage: "Configures log format. Only supports json, console."},
	{name: "enable-log-rotation", def: "false", isBool: true, kind: flagTuning, usage: "Enable log rotation of a single log-outputs file target."},
	{name: "log-rotation-config-json", def: `{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}`, kind: flagTuning, usage: "Configures log rotation if enabled with a JSON logger config."},
	{name: "warning-unary-request-duration", def: "300ms", kind: flagTuning, usage: "Time duration after which a warning is logged if a unary request takes more time."},
	{name: "enable-distributed-tracing", def: "false", isBool: true, kind: flagUnsupported, usage: "Enable distributed tracing using OpenTelemetry Tracing."},
	{name: "distributed-tracing-address", def: "localhost:4317", kind: flagUnsupported, usage: "Address for distributed tracing used for OpenTelemetry Tracing."},
	{name: "distributed-tracing-service-name", def: "etcd", kind: flagUnsupported, usage: "Configures service name for distributed tracing."},
	{name: "distributed-tracing-instance-id", kind: flagUnsupported, usage: "Configures service instance ID for distributed tracing."},
	{name: "distributed-tracing-sampling-rate", def: "0", kind: flagUnsupported, usage: "Number of samples to collect per million spans for OpenTelemetry Tracing."},
	{name: "corrupt-check-time", def: "0s", kind: flagTuning, usage: "Duration of time between cluster corruption check passes."},
	{name: "compact-hash-check-time", def: "1m0s", kind: flagTuning, usage: "Duration of time between leader checks followers compaction hashes."},
	{name: "compaction-batch-limit", def: "1000", kind: flagTuning, usage: "Sets the maximum revisions deleted in each compaction batch."},
	{name: "peer-skip-client-san-verification", def: "false", isBool: true, kind: flagUnsupported, usage: "Skip verification of SAN field in client certificate for peer connections."},
	{name: "watch-progress-notify-interval", def: "10m0s", kind: flagImplemented, usage: "Duration of periodic watch progress notifications."},
	{name: "warning-apply-duration", def: "100ms", kind: flagTuning, usage: "Time duration after which a warning is generated if request takes more time."},
	{name: "bootstrap-defrag-threshold-megabytes", def: "0", kind: flagTuning, usage: "Enable the defrag during etcd server bootstrap (basalt never needs defragmentation)."},
	{name: "max-learners", def: "1", kind: flagUnsupported, usage: "Set the max number of learner members allowed in the cluster membership."},
	{name: "compaction-sleep-interval", def: "10ms", kind: flagTuning, usage: "Sets the sleep interval between each compaction batch."},
	{name: "downgrade-check-time", def: "5s", kind: flagTuning, usage: "Duration of time between two downgrade status checks."},
	{name: "snapshot-catchup-entries", def: "5000", kind: flagTuning, usage: "Number of entries for a slow follower to catch up after compacting the raft storage entries."},
	{name: "force-new-cluster", def: "false", isBool: true, kind: flagUnsupported, usage: "Force to create a new one-member cluster."},
	{name: "unsafe-no-fsync", def: "false", isBool: true, usage: "Disables fsync, unsafe, will cause data loss."},
}

// featureGates are etcd v3.7.3's server feature gates with their
// defaults; basalt accepts them all, and none changes its behaviour yet.
var featureGates = map[string]bool{
	"AllAlpha": false, "AllBeta": false, "CompactHashCheck": false, "FastLeaseKeepAlive": true,
	"InitialCorruptCheck": false, "LeaseCheckpoint": false, "LeaseCheckpointPersist": false,
	"PriorityRequest": false, "SetMemberLocalAddr": false, "StopGRPCServiceOnDefrag": false,
	"TxnModeWriteWithSharedBuffer": true,
}

// ParseFlags reads a member's configuration from etcd's command-line flags
// and ETCD_* environment variables (environ as os.Environ gives it), as
// etcd v3.7.3 does. Usage and errors go to out.
func ParseFlags(args, environ []string, out io.Writer) (*Config, error) {
	fs := flag.NewFlagSet("basalt", flag.ContinueOnError)
	fs.SetOutput(out)
	values := make(map[string]*string, len(etcdFlags))
	bools := make(map[string]*bool)
	for _, f := range etcdFlags {
		if f.isBool {
			b, _ := strconv.ParseBool(f.def)
			bools[f.name] = fs.Bool(f.name, b, f.usage)
			continue
		}
		values[f.name] = fs.String(f.name, f.def, f.usage)
	}
	showVersion := fs.Bool("version", false, "Print the version and exit.")
	fs.Usage = func() { usage(out, fs) }
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("'%s' is not a valid flag", fs.Arg(0))
	}
	if *showVersion {
		return nil, ErrVersion
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var warnings []string
	if err := applyEnv(fs, environ, set, &warnings); err != nil {
		return nil, err
	}

	get := func(name string) string {
		if p, ok := values[name]; ok {
			return *p
		}
		return strconv.FormatBool(*bools[name])
	}
	for _, f := range etcdFlags {
		if !set[f.name] || get(f.name) == f.def {
			continue
		}
		switch f.kind {
		case flagUnsupported:
			return nil, fmt.Errorf("flag --%s is not supported by basalt yet (only its default %q is)", f.name, f.def)
		case flagTuning:
			warnings = append(warnings, fmt.Sprintf("flag --%s only tunes etcd's performance or logging; basalt ignores it", f.name))
		}
	}
	return buildConfig(get, set, warnings)
}

// applyEnv sets the flags not given on the command line from ETCD_*
// variables, as etcd does, and refuses a variable shadowed by a flag.
func applyEnv(fs *flag.FlagSet, environ []string, set map[string]bool, warnings *[]string) error {
	known := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		known["ETCD_"+strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))] = f.Name
	})
	vars := append([]string(nil), environ...)
	sort.Strings(vars)
	for _, kv := range vars {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, "ETCD_") {
			continue
		}
		name, ok := known[k]
		if !ok {
			*warnings = append(*warnings, fmt.Sprintf("unrecognized environment variable %s", kv))
			continue
		}
		if set[name] {
			return fmt.Errorf("conflicting environment variable %q is shadowed by corresponding command-line flag (either unset environment variable or disable flag)", k)
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("invalid value %q for %s: %v", v, k, err)
		}
		set[name] = true
	}
	return nil
}

func buildConfig(get func(string) string, set map[string]bool, warnings []string) (*Config, error) {
	cfg := &Config{
		Name:                get("name"),
		DataDir:             get("data-dir"),
		InitialClusterState: get("initial-cluster-state"),
		InitialClusterToken: get("initial-cluster-token"),
		LogLevel:            get("log-level"),
		LogFormat:           get("log-format"),
		AuthToken:           get("auth-token"),
		Warnings:            warnings,
	}
	if _, err := parseAuthToken(cfg.AuthToken); err != nil {
		return nil, fmt.Errorf("invalid value %q for flag -auth-token: %v", cfg.AuthToken, err)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = cfg.Name + ".etcd"
	}
	var err error
	urlFlags := []struct {
		name string
		dst  *[]url.URL
	}{
		{"listen-client-urls", &cfg.ListenClientURLs},
		{"advertise-client-urls", &cfg.AdvertiseClientURLs},
		{"listen-peer-urls", &cfg.ListenPeerURLs},
		{"initial-advertise-peer-urls", &cfg.AdvertisePeerURLs},
	}
	for _, u := range urlFlags {
		if *u.dst, err = parseURLs(get(u.name)); err != nil {
			return nil, fmt.Errorf("invalid value %q for flag -%s: %v", get(u.name), u.name, err)
		}
	}
	if set["listen-client-urls"] && !set["advertise-client-urls"] {
		return nil, errors.New("--advertise-client-urls is required when --listen-client-urls is set explicitly")
	}
	if cfg.InitialCluster, err = parseInitialCluster(get("initial-cluster")); err != nil {
		return nil, fmt.Errorf("invalid value %q for flag -initial-cluster: %v", get("initial-cluster"), err)
	}
	if cfg.InitialClusterState != "new" && cfg.InitialClusterState != "existing" {
		return nil, fmt.Errorf("invalid value %q for flag -initial-cluster-state: valid values are \"new\", \"existing\"", cfg.InitialClusterState)
	}
	if _, ok := cfg.InitialCluster[cfg.Name]; !ok {
		return nil, fmt.Errorf("couldn't find local name %q in the initial cluster configuration", cfg.Name)
	}

	ints := []struct {
		name string
		dst  any
	}{
		{"snapshot-count", &cfg.SnapshotCount},
		{"max-request-bytes", &cfg.RequestBytesMax},
		{"max-txn-ops", &cfg.TxnOpsMax},
		{"quota-backend-bytes", &cfg.QuotaBackendBytes},
		{"max-snapshots", &cfg.MaxSnapshots},
		{"max-concurrent-streams", &cfg.MaxConcurrentStreams},
		{"auth-token-ttl", &cfg.AuthTokenTTLSeconds},
	}
	for _, f := range ints {
		if err := parseInt(get(f.name), f.dst); err != nil {
			return nil, fmt.Errorf("invalid value %q for flag -%s: %v", get(f.name), f.name, err)
		}
	}
	var heartbeatMs, electionMs int
	if err := parseInt(get("heartbeat-interval"), &heartbeatMs); err != nil {
		return nil, fmt.Errorf("invalid value %q for flag -heartbeat-interval: %v", get("heartbeat-interval"), err)
	}
	if err := parseInt(get("election-timeout"), &electionMs); err != nil {
		return nil, fmt.Errorf("invalid value %q for flag -election-timeout: %v", get("election-timeout"), err)
	}
	switch {
	case heartbeatMs <= 0:
		return nil, fmt.Errorf("--heartbeat-interval must be positive, got %d", heartbeatMs)
	case 5*heartbeatMs > electionMs:
		return nil, fmt.Errorf("--election-timeout[%vms] should be at least as 5 times as --heartbeat-interval[%vms]", electionMs, heartbeatMs)
	case electionMs > electionTimeoutMsMax:
		return nil, fmt.Errorf("--election-timeout[%vms] is too long, and should be set less than %vms", electionMs, electionTimeoutMsMax)
	}
	cfg.HeartbeatInterval = time.Duration(heartbeatMs) * time.Millisecond
	cfg.ElectionTimeout = time.Duration(electionMs) * time.Millisecond
	if cfg.TxnOpsMax <= 0 {
		return nil, fmt.Errorf("--max-txn-ops must be positive, got %d", cfg.TxnOpsMax)
	}
	if cfg.RequestBytesMax <= 0 {
		return nil, fmt.Errorf("--max-request-bytes must be positive, got %d", cfg.RequestBytesMax)
	}

	durations := []struct {
		name string
		dst  *time.Duration
	}{
		{"grpc-keepalive-min-time", &cfg.GRPCKeepaliveMinTime},
		{"grpc-keepalive-interval", &cfg.GRPCKeepaliveInterval},
		{"grpc-keepalive-timeout", &cfg.GRPCKeepaliveTimeout},
		{"watch-progress-notify-interval", &cfg.WatchProgressNotifyInterval},
	}
	for _, d := range durations {
		if *d.dst, err = time.ParseDuration(get(d.name)); err != nil {
			return nil, fmt.Errorf("invalid value %q for flag -%s: %v", get(d.name), d.name, err)
		}
	}
	switch iv := cfg.WatchProgressNotifyInterval; {
	case iv <= 0:
		cfg.WatchProgressNotifyInterval = watchProgressIntervalDefault
	case iv < watchProgressIntervalMin:
		cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("adjusting watch progress notify interval %v to the minimum period %v", iv, watchProgressIntervalMin))
		cfg.WatchProgressNotifyInterval = watchProgressIntervalMin
	}
	for name, dst := range map[string]*bool{
		"unsafe-no-fsync":       &cfg.UnsafeNoFsync,
		"strict-reconfig-check": &cfg.StrictReconfig,
		"enable-grpc-gateway":   &cfg.EnableGRPCGateway,
		"enable-pprof":          &cfg.EnablePprof,
	} {
		*dst, _ = strconv.ParseBool(get(name))
	}
	if get("logger") != "zap" {
		return nil, fmt.Errorf("unknown logger option %q", get("logger"))
	}
	switch cfg.LogLevel {
	case "debug", "info", "warn", "error", "panic", "fatal":
	default:
		return nil, fmt.Errorf("unknown log level %q", cfg.LogLevel)
	}
	if cfg.LogFormat != "json" && cfg.LogFormat != "console" {
		return nil, fmt.Errorf("unsupported log format: %s", cfg.LogFormat)
	}
	cfg.LogOutputs = strings.Split(get("log-outputs"), ",")
	if cfg.FeatureGates, err = parseFeatureGates(get("feature-gates")); err != nil {
		return nil, err
	}
	return cfg, nil
}

func parseInt(s string, dst any) error {
	switch p := dst.(type) {
	case *int:
		v, err := strconv.ParseInt(s, 0, 0)
		*p = int(v)
		return err
	case *int64:
		v, err := strconv.ParseInt(s, 0, 64)
		*p = v
		return err
	case *uint64:
		v, err := strconv.ParseUint(s, 0, 64)
		*p = v
		return err
	case *uint32:
		v, err := strconv.ParseUint(s, 0, 32)
		*p = uint32(v)
		return err
	}
	panic(fmt.Sprintf("server: parseInt into %T", dst))
}

// parseURLs parses a comma-separated list of http URLs.
func parseURLs(s string) ([]url.URL, error) {
	var urls []url.URL
	for _, raw := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil {
			return nil, err
		}
		switch {
		case u.Scheme == "https" || u.Scheme == "unix" || u.Scheme == "unixs":
			return nil, fmt.Errorf("URL scheme %q is not supported by basalt yet", u.Scheme)
		case u.Scheme != "http":
			return nil, fmt.Errorf("URL scheme must be http, https, unix, or unixs: %s", raw)
		case u.Path != "" && u.Path != "/":
			return nil, fmt.Errorf("URL must not contain a path: %s", raw)
		case u.Port() == "":
			return nil, fmt.Errorf("URL address does not have the form \"host:port\": %s", raw)
		}
		urls = append(urls, *u)
	}
	return urls, nil
}

// parseInitialCluster parses name=url,name=url.
func parseInitialCluster(s string) (map[string][]url.URL, error) {
	m := map[string][]url.URL{}
	for _, part := range strings.Split(s, ",") {
		name, raw, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not of the form name=url", part)
		}
		urls, err := parseURLs(raw)
		if err != nil {
			return nil, err
		}
		m[name] = append(m[name], urls...)
	}
	return m, nil
}

func parseFeatureGates(s string) (map[string]bool, error) {
	gates := map[string]bool{}
	for name, def := range featureGates {
		gates[name] = def
	}
	if s == "" {
		return gates, nil
	}
	for _, part := range strings.Split(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("missing bool value for %s", part)
		}
		if _, known := featureGates[name]; !known {
			return nil, fmt.Errorf("unrecognized feature gate: %s", name)
		}
		b, err := strconv.ParseBool(val)
		if err != nil {
			return nil, fmt.Errorf("invalid value of %s=%s, err: %v", name, val, err)
		}
		gates[name] = b
	}
	return gates, nil
}

func usage(out io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(out, "Usage:\n\n  basalt [flags]\n    Start a member (etcd v%s API).\n\n  basalt sim [flags]\n    Run the deterministic cluster simulator.\n\n  basalt --version\n    Show the version.\n\nFlags (etcd's; a flag basalt does not implement yet stops the start when set to a value other than its default):\n", version.Version)
	fs.PrintDefaults()
}
