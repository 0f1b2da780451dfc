package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/version"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Version is basalt's own version; the etcd API version it speaks is
// version.Version.
const Version = "0.1.0-dev"

// Run runs a member until SIGINT or SIGTERM, as `etcd [flags]` does, and
// returns the process exit code.
func Run(args []string, stdout, stderr io.Writer) int {
	cfg, err := ParseFlags(args, os.Environ(), stderr)
	switch {
	case errors.Is(err, ErrHelp):
		return 0
	case errors.Is(err, ErrVersion):
		fmt.Fprintf(stdout, "etcd Version: %s\nGit SHA: basalt-%s\nGo Version: %s\nGo OS/Arch: %s/%s\n",
			version.Version, Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "basalt: %v\n", err)
		return 1
	}
	lg, err := newLogger(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "basalt: %v\n", err)
		return 1
	}
	defer lg.Sync()
	lg.Info("Running: ", zap.Strings("args", append([]string{"basalt"}, args...)))
	for _, w := range cfg.Warnings {
		lg.Warn(w)
	}
	lg.Info("starting a basalt member", zap.String("basalt-version", Version), zap.String("etcd-api-version", version.Version),
		zap.String("go-version", runtime.Version()), zap.String("name", cfg.Name), zap.String("data-dir", cfg.DataDir))

	defer tuneGC()()
	defer tuneProcs(lg)()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)
	m, err := Start(cfg, lg)
	if err != nil {
		lg.Error("failed to start the member", zap.Error(err))
		return 1
	}
	select {
	case sig := <-sigc:
		lg.Info("received signal; shutting down", zap.String("signal", sig.String()))
		m.Stop()
		return 0
	case <-m.Removed():
		lg.Warn("the member has been permanently removed from the cluster; shutting down")
		m.Stop()
		return 0
	case <-m.Failed():
		lg.Error("member failed", zap.Error(m.Err()))
		m.Stop()
		return 1
	}
}

// newLogger builds etcd's zap JSON logger.
func newLogger(cfg *Config) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	var outputs []string
	for _, o := range cfg.LogOutputs {
		switch o {
		case "default", "stderr", "":
			outputs = append(outputs, "stderr")
		default:
			outputs = append(outputs, o)
		}
	}
	zc := zap.Config{
		Level:    zap.NewAtomicLevelAt(level),
		Encoding: cfg.LogFormat,
		EncoderConfig: zapcore.EncoderConfig{
			TimeKey:       "ts",
			LevelKey:      "level",
			NameKey:       "logger",
			CallerKey:     "caller",
			MessageKey:    "msg",
			StacktraceKey: "stacktrace",
			LineEnding:    zapcore.DefaultLineEnding,
			EncodeLevel:   zapcore.LowercaseLevelEncoder,
			EncodeTime: func(t time.Time, enc zapcore.PrimitiveArrayEncoder) {
				enc.AppendString(t.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
			},
			EncodeDuration: zapcore.StringDurationEncoder,
			EncodeCaller:   zapcore.ShortCallerEncoder,
		},
		OutputPaths:      outputs,
		ErrorOutputPaths: outputs,
	}
	return zc.Build()
}
