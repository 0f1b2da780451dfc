package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The core packages run unchanged inside the single-goroutine simulator,
// which replays a run bit for bit from its seed. These tests keep them free
// of everything that would break that: the OS, the network, the wall clock,
// global randomness and goroutines.

// corePackages are checked with all their sub-packages; only the OS
// driver of diskio is exempt.
var corePackages = []string{"engine", "raftlog", "sim", "diskio"}

var exemptFiles = map[string]bool{"diskio/os.go": true, "sim/crypto.go": true}

// bannedImports would reach the machine or an unseeded random source.
var bannedImports = map[string]string{
	"os":          "the file system goes through diskio.FS",
	"net":         "messages go through the host",
	"crypto/rand": "randomness comes from Config.Rand",
	"os/exec":     "no processes in the core",
	"os/signal":   "no signals in the core",
	"net/http":    "messages go through the host",
}

// bannedTimeFuncs read or wait on the wall clock; time is a count of
// ticks.
var bannedTimeFuncs = map[string]bool{
	"Now": true, "Sleep": true, "After": true, "Tick": true, "NewTimer": true,
	"NewTicker": true, "AfterFunc": true, "Since": true, "Until": true,
}

// allowedRandFuncs build a seeded generator; every other package-level
// function of math/rand draws from the global, unseeded one.
var allowedRandFuncs = map[string]bool{
	"New": true, "NewPCG": true, "NewChaCha8": true, "NewSource": true, "NewZipf": true,
}

// tidyProblems lists what is wrong with one core source file.
func tidyProblems(fset *token.FileSet, file *ast.File) []string {
	var problems []string
	report := func(pos token.Pos, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s: %s", fset.Position(pos), fmt.Sprintf(format, args...)))
	}
	names := map[string]string{} // local name -> import path
	for _, imp := range file.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if why, ok := bannedImports[path]; ok || strings.HasPrefix(path, "net/") || strings.HasPrefix(path, "os/") {
			if !ok {
				why = "the core does no I/O"
			}
			report(imp.Pos(), "imports %q: %s", path, why)
		}
		name := path[strings.LastIndex(path, "/")+1:]
		if path == "math/rand/v2" {
			name = "rand"
		}
		if imp.Name != nil {
			name = imp.Name.Name
		}
		names[name] = path
	}
	for _, group := range file.Comments {
		for _, c := range group.List {
			if strings.Contains(c.Text, "FIXME") {
				report(c.Pos(), "leftover FIXME")
			}
		}
	}
	ast.Inspect(file, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			report(n.Pos(), "go statement: the core runs on one goroutine")
		case *ast.SelectStmt:
			report(n.Pos(), "select statement: the core has no channels to wait on")
		case *ast.SelectorExpr:
			pkg, ok := n.X.(*ast.Ident)
			if !ok || pkg.Obj != nil {
				return true
			}
			switch names[pkg.Name] {
			case "time":
				if bannedTimeFuncs[n.Sel.Name] {
					report(n.Pos(), "time.%s: time is a count of ticks", n.Sel.Name)
				}
			case "math/rand", "math/rand/v2":
				if ast.IsExported(n.Sel.Name) && !allowedRandFuncs[n.Sel.Name] && !isRandType(n.Sel.Name) {
					report(n.Pos(), "rand.%s draws from the global source: use Config.Rand", n.Sel.Name)
				}
			}
		}
		return true
	})
	return problems
}

func isRandType(name string) bool {
	switch name {
	case "Rand", "Source", "Source64", "PCG", "ChaCha8", "Zipf":
		return true
	}
	return false
}

func TestTidyCore(t *testing.T) {
	fset := token.NewFileSet()
	var problems []string
	files := 0
	for _, dir := range corePackages {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if d == nil && path == dir {
					return filepath.SkipDir // the package does not exist yet
				}
				return err
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || exemptFiles[filepath.ToSlash(path)] {
				return nil
			}
			file, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
			if err != nil {
				return err
			}
			files++
			problems = append(problems, tidyProblems(fset, file)...)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if files == 0 {
		t.Fatal("no core source files found: run the test from the module root")
	}
	sort.Strings(problems)
	for _, p := range problems {
		t.Error(p)
	}
}

// TestTidyCatches proves the checker finds each kind of problem.
func TestTidyCatches(t *testing.T) {
	cases := []struct {
		src  string
		want string
	}{
		{`import "os"; var _ = os.Args`, `imports "os"`},
		{`import "net/http"; var _ = http.Get`, `imports "net/http"`},
		{`import "crypto/rand"; var _ = rand.Reader`, `imports "crypto/rand"`},
		{`import "time"; var _ = time.Now()`, `time.Now`},
		{`import "time"; func f() { time.Sleep(1) }`, `time.Sleep`},
		{`import "math/rand/v2"; var _ = rand.IntN(3)`, `rand.IntN draws from the global source`},
		{`import mr "math/rand"; var _ = mr.Intn(3)`, `rand.Intn draws from the global source`},
		{`func f() { go f() }`, `go statement`},
		{`func f(c chan int) { select { case <-c: } }`, `select statement`},
		{`// FIXME: later
var x int`, `leftover FIXME`},
	}
	for _, c := range cases {
		fset := token.NewFileSet()
		file, err := parser.ParseFile(fset, "x.go", "package x\n"+c.src, parser.ParseComments)
		if err != nil {
			t.Fatalf("%s: %v", c.src, err)
		}
		problems := tidyProblems(fset, file)
		if len(problems) != 1 || !strings.Contains(problems[0], c.want) {
			t.Errorf("%s: got %q, want one problem containing %q", c.src, problems, c.want)
		}
	}
	clean := `import ("math/rand/v2"; "time")
var r = rand.New(rand.NewPCG(1, 2))
var d time.Duration = time.Second
func f() uint64 { return r.Uint64() }`
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "x.go", "package x\n"+clean, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	if problems := tidyProblems(fset, file); len(problems) != 0 {
		t.Errorf("clean source flagged: %q", problems)
	}
}
