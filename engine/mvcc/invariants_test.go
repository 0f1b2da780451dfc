package mvcc

import (
	"fmt"
	"slices"
)

// checkInvariants verifies the physical structure of s against the invariants documented on the
// types. It is the test harnesses' self-check after every operation.
func checkInvariants(s *Store) error {
	st := &s.st
	if st.rev < 1 || st.compactRev < 0 || st.compactRev > st.rev {
		return fmt.Errorf("rev %d compact %d", st.rev, st.compactRev)
	}
	var bytes int64
	check := func(ki *keyIndex, live bool) error {
		vers := ki.versions()
		if len(vers) == 0 {
			return fmt.Errorf("key %q has no versions", ki.key)
		}
		if ki.epoch > s.epoch {
			return fmt.Errorf("key %q epoch %d > store epoch %d", ki.key, ki.epoch, s.epoch)
		}
		if last := &vers[len(vers)-1]; last.tombstone() == live {
			return fmt.Errorf("key %q in live=%v has newest version tombstone=%v", ki.key, live, last.tombstone())
		}
		bytes += keyOverheadBytes + int64(len(ki.key))
		d := ki.data.Load()
		if len(d.segs) > 0 && int(d.fill) > len(d.segs[len(d.segs)-1]) {
			return fmt.Errorf("key %q: fill %d beyond its last segment of %d bytes", ki.key, d.fill, len(d.segs[len(d.segs)-1]))
		}
		for i := range vers {
			v := &vers[i]
			bytes += versionOverheadBytes + int64(v.val.n)
			if r := v.val; r.n > 0 {
				last := int(r.seg) == len(d.segs)-1
				if int(r.seg) >= len(d.segs) || int(r.off+r.n) > len(d.segs[r.seg]) || (last && r.off+r.n > d.fill) {
					return fmt.Errorf("key %q: version %d.%d's value %+v lies outside the segments written", ki.key, v.mod.Main, v.mod.Sub, r)
				}
			}
			if i > 0 && !vers[i-1].mod.less(v.mod) {
				return fmt.Errorf("key %q: versions out of order at %d", ki.key, i)
			}
			if v.mod.Main > st.rev {
				return fmt.Errorf("key %q: version %d.%d above rev %d", ki.key, v.mod.Main, v.mod.Sub, st.rev)
			}
		}
		vs := ki.retained(st.compactRev, st.rev)
		if len(vs) == 0 && live {
			return fmt.Errorf("live key %q retains nothing", ki.key)
		}
		for i := range vs {
			var prev *version
			if i > 0 {
				prev = &vs[i-1]
			}
			if err := checkVersion(&vs[i], prev, st.compactRev); err != nil {
				return fmt.Errorf("key %q: %w", ki.key, err)
			}
		}
		if cut := physicalCut(vers, st.compactRev); s.compactDone() && cut != 0 {
			return fmt.Errorf("key %q: compaction done but %d versions left to drop", ki.key, cut)
		}
		if s.compactDone() && len(vs) == 0 && vers[len(vers)-1].mod.Main != st.compactRev {
			return fmt.Errorf("key %q: compaction done but the key retains nothing", ki.key)
		}
		return nil
	}
	var err error
	st.live.Scan(func(k string, ki *keyIndex) bool {
		if k != ki.key {
			err = fmt.Errorf("live tree key %q holds keyIndex %q", k, ki.key)
		} else if _, dup := st.dead.Get(k); dup {
			err = fmt.Errorf("key %q both live and dead", k)
		} else {
			err = check(ki, true)
		}
		return err == nil
	})
	if err != nil {
		return err
	}
	st.dead.Scan(func(k string, ki *keyIndex) bool {
		if k != ki.key {
			err = fmt.Errorf("dead tree key %q holds keyIndex %q", k, ki.key)
		} else {
			err = check(ki, false)
		}
		return err == nil
	})
	if err != nil {
		return err
	}
	if bytes != s.bytes {
		return fmt.Errorf("bytes %d, recomputed %d", s.bytes, bytes)
	}
	for k, ki := range s.keys {
		inLive, _ := st.live.Get(k)
		inDead, _ := st.dead.Get(k)
		if ki != inLive && ki != inDead {
			return fmt.Errorf("the key map's keyIndex for %q is in neither tree", k)
		}
	}
	// History: revisions up to rev, from at most the first one above compactRev; every listed
	// change at or above compactRev is physically held.
	h := &st.hist
	if h.base+int64(h.n) != st.rev+1 || h.first < 0 || h.first > h.n || h.first >= histChunkEntries ||
		h.n > len(h.chunks)*histChunkEntries {
		return fmt.Errorf("history base %d first %d n %d chunks %d at rev %d", h.base, h.first, h.n, len(h.chunks), st.rev)
	}
	if oldest, _, ok := h.oldest(); ok && oldest > max(st.compactRev+1, 2) {
		return fmt.Errorf("history starts at %d, compact %d", oldest, st.compactRev)
	}
	h.scan(0, func(main int64, rc *revChanges) bool {
		if main < st.compactRev {
			return true
		}
		for sub := range rc.len() {
			k := rc.key(sub)
			ki, ok := st.live.Get(k)
			if !ok {
				ki, ok = st.dead.Get(k)
			}
			if !ok || ki.find(Revision{main, int64(sub)}) == nil {
				err = fmt.Errorf("history %d.%d key %q: version not retained", main, sub, k)
				return false
			}
		}
		return true
	})
	return err
}

// dumpKeys lists every physically held keyIndex in key order, with the tree it is in.
func dumpKeys(st *state) []string {
	var out []string
	st.visitAll("", func(ki *keyIndex) bool {
		_, live := st.live.Get(ki.key)
		tree := "dead"
		if live {
			tree = "live"
		}
		line := fmt.Sprintf("%s %s:", tree, fmtKey(ki.key))
		for _, v := range ki.versions() {
			line += " " + fmtVersion(ki, &v)
		}
		out = append(out, line)
		return true
	})
	return out
}

func dumpHist(st *state) string {
	out := "hist:"
	st.hist.scan(0, func(main int64, rc *revChanges) bool {
		keys := []string{fmtKey(rc.key0)}
		for _, k := range rc.rest {
			keys = append(keys, fmtKey(k))
		}
		out += fmt.Sprintf(" %d%v", main, keys)
		return true
	})
	return out
}

func fmtVersion(ki *keyIndex, v *version) string {
	if v.tombstone() {
		return fmt.Sprintf("%d.%d:tomb", v.mod.Main, v.mod.Sub)
	}
	s := fmt.Sprintf("%d.%d:v%d/c%d=%s", v.mod.Main, v.mod.Sub, v.ver, v.create, fmtKey(string(ki.value(v))))
	if v.lease != 0 {
		s += fmt.Sprintf("/l%d", v.lease)
	}
	return s
}

// fmtKey prints printable ASCII as is and anything else Go-quoted.
func fmtKey(k string) string {
	if k == "" || slices.ContainsFunc([]byte(k), func(b byte) bool { return b <= ' ' || b > '~' || b == '"' }) {
		return fmt.Sprintf("%q", k)
	}
	return k
}
